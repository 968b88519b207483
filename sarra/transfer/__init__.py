"""Transports: file, http(s) and sftp behind one protocol, chosen by URL scheme.

:func:`open_transport` builds the transport for a URL's origin from an explicit registry (a
literal dict of scheme to factory). Nothing connects until the first operation, and the
implementation modules (paramiko for sftp) are imported only when a transport of that kind is
made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from urllib.parse import urlsplit

from sarra.errors import PolicyRefused
from sarra.transfer.base import Features, RemoteStat, Transport
from sarra.transfer.url import Origin, origin_of, retrieval_url, server_path

__all__ = [
    "FACTORIES",
    "Features",
    "Origin",
    "RemoteStat",
    "Transport",
    "open_transport",
    "origin_of",
    "retrieval_url",
    "server_path",
]

Factory = Callable[[str, object | None, float, Mapping[str, object]], Transport]


def _file(
    url: str, credentials: object | None, timeout: float, options: Mapping[str, object]
) -> Transport:
    from sarra.transfer.file import FileTransport

    return FileTransport()


def _http(
    url: str, credentials: object | None, timeout: float, options: Mapping[str, object]
) -> Transport:
    from sarra.transfer.http import HttpTransport

    return HttpTransport(url, credentials=credentials, timeout=timeout, options=options)


def _sftp(
    url: str, credentials: object | None, timeout: float, options: Mapping[str, object]
) -> Transport:
    from sarra.transfer.sftp import SftpTransport

    return SftpTransport(url, credentials=credentials, timeout=timeout, options=options)


#: Scheme -> factory. The one place that says which schemes we can transfer with.
FACTORIES: Mapping[str, Factory] = MappingProxyType(
    {
        "file": _file,
        "http": _http,
        "https": _http,
        "sftp": _sftp,
    }
)


def open_transport(
    url: str,
    *,
    credentials: object | None = None,
    timeout: float = 30,
    options: Mapping[str, object] = MappingProxyType({}),
) -> Transport:
    """A new transport bound to the origin of ``url`` (not yet connected).

    Args:
        url: any URL of the origin; only scheme, user, host and port matter.
        credentials: an object with optional attributes ``password``, ``ssh_keyfile``,
            ``bearer_token``, ``tls_verify``, ``user`` (read with defaults).
        timeout: seconds for connects and each read.
        options: per-transport options (http: ``tls_verify``, ``ca_file``; sftp:
            ``known_hosts`` or ``state_dir``, ``strict_host_keys``, ``keepalive``).

    Raises:
        PolicyRefused: no transport handles the URL's scheme.
    """
    scheme = urlsplit(url).scheme.lower()
    factory = FACTORIES.get(scheme)
    if factory is None:
        raise PolicyRefused(f"no transport for scheme {scheme!r} ({url!r})")
    return factory(url, credentials, timeout, options)
