"""Persistent part tracker: race-free reassembly and exactly-once completion (spec 6.7, 6.8).

A *file version* is (final path, block size, block count, version), where version is the
notice's ``mtime`` header or else its ``pubTime``. For ``inplace on`` its verified blocks are
written at their offsets into one shared data file (:mod:`sarra.parts.assembly`) and recorded
here; when the last missing block is recorded, exactly one caller gets a :class:`Completion`.

Locking model: one ``fcntl.flock`` lock file per final path, in a state directory, keyed by a
hash of (root, final path). Chosen over single ownership because several instances consume one
queue and any of them may receive any block; ``flock`` works alike between processes and
between threads (each lock is taken on its own open file description), needs no daemon, and
the kernel releases it when a holder dies, so a SIGKILLed instance never wedges a file. A lock
file is only unlinked by a holder; a waiter that then acquires a lock on an unlinked inode
notices (inode differs from the path's) and retries, so removal is race-free too.

State directory layout (``state_dir`` is per component/config, on local disk; pump nodes that
write one shared tree share it instead, on that file system: option ``parts_dir``)::

    locks/<key>.lock     flock target for everything about this final path
    open/<key>.json      record of the version being received (one per final path)
    done/<key>.json      record of the last completed version (late blocks get 304)
    owners/<key>.owner   flock held by the caller running on_file (released by death)
    locks/.new           flock serializing the open-tracker bound check

Every writer of a version holds a shared ``flock`` on its data file while its ticket is
open; :meth:`PartTracker.abandon` discards a version whose only block failed when it can take
that lock exclusively (no other writer at work), so a bogus claim leaves nothing behind.

Records are rewritten whole under the lock: temp file, fsync, rename, fsync directory. The
caller fsyncs block data *before* :meth:`PartTracker.mark`, so a recorded block is durable.

Completion steps (``step`` in the record): ``receiving`` -> all blocks present -> ``placing``
(persisted with the last block) -> data cut to size, mode and mtime set, fsync'd, renamed to the
final name -> ``placed`` -> caller runs ``on_file`` -> :meth:`PartTracker.finish` writes the
``done`` record. The caller running ``on_file`` holds the owner lock: while it lives, others get
``FINISHING``; if it dies, the next :meth:`~PartTracker.mark` of that version or
:meth:`~PartTracker.recover` takes over (``Completion.resumed``) from the recorded step. Once
``done`` is recorded, ``on_file`` is never offered again; a crash after ``on_file`` ran but
before ``finish`` recorded it offers it once more (the only window, and unavoidable).

A *growing* file (:mod:`sarra.parts.growing`) is a version keyed by (final path, block size,
growth id) instead: its provisional blocks raise the block count as they come, its size is
unknown until a final block's notice sets count and size for good (``size_final``), and it
is complete only then, with every block of that count present. A block beyond, or a final
count contradicting, what is recorded is refused (:class:`MalformedMessage`).

``inplace off`` (``.Part`` files kept separately) is not tracked here: those blocks are placed
and re-announced one by one, and their leftovers are ordinary files for housekeeping.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from sarra import osport
from sarra.errors import LocalError, MalformedMessage, translated_os_errors
from sarra.localfs.confined import SafeRoot
from sarra.notice import PartSpec
from sarra.parts import assembly
from sarra.parts.assembly import Ticket, check_spec, known_size

#: default bound on versions tracked at once (spec 9.5)
DEFAULT_MAX_OPEN = 1024
#: default age after which an incomplete version is expired (spec 6.8)
DEFAULT_EXPIRY = 24 * 3600.0

_RECEIVING, _PLACING, _PLACED = "receiving", "placing", "placed"


class MarkStatus(Enum):
    """What :meth:`PartTracker.mark` did with a block."""

    RECORDED = "recorded"  #: block noted; the file is not complete yet
    COMPLETE = "complete"  #: this caller owns completion (``Marked.completion`` is set)
    DUPLICATE = "duplicate"  #: block already present, file not complete yet (304)
    DONE = "done"  #: the version is already complete (304)
    FINISHING = "finishing"  #: another live caller is completing the version (304)
    STALE = "stale"  #: the ticket's version was superseded or expired; block discarded


@dataclass(frozen=True, slots=True)
class Marked:
    """Answer of :meth:`PartTracker.mark`: status, progress, and maybe the completion."""

    status: MarkStatus
    present: int
    count: int
    completion: Completion | None = None


@dataclass(slots=True)
class Completion:
    """The right, held by exactly one caller, to finish a placed file version.

    The file is already under its final name with its size, mode and mtime. The holder runs
    ``on_file`` once, then calls :meth:`PartTracker.finish`; if it cannot, it calls
    :meth:`PartTracker.release` so another caller (or :meth:`PartTracker.recover`) can retry.
    ``resumed`` is True when this caller took over from a dead one.
    """

    final_rel: str
    version: str
    block_size: int
    block_count: int
    file_size: int
    resumed: bool
    key: str = field(repr=False)
    owner_fd: int = field(repr=False)
    #: every block's sum (wire form, by block number) when each was given to :meth:`mark`
    block_sums: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Expired:
    """A version removed by :meth:`PartTracker.expire` before completing (report 499)."""

    final_rel: str
    version: str
    block_size: int
    block_count: int
    present: int
    updated: float
    #: what :meth:`PartTracker.begin` was given as ``about`` (e.g. the first block's notice)
    about: dict[str, Any] | None = None


@dataclass(slots=True)
class _Record:
    final_rel: str
    version: str
    block_size: int
    block_count: int
    data_rel: str
    present: bytearray
    file_size: int | None = None
    size_final: bool = False
    step: str = _RECEIVING
    mtime: float | None = None
    mode: int | None = None
    updated: float = 0.0
    about: dict[str, Any] | None = None
    #: a growing file (see the module docstring): the block count is provisional until a
    #: final notice sets it (``size_final``), and a version is (final path, block size, id)
    growing: bool = False

    def same_version(self, version: str, spec: PartSpec, growing: bool = False) -> bool:
        if growing or self.growing:
            return (self.growing, self.version, self.block_size) == (
                growing,
                version,
                spec.block_size,
            )
        return (self.version, self.block_size, self.block_count) == (
            version,
            spec.block_size,
            spec.block_count,
        )

    def incomplete(self, present: int) -> bool:
        """Whether blocks are still missing (or, growing, the final size is still unknown)."""
        return present < self.block_count or (self.growing and not self.size_final)

    def grow(self, spec: PartSpec, final: bool) -> bool:
        """Take a growing file's block ``spec`` into account; True when the record changed.

        A provisional block may raise the block count; a final one sets the count and the
        size for good. Raises :class:`MalformedMessage` for a block beyond a final count or
        a final count that contradicts another final one or blocks already present.
        """
        cnt = spec.block_count
        if self.size_final:
            if cnt > self.block_count or (final and cnt != self.block_count):
                raise MalformedMessage(
                    f"growing {self.final_rel}: parts {spec.wire()!r} contradict the final "
                    f"count of {self.block_count} blocks"
                )
            return False
        if final:
            beyond = any(self.has(n) for n in range(cnt, len(self.present) * 8))
            if beyond:
                raise MalformedMessage(
                    f"growing {self.final_rel}: final parts {spec.wire()!r} end before "
                    "blocks already received"
                )
            self.block_count, self.file_size, self.size_final = cnt, spec.file_size, True
            self.present = self.present[: (cnt + 7) // 8]
            self.present.extend(bytes((cnt + 7) // 8 - len(self.present)))
            return True
        if cnt <= self.block_count:
            return False
        self.block_count = cnt
        self.present.extend(bytes((cnt + 7) // 8 - len(self.present)))
        return True

    def has(self, n: int) -> bool:
        return bool(self.present[n >> 3] & (1 << (n & 7)))

    def count_present(self) -> int:
        return sum(bin(b).count("1") for b in self.present)

    def dump(self) -> bytes:
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        d["present"] = self.present.hex()
        return json.dumps(d, sort_keys=True).encode()

    @classmethod
    def load(cls, raw: bytes) -> _Record:
        d = json.loads(raw)
        d["present"] = bytearray.fromhex(d["present"])
        return cls(**d)


class PartTracker:
    """Tracks file versions received in parts under one destination ``root``.

    ``state_dir`` holds the records (created if missing). At most ``max_open`` versions are
    tracked at once; beyond that :meth:`begin` refuses new ones (417) while known ones go on.
    """

    def __init__(
        self, state_dir: str | Path, root: SafeRoot, *, max_open: int = DEFAULT_MAX_OPEN
    ) -> None:
        self.state_dir = Path(state_dir)
        self.root = root
        self.max_open = max_open
        self._root_id = os.fsencode(os.path.realpath(root.root))
        for sub in ("locks", "open", "done", "owners", "sums"):
            with translated_os_errors(f"create state directory {self.state_dir / sub}"):
                (self.state_dir / sub).mkdir(parents=True, exist_ok=True)

    # locking ------------------------------------------------------------------------------

    def key_for(self, final_rel: str) -> tuple[str, str]:
        """(state key, normalized path) of a final path; HostilePath when not confined."""
        norm = "/".join(self.root.check_relpath(final_rel))
        digest = hashlib.sha256(self._root_id + b"\0" + norm.encode())
        return digest.hexdigest()[:40], norm

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        """Hold the flock on ``locks/<name>``; retries if the lock file was unlinked meanwhile."""
        path = self.state_dir / "locks" / name
        while True:
            with translated_os_errors(f"lock {path}"):
                fd = os.open(
                    path, os.O_RDWR | os.O_CREAT | osport.O_CLOEXEC | osport.O_BINARY, 0o600
                )
            try:
                osport.lock(fd, exclusive=True)
                try:
                    current = os.stat(path)
                except FileNotFoundError:
                    current = None
                mine = os.fstat(fd)
                if current is not None and (current.st_ino, current.st_dev) == (
                    mine.st_ino,
                    mine.st_dev,
                ):
                    yield
                    return
            finally:
                os.close(fd)  # closing releases the flock

    # records ------------------------------------------------------------------------------

    def _path(self, kind: str, key: str) -> Path:
        return self.state_dir / kind / f"{key}.json"

    def _read(self, kind: str, key: str) -> _Record | None:
        try:
            raw = self._path(kind, key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LocalError(f"read part state {kind}/{key}: {exc.strerror}") from exc
        try:
            return _Record.load(raw)
        except (ValueError, TypeError, KeyError):
            # cannot happen with rename-based writes short of disk corruption; such a record
            # is unusable, so tracking restarts (its data file, if any, expires by age)
            return None

    def _write(self, kind: str, key: str, rec: _Record) -> None:
        path = self._path(kind, key)
        tmp = path.with_suffix(".tmp")
        with translated_os_errors(f"write part state {path}"):
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | osport.O_CLOEXEC | osport.O_BINARY,
                0o600,
            )
            try:
                os.write(fd, rec.dump())
                os.fsync(fd)
            finally:
                os.close(fd)
            osport.replace(tmp, path)
            osport.fsync_dir(path.parent)

    def _unlink(self, path: Path) -> None:
        with translated_os_errors(f"remove {path}"), contextlib.suppress(FileNotFoundError):
            try:
                os.unlink(path)
            except PermissionError:
                # Windows: a lock file another holder has open cannot be removed; it stays
                # (the next holder finds the same file, which is all the protocol needs)
                if not (osport.WINDOWS and path.parent.name in ("locks", "owners")):
                    raise

    def _discard(self, key: str, rec: _Record) -> None:
        """Drop a version being received: its data file, owner lock, block sums and record."""
        assembly.remove_data(self.root, rec.data_rel)
        self._unlink(self.state_dir / "owners" / f"{key}.owner")
        self._unlink(self._sums_path(key))
        self._unlink(self._path("open", key))

    # public API ---------------------------------------------------------------------------

    def begin(
        self,
        final_rel: str,
        spec: PartSpec,
        version: str,
        *,
        mtime: float | None = None,
        mode: int | None = None,
        about: dict[str, Any] | None = None,
        growing: bool = False,
        final: bool = False,
    ) -> Ticket:
        """Open (or start) tracking of a version for the block ``spec`` describes.

        ``version`` is the notice's mtime header, or else its pubTime. A different version
        of the same final path discards the one being received (data and record, never
        mixed). ``mtime``/``mode`` are applied at completion. ``about`` (JSON-able) is kept
        with a new version and handed back if it expires, so its loss can be reported.

        Raises :class:`MalformedMessage` for impossible ``parts`` or when ``max_open``
        versions are already tracked, :class:`HostilePath`, :class:`LocalError`/
        :class:`DiskFull`.

        ``growing``: the block belongs to a growing file whose ``version`` is its growth id;
        ``final``: its ``parts`` give the final block count and remainder (else they are
        provisional: only the block's own range is meaningful).
        """
        check_spec(spec)
        key, norm = self.key_for(final_rel)
        size, size_final = (None, False) if growing else known_size(spec)
        with self._lock(f"{key}.lock"):
            done = self._read("done", key)
            if done is not None and done.same_version(version, spec, growing):
                return Ticket(key, spec, version, norm, None, None, growing=growing)
            rec = self._read("open", key)
            if rec is not None and not rec.same_version(version, spec, growing):
                self._discard(key, rec)
                rec = None
            if done is not None:
                self._unlink(self._path("done", key))  # a newer version replaces it
                self._unlink(self._sums_path(key))
            fd: int | None = None
            try:
                if rec is not None and rec.step == _RECEIVING:
                    fd = assembly.open_data(self.root, rec.data_rel, create=False)
                    if fd is None:  # data lost (removed by hand): start over
                        self._discard(key, rec)
                        rec = None
                if rec is None:
                    rec, fd = self._create(key, norm, spec, version, about, growing)
                changed = rec.grow(spec, final) if growing and rec.step == _RECEIVING else False
                if size is not None and (not rec.size_final) and rec.file_size != size:
                    rec.file_size, changed = size, True
                if size_final and not rec.size_final:
                    rec.size_final, changed = True, True
                # a growing file's time and mode are those its final notices give
                settles = final or not growing or rec.mtime is None
                if settles and (mtime, mode) != (rec.mtime, rec.mode) and rec.step == _RECEIVING:
                    rec.mtime, rec.mode, changed = mtime, mode, True
                if changed:
                    self._write("open", key, rec)
                # Nothing is reserved here on the notice's word: each block reserves its own
                # range once its data arrives (Ticket.reserve). The shared lock says "a writer
                # is at work on this data file" to abandon(), and is taken under the key lock
                # so abandon() (also under it) cannot miss a writer that has just begun.
                if fd is not None:
                    osport.lock(fd, exclusive=False)
                return Ticket(key, spec, version, norm, bytes(rec.present), fd, growing=growing)
            except BaseException:
                if fd is not None:
                    os.close(fd)
                raise

    def abandon(self, ticket: Ticket) -> bool:
        """Release what was created for ``ticket``'s version when its block failed.

        Closes the ticket. The version (data file and record) is discarded when no block of
        it is present and no other writer has it open (each holds a shared ``flock`` on the
        data file from :meth:`begin` until it closes its ticket): a bogus claim then leaves
        nothing behind, while a version with a verified block, or another block in
        progress, is kept for its other blocks (and expires as usual if they never come).
        Returns True when the version was discarded.
        """
        ticket.close()
        if ticket.done:
            return False
        with self._lock(f"{ticket.key}.lock"):
            rec = self._read("open", ticket.key)
            if (
                rec is None
                or not rec.same_version(ticket.version, ticket.spec, ticket.growing)
                or rec.step != _RECEIVING
                or rec.count_present() > 0
            ):
                return False
            fd = assembly.open_data(self.root, rec.data_rel, create=False)
            if fd is not None:
                try:
                    osport.lock(fd, exclusive=True, blocking=False)
                except BlockingIOError:
                    return False  # another writer is at work on a block of this version
                finally:
                    os.close(fd)
            self._discard(ticket.key, rec)
            if self._read("done", ticket.key) is None:
                self._unlink(self.state_dir / "locks" / f"{ticket.key}.lock")
            return True

    def _create(
        self,
        key: str,
        norm: str,
        spec: PartSpec,
        version: str,
        about: dict[str, Any] | None,
        growing: bool = False,
    ) -> tuple[_Record, int]:
        with self._lock(".new"):
            tracked = len(self._keys("open"))
            if tracked >= self.max_open:
                raise MalformedMessage(
                    f"{tracked} multi-part files already tracked (bound {self.max_open}): "
                    f"refusing {norm}"
                )
            for _ in range(10):
                data_rel = assembly.data_rel_for(self.root, norm)
                try:
                    fd = assembly.open_data(self.root, data_rel, create=True)
                except LocalError as exc:
                    if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.EEXIST:
                        continue
                    raise
                assert fd is not None
                rec = _Record(
                    final_rel=norm,
                    version=version,
                    block_size=spec.block_size,
                    block_count=spec.block_count,
                    data_rel=data_rel,
                    present=bytearray((spec.block_count + 7) // 8),
                    updated=time.time(),
                    about=about,
                    growing=growing,
                )
                try:
                    self._write("open", key, rec)
                except BaseException:
                    os.close(fd)
                    assembly.remove_data(self.root, data_rel)
                    raise
                return rec, fd
            raise LocalError(f"could not pick a free data file name for {norm}")

    def mark(
        self, ticket: Ticket, block_number: int | None = None, *, block_sum: str | None = None
    ) -> Marked:
        """Record a verified, fsync'd block as present; complete the file if it was the last.

        "Mark present" and "was it the last" are one step under the lock, so exactly one
        caller, across processes and threads, gets ``COMPLETE`` with a :class:`Completion`
        (the file is then in place). ``block_number`` defaults to the ticket's block.
        ``block_sum`` (the block's verified sum, wire form) is kept with the version so the
        whole file can be announced block by block once complete (:attr:`Completion.block_sums`,
        :meth:`block_sums`).
        """
        n = ticket.spec.block_number if block_number is None else block_number
        if not 0 <= n < ticket.spec.block_count:
            raise MalformedMessage(f"block {n} out of range for {ticket.spec.wire()!r}")
        with self._lock(f"{ticket.key}.lock"):
            done = self._read("done", ticket.key)
            if done is not None and done.same_version(ticket.version, ticket.spec, ticket.growing):
                return Marked(MarkStatus.DONE, done.block_count, done.block_count)
            rec = self._read("open", ticket.key)
            if rec is None or not rec.same_version(ticket.version, ticket.spec, ticket.growing):
                return Marked(MarkStatus.STALE, 0, ticket.spec.block_count)
            if n >= rec.block_count:
                raise MalformedMessage(f"block {n} beyond the {rec.block_count} of {rec.final_rel}")
            duplicate = rec.has(n)
            if not duplicate:
                if block_sum is not None:
                    self._append_sum(ticket.key, rec.version, n, block_sum)
                rec.present[n >> 3] |= 1 << (n & 7)
                rec.updated = time.time()
            present = rec.count_present()
            if rec.incomplete(present):
                if not duplicate:
                    self._write("open", ticket.key, rec)
                status = MarkStatus.DUPLICATE if duplicate else MarkStatus.RECORDED
                return Marked(status, present, rec.block_count)
            return self._complete(ticket.key, rec, persist=not duplicate)

    def _complete(self, key: str, rec: _Record, *, persist: bool) -> Marked:
        """Under the lock, with every block present: claim and place (or resume placing)."""
        fresh = rec.step == _RECEIVING
        if fresh:
            rec.step = _PLACING
            persist = True
        if persist:
            self._write("open", key, rec)
        owner = self._claim(key)
        if owner is None:
            return Marked(MarkStatus.FINISHING, rec.block_count, rec.block_count)
        try:
            if rec.step == _PLACING:
                self._place(key, rec)
            assert rec.file_size is not None
            completion = Completion(
                final_rel=rec.final_rel,
                version=rec.version,
                block_size=rec.block_size,
                block_count=rec.block_count,
                file_size=rec.file_size,
                resumed=not fresh,
                key=key,
                owner_fd=owner,
                block_sums=self._read_sums(key, rec.version, rec.block_count),
            )
        except BaseException:
            os.close(owner)
            raise
        return Marked(MarkStatus.COMPLETE, rec.block_count, rec.block_count, completion)

    def _place(self, key: str, rec: _Record) -> None:
        if not rec.size_final or rec.file_size is None:
            raise LocalError(f"{rec.final_rel}: complete but the size is unknown (bad record)")
        fd = assembly.open_data(self.root, rec.data_rel, create=False)
        if fd is None:
            # a crash after the rename and before recording it: the data is in place
            if self.root.stat(rec.final_rel) is None:
                raise LocalError(f"{rec.final_rel}: data file vanished before placement")
        else:
            try:
                assembly.place(
                    self.root,
                    fd,
                    rec.data_rel,
                    rec.final_rel,
                    size=rec.file_size,
                    mtime=rec.mtime,
                    mode=rec.mode,
                )
            finally:
                os.close(fd)
        rec.step = _PLACED
        self._write("open", key, rec)

    def _claim(self, key: str) -> int | None:
        """The owner lock of ``key`` (held by the caller), or None if a live caller holds it."""
        path = self.state_dir / "owners" / f"{key}.owner"
        with translated_os_errors(f"lock {path}"):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | osport.O_CLOEXEC | osport.O_BINARY, 0o600)
        try:
            osport.lock(fd, exclusive=True, blocking=False)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def finish(self, completion: Completion) -> bool:
        """Record that ``on_file`` ran for the completed version; it is never offered again.

        Returns False when the version was meanwhile superseded or expired (nothing recorded).
        """
        try:
            with self._lock(f"{completion.key}.lock"):
                rec = self._read("open", completion.key)
                if rec is None or rec.version != completion.version or rec.step != _PLACED:
                    return False
                rec.updated = time.time()
                rec.step = "done"
                self._write("done", completion.key, rec)
                self._unlink(self._path("open", completion.key))
                self._unlink(self.state_dir / "owners" / f"{completion.key}.owner")
                return True
        finally:
            self.release(completion)

    def release(self, completion: Completion) -> None:
        """Give up a completion without finishing (on_file failed): another may retry it."""
        if completion.owner_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(completion.owner_fd)
            completion.owner_fd = -1

    def recover(self) -> list[Completion]:
        """Claim completions left by dead callers (all blocks present, not finished).

        Call at start-up and from housekeeping. Each returned Completion is then handled
        like one from :meth:`mark`.
        """
        found: list[Completion] = []
        for key in self._keys("open"):
            with self._lock(f"{key}.lock"):
                rec = self._read("open", key)
                if rec is None or rec.incomplete(rec.count_present()):
                    continue
                marked = self._complete(key, rec, persist=False)
                if marked.completion is not None:
                    found.append(marked.completion)
        return found

    def expire(self, older_than: float = DEFAULT_EXPIRY, now: float | None = None) -> list[Expired]:
        """Remove versions with no progress for ``older_than`` seconds; report them (499).

        Their data files and records go. A version whose completion is held by a live caller
        is kept. Completed-version records of that age are dropped silently (late blocks
        after that start a new version, which expires in turn).
        """
        now = time.time() if now is None else now
        expired: list[Expired] = []
        for key in self._keys("open"):
            with self._lock(f"{key}.lock"):
                rec = self._read("open", key)
                if rec is None or now - rec.updated < older_than:
                    continue
                if rec.step == _PLACED:
                    continue  # in place, on_file pending: recover() offers it, never 499
                owner = self._claim(key)
                if owner is None:
                    continue
                os.close(owner)
                self._discard(key, rec)
                if self._read("done", key) is None:
                    self._unlink(self.state_dir / "locks" / f"{key}.lock")
                expired.append(
                    Expired(
                        rec.final_rel,
                        rec.version,
                        rec.block_size,
                        rec.block_count,
                        rec.count_present(),
                        rec.updated,
                        rec.about,
                    )
                )
        for key in self._keys("done"):
            with self._lock(f"{key}.lock"):
                rec = self._read("done", key)
                if rec is not None and now - rec.updated < older_than:
                    continue
                self._unlink(self._path("done", key))
                if not self._path("open", key).exists():
                    self._unlink(self._sums_path(key))
                    self._unlink(self.state_dir / "locks" / f"{key}.lock")
        return expired

    def block_sums(self, ticket: Ticket) -> tuple[int, tuple[str, ...]] | None:
        """(file size, every block's sum) of the complete version ``ticket`` found done, when
        all sums were kept; None otherwise (e.g. to announce it again after a redelivery)."""
        with self._lock(f"{ticket.key}.lock"):
            done = self._read("done", ticket.key)
            if done is None or not done.same_version(ticket.version, ticket.spec, ticket.growing):
                return None
            if done.file_size is None:
                return None
            sums = self._read_sums(ticket.key, done.version, done.block_count)
            return None if sums is None else (done.file_size, sums)

    def _sums_path(self, key: str) -> Path:
        return self.state_dir / "sums" / f"{key}.txt"

    def _append_sum(self, key: str, version: str, n: int, block_sum: str) -> None:
        """Add one line ``<version> <n> <sum>`` (made durable before the block is marked)."""
        if any(c.isspace() for c in block_sum) or any(c.isspace() for c in version):
            return  # not representable in this format; the file will not be announced
        path = self._sums_path(key)
        with translated_os_errors(f"write block sums {path}"):
            fd = os.open(
                path,
                os.O_WRONLY | os.O_CREAT | os.O_APPEND | osport.O_CLOEXEC | osport.O_BINARY,
                0o600,
            )
            try:
                os.write(fd, f"{version} {n} {block_sum}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def _read_sums(self, key: str, version: str, count: int) -> tuple[str, ...] | None:
        try:
            text = self._sums_path(key).read_text("utf-8", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LocalError(f"read block sums of {key}: {exc.strerror}") from exc
        found: dict[int, str] = {}
        for line in text.splitlines():
            fields_ = line.split(" ")
            if len(fields_) == 3 and fields_[0] == version and fields_[1].isdigit():
                found[int(fields_[1])] = fields_[2]
        if len(found) != count or any(n not in found for n in range(count)):
            return None
        return tuple(found[n] for n in range(count))

    def tracked(self) -> int:
        """How many versions are being received now."""
        return len(self._keys("open"))

    def _keys(self, kind: str) -> list[str]:
        try:
            names = os.listdir(self.state_dir / kind)
        except OSError as exc:
            raise LocalError(f"list part state {kind}: {exc.strerror}") from exc
        return sorted(n[:-5] for n in names if n.endswith(".json"))


__all__ = [
    "Completion",
    "Expired",
    "MarkStatus",
    "Marked",
    "PartTracker",
    "Ticket",
    "check_spec",
    "known_size",
]
