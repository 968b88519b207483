"""Pump administration: ``sr_police declare`` and ``sr_police audit`` (see sr_police(1)).

The public surface::

    Pump.from_config(load_pump_config(env)) -> Pump;  permission_for(role, user) -> Permission
    Management(base_url, user, password)                  RabbitMQ management HTTP API client
    declare_pump(pump, mgmt, store) -> list[Action]
    run.declare(env) / run.audit(env, AuditSettings) -> AuditReport / run.fix(report, env)
    record_event(kind, **fields)                          for components: forged sources etc.

Nothing here connects at import time.
"""

from sarra.police.pump import Permission, Pump, PumpUser, permission_for
from sarra.security_events import events_path, read_events, record_event

__all__ = [
    "Permission",
    "Pump",
    "PumpUser",
    "events_path",
    "permission_for",
    "read_events",
    "record_event",
]
