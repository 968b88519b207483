"""Confined file operations for in-place reassembly of parts (spec 6.7, 9.2).

One *data file* per file version collects the verified blocks of a multi-part file at their
offsets. Unlike :meth:`SafeRoot.open_inflight` (one writer, one descriptor), the data file is
shared: every process and thread that receives a block of the version opens it read-write and
``pwrite``\\s its block. So:

- it is created ``O_CREAT|O_EXCL|O_NOFOLLOW`` (mode 0o600) under a fresh random name beside
  the final name (same file system, so the final rename is atomic), and later opened
  ``O_RDWR|O_NOFOLLOW`` by name; a symlink or non-regular file there is refused;
- its name (``.<final name>.<random>.sr-part``) deliberately carries no in-flight writer token,
  so :meth:`SafeRoot.sweep_inflight` never removes it: the part tracker owns its expiry;
- parents are walked through the root's confined walker (no symlinked parent is followed).

Also here: :class:`Ticket`, a writer's handle on the data file for one block, and the
``parts`` checks the tracker applies (:func:`check_spec`, :func:`known_size`).

OS errors become :class:`DiskFull` (ENOSPC/EDQUOT) or :class:`LocalError` through
:func:`sarra.errors.translated_os_errors`.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat as stat_mod
import sys
from contextlib import suppress

from sarra.closing import Closing
from sarra.errors import HostilePath, LocalError, MalformedMessage, translated_os_errors
from sarra.localfs.confined import O_NOFOLLOW, Dir, SafeRoot, close_dir, open_at
from sarra.localfs.streaming import DirectWriter, allocate, reserve
from sarra.notice import PartSpec
from sarra.osport import O_BINARY, O_CLOEXEC, fchmod, futime, pwrite

#: suffix of shared reassembly data files
DATA_SUFFIX = ".sr-part"
_NAME_MAX = 255
#: most blocks a tracked file may have: a 2 MiB record bitmap (1 TiB in 64 KiB blocks)
MAX_BLOCKS = 1 << 24
#: bytes of a block kept in the page cache behind its writer (see :meth:`Ticket.pwrite`)
WRITEBACK_LAG = 8 << 20


def data_rel_for(root: SafeRoot, final_rel: str) -> str:
    """A fresh data-file path (relative to the root) beside ``final_rel``.

    Raises :class:`HostilePath` when ``final_rel`` is not a confined path.
    """
    parts = root.check_relpath(final_rel)
    token = secrets.token_hex(6)
    name = f".{parts[-1]}.{token}{DATA_SUFFIX}"
    if len(name.encode("utf-8")) > _NAME_MAX:
        name = f".{token}{DATA_SUFFIX}"
    return "/".join((*parts[:-1], name))


def _open_dir(root: SafeRoot, dirs: tuple[str, ...], create: bool) -> Dir | None:
    # SafeRoot has no public "open this directory confined" yet; its walker is the one
    # place that knows how to descend without following links, so reuse it rather than
    # duplicate it (see the report: a public SafeRoot.open_dir would remove this access).
    return root._walk(dirs, create=create)


def open_data(root: SafeRoot, data_rel: str, *, create: bool) -> int | None:
    """A read-write descriptor of the data file ``data_rel``; the caller closes it.

    ``create``: make it (exclusively: an existing name is an error, never adopted) and its
    parent directories. Without ``create``, returns None when it (or a parent) is missing.
    Raises :class:`HostilePath` for a symlink or a non-regular file at ``data_rel``.
    """
    parts = root.check_relpath(data_rel)
    dir_fd = _open_dir(root, parts[:-1], create)
    if dir_fd is None:
        return None
    flags = os.O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_BINARY
    if create:
        flags |= os.O_CREAT | os.O_EXCL
    try:
        try:
            fd = open_at(dir_fd, parts[-1], flags, 0o600)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise HostilePath(f"data file {data_rel} is a symlink") from exc
            with translated_os_errors(f"open data file {data_rel}"):
                raise
        if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise HostilePath(f"data file {data_rel} is not a regular file")
        return fd
    finally:
        close_dir(dir_fd)


def presize(fd: int, size: int, what: str) -> None:
    """Grow the data file to ``size`` bytes; never shrinks it.

    The space is allocated at once where the file system can (fallocate): a disk too small
    for the file fails here (DiskFull) before any block is fetched, and blocks written by
    direct I/O land in allocated extents. Elsewhere the file is grown sparse.
    """
    with translated_os_errors(f"size {what}"):
        if os.fstat(fd).st_size < size and not allocate(fd, size):
            os.ftruncate(fd, size)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int, what: str) -> None:
    """Write all of ``data`` at ``offset``."""
    view = memoryview(data)
    with translated_os_errors(f"write {what} at {offset}"):
        while view:
            written = pwrite(fd, view, offset)
            view = view[written:]
            offset += written


def place(
    root: SafeRoot,
    fd: int,
    data_rel: str,
    final_rel: str,
    *,
    size: int,
    mtime: float | None,
    mode: int | None,
) -> None:
    """Put the complete data file in place under ``final_rel``, atomically and durably.

    In order: cut to exactly ``size`` bytes, set mode (masked by the root's policy) and
    mtime on the descriptor, fsync, then rename over the final name (which fsyncs the
    directory). Metadata is set before the rename so the final name appears complete.
    Idempotent up to the rename: after a crash it may be called again with a fresh ``fd``.
    """
    with translated_os_errors(f"finish {data_rel}"):
        os.ftruncate(fd, size)
        fchmod(fd, root.file_mode_for(mode))
        if mtime is not None:
            futime(fd, mtime)
        os.fsync(fd)
    root.rename(data_rel, final_rel)


def remove_data(root: SafeRoot, data_rel: str) -> bool:
    """Unlink the data file (False when already gone; never raises for a missing parent)."""
    with suppress(HostilePath):
        return root.remove(data_rel)
    return False


class Ticket(Closing):
    """One caller's handle on a version while it writes one block.

    Check :attr:`done` (304, nothing to write) and :meth:`needs` (False: the block is already
    present; skip the download but still :meth:`PartTracker.mark`). Write the verified block
    with :meth:`write_block` (or stream with :meth:`pwrite` then :meth:`fsync`), then mark it.
    Close the ticket afterwards (context manager).
    """

    def __init__(
        self,
        key: str,
        spec: PartSpec,
        version: str,
        final_rel: str,
        present: bytes | None,
        fd: int | None,
        *,
        growing: bool = False,
    ) -> None:
        self.key = key
        #: the block belongs to a growing file (its version is the growth id)
        self.growing = growing
        self.spec = spec
        self.version = version
        self.final_rel = final_rel
        self.done = present is None
        """the version is already complete: report 304, write nothing"""
        self._present = present or b""
        self._fd = fd
        # start of the range this writer has not yet asked the kernel to drop (see pwrite)
        self._kept_from: int | None = None
        self._direct = DirectWriter(fd, self.pwrite, final_rel) if fd is not None else None

    def needs(self, block_number: int | None = None) -> bool:
        """True when the block (default: this ticket's) still has to be written."""
        n = self.spec.block_number if block_number is None else block_number
        if self.done:
            return False
        return not (n >> 3 < len(self._present) and self._present[n >> 3] & (1 << (n & 7)))

    def reserve(self) -> bool:
        """Reserve this ticket's block range in the data file if the free space allows it
        (:func:`sarra.localfs.streaming.reserve`); call it once the block's data arrives."""
        if self._fd is None:
            return False
        return reserve(self._fd, self.spec.offset, self.spec.length, self.final_rel)

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        """Write ``data`` at ``offset`` in the data file (for streaming a block).

        The written range starts going to disk at once, so a block streams to the disk while
        it arrives: the :meth:`fsync` before marking finds little left to flush, and dirty
        pages never pile up until the kernel stalls the writer. This is advice only; the
        durability guarantee is still :meth:`fsync`'s.
        """
        if self._fd is None:
            raise LocalError(f"no data file open for {self.final_rel} (done or closed)")
        pwrite_all(self._fd, data, offset, self.final_rel)
        self._write_behind(offset, len(data))

    def pwrite_aligned(self, view: memoryview, offset: int) -> None:
        """Write ``view`` (starting on a page boundary in memory, e.g. a prefix of an
        ``mmap`` buffer) at ``offset``, by direct I/O where possible (see
        :class:`~sarra.localfs.streaming.DirectWriter`); :meth:`fsync` is still what makes the
        block durable."""
        if self._direct is None:
            raise LocalError(f"no data file open for {self.final_rel} (done or closed)")
        self._direct.pwrite(view, offset)

    @property
    def direct_fd(self) -> int | None:
        """The O_DIRECT descriptor in use (-1: refused or closed; None: not used yet)."""
        return None if self._direct is None else self._direct.direct_fd

    def _write_behind(self, offset: int, nbytes: int) -> None:
        # On Linux, POSIX_FADV_DONTNEED starts writeback of the dirty pages in the range
        # (without waiting) and drops the clean ones. So: advise the range just written
        # (writeback starts), and once WRITEBACK_LAG lies behind, the older range (written
        # back by now: dropped, so the block does not linger in the page cache). Unlike
        # sync_file_range, it never reports or consumes a writeback error: those stay for
        # the fsync to raise. Errors of the advice itself are ignored (advice only).
        if sys.platform == "win32" or self._fd is None or nbytes <= 0:
            return
        end = offset + nbytes
        kept = self._kept_from
        if kept is None or not kept <= offset <= kept + 2 * WRITEBACK_LAG:
            kept = offset  # first write, or not sequential: start over from here
        with suppress(OSError):
            os.posix_fadvise(self._fd, offset, nbytes, os.POSIX_FADV_DONTNEED)
            if end - kept > 2 * WRITEBACK_LAG:
                drop = end - WRITEBACK_LAG - kept
                os.posix_fadvise(self._fd, kept, drop, os.POSIX_FADV_DONTNEED)
                kept += drop
        self._kept_from = kept

    def fsync(self) -> None:
        """Make the written data durable; required before marking."""
        if self._fd is not None:
            with translated_os_errors(f"fsync data of {self.final_rel}"):
                os.fsync(self._fd)

    def write_block(self, data: bytes | memoryview) -> None:
        """Write this ticket's verified block at its offset and fsync.

        Raises :class:`MalformedMessage` when ``data`` is not exactly the block's length.
        """
        if len(data) != self.spec.length:
            raise MalformedMessage(
                f"block {self.spec.block_number} of {self.final_rel}: {len(data)} bytes, "
                f"expected {self.spec.length}"
            )
        self.pwrite(data, self.spec.offset)
        self.fsync()

    def close(self) -> None:
        """Close the data file descriptors (idempotent)."""
        if self._direct is not None:
            self._direct.close()
        if self._fd is not None:
            with suppress(OSError):
                os.close(self._fd)
            self._fd = None


def check_spec(spec: PartSpec) -> None:
    """Refuse a ``parts`` value the tracker cannot take (spec 6.3): MalformedMessage.

    Besides the rules of 6.3, the block count is bounded by :data:`MAX_BLOCKS`: the record
    keeps a bit per block, so a claim of 10**15 blocks would otherwise allocate that much
    memory (and write it to disk) before any byte of data arrived.
    """
    bs, cnt, rem, n = spec.block_size, spec.block_count, spec.remainder, spec.block_number
    if spec.method != "i":
        raise MalformedMessage(f"part tracker takes only 'i' parts, not {spec.wire()!r}")
    if bs <= 0 or cnt <= 0 or not 0 <= n < cnt or not 0 <= rem <= bs:
        raise MalformedMessage(f"impossible parts {spec.wire()!r}")
    if cnt > MAX_BLOCKS:
        raise MalformedMessage(f"parts {spec.wire()!r}: more than {MAX_BLOCKS} blocks")


def known_size(spec: PartSpec) -> tuple[int | None, bool]:
    """(file size if this block tells it, whether that size is final).

    The last block's message is authoritative (6.3). Earlier blocks tell it only in sr2 form
    (rem < bs); rem == bs is sr3's form (rem = this block's length) and says nothing.
    """
    if spec.last:
        return spec.file_size, True
    if spec.remainder < spec.block_size:
        return spec.file_size, False
    return None, False
