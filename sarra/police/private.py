"""Private data: who may read a source's private files, and the HTTP authorizer.

``admin.conf`` lines (no spaces inside a list)::

    declare group analysts:bob,dave
    declare private alice:bob,@analysts

The second line gives source ``alice`` a private exchange ``xp_alice`` that only alice, bob,
dave, the admin and the feeder may read (``sr_police declare`` sets the permissions), and
makes the files under ``/private/alice/`` of the pump's web tree readable by the same users
only: nginx asks :class:`Authorizer` (``sr_police authorize``, on loopback) about every request
under ``/private/`` (``auth_request``), and the authorizer checks the HTTP Basic credentials
against the users' broker passwords in ``credentials.conf``.

Answers: 200 (a reader, right password), 401 (no credentials, a user the pump does not know,
or a wrong password; with ``WWW-Authenticate``), 403 (a known user who is not a reader, a path
of no private source, or a path that is not under ``/private/<source>/`` once normalized).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sarra.errors import ConfigError, SarraError

log = logging.getLogger(__name__)

#: the ``declare`` words of private data
PRIVATE_WORDS = ("private", "group")
#: the URL path under which every source's private files live: ``/private/<source>/...``
PRIVATE_PREFIX = "private"
#: the header nginx passes the original request's URI in (``proxy_set_header``)
URI_HEADER = "X-Original-URI"
REALM = "sarra private data"
#: security events (``sarra.security_events``): a pump user refused, a wrong password
PRIVATE_REFUSED = "private_refused"
PRIVATE_BAD_PASSWORD = "private_bad_password"
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _split(entry: str, word: str) -> tuple[str, list[str]]:
    name, colon, rest = entry.partition(":")
    members = [m for m in rest.split(",") if m]
    if not colon or not name or not members:
        raise ConfigError(
            f"expected 'declare {word} NAME:MEMBER[,MEMBER...]' (no spaces), got {entry!r}",
            option="declare",
        )
    return name, members


def private_readers(
    declared: Mapping[str, Sequence[str]], roles: Mapping[str, str]
) -> dict[str, frozenset[str]]:
    """Source -> its readers (the source included), from the ``declare private`` and
    ``declare group`` entries; ``roles`` maps every declared user to its role.

    Raises:
        ConfigError: a malformed entry, a private source that is not a declared source, a
            reader that is neither a declared user nor a declared ``@group``, a group member
            that is not a declared user, or one source or group declared twice.
    """
    groups: dict[str, frozenset[str]] = {}
    for entry in declared.get("group", ()):
        name, members = _split(entry, "group")
        if name in groups:
            raise ConfigError(f"group {name!r} declared twice", option="declare")
        unknown = [m for m in members if m not in roles]
        if unknown:
            raise ConfigError(f"group {name!r}: no declared user {unknown[0]!r}", option="declare")
        groups[name] = frozenset(members)
    private: dict[str, frozenset[str]] = {}
    for entry in declared.get("private", ()):
        source, readers = _split(entry, "private")
        if roles.get(source) != "source":
            raise ConfigError(
                f"private {source!r}: not a declared source (declare source {source})",
                option="declare",
            )
        if source in private:
            raise ConfigError(f"private {source!r} declared twice", option="declare")
        users = {source}
        for reader in readers:
            if reader.startswith("@"):
                if reader[1:] not in groups:
                    raise ConfigError(
                        f"private {source!r}: no declared group {reader[1:]!r}", option="declare"
                    )
                users |= groups[reader[1:]]
            elif reader in roles:
                users.add(reader)
            else:
                raise ConfigError(
                    f"private {source!r}: no declared user {reader!r}", option="declare"
                )
        private[source] = frozenset(users)
    return private


def private_source(uri: str) -> str | None:
    """The source whose private tree holds ``uri`` (``/private/<source>/...``), or None.

    The path is percent-decoded and its ``.``, ``..`` and empty segments resolved the way
    nginx resolves them before it picks a location, so ``/x/../private/a/f`` is alice's
    when ``a`` is alice, and ``/private/../public/f`` belongs to no source.
    """
    path = uri.partition("?")[0]
    if _ABSOLUTE.match(path):  # an absolute-form request line: keep only its path
        path = urlsplit(path).path
    segments: list[str] = []
    for segment in unquote(path).split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    if len(segments) < 2 or segments[0] != PRIVATE_PREFIX:
        return None
    return segments[1]


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = (
            base64.b64decode(token.strip(), validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if colon and user else None


@dataclass(frozen=True)
class Access:
    """What the authorizer knows: source -> readers, user -> password."""

    private: Mapping[str, frozenset[str]]
    passwords: Mapping[str, str]

    def decide(self, uri: str, authorization: str | None) -> Decision:
        """The answer to a request of ``uri`` with that ``Authorization`` header."""
        source = private_source(uri)
        readers = self.private.get(source) if source is not None else None
        credentials = basic_credentials(authorization)
        user = credentials[0] if credentials is not None else None
        if readers is None:
            return Decision(403, f"{uri!r} is no private source's", user)
        if credentials is None:
            return Decision(401, "no credentials")
        password = credentials[1]
        known = self.passwords.get(user or "")
        if known is None:
            return Decision(401, f"no pump user {user!r}", user)
        if not hmac.compare_digest(known.encode(), password.encode()):
            why = f"wrong password for {user!r} ({uri!r})"
            return Decision(401, why, user, PRIVATE_BAD_PASSWORD)
        if user not in readers:
            why = f"{user!r} is not a reader of {source!r} ({uri!r})"
            return Decision(403, why, user, PRIVATE_REFUSED)
        return Decision(200, f"{user!r} reads {source!r} ({uri!r})", user)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the authorizer answers, why (for its log, never a password), who asked, and
    the security event to record (``sr_police audit`` reports them), if any."""

    status: int
    why: str
    user: str | None = None
    event: str | None = None


