"""Streamed download, verification and renaming into place of one whole file (spec 5.2, 9.2).

Bytes are hashed as they are written to an in-flight file; only data whose size and sum match
the notice is renamed into place. A mismatch leaves nothing behind (no final name, no in-flight
leftover) and raises :class:`IntegrityError` naming the expected and received values.
"""

from __future__ import annotations

import functools
import os
import stat as stat_mod
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sarra.codec.timestamps import parse_timestamp
from sarra.errors import IntegrityError, LocalError, MalformedMessage
from sarra.integrity.sums import Hasher, new_hasher
from sarra.localfs.confined import InflightFile, SafeRoot
from sarra.localfs.streaming import DIRECT_MIN, DirectWriter, reserve, stream
from sarra.notice import VERIFIABLE_SUMS, Checksum, Notice
from sarra.osport import pread

_READ_SIZE = 1 << 20
#: sums that cannot be checked against data: placed unverified (spec 5.2)
_UNVERIFIED = frozenset("n0a")
#: an announced mtime this close to the local one is "not newer": float/nanosecond rounding
#: between header, utime and stat must not force a download every time
_MTIME_SLACK = 0.001


def _new_hasher(letter: str) -> Hasher:
    """A fresh hasher for a v02 data sum letter (``d`` or ``s``)."""
    # only the v02 data sums: sums.py also knows the internal ``x``, never accepted from a message
    if letter not in VERIFIABLE_SUMS:
        raise MalformedMessage(f"no checksum algorithm for sum letter {letter!r}")
    return new_hasher(letter)


@dataclass(frozen=True, slots=True)
class WholeFileResult:
    """What :func:`download_to` placed.

    ``checksum`` is the sum computed over the data (letter and hex), or None for
    ``n``/``0``/``a`` sums. ``verified`` is True only when a ``d``/``s`` sum from the notice
    was compared and matched (a ``z`` sum computes, it does not verify).
    """

    size: int
    checksum: Checksum | None
    verified: bool
    elapsed: float
    #: with ``stage=True``: the verified in-flight file, still to be committed by the caller
    staged: InflightFile | None = None


def _algorithm_for(checksum: Checksum) -> str | None:
    """The letter to compute for ``checksum``, or None when nothing is computed."""
    if checksum.verifiable:
        return checksum.letter
    if checksum.letter == "z":
        if checksum.value not in VERIFIABLE_SUMS:
            raise MalformedMessage(f"sum z names an unknown algorithm: {checksum.wire()!r}")
        return checksum.value
    if checksum.letter in _UNVERIFIED:
        return None
    raise MalformedMessage(f"sum {checksum.wire()!r} does not describe file data")


