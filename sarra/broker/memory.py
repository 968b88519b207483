"""An in-memory broker and sessions on it: the test double of :class:`~sarra.broker.base.Broker`.

:class:`MemoryBroker` holds topic exchanges, queues and their bindings (AMQP ``#`` and ``*``
matching), and the deliveries each session holds unacked. It keeps the AMQP rules the flows
depend on:

- a delivery not acked when its session closes, reconnects or loses its connection is put
  back at the head of its queue and delivered again, flagged ``redelivered``;
- an ack or reject of a delivery from an older generation is dropped (the message is
  redelivered), as :class:`~sarra.broker.session.BrokerSession` does; an ack of an unknown
  delivery tag is a channel error that ends the connection, as on a real broker;
- ``publish`` returns once every message is routed (confirmed); to an exchange that does not
  exist it raises :class:`~sarra.errors.BrokerNotFound` and routes nothing;
- no more than ``prefetch`` deliveries are unacked per consumer.

Faults are injected on the broker: :meth:`MemoryBroker.fail_publishes` (the next publishes
are refused, as a nack), :meth:`MemoryBroker.drop_connections` (every session loses its
connection silently: the next call on it raises, its unacked deliveries are requeued) and
:meth:`MemoryBroker.refuse_connects`.

The broker is thread-safe; a session, like a real one, belongs to one thread.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sarra.broker.base import Broker, BrokerUrl, Delivery, QueueSpec
from sarra.errors import BrokerError, BrokerNotFound
from sarra.notice import WireMessage

if TYPE_CHECKING:
    from sarra.broker.session import BrokerSession

MEMORY_URL = BrokerUrl("memory", 0, "guest", "guest")


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more words."""
    return _match(pattern.split("."), routing_key.split("."))


def _match(pat: list[str], words: list[str]) -> bool:
    if not pat:
        return not words
    head, rest = pat[0], pat[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])


@dataclass
class _Message:
    wire: WireMessage
    redelivered: bool = False
    #: order of arrival in its queue, so requeued messages go back where they were
    seq: int = 0


@dataclass
class _Queue:
    spec: QueueSpec
    ready: deque[_Message] = field(default_factory=deque)
    consumers: int = 0


@dataclass
class _Consumer:
    queue: str
    prefetch: int
    on_delivery: Callable[[Delivery], None]


class MemoryBroker:
    """Exchanges, queues, bindings and in-flight deliveries, shared by its sessions."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.exchanges: set[str] = set()
        self.queues: dict[str, _Queue] = {}
        self._bindings: list[tuple[str, str, str]] = []  # (exchange, pattern, queue)
        self._sessions: list[MemorySession] = []
        self._seq = itertools.count(1)
        self._fail_publishes: list[BrokerError] = []
        self._refuse_connects = 0
        #: every message routed (confirmed), in order, with its exchange
        self.published: list[WireMessage] = []

    # -- fault injection -----------------------------------------------------------------
    def fail_publishes(self, count: int = 1, error: BrokerError | None = None) -> None:
        """Refuse the next ``count`` publish calls (nothing of them is routed)."""
        with self._cond:
            for _ in range(count):
                self._fail_publishes.append(error or BrokerError("memory broker: publish nacked"))

    def drop_connections(self) -> None:
        """Every connected session loses its connection; its unacked deliveries are requeued."""
        with self._cond:
            for session in list(self._sessions):
                session._lost = True
                self._release(session)
            self._cond.notify_all()

    def refuse_connects(self, count: int = 1) -> None:
        with self._cond:
            self._refuse_connects += count

    # -- inspection ----------------------------------------------------------------------
    def ready(self, queue: str) -> list[WireMessage]:
        """The messages waiting in ``queue`` (not delivered, or delivered and given back)."""
        with self._cond:
            return [m.wire for m in self.queues[queue].ready]

    def unacked(self) -> int:
        """Deliveries held unacked by all sessions."""
        with self._cond:
            return sum(len(s._unacked) for s in self._sessions)

    def session(self, name: str = "test", url: BrokerUrl = MEMORY_URL) -> MemorySession:
        return MemorySession(self, url, name=name)

    # -- the broker side (called by sessions, under the lock) ----------------------------
    def _route(self, messages: Sequence[WireMessage]) -> None:
        for m in messages:
            if m.exchange not in self.exchanges:
                raise BrokerNotFound(f"memory broker: no exchange {m.exchange!r}")
        for m in messages:
            targets = dict.fromkeys(
                q
                for x, pattern, q in self._bindings
                if x == m.exchange and topic_matches(pattern, m.routing_key)
            )
            for q in targets:
                self.queues[q].ready.append(_Message(m, seq=next(self._seq)))
            self.published.append(m)
        self._cond.notify_all()

    def _release(self, session: MemorySession) -> None:
        """Requeue a session's unacked deliveries at the head of their queues, in order."""
        held = sorted(session._unacked.values(), key=lambda qm: qm[1].seq, reverse=True)
        session._unacked.clear()
        for queue, msg in held:
            q = self.queues.get(queue)
            if q is not None:
                msg.redelivered = True
                q.ready.appendleft(msg)
        for c in session._consumers.values():
            q = self.queues.get(c.queue)
            if q is not None and session._active:
                q.consumers -= 1
        session._active = False
        if session in self._sessions:
            self._sessions.remove(session)
        self._cond.notify_all()


