"""Declarations and clean-up used by the ``declare`` and ``cleanup`` verbs.

Thin helpers over :class:`~sarra.broker.base.Broker`: they add logging and the
order of operations (exchanges before the queues bound to them), nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sarra.broker.base import Broker, QueueSpec
from sarra.errors import AccessRefused

log = logging.getLogger(__name__)


def declare_exchanges(session: Broker, names: Iterable[str]) -> None:
    """Declare each exchange (topic, durable); AccessRefused when the user may not."""
    for name in names:
        session.declare_exchange(name)
        log.info("declared exchange %s", name)


def ensure_exchanges(session: Broker, names: Iterable[str]) -> None:
    """Declare the exchanges a configuration uses, when the broker lets this user do so.

    On a pump, exchanges usually belong to the administrator and an ordinary user may not
    declare them: a refusal is not an error here (publishing or binding will say clearly if
    the exchange really is missing).
    """
    for name in dict.fromkeys(names):
        try:
            session.declare_exchange(name)
        except AccessRefused:
            log.debug("not allowed to declare exchange %s; assuming it exists", name)


def declare_and_bind(session: Broker, spec: QueueSpec) -> tuple[int, int]:
    """Declare the queue and its bindings; return its (message, consumer) counts."""
    counts = session.declare_queue(spec)
    for exchange, key in spec.bindings:
        if spec.bind:
            log.info("bound queue %s to %s with %s", spec.name, exchange, key)
        else:
            log.info("bind_queue off: queue %s not bound to %s with %s", spec.name, exchange, key)
    log.info("declared queue %s (%d messages, %d consumers)", spec.name, *counts)
    return counts


def cleanup_queue(session: Broker, name: str) -> None:
    """Delete the queue (a missing queue is not an error: RabbitMQ deletes idempotently)."""
    session.delete_queue(name)
    log.info("deleted queue %s", name)
