"""The ``file:`` transport: local files by absolute path, with ranged reads.

URLs are ``file:`` + a percent-encoded absolute path (see :mod:`sarra.transfer.url`). Remote
paths given to :meth:`FileTransport.put`, ``rename`` and ``delete`` are plain local paths or
``file:`` URLs.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from io import BufferedReader

from sarra.errors import (
    FULL_ERRNOS,
    IntegrityError,
    LocalError,
    NotFound,
    PolicyRefused,
    TransferError,
    TransportUnavailable,
    local_error,
)
from sarra.transfer.base import (
    Features,
    RemoteStat,
    Transport,
    check_range,
    check_sent,
    confined,
    copy_range,
    read_range,
)
from sarra.transfer.url import server_path

#: a URL scheme prefix (``http:``...): not a plain path
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")

_NOT_FOUND = frozenset({errno.ENOENT, errno.ENOTDIR})


def _translate(err: OSError, what: str) -> TransferError | LocalError:
    """Map an OSError from the origin side to our tree."""
    if err.errno in _NOT_FOUND:
        return NotFound(f"{what}: {err.strerror}")
    if err.errno in FULL_ERRNOS:
        return local_error(err, what)
    failure = TransferError(f"{what}: {err.strerror or err}")
    failure.retryable = err.errno in (errno.EAGAIN, errno.EINTR, errno.EIO)
    return failure


class FileTransport(Transport):
    """Reads (and writes) local files; it has no connection to keep."""

    features = Features(
        ranges=True, put=True, put_ranges=True, rename=True, delete=True, mkdirs=True
    )

    def __init__(self) -> None:
        self._closed = False

    def _path(self, url_or_path: str) -> str:
        """The confined absolute path a ``file:`` URL or plain path names."""
        if self._closed:
            raise TransportUnavailable("file: transport is closed")
        if url_or_path.startswith("file:"):
            path = server_path(url_or_path)
        elif _SCHEME.match(url_or_path):
            raise PolicyRefused(f"{url_or_path!r} is not a file: URL")
        else:
            path = url_or_path
        if not os.path.isabs(path):
            raise ValueError(f"file transport needs an absolute path, got {url_or_path!r}")
        return confined(path, "file")

    def get(self, url: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of the file from ``offset``; exactly ``length`` bytes when given.

        Raises NotFound when the file is missing (at call time), IntegrityError when it is
        shorter than the range asked for.
        """
        check_range(offset, length)
        path = self._path(url)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the generator below
        except OSError as err:
            raise _translate(err, path) from err
        return self._read(handle, path, offset, length)

    @staticmethod
    def _read(
        handle: BufferedReader, path: str, offset: int, length: int | None
    ) -> Iterator[bytes]:
        with handle as f:
            got = 0
            try:
                for data in read_range(f, offset, length):
                    got += len(data)
                    yield data
            except OSError as err:
                raise _translate(err, path) from err
            if length is not None and got < length:
                raise IntegrityError(
                    f"{path}: {length - got} bytes short of the {length} asked at offset {offset}"
                )

    def stat(self, url: str) -> RemoteStat:
        path = self._path(url)
        try:
            st = os.stat(path)
        except OSError as err:
            raise _translate(err, path) from err
        return RemoteStat(size=st.st_size, mtime=st.st_mtime)

    def put(
        self, local_path: str, remote_path: str, offset: int = 0, length: int | None = None
    ) -> int:
        """Copy bytes of ``local_path`` (from ``offset``) into ``remote_path`` at ``offset``.

        A whole-file put (offset 0, no length) replaces the target; a ranged put creates it
        if missing and never truncates it, so parts can land in any order. Returns the
        number of bytes written.
        """
        check_range(offset, length)
        target = self._path(remote_path)
        try:
            with open(local_path, "rb") as src:
                whole = offset == 0 and length is None
                flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if whole else 0)
                fd = os.open(target, flags, 0o644)
                with os.fdopen(fd, "wb") as dst:
                    sent = copy_range(src, dst, offset, length, self.throttle)
        except OSError as err:
            raise _translate(err, target) from err
        return check_sent(local_path, sent, offset, length)

    def rename(self, old: str, new: str) -> None:
        try:
            os.replace(self._path(old), self._path(new))
        except OSError as err:
            raise _translate(err, old) from err

    def delete(self, remote_path: str) -> None:
        path = self._path(remote_path)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            else:
                os.unlink(path)
        except OSError as err:
            raise _translate(err, path) from err

    def mkdirs(self, remote_path: str) -> None:
        """Create a directory and its parents; an existing directory is fine."""
        path = self._path(remote_path)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as err:
            raise _translate(err, path) from err

    def close(self) -> None:
        self._closed = True

    def abort(self) -> None:
        self._closed = True  # local reads do not block: nothing to wake
