"""The pump as ``admin.conf`` describes it: accounts, roles, exchanges and permissions.

Roles (spec 1.5, facts 4.3): ``admin`` (the broker administrator, from ``admin URL``),
``feeder`` (the pump's internal account, from ``feeder URL``), and the users of
``declare source NAME`` and ``declare subscriber NAME``. ``declare exchange NAME`` adds an
exchange for the pump to create. Permissions use the *anchored* regular expressions of the
spec, so that user ``al`` can neither write ``xs_alice`` nor read ``xr_alice``.

Private data (see :mod:`sarra.police.private`): ``declare group NAME:USER[,USER...]`` names a
set of users; ``declare private SOURCE:READER[,READER...]`` (a reader is a user or ``@group``)
gives the source an exchange ``xp_<source>`` that only the source, its readers, the admin and
the feeder may read, and whose files under ``/private/<source>/`` the HTTP authorizer serves
to those readers only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from sarra.config.credentials import ParsedUrl, parse_url
from sarra.config.loader import Config
from sarra.errors import ConfigError
from sarra.police.private import PRIVATE_WORDS, private_readers

ADMIN, FEEDER, SOURCE, SUBSCRIBER = "admin", "feeder", "source", "subscriber"
ROLES = (ADMIN, FEEDER, SOURCE, SUBSCRIBER)
#: ``declare`` words accepted for each role (sr2 spells subscriber both ways)
_ROLE_WORDS = {"source": SOURCE, "subscriber": SUBSCRIBER, "subscribe": SUBSCRIBER}
#: exchanges every pump has (spec 1.2)
PUMP_EXCHANGES = ("xpublic", "xreport")
#: user names end up inside exchange and queue names and permission regexes
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*")


@dataclass(frozen=True, slots=True)
class Permission:
    """RabbitMQ permissions of one user on vhost ``/``: three regular expressions."""

    configure: str
    write: str
    read: str


def permission_for(role: str, user: str, private_of: tuple[str, ...] = ()) -> Permission:
    """The spec 1.5 permissions of ``user`` in ``role`` (names are regex-escaped), plus read
    on ``xp_<s>`` for each source ``s`` in ``private_of`` (whose private data ``user`` may
    read) and, for a source with private data (its own name in ``private_of``), write."""
    u = re.escape(user)
    if role in (ADMIN, FEEDER):
        return Permission(".*", ".*", ".*")
    read = rf"^q_{u}\..*|^x[lrs]_{u}(_.*)?$|^x.*public$"
    read += "".join(rf"|^xp_{re.escape(s)}$" for s in private_of)
    if role == SOURCE:
        own = rf"^q_{u}\..*|^xs_{u}(_.*)?$"
        if user in private_of:
            own += rf"|^xp_{u}$"
        return Permission(own, own, read)
    if role == SUBSCRIBER:
        return Permission(rf"^q_{u}\..*", rf"^q_{u}\..*|^xs_{u}$", read)
    raise ValueError(f"unknown role {role!r}")


@dataclass(frozen=True, slots=True)
class PumpUser:
    """One broker account of the pump."""

    name: str
    role: str
    #: sources whose private exchange ``xp_<source>`` this user may read (its own included)
    private_of: tuple[str, ...] = ()

    @property
    def permission(self) -> Permission:
        return permission_for(self.role, self.name, self.private_of)

    @property
    def tags(self) -> str:
        """RabbitMQ user tags: only the administrator has one."""
        return "administrator" if self.role == ADMIN else ""

    @property
    def exchanges(self) -> tuple[str, ...]:
        """Exchanges created for this user: ``xs_<u>``, plus ``xr_<u>`` for a source."""
        if self.role == SOURCE:
            own = (f"xs_{self.name}", f"xr_{self.name}")
            return (*own, f"xp_{self.name}") if self.name in self.private_of else own
        if self.role == SUBSCRIBER:
            return (f"xs_{self.name}",)
        return ()


@dataclass(frozen=True)
class Pump:
    """What ``default.conf`` + ``admin.conf`` declare. Build with :meth:`from_config`."""

    admin: ParsedUrl
    feeder: ParsedUrl | None
    users: tuple[PumpUser, ...]
    extra_exchanges: tuple[str, ...] = ()
    cluster: str | None = None
    management_url: str = ""
    #: source -> the users who may read its private data (the source itself included)
    private: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Config) -> Pump:
        """Read the pump from a loaded configuration (see ``load_pump_config``).

        Raises:
            ConfigError: no ``admin`` URL, a bad user name, an unknown role, or one user
                declared with two roles.
        """
        admin_text = cfg.get("admin")
        if not admin_text:
            raise ConfigError("no 'admin amqp://USER@HOST/' line (admin.conf)", option="admin")
        admin = parse_url(admin_text)
        feeder = parse_url(cfg.get("feeder")) if cfg.get("feeder") else None
        roles: dict[str, str] = {}

        def add(name: str | None, role: str) -> None:
            if not name or not _USER_NAME.fullmatch(name):
                raise ConfigError(f"bad user name {name!r} for role {role}", option="declare")
            if roles.get(name, role) != role:
                raise ConfigError(
                    f"user {name!r} declared both {roles[name]} and {role}", option="declare"
                )
            roles[name] = role

        add(admin.user, ADMIN)
        if feeder is not None:
            add(feeder.user, FEEDER)
        extra: list[str] = []
        for word, names in cfg.declared.items():
            if word == "exchange":
                extra.extend(names)
            elif word in PRIVATE_WORDS:
                continue  # read below, once every user is known
            elif word in _ROLE_WORDS:
                for name in names:
                    add(name, _ROLE_WORDS[word])
            else:
                raise ConfigError(f"unknown role {word!r} in declare", option="declare")
        management = cfg.get("management_url") or _default_management(admin, cfg.get("mgmt_port"))
        private = private_readers(cfg.declared, roles)
        return cls(
            admin=admin,
            feeder=feeder,
            users=tuple(
                PumpUser(n, r, tuple(s for s in private if n in private[s]))
                for n, r in roles.items()
            ),
            private=private,
            extra_exchanges=tuple(dict.fromkeys(extra)),
            cluster=cfg.get("cluster"),
            management_url=str(management),
        )

    def user(self, name: str) -> PumpUser | None:
        return next((u for u in self.users if u.name == name), None)

    @property
    def exchanges(self) -> tuple[str, ...]:
        """Every exchange the pump should have, without repeats."""
        names = [*PUMP_EXCHANGES, *(x for u in self.users for x in u.exchanges)]
        return tuple(dict.fromkeys([*names, *self.extra_exchanges]))

    def broker_url_for(self, user: str) -> str:
        """The AMQP URL (no password) by which ``user`` logs in, for credential lookups."""
        a = self.admin
        port = f":{a.port}" if a.port is not None else ""
        return f"{a.scheme}://{user}@{a.host}{port}{a.path or '/'}"

    def exchange_owner(self, exchange: str) -> str | None:
        """The longest declared user u for which ``exchange`` is ``x?_u`` or ``x?_u_...``.

        The same rule as anti-spoofing (spec 9.3), for the ``xs_``, ``xr_`` and ``xl_``
        families; None for other names or when no user matches.
        """
        if len(exchange) < 4 or exchange[0] != "x" or exchange[2] != "_":
            return None
        rest = exchange[3:]
        best: str | None = None
        for u in self.users:
            if (rest == u.name or rest.startswith(u.name + "_")) and (
                best is None or len(u.name) > len(best)
            ):
                best = u.name
        return best

    def collisions(self) -> list[tuple[str, str]]:
        """Pairs (u, v) of declared users where v is u + ``_...``: their exchanges collide.

        ``xs_al_ice`` is both an exchange of ``al`` (suffix ``ice``) and ``al_ice``'s own.
        """
        names = sorted(u.name for u in self.users)
        return [(a, b) for a in names for b in names if b.startswith(a + "_")]

    def prefixes(self) -> list[tuple[str, str]]:
        """Pairs (u, v) where v starts with u but not with ``u_`` (``al``, ``alice``).

        Harmless with our anchored permissions, but sr2-style unanchored ones (``^xs_al.*``)
        would let ``al`` write ``xs_alice``: worth a warning on a mixed pump.
        """
        names = sorted(u.name for u in self.users)
        return [
            (a, b)
            for a in names
            for b in names
            if a != b and b.startswith(a) and not b.startswith(a + "_")
        ]


def _default_management(admin: ParsedUrl, port: object) -> str:
    scheme = "https" if admin.scheme == "amqps" else "http"
    host = admin.host if ":" not in admin.host or admin.host.startswith("[") else f"[{admin.host}]"
    return f"{scheme}://{host}:{int(port) if isinstance(port, int) else 15672}/"
