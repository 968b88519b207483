"""Transports: file, http(s), sftp and ftp(s) behind one contract, chosen by URL scheme.

:func:`open_transport` builds the transport for a URL's origin from an explicit registry (a
literal dict of scheme to factory). Nothing connects until the first operation, and the
implementation modules (paramiko for sftp) are imported only when a transport of that kind is
made.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

from sarra.errors import PolicyRefused, UnsupportedOperation
from sarra.transfer.base import Features, Login, RemoteStat, Transport
from sarra.transfer.url import Origin, origin_of, retrieval_url, server_path

__all__ = [
    "FACTORIES",
    "Features",
    "Origin",
    "RemoteStat",
    "Transport",
    "TransportParams",
    "UnsupportedOperation",
    "open_transport",
    "origin_of",
    "retrieval_url",
    "server_path",
]


@dataclass(frozen=True, slots=True)
class TransportParams:
    """Everything a factory needs besides the URL; each transport reads what applies to it."""

    credentials: Login | None = None
    #: seconds for connects and each read
    timeout: float = 30
    #: https, ftps: check the server certificate (``tls_rigour lax`` turns this off)
    tls_verify: bool = True
    #: https, ftps: trusted CA certificates (default: the system's)
    ca_file: str | None = None
    #: sftp: ``known_hosts`` or ``state_dir``, ``strict_host_keys``, ``keepalive``
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))


Factory = Callable[[str, TransportParams], Transport]


def _file(url: str, params: TransportParams) -> Transport:
    from sarra.transfer.file import FileTransport

    return FileTransport()


def _http(url: str, params: TransportParams) -> Transport:
    from sarra.transfer.http import HttpTransport

    return HttpTransport(
        url,
        credentials=params.credentials,
        timeout=params.timeout,
        tls_verify=params.tls_verify,
        ca_file=params.ca_file,
    )


def _sftp(url: str, params: TransportParams) -> Transport:
    from sarra.transfer.sftp import SftpTransport

    return SftpTransport(
        url, credentials=params.credentials, timeout=params.timeout, options=params.options
    )


def _ftp(url: str, params: TransportParams) -> Transport:
    from sarra.transfer.ftp import FtpTransport

    return FtpTransport(
        url,
        credentials=params.credentials,
        timeout=params.timeout,
        tls_verify=params.tls_verify,
        ca_file=params.ca_file,
    )


#: Scheme -> factory. The one place that says which schemes we can transfer with.
FACTORIES: Mapping[str, Factory] = MappingProxyType(
    {
        "file": _file,
        "http": _http,
        "https": _http,
        "sftp": _sftp,
        "ftp": _ftp,
        "ftps": _ftp,
    }
)


def open_transport(
    url: str,
    *,
    credentials: Login | None = None,
    timeout: float = 30,
    tls_verify: bool = True,
    ca_file: str | None = None,
    options: Mapping[str, object] = MappingProxyType({}),
) -> Transport:
    """A new transport bound to the origin of ``url`` (not yet connected).

    Args:
        url: any URL of the origin; only scheme, user, host and port matter.
        credentials, timeout, tls_verify, ca_file, options: see :class:`TransportParams`.

    Raises:
        PolicyRefused: no transport handles the URL's scheme.
    """
    scheme = urlsplit(url).scheme.lower()
    factory = FACTORIES.get(scheme)
    if factory is None:
        raise PolicyRefused(f"no transport for scheme {scheme!r} ({url!r})")
    params = TransportParams(credentials, timeout, tls_verify, ca_file, options)
    return factory(url, params)
