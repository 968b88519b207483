"""Contract of the transfer package: a small Transport protocol plus declared features.

A transport is bound to one origin (scheme, host, port, user) and keeps its connection open
between calls; callers keep one per worker thread and reuse it. Every library error is
translated into :mod:`sarra.errors` at this boundary.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Features:
    """What a transport can do; callers read these instead of probing."""

    ranged_get: bool = True
    put: bool = False
    rename: bool = False
    delete: bool = False
    listing: bool = False


@dataclass(frozen=True, slots=True)
class RemoteStat:
    size: int
    mtime: float | None = None


class Transport(Protocol):
    """One connection to one origin."""

    features: Features

    def get(self, url: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of ``url`` from ``offset``: exactly ``length`` bytes when given.

        ``url`` is the full retrieval URL (spec 3.5), already encoded for the transport.
        Raises NotFound, IntegrityError (wrong length, Range ignored, truncated),
        TransportUnavailable. The generator must be fully consumed or closed.
        """
        ...

    def stat(self, url: str) -> RemoteStat:
        """Size (and mtime if known) of a remote object."""
        ...

    def put(
        self, local_path: str, remote_path: str, offset: int = 0, length: int | None = None
    ) -> int:
        """Send bytes of a local file to a remote path; returns bytes sent."""
        ...

    def rename(self, old: str, new: str) -> None: ...

    def delete(self, remote_path: str) -> None: ...

    def close(self) -> None:
        """Release the connection; the transport may not be used afterwards."""
        ...

    def abort(self) -> None:
        """From another thread: make a transfer blocked on the network fail at once (the
        connection is shut down); the transport may not be used afterwards."""
        ...