class MemorySession:
    """A session on a :class:`MemoryBroker`; implements :class:`~sarra.broker.base.Broker`."""

    def __init__(
        self, broker: MemoryBroker, url: BrokerUrl = MEMORY_URL, *, name: str = "sarra"
    ) -> None:
        self.broker = broker
        self.url = url
        self.name = name
        self._generation = 0
        self._active = False  # attached to the broker (may still be lost: see _lost)
        self._lost = False
        self._consumers: dict[str, _Consumer] = {}
        self._queues: dict[str, QueueSpec] = {}
        self._created: list[str] = []
        self._unacked: dict[int, tuple[str, _Message]] = {}  # tag -> (queue, message)
        self._tags = itertools.count(1)
        #: given to :meth:`send`, routed by the next :meth:`publish` (lost on a reconnect)
        self._unsent: list[WireMessage] = []

    def __repr__(self) -> str:
        return f"<MemorySession {self.name} gen={self._generation} connected={self.connected}>"

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def connected(self) -> bool:
        return self._active and not self._lost

    # -- connection ----------------------------------------------------------------------
    def connect(self) -> None:
        b = self.broker
        with b._cond:
            if self._active:
                b._release(self)
            if b._refuse_connects:
                b._refuse_connects -= 1
                raise BrokerError(f"memory broker refused the connection of {self.name}")
            self._lost = False
            self._active = True
            self._unsent = []
            self._generation += 1
            self._tags = itertools.count(1)
            b._sessions.append(self)
            for c in self._consumers.values():
                spec = self._queues.get(c.queue)
                if spec is not None:
                    self._declare(spec)
                q = b.queues.get(c.queue)
                if q is None:
                    b._release(self)
                    raise BrokerNotFound(f"memory broker: no queue {c.queue!r} to consume")
                q.consumers += 1

    def connect_with_backoff(self, max_wait: float | None = None) -> None:
        deadline = None if max_wait is None else time.monotonic() + max_wait
        while True:
            try:
                self.connect()
                return
            except BrokerError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    def close(self) -> None:
        with self.broker._cond:
            if self._active:
                self.broker._release(self)
            self._lost = False
            self._unsent = []

    def _live(self) -> None:
        """Raise as a real session does on its next call after a silent disconnect."""
        if self._lost:
            self._lost = False
            self._active = False
            raise BrokerError(f"memory broker: {self.name} lost its connection")
        if not self._active:
            raise BrokerError(f"memory broker: {self.name} is not connected")

    # -- declarations --------------------------------------------------------------------
    def declare_exchange(self, name: str, durable: bool = True) -> None:
        with self.broker._cond:
            self._live()
            self.broker.exchanges.add(name)

    def _declare(self, spec: QueueSpec) -> _Queue:
        b = self.broker
        bindings = spec.bindings if spec.bind else ()
        for exchange, _ in bindings:
            if exchange not in b.exchanges:
                raise BrokerNotFound(f"memory broker: cannot bind to no exchange {exchange!r}")
        q = b.queues.get(spec.name)
        if q is None:
            q = b.queues[spec.name] = _Queue(spec)
            self._created.append(spec.name)
        for exchange, pattern in bindings:
            binding = (exchange, pattern, spec.name)
            if binding not in b._bindings:
                b._bindings.append(binding)
        return q

    def declare_queue(self, spec: QueueSpec) -> tuple[int, int]:
        with self.broker._cond:
            self._live()
            q = self._declare(spec)
            self._queues[spec.name] = spec
            return len(q.ready), q.consumers

    def queue_exists(self, name: str) -> bool:
        with self.broker._cond:
            self._live()
            return name in self.broker.queues

    def queue_counts(self, name: str) -> tuple[int, int]:
        with self.broker._cond:
            self._live()
            q = self.broker.queues.get(name)
            if q is None:
                raise BrokerNotFound(f"memory broker: no queue {name!r}")
            return len(q.ready), q.consumers

    def take_created_queues(self) -> list[str]:
        names, self._created = self._created, []
        return names

    def delete_queue(self, name: str) -> None:
        b = self.broker
        with b._cond:
            self._live()
            b.queues.pop(name, None)
            b._bindings = [x for x in b._bindings if x[2] != name]
            self._queues.pop(name, None)

    def delete_exchange(self, name: str) -> None:
        b = self.broker
        with b._cond:
            self._live()
            b.exchanges.discard(name)
            b._bindings = [x for x in b._bindings if x[0] != name]

    # -- consuming -----------------------------------------------------------------------
    def consume(self, queue: str, prefetch: int, on_delivery: Callable[[Delivery], None]) -> None:
        with self.broker._cond:
            self._live()
            q = self.broker.queues.get(queue)
            if q is None:
                raise BrokerNotFound(f"memory broker: no queue {queue!r} to consume")
            q.consumers += 1
            self._consumers[queue] = _Consumer(queue, prefetch, on_delivery)

    def cancel(self, queue: str) -> None:
        with self.broker._cond:
            c = self._consumers.pop(queue, None)
            q = self.broker.queues.get(queue)
            if c is not None and q is not None and self.connected:
                q.consumers -= 1

    def fileno(self) -> int | None:
        return None

    def _take(self) -> list[tuple[Callable[[Delivery], None], Delivery]]:
        """Deliveries due now (within each consumer's prefetch), moved to unacked."""
        out = []
        for c in self._consumers.values():
            q = self.broker.queues.get(c.queue)
            if q is None:
                continue
            held = sum(1 for name, _ in self._unacked.values() if name == c.queue)
            while q.ready and (c.prefetch <= 0 or held < c.prefetch):
                msg = q.ready.popleft()
                tag = next(self._tags)
                self._unacked[tag] = (c.queue, msg)
                held += 1
                out.append(
                    (c.on_delivery, Delivery(msg.wire, tag, self._generation, msg.redelivered))
                )
        return out

    def poll(self, timeout: float) -> int:
        b = self.broker
        deadline = time.monotonic() + max(0.0, timeout)
        with b._cond:
            while True:
                self._live()
                due = self._take()
                remaining = deadline - time.monotonic()
                if due or remaining <= 0:
                    break
                b._cond.wait(remaining)
        for on_delivery, delivery in due:  # outside the lock: callbacks ack and publish
            on_delivery(delivery)
        return len(due)

    def _settle(self, d: Delivery, multiple: bool) -> list[tuple[str, _Message]]:
        if d.generation != self._generation or not self.connected:
            return []  # stale: dropped, the broker redelivers
        if d.delivery_tag not in self._unacked:
            # a channel error on a real broker (PRECONDITION_FAILED): the connection ends
            self.broker._release(self)
            raise BrokerError(f"memory broker: unknown delivery tag {d.delivery_tag}")
        tags = [t for t in self._unacked if t <= d.delivery_tag] if multiple else [d.delivery_tag]
        return [self._unacked.pop(t) for t in sorted(tags)]

    def ack(self, d: Delivery, multiple: bool = False) -> None:
        with self.broker._cond:
            self._settle(d, multiple)
            self.broker._cond.notify_all()

    def reject(self, d: Delivery, requeue: bool) -> None:
        with self.broker._cond:
            for queue, msg in self._settle(d, False):
                q = self.broker.queues.get(queue)
                if requeue and q is not None:
                    msg.redelivered = True
                    q.ready.appendleft(msg)
            self.broker._cond.notify_all()

    # -- publishing ----------------------------------------------------------------------
    def send(self, messages: Sequence[WireMessage]) -> None:
        with self.broker._cond:
            self._live()
            self._unsent.extend(messages)

    def publish(self, messages: Sequence[WireMessage]) -> None:
        batch, self._unsent = [*self._unsent, *messages], []
        if not batch:
            return
        b = self.broker
        with b._cond:
            self._live()
            if b._fail_publishes:
                raise b._fail_publishes.pop(0)
            b._route(batch)


if TYPE_CHECKING:  # both sessions implement the protocol (checked by mypy, not at run time)

    def _conforms(memory: MemorySession, amqp: BrokerSession) -> tuple[Broker, Broker]:
        return memory, amqp
