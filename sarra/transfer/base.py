"""Contract of the transfer package: the :class:`Transport` base class and its features.

A transport is bound to one origin (scheme, host, port, user) and keeps its connection open
between calls; callers keep one per worker thread and reuse it. Every library error is
translated into :mod:`sarra.errors` at this boundary.

The methods of :class:`Transport` are the whole contract. ``get``, ``stat``, ``close`` and
``abort`` are required; the optional operations (``get_into``, ``put``, ``rename``,
``delete``, ``mkdirs``, ``listdir``) raise :class:`~sarra.errors.UnsupportedOperation` unless a
transport overrides them, and a transport's :class:`Features` must say which it overrides
(checked when the class is defined). Callers decide by reading ``transport.features``, never
by probing.

Paths are confined: a path (or URL path) with a ``..`` segment or a NUL byte is refused with
:class:`~sarra.errors.HostilePath` before any I/O (:func:`confined`), and a URL of another
origin with :class:`~sarra.errors.PolicyRefused`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

from sarra.errors import HostilePath, LocalError, UnsupportedOperation
from sarra.transfer.url import Origin, origin_of

#: bytes per chunk yielded by ``get`` and written by ``put``
CHUNK_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class Features:
    """What a transport can do beyond ``get``/``stat``; callers read these instead of probing.

    A flag that is false means the operation raises UnsupportedOperation.
    """

    #: ``get`` (and ``get_into``) honour ``offset``/``length``
    ranges: bool = False
    #: ``get_into`` reads straight into caller-owned buffers
    get_into: bool = False
    put: bool = False
    #: ``put`` also takes ``offset``/``length`` (ranges written in any order); when false, only
    #: whole-file puts work and a ranged one raises UnsupportedOperation
    put_ranges: bool = False
    rename: bool = False
    delete: bool = False
    mkdirs: bool = False
    #: ``listdir`` lists a remote directory (what a poll reads)
    listdir: bool = False


#: Feature flags backed by an optional method of the same name.
OPTIONAL_OPERATIONS = ("get_into", "put", "rename", "delete", "mkdirs", "listdir")


class Login(Protocol):
    """What a transport reads of one credentials line (``sarra.config.credentials.Credential``
    is the implementation; the transfer layer sits below config and names only this)."""

    @property
    def user(self) -> str | None: ...

    @property
    def password(self) -> str | None: ...

    @property
    def ssh_keyfile(self) -> str | None: ...

    @property
    def bearer_token(self) -> str | None: ...

    #: ftp: passive data connections (``active`` in credentials.conf makes this false)
    @property
    def passive(self) -> bool: ...

    #: ftp: explicit TLS (``tls``/``ssl`` in credentials.conf; always for ftps://)
    @property
    def tls(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class RemoteStat:
    size: int
    mtime: float | None = None


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    """One entry of a remote directory listing, as the server shows it.

    ``name`` is a single path segment: never empty, ``.``, ``..``, nor holding ``/`` or NUL
    (a listing that shows such a name has the entry left out, see :func:`listed_name`).
    """

    name: str
    size: int | None
    #: seconds since the epoch (UTC), at the precision the listing gives; None when unknown
    mtime: float | None
    is_dir: bool = False
    is_link: bool = False


def listed_name(name: str) -> bool:
    """Whether a name from a remote listing may be used as one segment under the listed
    directory (no ``/``, NUL, CR/LF, and not empty, ``.`` or ``..``)."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\0\r\n")


def confined(path: str, what: str) -> str:
    """``path`` itself, once checked to hold no ``..`` segment and no NUL byte.

    Raises:
        HostilePath: the path could escape the directory it is meant to be under.
    """
    if "\0" in path:
        raise HostilePath(f"{what}: NUL byte in path {path!r}")
    if ".." in path.split("/"):
        raise HostilePath(f"{what}: '..' in path {path!r}")
    return path


def bound_origin(url: str, schemes: tuple[str, ...], kind: str) -> Origin:
    """The origin of ``url``, which must use one of ``schemes`` (ValueError otherwise)."""
    origin = origin_of(url)
    if origin.scheme not in schemes:
        raise ValueError(f"{kind} cannot handle {url!r}")
    return origin


def check_range(offset: int, length: int | None) -> None:
    """Raise ValueError for a negative offset or length (a caller's bug, not a remote's)."""
    if offset < 0 or (length is not None and length < 0):
        raise ValueError(f"bad range offset={offset} length={length}")


class _Source(Protocol):
    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def read(self, size: int = -1, /) -> bytes: ...


class _Target(Protocol):
    def seek(self, offset: int, whence: int = 0, /) -> Any: ...

    def write(self, data: bytes, /) -> Any: ...


