"""Retrieval URLs (spec 3.5) and the origin a transport is bound to.

A notice gives a baseUrl and a logical path (the decoded relPath without its leading ``/``).
:func:`retrieval_url` joins them into one URL that the transports understand:

* ``http``/``https``: baseUrl (trailing ``/`` removed) + ``/`` + the logical path with every
  segment percent-encoded (RFC 3986 ``pchar``), so names with spaces, ``#``, ``%`` or non-ASCII
  characters are fetched as they are named.
* ``sftp``/``ftp``/``ftps``: the server path is the baseUrl path and the logical path joined by
  one ``/``. It is absolute when the baseUrl has a path, or, without one, when the relPath began
  with ``/`` (sr2 form); otherwise it is relative to the login directory (sr3 form, §11 Q11).
  In the URL an absolute path is written ``sftp://h/abs/path`` and a login-relative one
  ``sftp://h/~/rel/path`` (the convention curl uses). Segments are percent-encoded.
* ``file:``: ``file:`` + the absolute path, percent-encoded (``file:/data/a%20b``).

:func:`server_path` turns an sftp/ftp/file URL back into the path to hand to the server.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from sarra.errors import PolicyRefused

#: Characters RFC 3986 allows unencoded inside a path segment besides the unreserved ones.
_PCHAR_SAFE = "!$&'()*+,;=:@"

_DEFAULT_PORTS: dict[str, int | None] = {
    "http": 80,
    "https": 443,
    "sftp": 22,
    "ftp": 21,
    "ftps": 21,
    "file": None,
}

_PATH_SCHEMES = frozenset({"sftp", "ftp", "ftps"})

#: Marks a login-relative server path in an sftp/ftp URL.
_HOME_PREFIX = "/~"


@dataclass(frozen=True, slots=True)
class Origin:
    """What one transport connection is bound to; usable as a pool key."""

    scheme: str
    host: str
    port: int | None
    user: str

    def __str__(self) -> str:
        if self.scheme == "file":
            return "file:"
        user = f"{quote(self.user, safe='')}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{user}{host}{port}"


#: ``scheme://authority`` at the start of a URL: all that its origin depends on
_AUTHORITY = re.compile(r"[^:/?#]+://[^/?#]*")


def origin_of(url: str) -> Origin:
    """The origin (scheme, host, port, user) of ``url``, default port filled in.

    Raises PolicyRefused for a scheme no transport handles, and for a malformed port.
    """
    # parsed once per scheme://authority: every file of a flow asks for its origin
    m = _AUTHORITY.match(url)
    if m is not None:
        try:
            return _origin_of_authority(m.group(0))
        except PolicyRefused:
            pass  # raised again below, naming the whole URL
    return _parse_origin(url)


@functools.lru_cache(maxsize=256)
def _origin_of_authority(prefix: str) -> Origin:
    return _parse_origin(prefix)


def _parse_origin(url: str) -> Origin:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise PolicyRefused(f"unsupported URL scheme {scheme!r} in {url!r}")
    if scheme == "file":
        return Origin("file", "", None, "")
    try:
        port = parts.port
    except ValueError as err:
        raise PolicyRefused(f"bad port in {url!r}") from err
    if not parts.hostname:
        raise PolicyRefused(f"no host in {url!r}")
    return Origin(
        scheme=scheme,
        host=parts.hostname,
        port=port if port is not None else _DEFAULT_PORTS[scheme],
        user=unquote(parts.username) if parts.username else "",
    )


def _encode_path(path: str) -> str:
    """Percent-encode each ``/``-separated segment of a decoded path."""
    return "/".join(quote(segment, safe=_PCHAR_SAFE) for segment in path.split("/"))


def retrieval_url(base_url: str, logical_path: str, *, rel_path_absolute: bool = True) -> str:
    """The URL to fetch ``logical_path`` announced under ``base_url`` (spec 3.5).

    Args:
        base_url: the notice's baseUrl, with or without a trailing ``/``.
        logical_path: the decoded relPath without its leading ``/`` (a leading ``/`` is
            tolerated and dropped).
        rel_path_absolute: whether the relPath on the wire began with ``/`` (sr2 form); it
            only matters for sftp/ftp baseUrls without a path.

    Raises:
        PolicyRefused: the scheme is not one we can fetch from.
    """
    logical = logical_path.lstrip("/")
    parts = urlsplit(base_url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return f"{base_url.rstrip('/')}/{_encode_path(logical)}"
    if scheme == "file":
        base_path = unquote(parts.path).rstrip("/")
        return f"file:{_encode_path(f'{base_path}/{logical}')}"
    if scheme in _PATH_SCHEMES:
        base_path = unquote(parts.path).rstrip("/")
        prefix = f"{scheme}://{parts.netloc}"
        if base_path == _HOME_PREFIX or base_path.startswith(_HOME_PREFIX + "/"):
            # An explicitly login-relative baseUrl stays login-relative.
            return f"{prefix}{_encode_path(f'{base_path}/{logical}')}"
        if base_path or rel_path_absolute:
            return f"{prefix}{_encode_path(f'{base_path}/{logical}')}"
        return f"{prefix}{_HOME_PREFIX}/{_encode_path(logical)}"
    raise PolicyRefused(f"unsupported URL scheme {scheme!r} in baseUrl {base_url!r}")


def server_path(url: str) -> str:
    """The decoded path a file/sftp/ftp URL names, as the server wants it.

    ``sftp://h/dir/f`` gives ``/dir/f``; ``sftp://h/~/dir/f`` gives ``dir/f`` (login-relative);
    ``sftp://h`` and ``sftp://h/~`` give ``.``; ``file:/a%20b`` gives ``/a b``.
    """
    path = urlsplit(url).path
    if path == _HOME_PREFIX or path == "":
        return "."
    if path.startswith(_HOME_PREFIX + "/"):
        return unquote(path[len(_HOME_PREFIX) + 1 :]) or "."
    return unquote(path)


def request_target(url: str) -> str:
    """The HTTP request target of ``url``: its path (``/`` when empty) and query, as encoded."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    return target
