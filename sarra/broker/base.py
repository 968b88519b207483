"""Contract of the broker package: one AMQP session owned by one thread.

The flow's thread owns a :class:`~sarra.broker.session.BrokerSession`; it alone consumes,
acks and publishes. Deliveries remember the connection *generation* they came from, so an
ack after a reconnect is dropped (the broker redelivers) instead of being sent on a stale
delivery tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sarra.notice import WireMessage


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """Where and as whom to connect. ``password`` never appears in ``repr``/``str``."""

    host: str
    port: int = 5672
    user: str = "anonymous"
    password: str = field(default="anonymous", repr=False)
    vhost: str = "/"
    tls: bool = False

    def __str__(self) -> str:
        scheme = "amqps" if self.tls else "amqp"
        vhost = "" if self.vhost == "/" else self.vhost
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{vhost}"


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue to declare and bind. Times are milliseconds (AMQP arguments)."""

    name: str
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, routing key pattern)
    durable: bool = True
    auto_delete: bool = False
    expire_ms: int | None = None
    message_ttl_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message delivered by ``basic_consume``; ack or reject it through the session."""

    message: WireMessage
    delivery_tag: int
    generation: int
    redelivered: bool = False