def download_to(
    root: SafeRoot,
    rel: str,
    chunks: Iterable[bytes | memoryview],
    *,
    expected_size: int | None,
    checksum: Checksum,
    inflight: str | None,
    mtime: float | None,
    mode: int | None,
    progress: Callable[[int], None] | None = None,
    sync_dir: bool = True,
    stage: bool = False,
) -> WholeFileResult:
    """Stream ``chunks`` into ``rel`` under ``root``, verifying before anything is placed.

    ``checksum`` is the notice's sum: ``d``/``s`` are verified; ``z,d``/``z,s`` compute that
    algorithm (returned in the result); ``n``/``0``/``a`` are placed unverified. When
    ``expected_size`` is given the data must be exactly that long (reading stops as soon as
    it is exceeded); from :data:`~sarra.localfs.streaming.DIRECT_MIN` bytes on, the file's space
    is reserved when the first bytes arrive, if the free space allows
    (:func:`~sarra.localfs.streaming.reserve`), and the chunks (best given page-aligned, see
    :func:`~sarra.transfer.chunks.aligned_chunks`) are written by direct I/O while a helper
    thread hashes them. ``progress`` gets the byte count after each chunk. On success the file
    is committed with ``mtime`` and ``mode`` (see :meth:`InflightFile.commit`; with
    ``sync_dir`` false the caller must call ``root.sync_dirs()`` before relying on it).
    With ``stage`` the verified in-flight file is returned open in ``staged`` instead: the
    caller commits it (or aborts it) later, e.g. after one data barrier for a batch
    (:func:`~sarra.localfs.confined.sync_files`).

    Raises :class:`IntegrityError` on size or sum mismatch, :class:`MalformedMessage` for a
    sum that does not describe data, :class:`HostilePath`, :class:`LocalError` or
    :class:`DiskFull` from the file system, and whatever ``chunks`` raises. In every error
    case the in-flight file is removed and the final name is untouched.
    """
    started = time.monotonic()
    letter = _algorithm_for(checksum)
    hasher = _new_hasher(letter) if letter is not None else None
    size = 0
    out = root.open_inflight(rel, inflight)
    try:
        if expected_size is not None and expected_size >= DIRECT_MIN:
            # large: space reserved once the origin serves data, within the free space
            # (the notice's size alone reserves nothing), hashing overlapped with writing,
            # aligned chunks written by direct I/O (see sarra.localfs.streaming)
            writer = DirectWriter(out.fd, out.pwrite, rel)
            try:
                size = stream(
                    iter(chunks),
                    hasher,
                    writer.pwrite,
                    limit=expected_size,
                    what=f"{rel}: size mismatch",
                    progress=progress,
                    reserve=functools.partial(reserve, out.fd, 0, expected_size, rel),
                )
            finally:
                writer.close()
        else:
            for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if expected_size is not None and size > expected_size:
                    raise IntegrityError(
                        f"{rel}: size mismatch: expected {expected_size} bytes, got more ({size}+)"
                    )
                if hasher is not None:
                    hasher.update(chunk)
                out.write(chunk)
                if progress is not None:
                    progress(size)
        if expected_size is not None and size != expected_size:
            raise IntegrityError(
                f"{rel}: size mismatch: expected {expected_size} bytes, got {size}"
            )
        computed = (
            Checksum(letter, hasher.hexdigest())
            if letter is not None and hasher is not None
            else None
        )
        verified = checksum.verifiable
        if verified and computed is not None and computed.value != checksum.value.lower():
            raise IntegrityError(
                f"{rel}: checksum mismatch: expected {checksum.wire()}, got {computed.wire()}"
            )
        if stage:
            out.set_metadata(mtime, mode)  # here, in the transfer thread
        else:
            out.commit(rel, mtime=mtime, mode=mode, sync_dir=sync_dir)
    except BaseException:
        out.abort()  # nothing unverified is ever placed
        raise
    return WholeFileResult(
        size=size,
        checksum=computed,
        verified=verified,
        elapsed=time.monotonic() - started,
        staged=out if stage else None,
    )


def is_unchanged(root: SafeRoot, rel: str, notice: Notice) -> bool:
    """True when the local ``rel`` already holds what ``notice`` announces (report 304).

    Spec 5.2: the notice has a ``d``/``s`` sum; ``rel`` is a regular file of the announced
    size (the whole file for ``1``/``i`` parts, the block for ``p``); its sum over the same
    byte range equals the notice's; and the ``mtime`` header is not newer than the local
    mtime. Anything missing, unreadable or unparseable means False (download).
    """
    sum_ = notice.checksum
    if not sum_.verifiable:
        return False
    # fast negative answer for the common case of a new file: one lstat by path. It can
    # only send us to download (the confined write path then does the real checks); a
    # positive answer is confirmed by the confined walk below
    try:
        os.lstat(os.path.join(root.root, rel))
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        st = root.stat(rel)
    except LocalError:
        return False
    if st is None or not stat_mod.S_ISREG(st.st_mode):
        return False
    parts = notice.parts
    if parts is None:
        offset, length = 0, st.st_size
    elif parts.method == "p":
        if st.st_size != parts.length:
            return False
        offset, length = 0, parts.length
    else:
        if st.st_size != parts.file_size:
            return False
        offset, length = parts.offset, parts.length
    mtime_header = notice.header("mtime")
    if mtime_header is not None:
        try:
            announced = parse_timestamp(mtime_header.strip())
        except MalformedMessage:
            return False
        if announced > st.st_mtime + _MTIME_SLACK:
            return False
    try:
        local = _sum_range(root, rel, sum_.letter, offset, length)
    except (LocalError, MalformedMessage):
        return False
    return local is not None and local == sum_.value.lower()


def _sum_range(root: SafeRoot, rel: str, letter: str, offset: int, length: int) -> str | None:
    """Hex sum of ``length`` bytes of ``rel`` from ``offset``, or None if the file is short."""
    hasher = _new_hasher(letter)
    fd = root.open_read(rel)
    try:
        remaining = length
        while remaining > 0:
            try:
                data = pread(fd, min(_READ_SIZE, remaining), offset)
            except OSError as exc:
                raise LocalError(f"read {rel}: {exc.strerror}") from exc
            if not data:
                return None
            hasher.update(data)
            offset += len(data)
            remaining -= len(data)
    finally:
        os.close(fd)
    return hasher.hexdigest()
