"""One AMQP connection owned by one thread: declare, consume, ack, publish with confirms.

A :class:`BrokerSession` is not thread-safe: the flow's thread owns it and is the only one
to call it. Every py-amqp and socket exception is translated here into
:class:`~sarra.errors.BrokerError` (or :class:`~sarra.errors.AccessRefused` for a 403).

Two channels share the connection. The *consume* channel only carries ``basic_qos``,
``basic_consume``, acks and rejects; the *control* channel (in confirm mode) carries
declarations and publishes. A refused declaration or publish therefore closes only the
control channel, which is reopened on next use, while consumers and their unacked deliveries
stay valid. Any error that touches the consume channel, or the connection, ends the
connection: the caller reconnects (``connect`` or ``connect_with_backoff``), the generation
is incremented, and every delivery of the old generation becomes stale (its ack or reject is
dropped, the broker redelivers it).

Consumers registered with :meth:`BrokerSession.consume` are remembered and re-established
automatically by every later ``connect``; a queue declared through
:meth:`BrokerSession.declare_queue` is re-declared (with its bindings) before its consumer.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn, cast

import amqp
import amqp.exceptions

from sarra.broker.base import Broker, BrokerNode, BrokerUrl, Delivery, QueueSpec
from sarra.broker.frames import CONFIRM_FRAME_SIZE, FrameError, publish_frames, scan_confirms
from sarra.errors import AccessRefused, BrokerError, BrokerNotFound
from sarra.notice import WireMessage

log = logging.getLogger(__name__)

#: methods that only ever travel on the consume channel (AMQP class 60 = basic)
_CONSUME_METHODS = frozenset({(60, 10), (60, 20), (60, 30), (60, 80), (60, 90), (60, 120)})
#: publishes allowed in flight before waiting for confirms (bounds memory, not speed)
_CONFIRM_WINDOW = 5000
#: bytes of publish frames gathered before one socket write
_WRITE_CHUNK = 128 * 1024
#: longest single wait on the socket (shorter with short heartbeats, see ``_tick_every``)
_MAX_WAIT = 1.0
#: reading "what is already there" still needs a (tiny) socket timeout
_NO_WAIT = 0.001
#: bytes asked of the socket at once when reading a run of publisher confirms
_CONFIRM_RECV = 64 * 1024
_LIBRARY_ERRORS: tuple[type[Exception], ...] = (amqp.exceptions.AMQPError, OSError)


def backoff_delays(
    initial: float = 0.5, cap: float = 30.0, rng: random.Random | None = None
) -> Iterator[float]:
    """Endless exponential delays with full jitter: ``uniform(0, min(cap, initial * 2**n))``.

    Jitter keeps many instances from reconnecting in lock step after a broker restart.
    The bound never drops below ``initial / 2`` so retries do not spin.
    """
    rand = rng or random.Random()
    bound = initial
    while True:
        yield max(initial / 2, rand.uniform(0, bound))
        bound = min(cap, bound * 2)


def connect_unless_stopped(
    session: Broker, stop: threading.Event, *, initial: float = 0.5, cap: float = 30.0
) -> bool:
    """Connect ``session``, retrying with :func:`backoff_delays` until it succeeds (True) or
    ``stop`` is set (False, at once: the wait between attempts is cut short).

    Each failed attempt is logged; AccessRefused is raised (retrying cannot help).
    """
    for attempt, delay in enumerate(backoff_delays(initial, cap), start=1):
        if stop.is_set():
            return False
        try:
            session.connect()
            return True
        except AccessRefused:
            raise
        except BrokerError as exc:
            log.warning(
                "attempt %d to connect to %s failed: %s; retrying in %.1fs",
                attempt,
                session.url,
                exc,
                delay,
            )
            session.close()
            stop.wait(delay)
    raise AssertionError("unreachable: backoff_delays is endless")


@dataclass
class _Consumer:
    queue: str
    prefetch: int
    on_delivery: Callable[[Delivery], None]
    tag: str = ""


class BrokerSession:
    """An AMQP 0-9-1 session on one connection (see the module docstring for the model)."""

    def __init__(
        self,
        url: BrokerUrl,
        *,
        heartbeat: int = 60,
        connect_timeout: float = 10,
        name: str = "sarra",
        confirm_timeout: float = 60.0,
    ) -> None:
        self.url = url
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.name = name
        self.confirm_timeout = confirm_timeout
        self._conn: Any = None
        self._consume_ch: Any = None
        self._control_ch: Any = None
        self._generation = 0
        self._tick_every = _MAX_WAIT
        self._consumers: dict[str, _Consumer] = {}
        self._created_queues: list[str] = []
        self._queues: dict[str, QueueSpec] = {}
        self._ready: deque[tuple[Callable[[Delivery], None], Delivery]] = deque()
        self._cancelled: list[str] = []
        # publisher confirms on the current control channel
        self._publish_seq = 0
        self._pending: set[int] = set()
        self._low = 1  # lowest tag that a ``multiple`` ack may still have to remove
        self._nacked = 0
        # the node of a broker cluster in use, and whether its connection was lost
        self._node = 0
        self._node_lost = False

    # -- state -------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        """Incremented at every successful (re)connect; 0 before the first."""
        return self._generation

    @property
    def connected(self) -> bool:
        return self._conn is not None and bool(self._conn.connected)

    @property
    def node(self) -> BrokerNode:
        """The node of :attr:`url` connected to (or last tried)."""
        nodes = self.url.candidates()
        return nodes[self._node % len(nodes)]

    def __repr__(self) -> str:
        state = "connected" if self.connected else "closed"
        return f"<BrokerSession {self.url} gen={self._generation} {state}>"

    # -- connection --------------------------------------------------------------------
    def connect(self) -> None:
        """(Re)connect, open both channels and re-establish remembered consumers.

        For a broker cluster (a URL naming several nodes) the nodes are tried in turn, from
        the one last used, or from the next one when the last connection was lost; the first
        that answers is used. Raises AccessRefused when the broker refuses the login or a
        permission, BrokerError for anything else (when every node failed: the last error);
        messages name the broker and user, never the password.
        """
        self._drop()
        url = self.url
        nodes = url.candidates()
        start = (self._node + 1) % len(nodes) if self._node_lost else self._node % len(nodes)
        self._node_lost = False
        failures: list[str] = []
        for step in range(len(nodes)):
            index = (start + step) % len(nodes)
            try:
                conn = self._open(nodes[index])
            except AccessRefused:
                raise
            except BrokerError as exc:
                if len(nodes) == 1:
                    raise
                failures.append(str(exc))
                log.warning("%s; trying the next node", exc)
                continue
            self._node = index
            break
        else:
            raise BrokerError(f"no node of {url} answers: {'; '.join(failures)}")
        self._attach(conn, nodes[self._node])

    def _open(self, node: BrokerNode) -> Any:
        """A py-amqp connection to ``node``, logged in (BrokerError or AccessRefused)."""
        url = self.url
        host = f"[{node.host}]" if ":" in node.host else node.host
        sslopts: dict[str, Any] | bool = False
        if url.tls:
            sslopts = {"server_hostname": node.host, "cert_reqs": ssl.CERT_REQUIRED}
        conn = amqp.Connection(
            host=f"{host}:{node.port}",
            userid=url.user,
            password=node.password,
            virtual_host=url.vhost,
            heartbeat=self.heartbeat,
            connect_timeout=self.connect_timeout,
            ssl=sslopts,
            client_properties={"connection_name": self.name},
        )
        try:
            conn.connect()
        except _LIBRARY_ERRORS as exc:
            with contextlib.suppress(*_LIBRARY_ERRORS):
                conn.collect()
            raise _translate(exc, f"cannot connect to {url.node_url(node)}") from exc
        return conn

    def _attach(self, conn: Any, node: BrokerNode) -> None:
        url = self.url
        self._conn = conn
        self._generation += 1
        # py-amqp only sends and checks heartbeats when ticked: tick several times per
        # negotiated interval so the broker never misses two of ours
        negotiated = float(conn.heartbeat or 0)
        self._tick_every = min(_MAX_WAIT, negotiated / 8) if negotiated else _MAX_WAIT
        log.info("connected to %s (generation %d)", url.node_url(node), self._generation)
        try:
            self._consume_ch = conn.channel()
            for consumer in list(self._consumers.values()):
                spec = self._queues.get(consumer.queue)
                if spec is not None:
                    self._note_if_missing(spec.name)
                    self._declare_queue_on(self._control(), spec)
                self._start_consumer(consumer)
        except _LIBRARY_ERRORS as exc:
            self._fail(exc, "cannot re-establish consumers", control=False)

    def connect_with_backoff(
        self,
        max_wait: float | None = None,
        *,
        initial: float = 0.5,
        cap: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Call :meth:`connect` until it succeeds, sleeping with capped jittered backoff.

        Each failed attempt is logged. AccessRefused is raised at once (retrying cannot
        help); after ``max_wait`` seconds (None: forever) the last BrokerError is raised.
        """
        start = time.monotonic()
        for attempt, delay in enumerate(backoff_delays(initial, cap), start=1):
            try:
                self.connect()
                return
            except AccessRefused:
                raise
            except BrokerError as exc:
                waited = time.monotonic() - start
                if max_wait is not None and waited + delay > max_wait:
                    log.error("giving up on %s after %d attempts: %s", self.url, attempt, exc)
                    raise
                log.warning(
                    "attempt %d to connect to %s failed: %s; retrying in %.1fs",
                    attempt,
                    self.url,
                    exc,
                    delay,
                )
                sleep(delay)

    def close(self) -> None:
        """Close the connection politely (errors ignored). Remembered consumers are kept."""
        conn = self._conn
        if conn is not None and conn.connected:
            try:
                # a bounded wait for close-ok: a dead broker must not hang the caller
                with conn.transport.having_timeout(self.connect_timeout):
                    conn.close()
            except _LIBRARY_ERRORS as exc:
                log.debug("closing %s: %s", self.url, exc)
        self._drop()

    def _drop(self) -> None:
        """Forget the connection without network I/O; buffered deliveries become stale."""
        conn, self._conn = self._conn, None
        self._consume_ch = self._control_ch = None
        self._ready.clear()
        self._cancelled.clear()
        self._reset_confirms()
        if conn is not None:
            with contextlib.suppress(*_LIBRARY_ERRORS):
                conn.collect()

    def _live(self) -> Any:
        if self._conn is None or not self._conn.connected:
            self._node_lost = self._conn is not None
            self._drop()
            raise BrokerError(f"not connected to {self.url}")
        return self._conn

    def _fail(self, exc: BaseException, what: str, *, control: bool) -> NoReturn:
        """Translate ``exc``; keep the connection only for an error confined to control."""
        conn = self._conn
        sig = tuple(getattr(exc, "method_sig", None) or (0, 0))
        channel_only = (
            isinstance(exc, amqp.exceptions.ChannelError)
            and conn is not None
            and conn.connected
            and sig != (0, 0)
        )
        if channel_only and control and sig not in _CONSUME_METHODS:
            self._discard_control()
        else:
            self._node_lost = not channel_only  # the node failed: next connect tries another
            self._drop()
        raise _translate(exc, f"{what} ({self.url})") from exc

    # -- control channel, declarations -------------------------------------------------
    def _control(self) -> Any:
        """The control channel in confirm mode, opened on first use."""
        if self._control_ch is None:
            ch = self._live().channel()
            ch.confirm_select()
            ch.events["basic_ack"].add(self._on_confirm_ack)
            ch.events["basic_nack"].add(self._on_confirm_nack)
            self._control_ch = ch
            self._reset_confirms()
        return self._control_ch

    def _discard_control(self) -> None:
        # py-amqp reopened the channel after the broker closed it, without confirm mode:
        # close it and start afresh (new channel, new confirm sequence) on next use.
        ch, self._control_ch = self._control_ch, None
        self._reset_confirms()
        if ch is not None:
            with contextlib.suppress(*_LIBRARY_ERRORS):
                ch.close()

    def _call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        try:
            return fn(self._control())
        except _LIBRARY_ERRORS as exc:
            self._fail(exc, what, control=True)

    def declare_exchange(self, name: str, durable: bool = True) -> None:
        """Declare a topic exchange (``auto_delete`` false, spec 1.1)."""
        self._call(
            f"cannot declare exchange {name!r}",
            lambda ch: ch.exchange_declare(name, "topic", durable=durable, auto_delete=False),
        )

    def declare_queue(self, spec: QueueSpec) -> tuple[int, int]:
        """Declare ``spec`` and bind it (unless ``spec.bind`` is false); return its (message,
        consumer) counts.

        The spec is remembered so a consumer of that queue re-declares it on reconnect. A
        queue that did not exist before (first use, or lost: expired, deleted) is noted for
        :meth:`take_created_queues`, here and at every reconnect.
        """
        self._note_if_missing(spec.name)
        counts: tuple[int, int] = self._call(
            f"cannot declare queue {spec.name!r}", lambda ch: self._declare_queue_on(ch, spec)
        )
        self._queues[spec.name] = spec
        return counts

    def queue_exists(self, name: str) -> bool:
        """Whether queue ``name`` exists (a passive declare; the connection is kept)."""
        try:
            self._call(
                f"cannot inspect queue {name!r}", lambda ch: ch.queue_declare(name, passive=True)
            )
        except BrokerNotFound:
            return False
        return True

    def _note_if_missing(self, name: str) -> None:
        try:
            exists = self.queue_exists(name)
        except AccessRefused:
            return  # cannot tell: the declaration that follows says what this user may do
        if not exists:
            self._created_queues.append(name)

    def take_created_queues(self) -> list[str]:
        """Names of the queues found missing (then created) by declarations and reconnects
        since the last call: the consumer decides whether that lost anything."""
        names, self._created_queues = self._created_queues, []
        return names

    @staticmethod
    def _declare_queue_on(ch: Any, spec: QueueSpec) -> tuple[int, int]:
        arguments: dict[str, int | str | bool] = {}
        if spec.queue_type != "classic":
            arguments["x-queue-type"] = spec.queue_type
        if spec.single_active:
            arguments["x-single-active-consumer"] = True
        if spec.expire_ms is not None:
            arguments["x-expires"] = spec.expire_ms
        if spec.message_ttl_ms is not None:
            arguments["x-message-ttl"] = spec.message_ttl_ms
        ok = ch.queue_declare(
            spec.name,
            durable=spec.durable,
            auto_delete=spec.auto_delete,
            exclusive=False,
            arguments=arguments or None,
        )
        if spec.bind:
            for exchange, key in spec.bindings:
                ch.queue_bind(spec.name, exchange, routing_key=key)
        return int(ok.message_count), int(ok.consumer_count)

    def queue_counts(self, name: str) -> tuple[int, int]:
        """(messages ready, consumers) of an existing queue; BrokerError if it is missing."""
        ok = self._call(
            f"cannot inspect queue {name!r}", lambda ch: ch.queue_declare(name, passive=True)
        )
        return int(ok.message_count), int(ok.consumer_count)

    def delete_queue(self, name: str) -> None:
        self._call(f"cannot delete queue {name!r}", lambda ch: ch.queue_delete(name))
        self._queues.pop(name, None)

    def delete_exchange(self, name: str) -> None:
        self._call(f"cannot delete exchange {name!r}", lambda ch: ch.exchange_delete(name))

    # -- consuming ---------------------------------------------------------------------
    def consume(self, queue: str, prefetch: int, on_delivery: Callable[[Delivery], None]) -> None:
        """Start consuming ``queue`` with manual acks and ``basic_qos(prefetch)``.

        ``on_delivery`` is called only from :meth:`poll`, once per delivery. The consumer is
        remembered and re-established by every later :meth:`connect`.
        """
        consumer = _Consumer(queue, prefetch, on_delivery)
        self._live()
        try:
            self._start_consumer(consumer)
        except _LIBRARY_ERRORS as exc:
            self._fail(exc, f"cannot consume from {queue!r}", control=False)
        self._consumers[queue] = consumer

    def cancel(self, queue: str) -> None:
        """Stop consuming ``queue`` and forget the consumer."""
        consumer = self._consumers.pop(queue, None)
        if consumer is None or not self.connected or not consumer.tag:
            return
        try:
            self._consume_ch.basic_cancel(consumer.tag)
        except _LIBRARY_ERRORS as exc:
            self._fail(exc, f"cannot cancel consumer of {queue!r}", control=False)

    def _start_consumer(self, consumer: _Consumer) -> None:
        ch = self._consume_ch
        ch.basic_qos(0, consumer.prefetch, False)
        generation = self._generation

        def on_message(msg: Any) -> None:
            self._ready.append((consumer.on_delivery, _delivery(msg, generation)))

        def on_cancel(tag: str) -> None:
            self._cancelled.append(consumer.queue)

        consumer.tag = ch.basic_consume(
            consumer.queue, no_ack=False, callback=on_message, on_cancel=on_cancel
        )

    def fileno(self) -> int | None:
        """The connection's socket, for ``select`` beside other descriptors; None when it
        cannot be used that way (not connected, or TLS, whose buffered records a select on
        the socket would not see). After select says readable, call :meth:`poll` with 0.
        """
        conn = self._conn
        if conn is None or not conn.connected or self.url.tls:
            return None
        sock = getattr(conn.transport, "sock", None)
        return None if sock is None else int(sock.fileno())

    def poll(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for deliveries, dispatch them; return how many.

        Returns as soon as something was dispatched (after taking what is already
        buffered), or when the time is up. Heartbeats are sent and checked meanwhile.
        Raises BrokerError when the connection is lost or the broker cancelled a consumer
        (the connection is then dropped: reconnect to resume).
        """
        conn = self._live()
        deadline = time.monotonic() + max(0.0, timeout)
        count = self._dispatch()
        try:
            while True:
                if count:
                    self._drain(conn, _NO_WAIT, limit=1000)
                    return count + self._dispatch()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._drain(conn, _NO_WAIT, limit=1000)
                    return self._dispatch()
                self._drain(conn, min(remaining, self._tick_every), limit=1)
                count += self._dispatch()
        except _LIBRARY_ERRORS as exc:
            self._fail(exc, "lost the broker while waiting for messages", control=True)

    def _drain(self, conn: Any, wait: float, *, limit: int) -> None:
        """Read up to ``limit`` methods, waiting at most ``wait`` s for each; tick heartbeats.

        Reading comes before the heartbeat check so data that arrived while the caller was
        busy counts as a sign of life.
        """
        try:
            # the socket timeout is set once for the whole drain: each drain_events would
            # otherwise set and restore it around every frame (two syscalls a frame, six a
            # message), the largest single cost of a busy subscriber's intake
            with conn.transport.having_timeout(wait):
                for _ in range(limit):
                    conn.drain_events(timeout=wait)
        except TimeoutError:
            pass
        self._after_drain(conn)

    def _after_drain(self, conn: Any) -> None:
        """Tick heartbeats; raise BrokerError if the broker cancelled a consumer meanwhile."""
        conn.heartbeat_tick(rate=4)
        if self._cancelled:
            queues = ", ".join(self._cancelled)
            self._drop()
            raise BrokerError(f"the broker cancelled the consumer of {queues} ({self.url})")

    def _dispatch(self) -> int:
        count = 0
        while self._ready:
            on_delivery, delivery = self._ready.popleft()
            count += 1
            on_delivery(delivery)
        return count

    def ack(self, d: Delivery, multiple: bool = False) -> None:
        """Ack ``d`` (and all before it when ``multiple``); dropped if ``d`` is stale."""
        if self._stale(d, "ack"):
            return
        try:
            self._consume_ch.basic_ack(d.delivery_tag, multiple=multiple)
        except _LIBRARY_ERRORS as exc:
            self._fail(exc, "cannot ack", control=False)

    def reject(self, d: Delivery, requeue: bool) -> None:
        """Reject ``d``, requeued or not; dropped if ``d`` is stale."""
        if self._stale(d, "reject"):
            return
        try:
            self._consume_ch.basic_reject(d.delivery_tag, requeue=requeue)
        except _LIBRARY_ERRORS as exc:
            self._fail(exc, "cannot reject", control=False)

    def _stale(self, d: Delivery, what: str) -> bool:
        if d.generation == self._generation and self.connected:
            return False
        log.debug(
            "dropping %s of delivery %d from generation %d (now %d): the broker redelivers",
            what,
            d.delivery_tag,
            d.generation,
            self._generation,
        )
        return True

    # -- publishing --------------------------------------------------------------------
    def publish(self, messages: Sequence[WireMessage]) -> None:
        """Publish ``messages`` and return once the broker confirmed every one of them.

        Raises BrokerError on a nack, a confirm timeout or a lost connection, and
        AccessRefused when the broker forbids the exchange: nothing of the batch may be
        taken as published then, so the caller republishes it from its own state.
        """
        if not messages and not self._pending:
            return
        ch = self._call("cannot open a publishing channel", lambda ch: ch)
        conn = self._conn
        deadline = time.monotonic() + self.confirm_timeout
        step = _CONFIRM_WINDOW // 2
        try:
            for start in range(0, len(messages), step):
                self._write_publishes(conn, ch, messages[start : start + step])
                # wait with an unbuffered socket: heartbeats must not sit in our buffer
                self._await_confirms(conn, step, deadline)
            self._await_confirms(conn, 0, deadline)
        except _LIBRARY_ERRORS as exc:
            self._fail(exc, f"publishing {len(messages)} messages failed", control=True)
        finally:
            self._pending.clear()
            self._nacked = 0

    def send(self, messages: Sequence[WireMessage]) -> None:
        """Write ``messages`` now; the next :meth:`publish` waits for their confirms.

        The broker works on them while the caller prepares the next ones. At most
        :data:`_CONFIRM_WINDOW` stay unconfirmed: beyond that, this waits for some. Raises
        as :meth:`publish` does (a refusal may also surface only at the next call).
        """
        if not messages:
            return
        ch = self._call("cannot open a publishing channel", lambda ch: ch)
        conn = self._conn
        try:
            self._write_publishes(conn, ch, messages)
            if len(self._pending) > _CONFIRM_WINDOW:
                deadline = time.monotonic() + self.confirm_timeout
                self._await_confirms(conn, _CONFIRM_WINDOW // 2, deadline)
        except _LIBRARY_ERRORS as exc:
            self._fail(exc, f"publishing {len(messages)} messages failed", control=True)
        except BrokerError:  # a nack or a confirm timeout: the caller republishes them all
            self._pending.clear()
            self._nacked = 0
            raise

    def _write_publishes(self, conn: Any, ch: Any, messages: Sequence[WireMessage]) -> None:
        """Send ``messages`` on ``ch`` in as few socket writes as possible.

        Frames are packed by :func:`~sarra.broker.frames.publish_frames` and written in
        chunks of about :data:`_WRITE_CHUNK` bytes on py-amqp's transport. A message the
        packer refuses (a non-string header value, relayed as it came) goes through
        py-amqp's ``basic_publish``, in order.
        """
        channel, frame_max = ch.channel_id, conn.frame_max
        chunk: list[bytes] = []
        size = 0
        for m in messages:
            try:
                frames = publish_frames(channel, frame_max, m)
            except FrameError:
                if chunk:
                    conn.transport.write(b"".join(chunk))
                    chunk, size = [], 0
                self._publish_one(ch, m)
                continue
            chunk.append(frames)
            size += len(frames)
            self._publish_seq += 1
            self._pending.add(self._publish_seq)
            if size >= _WRITE_CHUNK:
                conn.transport.write(b"".join(chunk))
                chunk, size = [], 0
        if chunk:
            conn.transport.write(b"".join(chunk))
        # py-amqp counts frames written to know when a heartbeat is due: these count too
        conn.bytes_sent += 1

    def _publish_one(self, ch: Any, m: WireMessage) -> None:
        props: dict[str, Any] = {
            "content_type": m.content_type,
            "delivery_mode": m.delivery_mode,
            "application_headers": dict(m.headers),
        }
        if m.expiration is not None:
            props["expiration"] = m.expiration
        ch.basic_publish(
            amqp.Message(m.body, **props), exchange=m.exchange, routing_key=m.routing_key
        )
        self._publish_seq += 1
        self._pending.add(self._publish_seq)

    def _await_confirms(self, conn: Any, allowed: int, deadline: float) -> None:
        while len(self._pending) > allowed and not self._nacked:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                raise BrokerError(
                    f"{len(self._pending)} publishes not confirmed in "
                    f"{self.confirm_timeout:.0f}s ({self.url})"
                )
            self._drain_confirms(conn, allowed, min(remaining, self._tick_every), now)

    def _drain_confirms(self, conn: Any, allowed: int, wait: float, now: float) -> None:
        """Read frames until at most ``allowed`` publishes are unconfirmed (or a nack), for
        up to ``wait`` s in all; then tick heartbeats. As :meth:`_drain` with ``limit=1``
        per frame, but the socket timeout is set once for the whole run of confirms (a
        set and a restore per confirm were two system calls a message)."""
        until = now + wait
        # confirms are read in bulk on a plain socket: py-amqp's transport (``_read_buffer``)
        # is the one a TLS socket needs too, but a select-free recv on it is not ours to do
        bulk = not self.url.tls and isinstance(getattr(conn.transport, "_read_buffer", None), bytes)
        channel = self._control_ch.channel_id if self._control_ch is not None else -1
        try:
            with conn.transport.having_timeout(wait):
                while len(self._pending) > allowed and not self._nacked:
                    if not (bulk and self._read_confirms(conn, channel)):
                        conn.drain_events(timeout=wait)
                    if time.monotonic() >= until:
                        break
        except TimeoutError:
            pass
        self._after_drain(conn)
        if self._nacked:
            raise BrokerError(f"the broker refused (nacked) {self._nacked} messages ({self.url})")

    def _read_confirms(self, conn: Any, channel: int) -> bool:
        """Take the run of publisher confirms at the head of py-amqp's read buffer (reading
        the socket once, under its current timeout, when the buffer does not start with a
        whole one) and count each as its callback would. Returns False when none was there:
        the caller lets py-amqp read the next frame (a heartbeat, a channel close, a
        delivery, or the rest of a confirm cut by the read). One ``recv`` then serves a
        whole run of ``basic.ack`` frames instead of py-amqp's three reads and its method
        dispatch per frame.
        """
        transport = conn.transport
        buf: bytes = transport._read_buffer
        if len(buf) < CONFIRM_FRAME_SIZE:
            data = transport.sock.recv(_CONFIRM_RECV)
            if not data:
                raise OSError("Server unexpectedly closed connection")
            buf += data
            transport._read_buffer = buf
        used, confirms = scan_confirms(buf, channel)
        if not used:
            return False
        transport._read_buffer = buf[used:]
        # py-amqp counts received frames to know the broker is alive (heartbeats)
        conn.bytes_recv += len(confirms)
        for tag, multiple, nack in confirms:
            if nack:
                self._on_confirm_nack(tag, multiple)
            else:
                self._on_confirm_ack(tag, multiple)
        return True

    def _on_confirm_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            # confirm tags are consecutive: walk the low-water mark up to delivery_tag
            while self._low <= delivery_tag:
                self._pending.discard(self._low)
                self._low += 1
        else:
            self._pending.discard(delivery_tag)

    def _on_confirm_nack(self, delivery_tag: int, multiple: bool) -> None:
        before = len(self._pending)
        self._on_confirm_ack(delivery_tag, multiple)
        self._nacked += max(1, before - len(self._pending))

    def _reset_confirms(self) -> None:
        self._publish_seq = 0
        self._pending = set()
        self._low = 1
        self._nacked = 0


def _delivery(msg: Any, generation: int) -> Delivery:
    """Wrap a py-amqp message; headers pass through unconverted (the codec validates)."""
    info = msg.delivery_info
    props = msg.properties
    body = msg.body
    if isinstance(body, str):  # only if a peer set content_encoding and py-amqp decoded it
        body = body.encode("utf-8")
    raw = props.get("application_headers") or {}
    # Raw AMQP values may be int, bytes, ... rather than str: the codec converts and
    # validates them (spec 4.1), so they are passed on as they are despite the type.
    headers = cast(Mapping[str, str], MappingProxyType(dict(raw)))
    message = WireMessage(
        exchange=info["exchange"],
        routing_key=info["routing_key"],
        body=bytes(body),
        headers=headers,
        content_type=props.get("content_type", ""),
        delivery_mode=int(props.get("delivery_mode", 1)),
        expiration=props.get("expiration"),
    )
    return Delivery(
        message=message,
        delivery_tag=int(info["delivery_tag"]),
        generation=generation,
        redelivered=bool(info["redelivered"]),
    )


def _translate(exc: BaseException, what: str) -> BrokerError:
    """The sarra error for a py-amqp or socket exception (403 becomes AccessRefused)."""
    code = getattr(exc, "reply_code", None) or getattr(exc, "code", None)
    text = getattr(exc, "reply_text", None) or str(exc) or type(exc).__name__
    if isinstance(exc, amqp.exceptions.AccessRefused) or code == 403:
        return AccessRefused(f"{what}: access refused: {text}")
    if isinstance(exc, amqp.exceptions.NotFound) or code == 404:
        return BrokerNotFound(f"{what}: {text}")
    return BrokerError(f"{what}: {text}")
