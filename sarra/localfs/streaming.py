"""Streaming a large body into a file: page-aligned buffers, overlapped hashing, direct I/O.

Used for every transfer of at least :data:`DIRECT_MIN` bytes, whole files
(:func:`sarra.flow.wholefile.download_to`) and blocks of multi-part files
(:mod:`sarra.flow.partial`) alike:

- the body is read into two page-aligned buffers in turn (``readinto`` where the transport's
  ``features.get_into`` says it can; other transports' chunks are copied into them), so
  nothing is allocated per chunk;
- while fewer transfers stream at once in this process than it has CPUs, a helper thread
  hashes chunk *k* while this thread writes it and reads *k+1* (hashlib releases the GIL on
  large buffers); once the transfers alone keep every CPU busy (several blocks of a large
  file in parallel), each hashes its chunks in its own thread instead: the hand-off then only
  adds GIL and futex traffic (measured: ~10 % more CPU per GiB with 4 streams on 2 CPUs).
  Either way chunks are hashed strictly in order, every byte written is hashed;
- the aligned part of each chunk is written with ``O_DIRECT`` (:class:`DirectWriter`): it goes
  to the device as it arrives instead of piling up as dirty pages for the final fsync, and
  evicts nothing from the page cache. Where the file system refuses direct I/O, the page
  cache is used. Durability is still the caller's fsync.

Small transfers keep the plain path: a thread per transfer would cost more than it saves.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import Protocol, TypeVar

from sarra.errors import IntegrityError, Interrupted, local_error
from sarra.osport import O_CLOEXEC, pwrite

_T = TypeVar("_T")

#: transfers at least this long take the aligned, overlapped, direct path
DIRECT_MIN = 1 << 20
#: offset, length and memory alignment that direct I/O writes keep
DIRECT_ALIGN = 4096
#: size of each of the two read buffers of a transfer
BUFFER_SIZE = 1 << 20
_O_DIRECT = getattr(os, "O_DIRECT", 0)
#: free space a reservation must leave on the file system (see :func:`reserve`)
RESERVE_MARGIN = 64 << 20


def _cpu_count() -> int:
    affinity = getattr(os, "sched_getaffinity", None)  # Linux only
    if affinity is not None:
        with suppress(OSError):
            return len(affinity(0))
    return os.cpu_count() or 1


#: the CPUs this process may run on (its affinity, where the platform tells)
CPUS = _cpu_count()


class _Streams:
    """How many :func:`stream` calls run at once in this process (all threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0

    def __enter__(self) -> _Streams:
        with self._lock:
            self.active += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.active -= 1

    def overlap(self) -> bool:
        """True while a helper thread per stream still finds a free CPU: a stream and its
        hasher are two busy threads, so overlap pays while 2 x streams <= CPUs."""
        return 2 * self.active <= CPUS


_STREAMS = _Streams()


class _Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


def copy_into(chunks: Iterable[bytes], buffers: list[memoryview]) -> Iterator[memoryview]:
    """Re-chunk ``chunks`` into ``buffers`` in turn (for transports without get_into)."""
    turn = 0
    buf = buffers[0]
    filled = 0
    try:
        for chunk in chunks:
            data = memoryview(chunk)
            while data:
                k = min(len(data), len(buf) - filled)
                buf[filled : filled + k] = data[:k]
                filled += k
                data = data[k:]
                if filled == len(buf):
                    yield buf
                    turn += 1
                    buf, filled = buffers[turn % len(buffers)], 0
        if filled:
            yield buf[:filled]
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def interruptible(chunks: Iterable[_T], stop: threading.Event | None) -> Iterator[_T]:
    """``chunks`` as they come until ``stop`` is set; then :class:`Interrupted` is raised
    between two chunks (the caller's failure path removes what it wrote) and the source is
    closed. A stopping instance thus leaves within a chunk, not after the whole file; a
    failure of the source once ``stop`` is set (its connection aborted to unblock a read)
    is an :class:`Interrupted` too."""
    source = iter(chunks)
    try:
        for chunk in source:
            if stop is not None and stop.is_set():
                raise Interrupted("stopping: transfer abandoned, the notice will be redelivered")
            yield chunk
    except Interrupted:
        raise
    except Exception as exc:
        if stop is not None and stop.is_set():  # the connection was aborted by the stop
            raise Interrupted(f"stopping: transfer abandoned ({exc})") from exc
        raise
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def stream(
    chunks: Iterator[bytes | memoryview],
    hasher: _Hasher | None,
    write: Callable[[memoryview, int], None],
    *,
    start: int = 0,
    limit: int | None = None,
    what: str,
    progress: Callable[[int], None] | None = None,
    reserve: Callable[[], object] | None = None,
) -> int:
    """Write ``chunks`` at ``start`` onwards while ``hasher`` hashes them; return the count.

    ``reserve`` is called once, when the first non-empty chunk has arrived and before it is
    written: space is reserved for what the origin actually serves, never on a notice's word
    alone (an origin answering 416 or nothing costs no disk).

    Raises :class:`IntegrityError` as soon as more than ``limit`` bytes arrive, and whatever
    ``chunks``, ``write`` and ``reserve`` raise. ``chunks`` is closed in every case. The
    hash of the last chunk is complete when this returns.
    """
    got = 0
    hashing: Future[None] | None = None
    pool: ThreadPoolExecutor | None = None
    try:
        with _STREAMS:
            for data in chunks:
                chunk = memoryview(data)
                if limit is not None and got + len(chunk) > limit:
                    raise IntegrityError(f"{what}: more than the {limit} bytes announced")
                if reserve is not None and len(chunk):
                    reserve()
                    reserve = None
                if hasher is not None:
                    # in order: the previous chunk's hash is complete before this one starts;
                    # a buffer is refilled only two chunks later, by when its hash was waited
                    # for here and its write has returned
                    if hashing is not None:
                        hashing.result()
                        hashing = None
                    if _STREAMS.overlap():
                        if pool is None:
                            pool = ThreadPoolExecutor(1, thread_name_prefix="hash")
                        hashing = pool.submit(hasher.update, chunk)
                    else:
                        hasher.update(chunk)
                write(chunk, start + got)
                got += len(chunk)
                if progress is not None:
                    progress(got)
            if hashing is not None:
                hashing.result()
    finally:
        try:
            if pool is not None:
                pool.shutdown(wait=True)  # a hash in flight ends before its buffer is reused
        finally:
            close = getattr(chunks, "close", None)  # a generator holding a connection
            if close is not None:
                close()
    return got


class DirectWriter:
    """Writes page-aligned views to a file by direct I/O where it can.

    ``fd`` is the file's ordinary descriptor: the same inode is reopened with ``O_DIRECT``
    through ``/proc/self/fd`` (no path lookup, so no race) on first use. ``buffered`` writes
    whatever cannot go direct (an unaligned offset or tail; every write once the file system
    refused). Close it before closing ``fd``.
    """

    def __init__(self, fd: int, buffered: Callable[[memoryview, int], None], what: str) -> None:
        self._fd = fd
        self._buffered = buffered
        self._what = what
        self._direct: int | None = None  # None: not opened yet; -1: unusable

    @property
    def direct_fd(self) -> int | None:
        """The O_DIRECT descriptor (-1 when refused, None before first use)."""
        return self._direct

    def pwrite(self, view: memoryview, offset: int) -> None:
        """Write ``view`` (starting on a page boundary in memory) at ``offset``."""
        n = len(view)
        head = n - n % DIRECT_ALIGN if offset % DIRECT_ALIGN == 0 else 0
        fd = self._open() if head else -1
        if fd >= 0:
            try:
                _pwrite_all(fd, view[:head], offset)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise local_error(exc, f"write {self._what} at {offset}") from exc
                self.close()  # alignment refused by this device: page cache from now on
            else:
                view, offset = view[head:], offset + head
        if len(view):
            self._buffered(view, offset)

    def _open(self) -> int:
        if self._direct is None:
            self._direct = -1
            if _O_DIRECT:
                with suppress(OSError):
                    self._direct = os.open(
                        f"/proc/self/fd/{self._fd}", os.O_WRONLY | _O_DIRECT | O_CLOEXEC
                    )
        return self._direct

    def close(self) -> None:
        """Close the direct descriptor (idempotent); later writes use the page cache."""
        if self._direct is not None and self._direct >= 0:
            with suppress(OSError):
                os.close(self._direct)
        self._direct = -1


def _libc_fallocate() -> Callable[[int, int, int, int], int] | None:
    if sys.platform == "win32":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = getattr(libc, "fallocate64", None) or libc.fallocate
    except (OSError, AttributeError, TypeError):  # not Linux/glibc: sparse files then
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fn.restype = ctypes.c_int
    return fn


_FALLOCATE = _libc_fallocate()


def allocate(fd: int, size: int, offset: int = 0) -> bool:
    """Reserve ``[offset, size)`` on disk and grow the file to at least ``size``, with the
    fallocate(2) system call (never glibc's emulation, which would write the whole file).
    False when the file system cannot, or when the range is empty."""
    if _FALLOCATE is None or size <= offset:
        return False
    if _FALLOCATE(fd, 0, offset, size - offset) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV):
        return False
    raise OSError(err, os.strerror(err))


def reserve(fd: int, offset: int, length: int, what: str, *, margin: int = RESERVE_MARGIN) -> bool:
    """Reserve ``[offset, offset + length)`` of ``fd`` (see :func:`allocate`) if the file
    system keeps ``margin`` bytes free after it; True when reserved.

    The bounded reservation policy: a claim larger than the free space (a lying or simply
    wrong notice, or a file that cannot fit) reserves nothing; the data is then written as it
    arrives, and a disk that really fills fails the write with :class:`DiskFull`. So no claim
    can take the last free bytes of a file system before its data exists.

    Raises :class:`DiskFull`/:class:`LocalError` when the file system refuses.
    """
    if sys.platform == "win32":
        return False  # no fallocate: the data is written as it arrives
    try:
        st = os.fstatvfs(fd)
        if length > st.f_bavail * st.f_frsize - margin:
            return False
        return allocate(fd, offset + length, offset)
    except OSError as exc:
        raise local_error(exc, f"reserve {length} bytes for {what}") from exc


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        written = pwrite(fd, view, offset)
        view = view[written:]
        offset += written