def read_range(source: _Source, offset: int, length: int | None) -> Iterator[bytes]:
    """The bytes of ``source`` from ``offset`` (``length`` of them, or to its end) in chunks
    of at most :data:`CHUNK_SIZE`; fewer when ``source`` ends first."""
    source.seek(offset)
    remaining = length
    while remaining is None or remaining > 0:
        data = source.read(CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining))
        if not data:
            return
        if remaining is not None:
            remaining -= len(data)
        yield data


def copy_range(
    source: _Source,
    target: _Target,
    offset: int,
    length: int | None,
    throttle: Callable[[int], None] | None = None,
) -> int:
    """Copy bytes of ``source`` from ``offset`` (``length`` of them, or to its end) into
    ``target`` at the same offset; returns the number copied (fewer if ``source`` is short).
    ``throttle``, when given, is called with the length of each chunk before it is written
    (it may wait, or raise to abandon the copy)."""
    target.seek(offset)
    sent = 0
    for data in read_range(source, offset, length):
        if throttle is not None:
            throttle(len(data))
        target.write(data)
        sent += len(data)
    return sent


def check_sent(local_path: str, sent: int, offset: int, length: int | None) -> int:
    """``sent``, once checked against the ``length`` asked for (LocalError if short)."""
    if length is not None and sent != length:
        raise LocalError(f"put: {local_path} has only {sent} of {length} bytes at {offset}")
    return sent


class Transport(ABC):
    """One connection to one origin (see the module docstring for the contract)."""

    features: ClassVar[Features]
    #: set by the owner of the transport to cap what ``put`` sends: called with the length
    #: of each chunk before it is sent, it may wait (the instance's rate limit) or raise
    #: :class:`~sarra.errors.Interrupted`; None sends at full speed
    throttle: Callable[[int], None] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("features")
        if declared is None:
            return
        for name in OPTIONAL_OPERATIONS:
            implemented = getattr(cls, name) is not getattr(Transport, name)
            if getattr(declared, name) != implemented:
                raise TypeError(
                    f"{cls.__name__}.features.{name} is {getattr(declared, name)} but the "
                    f"class {'overrides' if implemented else 'does not override'} {name}()"
                )

    def _unsupported(self, operation: str) -> UnsupportedOperation:
        return UnsupportedOperation(f"{type(self).__name__} cannot {operation}")

    @abstractmethod
    def get(self, url: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of ``url`` from ``offset``: exactly ``length`` bytes when given.

        ``url`` is the full retrieval URL (spec 3.5), already encoded for the transport. The
        object is opened (NotFound raised) before this returns. Raises NotFound,
        IntegrityError (wrong length, Range ignored, truncated), TransportUnavailable,
        AuthenticationFailed. The generator must be fully consumed or closed.
        """

    def get_into(
        self,
        url: str,
        buffers: Sequence[memoryview],
        offset: int = 0,
        length: int | None = None,
    ) -> Iterator[memoryview]:
        """Like :meth:`get`, but the body is read straight into ``buffers``, used in turn:
        each yielded view is a prefix of the next buffer, filled completely except for the
        last, and stays valid until its buffer comes round again (``features.get_into``)."""
        raise self._unsupported("get_into")

    @abstractmethod
    def stat(self, url: str) -> RemoteStat:
        """Size (and mtime if known) of a remote object."""

    def put(
        self, local_path: str, remote_path: str, offset: int = 0, length: int | None = None
    ) -> int:
        """Send bytes of a local file (from ``offset``, ``length`` of them or to its end) to
        a remote path at the same offset; returns bytes sent (``features.put``)."""
        raise self._unsupported("put")

    def rename(self, old: str, new: str) -> None:
        """Rename ``old`` to ``new``, replacing ``new`` (``features.rename``)."""
        raise self._unsupported("rename")

    def delete(self, remote_path: str) -> None:
        """Remove a file, link or empty directory (``features.delete``)."""
        raise self._unsupported("delete")

    def mkdirs(self, remote_path: str) -> None:
        """Create a directory and its missing parents; existing ones are fine
        (``features.mkdirs``)."""
        raise self._unsupported("mkdirs")

    def listdir(self, url: str) -> list[RemoteEntry]:
        """The entries of a remote directory (``.`` and ``..`` left out, and any name that
        could escape it: see :class:`RemoteEntry`) (``features.listdir``)."""
        raise self._unsupported("listdir")

    @abstractmethod
    def close(self) -> None:
        """Release the connection; the transport may not be used afterwards."""

    @abstractmethod
    def abort(self) -> None:
        """From another thread: make a transfer blocked on the network fail at once (the
        connection is shut down); the transport may not be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
