"""sarra.broker: one AMQP session per flow thread (declare, consume, ack, publish).

See :mod:`sarra.broker.base` for the data types and :mod:`sarra.broker.session` for the
connection model (generations, confirms, error translation).

The session (and with it py-amqp, ssl...) is imported on first use of ``BrokerSession`` or
``backoff_delays``: the configuration reads broker URLs through :mod:`sarra.broker.base`, and
a command that only loads a configuration (``sr_subscribe start``, whose instances connect)
does not pay for the AMQP client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sarra.broker.base import Broker, BrokerUrl, Delivery, QueueSpec

if TYPE_CHECKING:
    from sarra.broker.session import BrokerSession, backoff_delays

__all__ = ["Broker", "BrokerSession", "BrokerUrl", "Delivery", "QueueSpec", "backoff_delays"]

_FROM_SESSION = frozenset({"BrokerSession", "backoff_delays"})


def __getattr__(name: str) -> Any:
    if name in _FROM_SESSION:
        from sarra.broker import session

        return getattr(session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
