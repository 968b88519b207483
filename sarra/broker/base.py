"""Contract of the broker package: one AMQP session owned by one thread.

The flow's thread owns a :class:`Broker` session; it alone consumes,
acks and publishes. Deliveries remember the connection *generation* they came from, so an
ack after a reconnect is dropped (the broker redelivers) instead of being sent on a stale
delivery tag.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sarra.notice import WireMessage


@dataclass(frozen=True, slots=True)
class BrokerNode:
    """One node of a broker cluster, with the password of its own credentials line."""

    host: str
    port: int
    password: str = field(default="anonymous", repr=False)


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """Where and as whom to connect. ``password`` never appears in ``repr``/``str``.

    ``host``, ``port`` and ``password`` are those of the first node; ``nodes`` lists every
    node of a broker cluster in the order written (empty for a single broker), and a session
    connects to the first live one (:meth:`candidates`).
    """

    host: str
    port: int = 5672
    user: str = "anonymous"
    password: str = field(default="anonymous", repr=False)
    vhost: str = "/"
    tls: bool = False
    #: ``amqp`` or ``mqtt`` (:mod:`sarra.broker.mqtt`)
    protocol: str = "amqp"
    #: every node of a broker cluster, the first being host/port (empty: one broker)
    nodes: tuple[BrokerNode, ...] = ()

    def candidates(self) -> tuple[BrokerNode, ...]:
        """The nodes to try, in order: ``nodes``, or the one host."""
        return self.nodes or (BrokerNode(self.host, self.port, self.password),)

    def __str__(self) -> str:
        scheme = self.protocol + ("s" if self.tls else "")
        vhost = "" if self.vhost == "/" else self.vhost
        hosts = ",".join(f"{n.host}:{n.port}" for n in self.candidates())
        return f"{scheme}://{self.user}@{hosts}/{vhost}"

    def node_url(self, node: BrokerNode) -> str:
        """This URL as text, naming only ``node`` (for logs of one connection)."""
        scheme = self.protocol + ("s" if self.tls else "")
        vhost = "" if self.vhost == "/" else self.vhost
        return f"{scheme}://{self.user}@{node.host}:{node.port}/{vhost}"


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue to declare and bind. Times are milliseconds (AMQP arguments).

    With ``bind`` false (``bind_queue off``) the queue is declared but never bound: its
    ``bindings`` are what the configuration asks for, left to the broker administrator.
    """

    name: str
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, routing key pattern)
    bind: bool = True
    durable: bool = True
    auto_delete: bool = False
    expire_ms: int | None = None
    message_ttl_ms: int | None = None
    #: ``classic`` or ``quorum`` (x-queue-type; a quorum queue is durable, never auto-delete)
    queue_type: str = "classic"
    #: ``x-single-active-consumer``: the broker delivers to one consumer at a time, the next
    #: registered one taking over (with the unacked messages) when it goes
    single_active: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message delivered by ``basic_consume``; ack or reject it through the session."""

    message: WireMessage
    delivery_tag: int
    generation: int
    redelivered: bool = False


class Broker(Protocol):
    """What the flows and the runner call on a broker session.

    :class:`~sarra.broker.session.BrokerSession` is the AMQP implementation and
    :class:`~sarra.broker.memory.MemorySession` the in-memory double for tests; code that
    consumes or publishes is typed against this protocol, never a concrete session. Every
    method may raise :class:`~sarra.errors.BrokerError` (:class:`~sarra.errors.AccessRefused`
    for a refused permission, :class:`~sarra.errors.BrokerNotFound` for a missing entity).
    """

    @property
    def url(self) -> BrokerUrl: ...

    @property
    def generation(self) -> int:
        """Incremented at every successful (re)connect; deliveries of an older one are
        stale (their ack or reject is dropped, the broker redelivers them)."""
        ...

    @property
    def connected(self) -> bool: ...

    def connect(self) -> None:
        """(Re)connect and re-establish remembered consumers (their queues re-declared)."""
        ...

    def connect_with_backoff(self, max_wait: float | None = None) -> None:
        """:meth:`connect` until it succeeds; after ``max_wait`` s the last error is raised."""
        ...

    def close(self) -> None:
        """Close (errors ignored); remembered consumers are kept for the next connect."""
        ...

    def declare_exchange(self, name: str, durable: bool = True) -> None: ...

    def declare_queue(self, spec: QueueSpec) -> tuple[int, int]:
        """Declare and bind ``spec``; return its (messages ready, consumers)."""
        ...

    def queue_exists(self, name: str) -> bool: ...

    def queue_counts(self, name: str) -> tuple[int, int]: ...

    def take_created_queues(self) -> list[str]:
        """Queues found missing (then created) since the last call."""
        ...

    def delete_queue(self, name: str) -> None: ...

    def delete_exchange(self, name: str) -> None: ...

    def consume(self, queue: str, prefetch: int, on_delivery: Callable[[Delivery], None]) -> None:
        """Consume ``queue`` with manual acks; ``on_delivery`` is called only from :meth:`poll`."""
        ...

    def cancel(self, queue: str) -> None: ...

    def fileno(self) -> int | None:
        """A descriptor that is readable when :meth:`poll` has work, or None (poll instead)."""
        ...

    def poll(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for deliveries, dispatch them; return how many."""
        ...

    def ack(self, d: Delivery, multiple: bool = False) -> None: ...

    def reject(self, d: Delivery, requeue: bool) -> None: ...

    def send(self, messages: Sequence[WireMessage]) -> None:
        """Start publishing ``messages`` without waiting for their confirms: the next
        :meth:`publish` waits for them too. A session may also hold them until then. If the
        connection changes in between (a reconnect, a close), they may be lost: the caller
        republishes everything it sent since its last :meth:`publish`."""
        ...

    def publish(self, messages: Sequence[WireMessage]) -> None:
        """Return once the broker confirmed every message, and every one :meth:`send` gave
        since the last call; raise if any is not confirmed."""
        ...