class Authorizer:
    """An HTTP server on ``host``:``port`` answering nginx ``auth_request`` subrequests.

    ``load`` builds the :class:`Access`; it is called again when one of ``watched`` (the
    admin.conf and credentials.conf) changes, so edits need no restart. If reloading fails,
    the previous access stays in force and the error is logged. ``record(kind, user, detail)``
    is called for each decision that carries a security event.
    """

    def __init__(
        self,
        load: Callable[[], Access],
        watched: Sequence[Path],
        host: str = "127.0.0.1",
        port: int = 0,
        record: Callable[[str, str, str], object] | None = None,
    ) -> None:
        self._load = load
        self.record = record
        self._watched = tuple(watched)
        self._stamp = self._stamps()
        self._access = load()
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"authorizer": self})
        server = _Server6 if ":" in host else ThreadingHTTPServer  # an IPv6 address
        self.server = server((host, port), handler)
        self.server.daemon_threads = True

    @property
    def port(self) -> int:
        port: int = self.server.server_address[1]
        return port

    def _stamps(self) -> tuple[tuple[int, int, int], ...]:
        """Per watched file (mtime in ns, size, inode): a rename into place or a rewrite
        within the clock's resolution changes it too. Zeros for a missing file."""
        stamps = []
        for path in self._watched:
            try:
                st = path.stat()
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamps.append((0, 0, 0))
        return tuple(stamps)

    def access(self, *, force: bool = False) -> Access:
        """The access in force, reloaded first if a watched file changed (or if ``force``)."""
        with self._lock:
            stamp = self._stamps()
            if force or stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._access = self._load()
                    log.info("authorizer: reloaded %s", ", ".join(map(str, self._watched)))
                except (SarraError, OSError) as exc:  # keep serving with what was valid
                    log.error("authorizer: reload failed, previous rules kept: %s", exc)
            return self._access

    def reload(self) -> None:
        """Read the watched files again now (``SIGHUP``, ``systemctl reload``)."""
        self.access(force=True)

    def serve_forever(self) -> None:
        log.info("authorizer: listening on %s:%d", *self.server.server_address[:2])
        self.server.serve_forever()

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    authorizer: Authorizer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per decision below, without the Authorization header

    def do_GET(self) -> None:
        uri = self.headers.get(URI_HEADER) or ""
        decision = self.authorizer.access().decide(uri, self.headers.get("Authorization"))
        status = decision.status
        log.log(
            logging.INFO if status == 200 else logging.WARNING,
            "authorizer: %d %s",
            status,
            decision.why,
        )
        if decision.event and self.authorizer.record is not None:
            self.authorizer.record(decision.event, decision.user or "?", decision.why)
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", f'Basic realm="{REALM}"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``PORT`` (on 127.0.0.1). Raises ValueError."""
    host, colon, port = text.rpartition(":")
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port {number} out of range")
    return (host.strip("[]") if colon and host else "127.0.0.1"), number


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one (``""``, all interfaces, is
    not); a name that does not resolve is not."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(infos) and all(
        ipaddress.ip_address(str(info[4][0]).partition("%")[0]).is_loopback for info in infos
    )


def environment_files(env: Mapping[str, str] | None) -> list[Path]:
    """The files whose change reloads the authorizer (admin.conf, default.conf, credentials)."""
    from sarra.config import paths

    environment: Mapping[str, str] = os.environ if env is None else env
    return [
        paths.admin_conf_path(environment),
        paths.default_conf_path(environment),
        paths.credentials_path(environment),
    ]
