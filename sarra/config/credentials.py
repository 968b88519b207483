"""The credentials store: ``credentials.conf``, one URL with its password per line.

Config files name URLs without passwords; the password comes from here. A line is::

    scheme://user:password@host[:port][/path] [option[,option...]]

with options ``ssh_keyfile=PATH``, ``passive``/``active``, ``binary``, ``tls``/``ssl``,
``prot_p``, ``bearer_token=TOKEN`` (or ``bt=TOKEN``). ``ascii`` (sr2's text-mode FTP) is refused:
transfers are always binary. Passwords may contain ``/``, ``?``,
``#``, ``:`` and ``@``: the user information ends at the *last* ``@`` of the URL, and percent
escapes (``%2F``) in a password are decoded, as sr2 users relied on that work-around.

Secrets never appear in ``repr``/``str``. The file must not be readable by group or others.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote

from sarra.broker.base import BrokerNode, BrokerUrl
from sarra.errors import ConfigError, CredentialsError

DEFAULT_PORTS = {
    "amqp": 5672,
    "amqps": 5671,
    "mqtt": 1883,
    "mqtts": 8883,
    "http": 80,
    "https": 443,
    "sftp": 22,
    "ftp": 21,
    "ftps": 21,
}


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    """A URL split without trusting the characters of its password."""

    scheme: str
    host: str
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    path: str = ""
    #: the further nodes of a broker cluster (``amqp://u@h1:p1,h2:p2,h3/vhost``), in order
    more_hosts: tuple[tuple[str, int | None], ...] = ()

    @property
    def effective_port(self) -> int | None:
        return self.port if self.port is not None else DEFAULT_PORTS.get(self.scheme)

    def nodes(self) -> tuple[ParsedUrl, ...]:
        """One single-host URL per node, the first host first (just ``self`` for one host)."""
        if not self.more_hosts:
            return (self,)
        first = replace(self, more_hosts=())
        return (first, *(replace(first, host=h, port=p) for h, p in self.more_hosts))

    def without_password(self) -> str:
        """The URL as text, without its password."""
        user = f"{self.user}@" if self.user else ""
        hosts = ",".join(
            h + (f":{p}" if p is not None else "")
            for h, p in ((self.host, self.port), *self.more_hosts)
        )
        return f"{self.scheme}://{user}{hosts}{self.path}"

    def __str__(self) -> str:
        return self.without_password()


def parse_url(text: str) -> ParsedUrl:
    """Split ``scheme://[user[:password]@]host[:port][,host[:port]...][path]``.

    The user information ends at the last ``@``, so a password may hold ``/``, ``?`` or ``@``.
    Several comma-separated hosts (the nodes of a broker cluster, as libpq writes them) are
    allowed for amqp and amqps only; the first is ``host``/``port``, the others ``more_hosts``.

    Raises:
        ConfigError: no ``scheme://``, no host, a bad port, or several hosts in a URL other
            than amqp/amqps (the message omits the password).
    """
    scheme, sep, rest = text.strip().partition("://")
    if not sep or not scheme:
        raise ConfigError(f"not a URL: {_redact(text)!r}")
    user: str | None = None
    password: str | None = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        name, colon, secret = userinfo.partition(":")
        user = unquote(name) or None
        password = unquote(secret) if colon else None
    slash = rest.find("/")
    hostports, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    hostport, *others = hostports.split(",")
    scheme = scheme.lower()
    if others and scheme not in ("amqp", "amqps"):
        raise ConfigError(f"several hosts are for amqp broker URLs only: {_redact(text)!r}")
    host, port = _host_port(hostport, text)
    more: list[tuple[str, int | None]] = []
    for other in others:
        more.append(_host_port(other, text))
        if not more[-1][0]:
            raise ConfigError(f"empty host in URL {_redact(text)!r}")
    if not host and scheme != "file":
        raise ConfigError(f"no host in URL {_redact(text)!r}")
    return ParsedUrl(scheme, host, port, user, password, path, tuple(more))


def _host_port(hostport: str, text: str) -> tuple[str, int | None]:
    """``host[:port]`` or ``[v6]:port``, the host lower-cased."""
    host, port = hostport, None
    if hostport.startswith("["):  # IPv6 literal
        end = hostport.find("]")
        host, tail = hostport[: end + 1], hostport[end + 1 :]
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = hostport.partition(":")
    if port_text:
        if not port_text.isdigit():
            raise ConfigError(f"bad port in URL {_redact(text)!r}")
        port = int(port_text)
    return host.lower(), port


def _redact(text: str) -> str:
    scheme, sep, rest = text.partition("://")
    at = rest.rfind("@")
    if not sep or at < 0:
        return text
    user = rest[:at].partition(":")[0]
    return f"{scheme}://{user}:<secret>@{rest[at + 1 :]}" if ":" in rest[:at] else text


@dataclass(frozen=True, slots=True)
class Credential:
    """One credentials line. ``password`` and ``bearer_token`` are masked in repr/str."""

    url: ParsedUrl
    ssh_keyfile: str | None = None
    passive: bool = True
    binary: bool = True
    tls: bool = False
    prot_p: bool = False
    bearer_token: str | None = field(default=None, repr=False)

    @property
    def user(self) -> str | None:
        return self.url.user

    @property
    def password(self) -> str | None:
        return self.url.password

    def __repr__(self) -> str:
        secret = "<secret>" if self.url.password is not None else "None"
        token = "<secret>" if self.bearer_token is not None else "None"
        return (
            f"Credential(url={self.url.without_password()!r}, password={secret}, "
            f"ssh_keyfile={self.ssh_keyfile!r}, passive={self.passive}, binary={self.binary}, "
            f"tls={self.tls}, prot_p={self.prot_p}, bearer_token={token})"
        )

    __str__ = __repr__


def _parse_line(line: str, where: str, number: int) -> Credential:
    url_text, _, options_text = line.strip().partition(" ")
    try:
        url = parse_url(url_text)
    except ConfigError as exc:
        raise CredentialsError(str(exc), path=where, line=number) from exc
    if url.more_hosts:
        raise CredentialsError(
            "one host per line: write one line for each node of a broker cluster",
            path=where,
            line=number,
        )
    credential = Credential(url)
    for raw in options_text.replace("\t", " ").split(","):
        word = raw.strip()
        if not word:
            continue
        key, eq, value = word.partition("=")
        key = key.strip().lower()
        value = value.strip()
        if key == "ssh_keyfile" and eq:
            credential = replace(credential, ssh_keyfile=os.path.expanduser(value))
        elif key in ("bearer_token", "bt") and eq:
            credential = replace(credential, bearer_token=value)
        elif key in ("passive", "active"):
            credential = replace(credential, passive=key == "passive")
        elif key == "binary":
            credential = replace(credential, binary=True)
        elif key == "ascii":
            raise CredentialsError(
                "'ascii' is not supported: FTP transfers are always binary (remove it)",
                path=where,
                line=number,
            )
        elif key in ("tls", "ssl"):
            credential = replace(credential, tls=True)
        elif key == "prot_p":
            credential = replace(credential, prot_p=True)
        else:
            raise CredentialsError(f"unknown credential option {key!r}", path=where, line=number)
    return credential


class CredentialStore:
    """Credentials by URL; see the module docstring for the file format."""

    def __init__(self, credentials: tuple[Credential, ...] = (), path: Path | None = None):
        self._credentials = credentials
        self.path = path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, check_mode: bool = True) -> CredentialStore:
        """Read ``path``. A missing file gives an empty store.

        Raises:
            CredentialsError: the file is readable or writable by group or others (the message
                gives the ``chmod 600`` command; on Windows: readable by anyone but the user
                and the system's accounts, with the ``icacls`` command), unreadable, or has a
                bad line.
        """
        file = Path(path)
        try:
            info = file.stat()
        except FileNotFoundError:
            return cls((), file)
        except OSError as exc:
            raise CredentialsError(f"cannot read credentials: {exc}", path=str(file)) from exc
        if check_mode and os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CredentialsError(
                f"credentials file is accessible by group or others (mode "
                f"{stat.S_IMODE(info.st_mode):o}); fix it with: chmod 600 {file}",
                path=str(file),
            )
        if check_mode and sys.platform == "win32":
            from sarra.config import winacl  # Windows only: not in a POSIX start-up

            try:
                problem = winacl.acl_problem(str(file))
            except OSError as exc:
                raise CredentialsError(
                    f"cannot check who may read the credentials file: {exc}", path=str(file)
                ) from exc
            if problem is not None:
                raise CredentialsError(problem, path=str(file))
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialsError(f"cannot read credentials: {exc}", path=str(file)) from exc
        found = [
            _parse_line(line, str(file), number)
            for number, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
        return cls(tuple(found), file)

    def __len__(self) -> int:
        return len(self._credentials)

    def __repr__(self) -> str:
        return f"CredentialStore(path={str(self.path)!r}, entries={len(self._credentials)})"

    def find(self, url: str | ParsedUrl) -> Credential | None:
        """The credential for ``url``, or None.

        An exact match of the URL (password aside) wins; then the first line with the same
        scheme, host, port (defaults filled in) and user (any user if ``url`` names none) and,
        for amqp/amqps, the same vhost (empty path meaning ``/``).
        """
        wanted = parse_url(url) if isinstance(url, str) else url
        text = wanted.without_password()
        for credential in self._credentials:
            if credential.url.without_password() == text:
                return credential
        for credential in self._credentials:
            have = credential.url
            if (have.scheme, have.host, have.effective_port) != (
                wanted.scheme,
                wanted.host,
                wanted.effective_port,
            ):
                continue
            if wanted.user is not None and wanted.user != have.user:
                continue
            if wanted.scheme.startswith("amqp") and _vhost(have.path) != _vhost(wanted.path):
                continue
            return credential
        return None

    def lookup(self, url: str | ParsedUrl) -> Credential:
        """Like :meth:`find`, but a missing credential is an error.

        Raises:
            CredentialsError: no line matches (the message names the URL, not any password).
        """
        credential = self.find(url)
        if credential is None:
            shown = url.without_password() if isinstance(url, ParsedUrl) else _redact(url)
            raise CredentialsError(f"no credentials for {shown}", path=str(self.path))
        return credential


def _vhost(path: str) -> str:
    return "/" if path in ("", "/") else unquote(path[1:])


def to_broker_url(url_text: str, store: CredentialStore) -> BrokerUrl:
    """Build a :class:`BrokerUrl` from a config URL and the store.

    amqps means TLS; default ports 5672/5671; a path ``''`` or ``/`` means vhost ``/``, anything
    else loses its leading ``/`` and is percent-decoded. No user means anonymous/anonymous. The
    password comes from the store; one written in the config URL is used only as a last resort
    (the loader warns about it). A URL naming several nodes (``amqp://u@h1,h2:5673,h3/v``) gives
    a :class:`BrokerUrl` of its first node whose ``nodes`` are all of them, each with the
    password of its own credentials line (and ``tls`` if any line says so).

    Raises:
        ConfigError: not an amqp/amqps/mqtt/mqtts URL.
        CredentialsError: a named user other than anonymous has no password anywhere (for
            any one of the nodes).
    """
    url = parse_url(url_text)
    if url.scheme not in ("amqp", "amqps", "mqtt", "mqtts"):
        raise ConfigError(
            f"broker URL must be amqp://, amqps://, mqtt:// or mqtts://, got "
            f"{url.without_password()}"
        )
    tls = url.scheme.endswith("s")
    protocol = url.scheme.rstrip("s")
    user = url.user or "anonymous"
    nodes: list[BrokerNode] = []
    for node in url.nodes():
        port = node.port if node.port is not None else DEFAULT_PORTS[url.scheme]
        credential = store.find(replace(node, user=user))
        if credential is not None and credential.password is not None:
            password = credential.password
        elif url.password is not None:
            password = url.password
        elif user == "anonymous":
            password = "anonymous"
        else:
            raise CredentialsError(
                f"no password for {node.without_password()} in the credentials file",
                path=str(store.path),
            )
        tls = tls or (credential is not None and credential.tls)
        nodes.append(BrokerNode(node.host, port, password))
    first = nodes[0]
    return BrokerUrl(
        host=first.host,
        port=first.port,
        user=user,
        password=first.password,
        vhost=_vhost(url.path),
        tls=tls,
        protocol=protocol,
        nodes=tuple(nodes) if len(nodes) > 1 else (),
    )
