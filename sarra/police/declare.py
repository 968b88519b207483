"""``sr_police declare``: make the broker match the pump's ``admin.conf``.

For every account of the pump (admin, feeder, sources, subscribers) it creates or updates
the RabbitMQ user (password from ``credentials.conf``, the ``administrator`` tag for the
admin only) and sets the spec 1.5 permissions on vhost ``/``; then it declares ``xpublic``,
``xreport``, ``xs_<u>`` for every source and subscriber, ``xr_<u>`` for every source and each
``declare exchange NAME``. Everything is idempotent: a second run changes nothing and says
``unchanged``. Users the broker has but the pump does not declare are left alone (``audit``
reports them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from sarra.config.credentials import CredentialStore
from sarra.police.mgmt import Management
from sarra.police.pump import ADMIN, Pump, PumpUser

log = logging.getLogger(__name__)

CREATED, UPDATED, UNCHANGED, SKIPPED = "created", "updated", "unchanged", "skipped"


@dataclass(frozen=True, slots=True)
class Action:
    """What ``declare`` did to one object: ``kind`` user|permissions|exchange."""

    kind: str
    subject: str
    outcome: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        """The action as JSON output shows it: every field by name."""
        return asdict(self)

    def __str__(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.kind:<11} {self.subject:<24} {self.outcome}{extra}"


def password_for(pump: Pump, store: CredentialStore, user: str) -> str | None:
    """``user``'s password from credentials.conf (a line for the admin's broker host)."""
    credential = store.find(pump.broker_url_for(user))
    return credential.password if credential is not None else None


def declare_users(
    pump: Pump, mgmt: Management, store: CredentialStore, users: Iterable[PumpUser]
) -> list[Action]:
    """Create or update each user and its permissions."""
    actions: list[Action] = []
    existing = {u["name"]: u for u in mgmt.users()}
    perms = mgmt.permissions()
    for user in users:
        password = password_for(pump, store, user.name)
        have = existing.get(user.name)
        if password is None:
            why = "no password in credentials.conf"
            if have is None:
                actions.append(Action("user", user.name, SKIPPED, why))
                continue
            actions.append(Action("user", user.name, UNCHANGED, f"{why}; password kept"))
        else:
            # the password cannot be read back, so it is always (re)set: same hash semantics
            mgmt.put_user(user.name, password, user.tags)
            outcome = CREATED if have is None else UPDATED
            if have is not None and _tags(have) == _tags_text(user.tags):
                outcome = UNCHANGED
            actions.append(Action("user", user.name, outcome, f"role {user.role}"))
        want = user.permission
        if perms.get(user.name) == want:
            actions.append(Action("permissions", user.name, UNCHANGED))
        else:
            mgmt.put_permission(user.name, want)
            outcome = CREATED if user.name not in perms else UPDATED
            actions.append(
                Action("permissions", user.name, outcome, f"w={want.write} r={want.read}")
            )
    return actions


def declare_exchanges(mgmt: Management, names: Iterable[str]) -> list[Action]:
    """Declare each missing exchange (topic, durable)."""
    have = {x["name"] for x in mgmt.exchanges()}
    actions = []
    for name in names:
        if name in have:
            actions.append(Action("exchange", name, UNCHANGED))
        else:
            mgmt.put_exchange(name)
            actions.append(Action("exchange", name, CREATED))
    return actions


def declare_pump(pump: Pump, mgmt: Management, store: CredentialStore) -> list[Action]:
    """Everything: the admin's own permissions first (the API needs them to declare
    exchanges), then the other users, then the exchanges.

    Raises:
        AccessRefused: the management API refuses the admin account.
        BrokerError: the management API cannot be reached or fails.
    """
    admins = [u for u in pump.users if u.role == ADMIN]
    others = [u for u in pump.users if u.role != ADMIN]
    actions = declare_users(pump, mgmt, store, admins)
    actions += declare_users(pump, mgmt, store, others)
    actions += declare_exchanges(mgmt, pump.exchanges)
    for action in actions:
        if action.outcome != UNCHANGED:
            log.info("%s", action)
    return actions


def _tags(user: dict[str, object]) -> str:
    tags = user.get("tags", "")
    if isinstance(tags, list):  # RabbitMQ 3.13+ returns a list
        return ",".join(sorted(str(t) for t in tags))
    return _tags_text(str(tags))


def _tags_text(tags: str) -> str:
    return ",".join(sorted(t for t in tags.split(",") if t))
