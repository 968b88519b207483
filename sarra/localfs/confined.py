"""Confined local file system operations under one destination root (spec 9.1, 9.2).

Every operation takes a path *relative* to the root. Paths are validated lexically first
(:func:`check_relpath`), then parent directories are walked ``openat``-style: the root is
opened with ``O_DIRECTORY`` and each component with ``O_DIRECTORY|O_NOFOLLOW`` relative to its
parent's descriptor. A symlinked parent therefore can never redirect a write, link, rename or
remove outside the root; meeting one raises :class:`HostilePath`.

Data files are written in flight (:meth:`SafeRoot.open_inflight`): created ``O_EXCL|O_NOFOLLOW``
under a name unique to the writer, fsync'd, then renamed over the final name, so the final name
never shows partial data.

OS errors are translated at this boundary by :func:`sarra.errors.local_error`:
``ENOSPC``/``EDQUOT`` become :class:`DiskFull`, all others :class:`LocalError`.

Windows has no ``dir_fd``: there a directory is held as its path, each component is checked
with ``lstat`` on the way down (a symlink, junction or any other reparse point is refused as
a :class:`HostilePath`, as is a final name that is one), and names are also checked against
Windows' rules (:func:`sarra.localfs.winnames.check_windows_name`: reserved device names,
streams, trailing dots and spaces...). The walk and the operation are then separate steps, so
a local user able to swap a checked directory for a junction in between could redirect one
operation; messages alone cannot. Modes are not applied (ACLs are inherited); renames are
write-through and directories are flushed with FlushFileBuffers where the file system allows
it (:func:`sarra.osport.fsync_dir`).
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import re
import secrets
import stat as stat_mod
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

from sarra import osport
from sarra.closing import Closing
from sarra.errors import HostilePath, LocalError, local_error, translated_os_errors
from sarra.localfs.winnames import check_windows_name
from sarra.osport import O_BINARY, O_CLOEXEC, fchmod, futime, open_shared, pwrite

NAME_MAX = 255
PATH_MAX = 4096

#: no link followed in the last component (Windows: emulated by :func:`open_at`)
O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_BINARY

# Directory primitives: a directory is held as a descriptor on POSIX (every name below it is
# resolved openat-style) and as its checked path on Windows. The Windows ones are defined on
# every platform (as ``_win_*``) so that the unit tests run their walk over real directories
# and links anywhere; only Windows uses them.

#: the ``lstat`` of the Windows primitives (a unit test can show a junction through it)
_lstat = os.lstat


def _win_is_link(st: os.stat_result) -> bool:
    return stat_mod.S_ISLNK(st.st_mode) or bool(
        getattr(st, "st_file_attributes", 0) & stat_mod.FILE_ATTRIBUTE_REPARSE_POINT
    )


def _win_refuse_link(path: str) -> None:
    try:
        st = _lstat(path)
    except FileNotFoundError:
        return
    if _win_is_link(st):
        raise OSError(errno.ELOOP, "is a symlink or reparse point", path)


def _win_open_root(root: Path) -> str:
    if not root.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(root))
    return str(root)


def _win_open_dir_at(parent: str, name: str) -> str:
    path = os.path.join(parent, name)
    st = _lstat(path)
    if _win_is_link(st):
        raise OSError(errno.ELOOP, "is a symlink or reparse point", path)
    if not stat_mod.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
    return path


def _win_open_at(parent: str, name: str, flags: int, mode: int = 0o777) -> int:
    """``os.open`` of ``name`` in ``parent``, never through a link."""
    path = os.path.join(parent, name)
    _win_refuse_link(path)
    return open_shared(path, flags, mode)


def _win_mkdir_at(parent: str, name: str, mode: int) -> None:
    os.mkdir(os.path.join(parent, name), mode)


def _win_lstat_at(parent: str, name: str) -> os.stat_result:
    return _lstat(os.path.join(parent, name))


def _win_unlink_at(parent: str, name: str) -> None:
    os.unlink(os.path.join(parent, name))


def _win_rmdir_at(parent: str, name: str) -> None:
    os.rmdir(os.path.join(parent, name))


def _win_replace_at(src: str, src_name: str, dst: str, dst_name: str) -> None:
    osport.replace(os.path.join(src, src_name), os.path.join(dst, dst_name))


def _win_symlink_at(target: str, parent: str, name: str) -> None:
    os.symlink(target, os.path.join(parent, name))


def _win_fsync_dir(d: str) -> None:
    osport.fsync_dir(d)  # False where the file system cannot flush a directory


def _win_close_dir(d: str) -> None:
    """Release a directory obtained from a walk (nothing to release on Windows)."""


def _win_dup_dir(d: str) -> str:
    return d


def _win_scandir(d: str) -> Iterator[os.DirEntry[str]]:
    return os.scandir(d)


def _win_same_dir(a: str, b: str) -> bool:
    return os.path.samestat(os.stat(a), os.stat(b))


if sys.platform == "win32":
    Dir = str
    _open_root = _win_open_root
    _open_dir_at = _win_open_dir_at
    open_at = _win_open_at
    _mkdir_at = _win_mkdir_at
    _lstat_at = _win_lstat_at
    _unlink_at = _win_unlink_at
    _rmdir_at = _win_rmdir_at
    _replace_at = _win_replace_at
    _symlink_at = _win_symlink_at
    _fsync_dir = _win_fsync_dir
    close_dir = _win_close_dir
    _dup_dir = _win_dup_dir
    _scandir = _win_scandir
    _same_dir = _win_same_dir

else:
    Dir = int
    _DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

    def _open_root(root: Path) -> Dir:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _open_dir_at(parent: Dir, name: str) -> Dir:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)

    def open_at(parent: Dir, name: str, flags: int, mode: int = 0o777) -> int:
        """``os.open`` of ``name`` relative to the directory ``parent``."""
        return os.open(name, flags, mode, dir_fd=parent)

    def _mkdir_at(parent: Dir, name: str, mode: int) -> None:
        os.mkdir(name, mode, dir_fd=parent)

    def _lstat_at(parent: Dir, name: str) -> os.stat_result:
        return os.stat(name, dir_fd=parent, follow_symlinks=False)

    def _unlink_at(parent: Dir, name: str) -> None:
        os.unlink(name, dir_fd=parent)

    def _rmdir_at(parent: Dir, name: str) -> None:
        os.rmdir(name, dir_fd=parent)

    def _replace_at(src: Dir, src_name: str, dst: Dir, dst_name: str) -> None:
        os.replace(src_name, dst_name, src_dir_fd=src, dst_dir_fd=dst)

    def _symlink_at(target: str, parent: Dir, name: str) -> None:
        os.symlink(target, name, dir_fd=parent)

    def _fsync_dir(d: Dir) -> None:
        os.fsync(d)

    def close_dir(d: Dir) -> None:
        """Close a directory descriptor obtained from a walk."""
        _close(d)

    def _dup_dir(d: Dir) -> Dir:
        return os.dup(d)

    def _scandir(d: Dir) -> Iterator[os.DirEntry[str]]:
        return os.scandir(d)

    def _same_dir(a: Dir, b: Dir) -> bool:
        return os.path.samestat(os.fstat(a), os.fstat(b))


#: the writer token every in-flight name carries: ``~sr<pid>-<8 hex>-<counter>``
_TOKEN_RE = re.compile(r"~sr[0-9]+-[0-9a-f]{8}-[0-9]+")


#: ``sync_file_range(2)`` flag: start writing the range's dirty pages back, without waiting
SYNC_FILE_RANGE_WRITE = 2


def _find_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's Linux ``sync_file_range(2)``, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # the process's own symbols, libc's among them: ctypes.util.find_library would run
        # ``ldconfig -p`` in a child process at every start (a fork of the whole subscriber)
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _find_sync_file_range()


#: fsyncs of one batch run at most this many at a time (:func:`sync_files`)
SYNC_CONCURRENCY = 8
#: an fsync longer than this (s) sends the rest of the batch's fsyncs to the pool
SLOW_FSYNC = 0.0005
_sync_pool: ThreadPoolExecutor | None = None
_sync_pool_lock = threading.Lock()


def _fsync_pool() -> ThreadPoolExecutor:
    global _sync_pool
    with _sync_pool_lock:
        if _sync_pool is None:
            _sync_pool = ThreadPoolExecutor(SYNC_CONCURRENCY, thread_name_prefix="fsync")
        return _sync_pool


def sync_files(files: Sequence[InflightFile]) -> None:
    """Make the data and inode of every one of ``files`` durable, and nothing else's: the
    barrier of a batch commit (:meth:`sarra.flow.download.Downloader.commit_batch`).

    Writeback of all of them is started first (Linux ``sync_file_range``, which does not
    wait), then they are fsync'd: in the calling thread while each fsync is quick, the rest
    concurrently (:data:`SYNC_CONCURRENCY` at a time) once one had to wait, so the file
    system commits them together in a few journal commits rather than one each. Unlike
    ``syncfs``, data that other writers left dirty on the same file system (another
    instance's files) is neither flushed nor waited for here, so instances do not wait on
    each other's data. Returns only once every fsync has ended. On Windows nothing is done:
    :meth:`InflightFile.commit` fsyncs each file there.

    Raises:
        LocalError: a file's data could not be made durable (nothing may be renamed).
    """
    if sys.platform == "win32" or not files:
        return
    for f in files:
        f._check_open()
    if len(files) == 1:
        files[0].fsync()
        return
    if _SYNC_FILE_RANGE is not None:
        for f in files:
            # a hint only: an error here is reported by the fsync below
            _SYNC_FILE_RANGE(f.fd, 0, 0, SYNC_FILE_RANGE_WRITE)
    # in this thread while fsyncs are quick (a file system with nothing to write back, e.g.
    # tmpfs: no hand-off to other threads); the rest concurrently once one has to wait
    rest = list(files)
    while rest:
        started = time.monotonic()
        rest.pop().fsync()
        if time.monotonic() - started > SLOW_FSYNC:
            break
    futures = [_fsync_pool().submit(f.fsync) for f in rest]
    errors = [e for e in (fut.exception() for fut in futures) if e is not None]
    if errors:
        raise errors[0]


def check_relpath(
    rel: str,
    *,
    windows: bool = os.name == "nt",
    name_max: int = NAME_MAX,
    path_max: int = PATH_MAX,
) -> tuple[str, ...]:
    """Validate ``rel`` lexically and return its components (spec 9.1).

    A leading ``/`` is read relative to the root. Empty and ``.`` components are dropped.
    Raises :class:`HostilePath` for NUL, invalid UTF-8 (lone surrogates), an empty result,
    any ``..`` component, a component longer than ``name_max`` bytes, a path longer than
    ``path_max`` bytes and, when ``windows``, a backslash or ``:`` (drive prefixes, streams)
    and any component Windows cannot hold as it is (:func:`check_windows_name`).
    """
    if "\0" in rel:
        raise HostilePath(f"path contains NUL: {rel!r}")
    try:
        encoded = rel.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HostilePath(f"path is not valid UTF-8: {rel!r}") from exc
    if windows and ("\\" in rel or ":" in rel):
        raise HostilePath(f"path has a backslash or drive prefix: {rel!r}")
    if len(encoded) > path_max:
        raise HostilePath(f"path too long ({len(encoded)} bytes): {rel[:64]!r}...")
    parts = tuple(p for p in rel.split("/") if p not in ("", "."))
    if not parts:
        raise HostilePath(f"path is empty or names the root itself: {rel!r}")
    for part in parts:
        if part == "..":
            raise HostilePath(f"path has a '..' component: {rel!r}")
        if len(part.encode("utf-8")) > name_max:
            raise HostilePath(f"path component too long: {part[:64]!r}...")
        if windows:
            check_windows_name(part)
    return parts


def check_link_target(
    link_parts: Sequence[str],
    target: str,
    *,
    allow_absolute_prefixes: Sequence[str] = (),
    windows: bool = os.name == "nt",
) -> None:
    """Refuse a symlink ``target`` that would point outside the root (spec 9.1).

    ``link_parts`` are the validated components of the link itself. A relative target is
    resolved lexically from the link's directory and must stay strictly below the root. An
    absolute target is refused unless it lies under one of ``allow_absolute_prefixes``.
    """
    if not target or "\0" in target:
        raise HostilePath(f"link target empty or contains NUL: {target!r}")
    try:
        target.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HostilePath(f"link target is not valid UTF-8: {target!r}") from exc
    if windows and ("\\" in target or ":" in target):
        raise HostilePath(f"link target has a backslash or drive prefix: {target!r}")
    if target.startswith("/"):
        norm = os.path.normpath(target)
        for prefix in allow_absolute_prefixes:
            base = os.path.normpath(prefix)
            if norm == base or norm.startswith(base.rstrip("/") + "/"):
                return
        raise HostilePath(f"absolute link target not allowed: {target!r}")
    stack = list(link_parts[:-1])
    for comp in target.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not stack:
                raise HostilePath(f"link target escapes the root: {target!r}")
            stack.pop()
        else:
            stack.append(comp)
    if not stack:
        raise HostilePath(f"link target names the root itself: {target!r}")


def _close(fd: int) -> None:
    with suppress(OSError):
        os.close(fd)


class InflightFile(Closing):
    """A file being written under a temporary name, unique to its writer.

    Obtain one from :meth:`SafeRoot.open_inflight`. Either :meth:`commit` or :meth:`abort`
    must end it; used as a context manager, leaving the block without committing aborts.
    """

    def __init__(self, owner: SafeRoot, dir_fd: Dir, name: str, fd: int, rel: str) -> None:
        self._owner = owner
        self._dir_fd = dir_fd
        self._fd = fd
        self.name = name
        """the in-flight file's name within its directory"""
        self.rel = rel
        """the in-flight file's path relative to the root"""
        self._closed = False

    @property
    def fd(self) -> int:
        """The open, writable descriptor of the in-flight file."""
        return self._fd

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data`` at the current position (all of it)."""
        self._check_open()
        view = memoryview(data)
        with translated_os_errors(f"write {self.rel}"):
            while view:
                written = os.write(self._fd, view)
                view = view[written:]

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        """Write ``data`` at byte ``offset`` without moving the position (all of it)."""
        self._check_open()
        view = memoryview(data)
        with translated_os_errors(f"write {self.rel} at {offset}"):
            while view:
                written = pwrite(self._fd, view, offset)
                view = view[written:]
                offset += written

    def truncate(self, size: int) -> None:
        """Set the file's size to ``size`` bytes."""
        self._check_open()
        with translated_os_errors(f"truncate {self.rel}"):
            os.ftruncate(self._fd, size)

    def set_metadata(self, mtime: float | None, mode: int | None) -> None:
        """Set the final mode (masked by the chmod policy) and mtime on the open file."""
        self._check_open()
        with translated_os_errors(f"set mode and mtime of {self.rel}"):
            fchmod(self._fd, self._owner.file_mode_for(mode))
            if mtime is not None:
                futime(self._fd, mtime)

    def fsync(self) -> None:
        """Make the written data durable."""
        self._check_open()
        with translated_os_errors(f"fsync {self.rel}"):
            os.fsync(self._fd)

    def commit(
        self,
        final_rel: str,
        mtime: float | None = None,
        mode: int | None = None,
        *,
        sync_dir: bool = True,
        data_synced: bool = False,
        metadata_set: bool = False,
    ) -> None:
        """Move the data into place under ``final_rel``, atomically and durably.

        ``data_synced`` says the caller already made the data durable (one
        :func:`sync_files` for a whole batch): the file's own fsync is skipped.

        Mode (masked by 0o777 and the root's chmod policy; no setuid/setgid/sticky) and
        mtime are set on the open descriptor *before* the rename, so the final name appears
        complete with its metadata and nothing can be redirected between the two steps.
        Then: fsync the file, rename over the final name, fsync the directories. With
        ``sync_dir`` false the directories are only noted, and :meth:`SafeRoot.sync_dirs` makes
        every noted rename durable at once (group commit: one fsync per directory per batch).
        """
        self._check_open()
        owner = self._owner
        try:
            parts = owner.check_relpath(final_rel)
            with translated_os_errors(f"commit {self.rel} -> {final_rel}"):
                if not metadata_set:
                    self.set_metadata(mtime, mode)
                if not data_synced or sys.platform == "win32":  # (no batch sync there)
                    os.fsync(self._fd)
            # the usual case: the in-flight file sits in the final directory (no second walk)
            same_parent = tuple(self.rel.split("/")[:-1]) == parts[:-1]
            dst_fd = self._dir_fd if same_parent else owner._walk(parts[:-1], create=True)
            assert dst_fd is not None
            try:
                with translated_os_errors(f"rename {self.rel} -> {final_rel}"):
                    if sys.platform == "win32":  # an open file cannot be renamed there
                        _close(self._fd)
                        self._fd = -1
                    _replace_at(self._dir_fd, self.name, dst_fd, parts[-1])
                    same_dir = same_parent or _same_dir(dst_fd, self._dir_fd)
                    if sync_dir:
                        _fsync_dir(dst_fd)
                        if not same_dir:
                            _fsync_dir(self._dir_fd)
                    else:
                        owner._note_dirty(parts[:-1])
                        if not same_dir:
                            owner._note_dirty(tuple(self.rel.split("/")[:-1]))
            finally:
                if dst_fd != self._dir_fd:
                    close_dir(dst_fd)
        except BaseException:
            self.abort()
            raise
        self._finish()

    def abort(self) -> None:
        """Discard the in-flight file (idempotent)."""
        if self._closed:
            return
        # already gone (renamed by a commit that failed later): nothing to leave behind
        with suppress(OSError):
            if sys.platform == "win32":  # an open file cannot be removed there
                _close(self._fd)
                self._fd = -1
            _unlink_at(self._dir_fd, self.name)
        self._finish()

    def close(self) -> None:
        """Leave the file: :meth:`abort` unless already committed (what ``with`` does on exit)."""
        self.abort()

    def _finish(self) -> None:
        _close(self._fd)
        close_dir(self._dir_fd)
        self._owner._live.discard(self.name)
        if self._owner.on_inflight is not None:
            self._owner.on_inflight(self.rel, False)
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise LocalError(f"in-flight file {self.rel} already committed or aborted")


class SafeRoot:
    """A destination root; every operation stays strictly inside it.

    ``dir_mode`` is the mode of directories this object creates. ``file_mode`` is used by
    :meth:`InflightFile.commit` when the notice has no mode. ``chmod_mask`` is the chmod
    policy: the bits a committed file may have (always within 0o777). ``create`` makes the
    root itself (and its parents, by ordinary path resolution: the root is trusted
    configuration) if it is missing.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        dir_mode: int = 0o755,
        file_mode: int = 0o644,
        chmod_mask: int = 0o777,
        create: bool = True,
        windows: bool = sys.platform == "win32",
        on_inflight: Callable[[str, bool], None] | None = None,
    ) -> None:
        #: told (in-flight path, True) when an in-flight file is created and (path, False)
        #: when it is committed or aborted, so a crashed writer's leftovers can be found
        self.on_inflight = on_inflight
        self._dirty: set[tuple[str, ...]] = set()
        self._dirty_lock = threading.Lock()
        self._cached_root: Dir | None = None
        self.root = Path(root)
        self.dir_mode = dir_mode & 0o777
        self.file_mode = file_mode & 0o777
        self.chmod_mask = chmod_mask & 0o777
        self._windows = windows
        if create:
            with translated_os_errors(f"create root {self.root}"):
                self.root.mkdir(parents=True, exist_ok=True)
        self._name_max = NAME_MAX
        if sys.platform != "win32":
            with suppress(OSError, ValueError):
                self._name_max = int(os.pathconf(self.root, "PC_NAME_MAX"))
        self._path_max = max(PATH_MAX - len(os.fsencode(self.root)) - 1, 1)
        # unique per writer: pid (live instances on this host) + random (other hosts on a
        # shared file system, pid reuse) + counter (several files in one process)
        self._token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._counter = itertools.count(1)
        self._live: set[str] = set()

    # validation ---------------------------------------------------------------------------

    def check_relpath(self, rel: str) -> tuple[str, ...]:
        """Validate ``rel`` for this root; see :func:`check_relpath`."""
        return check_relpath(
            rel, windows=self._windows, name_max=self._name_max, path_max=self._path_max
        )

    def file_mode_for(self, mode: int | None) -> int:
        """The mode a committed file gets for a notice ``mode`` (None: the default)."""
        wanted = self.file_mode if mode is None else mode
        return wanted & 0o777 & self.chmod_mask

    # walking ------------------------------------------------------------------------------

    def _open_root(self) -> Dir:
        with translated_os_errors(f"open root {self.root}"):
            return _open_root(self.root)

    def _open_child_dir(self, parent: Dir, name: str, create: bool) -> Dir | None:
        """Open directory ``name`` under ``parent`` without following links; maybe create it."""
        for _ in range(5):
            try:
                return _open_dir_at(parent, name)
            except FileNotFoundError:
                if not create:
                    return None
                try:
                    _mkdir_at(parent, name, self.dir_mode)
                except FileExistsError:
                    continue  # another writer made it (or something else): reopen to see
                except OSError as exc:
                    raise local_error(exc, f"mkdir {name}") from exc
                fd = self._open_child_dir(parent, name, create=False)
                if fd is not None:
                    with translated_os_errors(f"chmod {name}"):
                        if sys.platform != "win32":  # mkdir's mode is cut by the umask
                            os.fchmod(fd, self.dir_mode)
                    return fd
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    try:
                        st = _lstat_at(parent, name)
                    except OSError:
                        st = None
                    if st is not None and (
                        exc.errno == errno.ELOOP or stat_mod.S_ISLNK(st.st_mode)
                    ):
                        raise HostilePath(f"parent directory {name!r} is a symlink") from exc
                raise local_error(exc, f"open directory {name}") from exc
        raise LocalError(f"directory {name!r} keeps changing under us")

    def _walk(self, dirs: Sequence[str], *, create: bool) -> Dir | None:
        """Descriptor of the directory ``dirs`` below the root, or None if missing.

        The root's own descriptor is opened once and kept (the root is trusted
        configuration); every directory below it is opened afresh, without following links.
        """
        root = self._root_fd()
        if not dirs:
            with translated_os_errors(f"open root {self.root}"):
                return _dup_dir(root)
        fd = root
        try:
            for name in dirs:
                child = self._open_child_dir(fd, name, create)
                if fd != root:
                    close_dir(fd)
                if child is None:
                    return None
                fd = child
        except BaseException:
            if fd != root:
                close_dir(fd)
            raise
        return fd

    def _root_fd(self) -> Dir:
        with self._dirty_lock:
            if self._cached_root is None:
                self._cached_root = self._open_root()
            return self._cached_root

    def close(self) -> None:
        """Release the root's descriptor (the object reopens it if used again)."""
        with self._dirty_lock:
            if self._cached_root is not None:
                close_dir(self._cached_root)
                self._cached_root = None

    def _dir_parts(self, rel_dir: str) -> tuple[str, ...]:
        """Components of a directory path; ``""``/``"."``/``"/"`` name the root itself."""
        if rel_dir.strip("/.") == "" and ".." not in rel_dir:
            return ()
        return self.check_relpath(rel_dir)

    # in-flight files ----------------------------------------------------------------------

    def inflight_name(self, final_name: str, inflight: str | None) -> tuple[str | None, str]:
        """(subdirectory or None, in-flight file name) for ``final_name``.

        ``inflight``: a suffix (``.tmp``: ``name.<token>.tmp``), the prefix ``.``
        (``.name.<token>``), a subdirectory (``tmp/``: ``tmp/name.<token>``). ``None``,
        ``NONE``, empty or a number fall back to the ``.`` prefix, since a final name must
        never show partial data. Names too long for the file system drop ``final_name``.
        """
        token = f"~sr{self._token}-{next(self._counter)}"
        subdir: str | None = None
        prefix, suffix = ".", ""
        if inflight and inflight.endswith("/") and inflight.strip("/"):
            subdir = inflight.strip("/")
            prefix = ""
        elif inflight and inflight.startswith(".") and len(inflight) > 1 and "/" not in inflight:
            prefix, suffix = "", inflight
        name = f"{prefix}{final_name}.{token}{suffix}"
        if len(name.encode("utf-8")) > self._name_max:
            name = f".{token}{suffix}"
        return subdir, name

    def open_inflight(self, rel: str, inflight: str | None = ".tmp") -> InflightFile:
        """Create a new, empty in-flight file for the final path ``rel``.

        The file is created ``O_CREAT|O_EXCL|O_NOFOLLOW`` with mode 0o600 in the final
        directory (or its in-flight subdirectory), under a name no other writer uses.
        """
        parts = self.check_relpath(rel)
        subdir, _ = self.inflight_name(parts[-1], inflight)
        dirs = parts[:-1] if subdir is None else (*parts[:-1], *self.check_relpath(subdir))
        dir_fd = self._walk(dirs, create=True)
        assert dir_fd is not None
        try:
            for _ in range(100):
                _, name = self.inflight_name(parts[-1], inflight)
                inflight_rel = "/".join((*dirs, name))
                # noted before it exists, so a writer killed at any point leaves a trace
                if self.on_inflight is not None:
                    self.on_inflight(inflight_rel, True)
                try:
                    fd = open_at(dir_fd, name, _NEW_FILE_FLAGS, 0o600)
                except FileExistsError:
                    if self.on_inflight is not None:
                        self.on_inflight(inflight_rel, False)
                    continue
                except OSError as exc:
                    if self.on_inflight is not None:
                        self.on_inflight(inflight_rel, False)
                    raise local_error(exc, f"create in-flight file for {rel}") from exc
                self._live.add(name)
                return InflightFile(self, dir_fd, name, fd, inflight_rel)
            raise LocalError(f"could not pick a free in-flight name for {rel}")
        except BaseException:
            close_dir(dir_fd)
            raise

    def sweep_inflight(
        self,
        rel_dir: str,
        older_than: float,
        *,
        inflight: str | None = None,
        now: float | None = None,
    ) -> list[str]:
        """Remove in-flight leftovers in ``rel_dir`` not modified for ``older_than`` seconds.

        Only names carrying a writer token are touched, never those this object has open.
        With a subdirectory ``inflight`` style, that subdirectory is swept too. A live writer
        keeps its file's mtime fresh, so pick ``older_than`` above any plausible stall.
        Returns the relative paths removed.
        """
        now = time.time() if now is None else now
        base = self._dir_parts(rel_dir)
        dirs = [base]
        if inflight and inflight.endswith("/") and inflight.strip("/"):
            dirs.append((*base, *self.check_relpath(inflight.strip("/"))))
        removed: list[str] = []
        for parts in dirs:
            fd = self._walk(parts, create=False)
            if fd is None:
                continue
            try:
                with translated_os_errors(f"sweep {'/'.join(parts) or '.'}"):
                    for entry in _scandir(fd):
                        if not _TOKEN_RE.search(entry.name) or entry.name in self._live:
                            continue
                        st = entry.stat(follow_symlinks=False)
                        if not stat_mod.S_ISREG(st.st_mode) or now - st.st_mtime < older_than:
                            continue
                        try:
                            _unlink_at(fd, entry.name)
                        except FileNotFoundError:
                            continue
                        removed.append("/".join((*parts, entry.name)))
            finally:
                close_dir(fd)
        return removed

    # group commit -------------------------------------------------------------------------

    def _note_dirty(self, parts: tuple[str, ...]) -> None:
        with self._dirty_lock:
            self._dirty.add(parts)

    def has_dirty(self) -> bool:
        """Whether a rename awaits :meth:`sync_dirs`."""
        with self._dirty_lock:
            return bool(self._dirty)

    def sync_dirs(self) -> int:
        """fsync every directory noted by ``commit(sync_dir=False)``; returns how many.

        Raises:
            LocalError: a directory cannot be synced (the renames may not be durable).
        """
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        pending = set(dirty)
        try:
            for parts in dirty:
                fd = self._walk(parts, create=False)
                if fd is not None:  # None: removed since, nothing of ours to make durable
                    try:
                        with translated_os_errors(f"sync directory {'/'.join(parts) or '.'}"):
                            _fsync_dir(fd)
                    finally:
                        close_dir(fd)
                pending.discard(parts)
        finally:
            if pending:  # keep what was not synced for the next call
                with self._dirty_lock:
                    self._dirty |= pending
        return len(dirty)

    # file operations ----------------------------------------------------------------------

    def symlink(
        self, rel: str, target: str, *, allow_absolute_prefixes: Sequence[str] = ()
    ) -> None:
        """Create or atomically replace the symlink ``rel`` pointing at ``target``.

        ``target`` is checked by :func:`check_link_target`. A directory at ``rel`` is not
        replaced (LocalError).
        """
        parts = self.check_relpath(rel)
        check_link_target(
            parts,
            target,
            allow_absolute_prefixes=allow_absolute_prefixes,
            windows=self._windows,
        )
        dir_fd = self._walk(parts[:-1], create=True)
        assert dir_fd is not None
        try:
            _, tmp = self.inflight_name(parts[-1], ".")
            with translated_os_errors(f"symlink {rel} -> {target}"):
                _symlink_at(target, dir_fd, tmp)
                try:
                    _replace_at(dir_fd, tmp, dir_fd, parts[-1])
                except OSError:
                    _unlink_at(dir_fd, tmp)
                    raise
                _fsync_dir(dir_fd)
        finally:
            close_dir(dir_fd)

    def remove(self, rel: str) -> bool:
        """Unlink a file or symlink, or rmdir an *empty* directory; never recursive.

        Returns False when nothing was there (not an error).
        """
        parts = self.check_relpath(rel)
        dir_fd = self._walk(parts[:-1], create=False)
        if dir_fd is None:
            return False
        try:
            with translated_os_errors(f"remove {rel}"):
                try:
                    st = _lstat_at(dir_fd, parts[-1])
                    if stat_mod.S_ISDIR(st.st_mode):
                        _rmdir_at(dir_fd, parts[-1])
                    else:
                        _unlink_at(dir_fd, parts[-1])
                except FileNotFoundError:
                    return False
            return True
        finally:
            close_dir(dir_fd)

    def rename(self, old_rel: str, new_rel: str) -> None:
        """Rename ``old_rel`` to ``new_rel`` (replacing a file there), creating parents."""
        old = self.check_relpath(old_rel)
        new = self.check_relpath(new_rel)
        src_fd = self._walk(old[:-1], create=False)
        if src_fd is None:
            raise LocalError(f"rename {old_rel}: parent directory does not exist")
        try:
            dst_fd = self._walk(new[:-1], create=True)
            assert dst_fd is not None
            try:
                with translated_os_errors(f"rename {old_rel} -> {new_rel}"):
                    _replace_at(src_fd, old[-1], dst_fd, new[-1])
                    _fsync_dir(dst_fd)
            finally:
                close_dir(dst_fd)
        finally:
            close_dir(src_fd)

    def mkdir(self, rel: str) -> None:
        """Create directory ``rel`` and its parents (``mkdir -p``); existing is fine."""
        fd = self._walk(self.check_relpath(rel), create=True)
        if fd is not None:
            close_dir(fd)

    def stat(self, rel: str) -> os.stat_result | None:
        """``lstat`` of ``rel`` (links not followed), or None when it does not exist."""
        parts = self.check_relpath(rel)
        dir_fd = self._walk(parts[:-1], create=False)
        if dir_fd is None:
            return None
        try:
            with translated_os_errors(f"stat {rel}"):
                try:
                    return _lstat_at(dir_fd, parts[-1])
                except FileNotFoundError:
                    return None
        finally:
            close_dir(dir_fd)

    def open_read(self, rel: str) -> int:
        """A read-only descriptor of the regular file ``rel``; the caller closes it.

        A symlink at ``rel`` is refused (HostilePath): reading through it could leave the root.
        """
        parts = self.check_relpath(rel)
        dir_fd = self._walk(parts[:-1], create=False)
        if dir_fd is None:
            raise LocalError(f"open {rel}: parent directory does not exist")
        try:
            try:
                return open_at(dir_fd, parts[-1], os.O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_BINARY)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise HostilePath(f"open {rel}: is a symlink") from exc
                raise local_error(exc, f"open {rel}") from exc
        finally:
            close_dir(dir_fd)
