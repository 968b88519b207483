"""An MQTT session (``mqtt://``, ``mqtts://``) behind the same :class:`~sarra.broker.base.Broker`
protocol as the AMQP one, with paho-mqtt (>= 2.0, for its manual acknowledgements).

**Mapping.** MQTT has no exchanges nor queues. A message for exchange ``X`` with routing key
``v03.a.b`` is published on topic ``X/v03/a/b``; a binding ``(X, "v03.a.#")`` subscribes to
``X/v03/a/#`` (AMQP ``*`` becomes MQTT ``+``). Topic levels are the levels of sarra's topics,
which are already %-escaped (a directory named ``a#b`` is the level ``a%23b``); a ``+``, which
AMQP topics carry as it is but MQTT reserves, is written ``%2B``. A *queue* is a persistent
MQTT session: its client id is the queue name plus ``_NN``, the instance number,
``clean_session`` off, so what is published while the consumer is away
is kept by the broker (QoS 1) and delivered when it comes back. With several instances
(``shared``), every subscription is a shared subscription ``$share/<queue>/<filter>``, so the
instances of one configuration share the work; with one instance it is the plain filter. A
plain subscription is used whenever sharing is not needed because Mosquitto (2.0.11, measured
here) drops what matches a restored shared subscription between its own restart and the
subscriber's return, while it keeps it for a plain one. A session that changes form (the
number of instances went from one to several, or back) subscribes under the new form and
unsubscribes the old one, so nothing arrives twice.
The session begins at the first run of the instance (``declare`` records nothing on an MQTT
broker: a session made then under another client id would take a share of the messages and
keep it); what is published before that is not kept. When the number of instances is lowered,
``cleanup`` the configuration (it ends every instance's session), or the sessions of the
removed instances keep receiving their share.

**Wire format.** v03 only: a message whose content type is not ``application/json`` is refused
(MQTT 3.1.1 carries no headers, so a v02 notice cannot be carried faithfully).

**No loss.** Subscriptions are QoS 1 and paho's automatic acknowledgement is off: the PUBACK of
a delivery is sent by :meth:`MqttSession.ack`, which the consuming loop calls only once the
outcome is durable. A delivery not acked when the connection is lost is sent again by the
broker when the session resumes (a new generation: acks of the old one are dropped). A publish
returns once every message has its PUBACK (the broker took it); a loss before that raises
:class:`~sarra.errors.BrokerError`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sarra.broker.base import BrokerUrl, Delivery, QueueSpec
from sarra.errors import AccessRefused, BrokerError, ConfigError
from sarra.notice import WireMessage, frozen_headers

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"
#: highest instance number whose session ``cleanup`` ends
MAX_INSTANCES = 32


def _paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError as e:  # an optional dependency: say how to get it
        raise ConfigError(
            "mqtt:// brokers need paho-mqtt >= 2.0 (pip install 'sarra[mqtt]')"
        ) from e
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise ConfigError("mqtt:// brokers need paho-mqtt >= 2.0 (manual acknowledgements)")
    return mqtt


def mqtt_level(level: str) -> str:
    """One topic level as MQTT carries it: ``+`` written ``%2B`` (``#`` is already ``%23``
    in sarra's topics; a literal one is escaped too), ``/`` written ``%2F``."""
    return level.replace("+", "%2B").replace("#", "%23").replace("/", "%2F")


def mqtt_topic(exchange: str, routing_key: str) -> str:
    """``<exchange>/<topic levels>``."""
    return "/".join([exchange, *(mqtt_level(w) for w in routing_key.split("."))])


def mqtt_filter(exchange: str, pattern: str) -> str:
    """The subscription filter of an AMQP binding: ``*`` -> ``+``, ``#`` stays a wildcard."""
    levels = []
    for w in pattern.split("."):
        levels.append("+" if w == "*" else "#" if w == "#" else mqtt_level(w))
    return "/".join([exchange, *levels])


def from_mqtt_topic(topic: str) -> tuple[str, str]:
    """(exchange, routing key) of a received topic: the inverse of :func:`mqtt_topic`."""
    exchange, _, rest = topic.partition("/")
    levels = [w.replace("%2F", "/").replace("%2B", "+") for w in rest.split("/")] if rest else []
    return exchange, ".".join(levels)


def _close_sockets_of(error: BaseException) -> None:
    """Close the sockets a failed connect left open: paho 2.x does not close the TLS socket
    whose handshake failed (an untrusted certificate), it stays referenced by the traceback."""
    tb = error.__traceback__
    while tb is not None:
        for value in list(tb.tb_frame.f_locals.values()):
            if isinstance(value, socket.socket):
                with contextlib.suppress(OSError):
                    value.close()
        tb = tb.tb_next


class MqttSession:
    """One MQTT connection; paho's network thread feeds a queue that :meth:`poll` drains in
    the owner's thread, so deliveries are dispatched only from :meth:`poll`."""

    def __init__(
        self,
        url: BrokerUrl,
        *,
        name: str = "sarra",
        keepalive: int = 60,
        confirm_timeout: float = 60.0,
        connect_timeout: float = 15.0,
        client_id: str | None = None,
        shared: bool = True,
    ) -> None:
        self._url = url
        self.name = name
        self.keepalive = keepalive
        self.confirm_timeout = confirm_timeout
        self.connect_timeout = connect_timeout
        self._client_id = client_id
        #: subscribe with ``$share/<queue>/`` filters (several instances share the messages)
        self.shared = shared
        #: the instance number, part of a consumer's client id (set by the runner)
        self.instance = 0
        self._connected_as = ""
        self._client: Any = None
        self._generation = 0
        self._lost: str | None = None
        self._connected = False
        self._inbox: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        # a socket pair, not a pipe: select() takes it on every platform
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        #: queue name -> (plain filters, callback)
        self._consumers: dict[str, tuple[tuple[str, ...], Callable[[Delivery], None]]] = {}
        self._declared: dict[str, tuple[str, ...]] = {}
        #: delivery tag -> paho message id, of the current generation, in delivery order
        self._unacked: dict[int, int] = {}
        self._next_tag = 0
        self._created: list[str] = []
        self._session_present = False
        self._lock = threading.Lock()
        #: SUBACK / UNSUBACK reason codes by message id, of the current connection
        self._replies: dict[int, list[Any]] = {}
        self._replied = threading.Condition()

    # -- protocol properties ---------------------------------------------------------------

    @property
    def url(self) -> BrokerUrl:
        return self._url

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def connected(self) -> bool:
        return self._client is not None and self._connected and self._lost is None

    # -- connection ---------------------------------------------------------------------

    def _client_id_for(self) -> str:
        if self._client_id is not None:
            return self._client_id
        names = sorted(self._consumers)
        if not names:
            return ""  # a publisher only: no session to keep
        return f"{names[0]}_{self.instance:02d}"

    def connect(self) -> None:
        mqtt = _paho()
        self.close()
        client_id = self._client_id if self._client_id is not None else self._client_id_for()
        persistent = bool(client_id)
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not persistent,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        client.username_pw_set(self._url.user, self._url.password)
        if self._url.tls:
            client.tls_set_context(ssl.create_default_context())
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        ready = threading.Event()
        result: dict[str, Any] = {}

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            result["reason"] = reason
            result["present"] = bool(getattr(flags, "session_present", False))
            ready.set()

        def on_disconnect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            self._lost = f"disconnected ({reason})"
            self._wake()
            ready.set()

        generation = self._generation + 1

        def on_message(c: Any, userdata: Any, msg: Any) -> None:
            self._inbox.put((generation, msg))
            self._wake()

        def on_reply(c: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
            with self._replied:
                self._replies[mid] = list(codes)
                self._replied.notify_all()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        client.on_subscribe = on_reply
        client.on_unsubscribe = on_reply
        with self._replied:
            self._replies.clear()
        self._lost = None
        try:
            client.connect(self._url.host, self._url.port, keepalive=self.keepalive)
        except (OSError, ValueError) as e:
            _close_sockets_of(e)
            raise BrokerError(f"cannot connect to {self._url}: {e}") from e
        client.loop_start()
        if not ready.wait(self.connect_timeout) or "reason" not in result:
            client.loop_stop()
            with contextlib.suppress(Exception):
                client.disconnect()
            raise BrokerError(f"no CONNACK from {self._url} within {self.connect_timeout}s")
        reason = result["reason"]
        if reason.is_failure:
            client.loop_stop()
            text = f"{self._url} refused the connection: {reason}"
            if "authori" in str(reason).lower() or "password" in str(reason).lower():
                raise AccessRefused(text)
            raise BrokerError(text)
        self._client = client
        self._connected_as = client_id
        self._connected = True
        self._generation = generation
        self._unacked.clear()
        self._session_present = result["present"]
        for name, (filters, _cb) in self._consumers.items():
            if not self._session_present:
                self._created.append(name)
            self._subscribe(name, filters)
        log.debug("%s: connected to %s as %r", self.name, self._url, client_id)

    def connect_with_backoff(self, max_wait: float | None = None) -> None:
        start = time.monotonic()
        delay = 0.5
        while True:
            try:
                self.connect()
                return
            except AccessRefused:
                raise
            except BrokerError:
                if max_wait is not None and time.monotonic() - start + delay > max_wait:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def close(self) -> None:
        client, self._client = self._client, None
        self._connected = False
        if client is not None:
            with contextlib.suppress(Exception):
                client.disconnect()
            with contextlib.suppress(Exception):
                client.loop_stop()
        # what was delivered and not acked is sent again when the session resumes
        self._unacked.clear()
        while not self._inbox.empty():
            self._inbox.get_nowait()

    def __del__(self) -> None:
        # the wake-up pipe lives as long as the session object (close() may be followed by
        # connect())
        for sock in (getattr(self, "_wake_r", None), getattr(self, "_wake_w", None)):
            if sock is not None:
                sock.close()

    def _live(self) -> Any:
        if self._client is None or self._lost is not None:
            raise BrokerError(f"{self.name}: not connected to {self._url} ({self._lost})")
        return self._client

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full buffer is awake already
            self._wake_w.send(b"x")

    # -- entities (MQTT has none: sessions and subscriptions stand for queues) --------------

    def declare_exchange(self, name: str, durable: bool = True) -> None:
        """Nothing to declare: an MQTT topic exists when something is published on it."""

    def _filters(self, spec: QueueSpec) -> tuple[str, ...]:
        if not spec.bind:
            return ()
        return tuple(mqtt_filter(x, k) for x, k in spec.bindings)

    def declare_queue(self, spec: QueueSpec) -> tuple[int, int]:
        """Record the subscriptions of ``spec``; they are made by :meth:`consume`, under the
        session of the queue (see the module documentation)."""
        self._declared[spec.name] = self._filters(spec)
        return (0, 0)

    def subscription_filters(
        self, queue: str, filters: Sequence[str]
    ) -> tuple[list[str], list[str]]:
        """The filters ``queue``'s session subscribes to, and those of the other form (shared
        or plain), which a resumed session unsubscribes."""
        plain = list(filters)
        shared = [f"$share/{queue}/{f}" for f in filters]
        return (shared, plain) if self.shared else (plain, shared)

    def _subscribe(self, queue: str, filters: Sequence[str]) -> None:
        client = self._live()
        wanted, other = self.subscription_filters(queue, filters)
        for f in wanted:
            rc, mid = client.subscribe(f, qos=1)
            if rc != 0:
                raise BrokerError(f"subscribe to {f} failed (rc {rc})")
            codes = self._reply(mid, f"SUBACK for {f}")
            if any(getattr(c, "is_failure", False) for c in codes):
                raise AccessRefused(f"{self._url} refused the subscription to {f}: {codes[0]}")
        if self._session_present and other:
            # the session may hold the other form from a run with another number of
            # instances: keeping both would deliver every message twice
            rc, mid = client.unsubscribe(other)
            if rc != 0:
                raise BrokerError(f"unsubscribe from {other} failed (rc {rc})")
            self._reply(mid, f"UNSUBACK for {other}")

    def _reply(self, mid: int, what: str) -> list[Any]:
        """Wait for the broker's answer to the (un)subscription ``mid``: from then on the
        session's subscriptions are those asked for."""
        deadline = time.monotonic() + self.connect_timeout
        with self._replied:
            while mid not in self._replies:
                if self._lost is not None:
                    raise BrokerError(f"{self.name}: connection lost before the {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrokerError(f"{self.name}: no {what} within {self.connect_timeout}s")
                self._replied.wait(min(left, 0.1))
            return self._replies.pop(mid)

    def queue_exists(self, name: str) -> bool:
        return name in self._declared or name in self._consumers

    def queue_counts(self, name: str) -> tuple[int, int]:
        raise BrokerError("an MQTT broker does not tell how many messages a session holds")

    def take_created_queues(self) -> list[str]:
        created, self._created = self._created, []
        return created

    def delete_queue(self, name: str) -> None:
        """End the persistent sessions of ``name`` (instances 0 to :data:`MAX_INSTANCES`):
        a connect with a clean session under each client id discards it."""
        mqtt = _paho()
        self._consumers.pop(name, None)
        self._declared.pop(name, None)
        for n in range(MAX_INSTANCES + 1):
            client = mqtt.Client(
                callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                client_id=f"{name}_{n:02d}",
                clean_session=True,
                protocol=mqtt.MQTTv311,
            )
            client.username_pw_set(self._url.user, self._url.password)
            if self._url.tls:
                client.tls_set_context(ssl.create_default_context())
            try:
                client.connect(self._url.host, self._url.port)
                client.loop(1.0)  # CONNACK: the old session is gone
                client.disconnect()
            except OSError as e:
                raise BrokerError(f"cannot reach {self._url}: {e}") from e

    def delete_exchange(self, name: str) -> None:
        """Nothing to delete."""

    # -- consuming --------------------------------------------------------------------

    def consume(self, queue: str, prefetch: int, on_delivery: Callable[[Delivery], None]) -> None:
        filters = self._declared.get(queue)
        if filters is None:
            raise BrokerError(f"queue {queue} was not declared on the MQTT session")
        self._consumers[queue] = (filters, on_delivery)
        if self._client is not None and self._connected_as != self._client_id_for():
            self.connect()  # the session's client id comes from its queue: reconnect under it
        elif self._client is not None:
            self._subscribe(queue, filters)

    def cancel(self, queue: str) -> None:
        """Stop dispatching ``queue``'s deliveries; its subscriptions stay in the persistent
        session, so what is published while the consumer is stopped is kept for it (an
        UNSUBSCRIBE would end that: ``cleanup`` ends the session). A delivery that arrives
        after this is neither dispatched nor acked: the broker sends it again when the
        session resumes."""
        self._consumers.pop(queue, None)

    def fileno(self) -> int | None:
        return self._wake_r.fileno()

    def poll(self, timeout: float) -> int:
        if self._client is not None and self._lost is not None:
            raise BrokerError(f"{self.name}: connection to {self._url} lost: {self._lost}")
        if self._inbox.empty() and timeout > 0:
            deadline = time.monotonic() + timeout
            while self._inbox.empty() and self._lost is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(left, 0.01))
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        count = 0
        while True:
            try:
                generation, msg = self._inbox.get_nowait()
            except queue.Empty:
                break
            if generation != self._generation:
                continue  # of a closed connection: the broker sends it again
            exchange, key = from_mqtt_topic(msg.topic)
            callback = self._route(msg.topic)
            if callback is None:
                continue
            self._next_tag += 1
            self._unacked[self._next_tag] = msg.mid
            delivery = Delivery(
                WireMessage(
                    exchange=exchange,
                    routing_key=key,
                    body=bytes(msg.payload),
                    headers=frozen_headers({}),
                    content_type=CONTENT_TYPE,
                ),
                self._next_tag,
                generation,
                redelivered=bool(msg.dup),
            )
            callback(delivery)
            count += 1
        if self._lost is not None and self._client is not None:
            raise BrokerError(f"{self.name}: connection to {self._url} lost: {self._lost}")
        return count

    def _route(self, topic: str) -> Callable[[Delivery], None] | None:
        mqtt = _paho()
        for filters, cb in self._consumers.values():
            for f in filters:
                if mqtt.topic_matches_sub(f, topic):
                    return cb
        return None

    def ack(self, d: Delivery, multiple: bool = False) -> None:
        if d.generation != self._generation or self._client is None:
            return  # stale: the broker sends it again on the resumed session
        tags = [t for t in self._unacked if t <= d.delivery_tag] if multiple else [d.delivery_tag]
        for tag in tags:
            mid = self._unacked.pop(tag, None)
            if mid is not None:
                self._client.ack(mid, 1)

    def reject(self, d: Delivery, requeue: bool) -> None:
        """MQTT cannot requeue a delivery: a requeue leaves it unacked (sent again when the
        session resumes); a reject without requeue acks it."""
        if not requeue:
            self.ack(d)

    # -- publishing ---------------------------------------------------------------------

    def send(self, messages: Sequence[WireMessage]) -> None:
        """Published and acknowledged at once (QoS 1 waits are per message anyway)."""
        self.publish(messages)

    def publish(self, messages: Sequence[WireMessage]) -> None:
        client = self._live()
        infos = []
        for m in messages:
            if m.content_type != CONTENT_TYPE:
                raise ConfigError(
                    "MQTT carries v03 messages only: set post_format v03 (and report in v03)"
                )
            info = client.publish(mqtt_topic(m.exchange, m.routing_key), m.body, qos=1)
            if info.rc != 0:
                raise BrokerError(f"{self.name}: publish refused by the client (rc {info.rc})")
            infos.append(info)
        deadline = time.monotonic() + self.confirm_timeout
        for info in infos:
            while not info.is_published():
                if self._lost is not None:
                    raise BrokerError(f"{self.name}: connection lost before PUBACK: {self._lost}")
                if time.monotonic() > deadline:
                    raise BrokerError(f"{self.name}: no PUBACK within {self.confirm_timeout}s")
                info.wait_for_publish(0.05)
