"""BrokerSession against a real throwaway RabbitMQ node (tests/servers/rabbitmq.py)."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from sarra.broker import BrokerSession, Delivery, QueueSpec
from sarra.broker.admin import cleanup_queue, declare_and_bind, declare_exchanges
from sarra.errors import AccessRefused, BrokerError
from sarra.notice import WireMessage
from tests.servers.rabbitmq import AmqpNames, RabbitNode

pytestmark = pytest.mark.servers

SessionFactory = Callable[..., BrokerSession]


@pytest.fixture
def sessions(rabbitmq: RabbitNode) -> Iterator[SessionFactory]:
    """Make connected sessions (guest by default); all are closed after the test."""
    made: list[BrokerSession] = []

    def make(user: str = "guest", password: str = "guest", **kw: object) -> BrokerSession:
        session = BrokerSession(rabbitmq.broker_url(user, password), **kw)  # type: ignore[arg-type]
        session.connect()
        made.append(session)
        return session

    yield make
    for session in made:
        session.close()


def wire(exchange: str, n: int, *, key: str = "v02.post.a.b", extra: str = "") -> WireMessage:
    body = f"20261123065900.123456789 http://example.com /a/b/f{n:05d}{extra}".encode()
    return WireMessage(
        exchange=exchange,
        routing_key=key,
        body=body,
        headers={"sum": f"d,{n:032x}", "flow": "été ✓ ünïcødé", "seq": str(n)},
    )


def setup_queue(session: BrokerSession, names: AmqpNames, **kw: int) -> QueueSpec:
    declare_exchanges(session, [names.x()])
    spec = QueueSpec(names.q(), bindings=((names.x(), "v02.post.#"),), **kw)  # type: ignore[arg-type]
    declare_and_bind(session, spec)
    return spec


def test_five_thousand_confirmed_messages_are_all_consumed_with_their_headers(
    sessions: SessionFactory, amqp_names: AmqpNames
) -> None:
    pub = sessions(name="pub")
    spec = setup_queue(pub, amqp_names)
    sent = [wire(amqp_names.x(), n) for n in range(5000)]
    pub.publish(sent[:1000])
    pub.publish(sent[1000:])
    assert pub.queue_counts(spec.name) == (5000, 0)

    sub = sessions(name="sub")
    received: list[Delivery] = []

    def on_delivery(d: Delivery) -> None:
        received.append(d)
        sub.ack(d)

    sub.consume(spec.name, 100, on_delivery)
    deadline = time.monotonic() + 60
    while len(received) < 5000 and time.monotonic() < deadline:
        sub.poll(1.0)

    assert len(received) == 5000
    by_body = {d.message.body: d.message for d in received}
    assert len(by_body) == 5000
    for m in sent:
        got = by_body[m.body]
        assert dict(got.headers) == dict(m.headers)
        assert got.exchange == amqp_names.x()
        assert got.routing_key == "v02.post.a.b"
        assert got.content_type == "text/plain"
        assert got.delivery_mode == 2
        assert got.expiration is None
    assert {d.generation for d in received} == {sub.generation}
    cleanup_queue(pub, spec.name)


def test_an_expiration_is_sent_only_when_set(
    sessions: SessionFactory, amqp_names: AmqpNames
) -> None:
    session = sessions()
    spec = setup_queue(session, amqp_names)
    plain = wire(amqp_names.x(), 1)
    expiring = WireMessage(
        plain.exchange, plain.routing_key, b"expiring", plain.headers, expiration="600000"
    )
    session.publish([plain, expiring])
    got: list[Delivery] = []
    session.consume(spec.name, 10, got.append)
    while len(got) < 2:
        assert session.poll(5.0) > 0
    assert [d.message.expiration for d in got] == [None, "600000"]


def test_a_batch_keeps_its_order_with_a_relayed_non_string_header_and_a_multi_frame_body(
    sessions: SessionFactory, amqp_names: AmqpNames
) -> None:
    """Publishes are packed by sarra.broker.frames; a header value that is not a string
    (relayed as it came) goes through py-amqp instead, in its place in the batch, and a body
    longer than a frame is split over several frames."""
    session = sessions()
    spec = setup_queue(session, amqp_names)
    first, last = wire(amqp_names.x(), 1), wire(amqp_names.x(), 3)
    odd = WireMessage(
        first.exchange,
        first.routing_key,
        b"relayed",
        {"sum": "d,00", "hops": 3},  # type: ignore[dict-item]
    )
    big = WireMessage(first.exchange, first.routing_key, bytes(range(256)) * 1200, first.headers)
    session.publish([first, odd, big, last])
    got: list[Delivery] = []
    session.consume(spec.name, 10, got.append)
    while len(got) < 4:
        assert session.poll(5.0) > 0
    assert [d.message.body for d in got] == [first.body, b"relayed", big.body, last.body]
    assert dict(got[1].message.headers) == {"sum": "d,00", "hops": 3}
    assert dict(got[2].message.headers) == dict(first.headers)
    cleanup_queue(session, spec.name)


def test_unacked_messages_are_redelivered_after_the_consumer_connection_closes(
    sessions: SessionFactory, amqp_names: AmqpNames
) -> None:
    pub = sessions()
    spec = setup_queue(pub, amqp_names)
    pub.publish([wire(amqp_names.x(), n) for n in range(10)])

    first = sessions()
    held: list[Delivery] = []
    first.consume(spec.name, 25, held.append)
    while len(held) < 10:
        assert first.poll(5.0) > 0
    assert not any(d.redelivered for d in held)
    first.close()

    second = sessions()
    again: list[Delivery] = []
    second.consume(spec.name, 25, again.append)
    while len(again) < 10:
        assert second.poll(5.0) > 0
    assert all(d.redelivered for d in again)
    assert {d.message.body for d in again} == {d.message.body for d in held}


def test_after_close_all_connections_stale_acks_are_dropped_and_nothing_is_lost(
    rabbitmq: RabbitNode, sessions: SessionFactory, amqp_names: AmqpNames
) -> None:
    session = sessions()
    spec = setup_queue(session, amqp_names)
    everything = {wire(amqp_names.x(), n).body for n in range(50)}
    session.publish([wire(amqp_names.x(), n) for n in range(50)])

    deliveries: list[Delivery] = []
    session.consume(spec.name, 10, deliveries.append)
    while len(deliveries) < 10:
        assert session.poll(5.0) > 0
    acked: Counter[bytes] = Counter()
    for d in deliveries[:5]:
        session.ack(d)
        acked[d.message.body] += 1
    held = deliveries[5:10]
    # a round trip on the same connection, so the acks above are in before the cut
    session.queue_counts(spec.name)
    old_generation = session.generation

    rabbitmq.close_all_connections("fault injection")
    with pytest.raises(BrokerError):
        for _ in range(20):
            session.poll(0.5)
    assert not session.connected

    session.connect_with_backoff(max_wait=30)
    assert session.generation == old_generation + 1
    for d in held:  # stale: must be dropped, not sent on a reused delivery tag
        session.ack(d)
    deliveries.clear()
    deadline = time.monotonic() + 30
    while sum(acked.values()) < 50 and time.monotonic() < deadline:
        session.poll(0.5)
        for d in deliveries:
            assert d.generation == session.generation
            session.ack(d)
            acked[d.message.body] += 1
        deliveries.clear()

    assert set(acked) == everything
    assert max(acked.values()) == 1
    assert session.queue_counts(spec.name) == (0, 1)


def test_a_publish_cut_by_close_all_connections_raises_and_a_republish_succeeds(
    rabbitmq: RabbitNode, sessions: SessionFactory, amqp_names: AmqpNames
) -> None:
    session = sessions()
    spec = setup_queue(session, amqp_names)
    confirmed = 0
    n = 0
    cutter = threading.Thread(target=rabbitmq.close_all_connections, args=("cut publish",))
    failed: list[WireMessage] = []
    cutter.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            batch = [wire(amqp_names.x(), n + i) for i in range(300)]
            n += len(batch)
            try:
                session.publish(batch)
            except BrokerError:
                failed = batch
                break
            confirmed += len(batch)
    finally:
        cutter.join()
    assert failed, "the publish loop never saw the connection cut"

    session.connect_with_backoff(max_wait=30)
    session.publish(failed)
    messages, _ = session.queue_counts(spec.name)
    assert messages >= confirmed + len(failed)


def test_a_queue_is_declared_with_its_expire_and_message_ttl(
    rabbitmq: RabbitNode, sessions: SessionFactory, amqp_names: AmqpNames
) -> None:
    session = sessions()
    spec = setup_queue(session, amqp_names, expire_ms=600_000, message_ttl_ms=300_000)
    info = rabbitmq.queue_info(spec.name)
    assert info["arguments"] == {"x-expires": 600_000, "x-message-ttl": 300_000}
    assert info["durable"] is True
    assert session.declare_queue(spec) == (0, 0)


def test_inspecting_a_missing_queue_fails_but_the_session_survives(
    sessions: SessionFactory, amqp_names: AmqpNames
) -> None:
    session = sessions()
    generation = session.generation
    with pytest.raises(BrokerError, match="cannot inspect queue"):
        session.queue_counts(amqp_names.q("missing"))
    assert session.connected
    assert session.generation == generation
    spec = setup_queue(session, amqp_names)
    assert session.queue_counts(spec.name) == (0, 0)


def test_a_user_without_permission_is_refused_and_keeps_the_connection(
    rabbitmq: RabbitNode, sessions: SessionFactory, amqp_names: AmqpNames
) -> None:
    user = f"al{secrets.token_hex(3)}"
    password = secrets.token_hex(8)
    rabbitmq.add_user(user, password)
    own = rf"^q_{user}\..*|^xs_{user}$"
    rabbitmq.set_permissions(user, own, own, own)
    admin = sessions()
    declare_exchanges(admin, [amqp_names.x()])

    session = sessions(user, password)
    with pytest.raises(AccessRefused):
        session.publish([wire(amqp_names.x(), 1)])
    assert session.connected
    with pytest.raises(AccessRefused):
        session.declare_exchange(amqp_names.x("_other"))
    # the refusals closed only the control channel: allowed work still goes through
    session.declare_exchange(f"xs_{user}")
    session.publish([wire(f"xs_{user}", 2)])

    with pytest.raises(AccessRefused) as refused:
        BrokerSession(rabbitmq.broker_url(user, "wrong-" + password)).connect()
    assert user in str(refused.value)
    assert rabbitmq.host in str(refused.value)
    assert password not in str(refused.value)


def test_access_refused_at_login_is_not_retried(rabbitmq: RabbitNode) -> None:
    session = BrokerSession(rabbitmq.broker_url("guest", "not-the-password"))
    sleeps: list[float] = []
    with pytest.raises(AccessRefused):
        session.connect_with_backoff(max_wait=30, sleep=sleeps.append)
    assert sleeps == []


def test_heartbeats_keep_an_idle_connection_open(
    sessions: SessionFactory, amqp_names: AmqpNames
) -> None:
    session = sessions(heartbeat=1)
    spec = setup_queue(session, amqp_names)
    got: list[Delivery] = []
    session.consume(spec.name, 5, got.append)
    assert session.poll(3.0) == 0
    assert session.connected
    session.publish([wire(amqp_names.x(), 7)])
    while not got:
        assert session.poll(5.0) > 0
    assert got[0].message.body == wire(amqp_names.x(), 7).body


def test_a_rejected_delivery_is_requeued_or_dropped(
    sessions: SessionFactory, amqp_names: AmqpNames
) -> None:
    session = sessions()
    spec = setup_queue(session, amqp_names)
    session.publish([wire(amqp_names.x(), 1)])
    got: list[Delivery] = []
    session.consume(spec.name, 5, got.append)
    while not got:
        assert session.poll(5.0) > 0
    session.reject(got.pop(), requeue=True)
    while not got:
        assert session.poll(5.0) > 0
    assert got[0].redelivered
    session.reject(got.pop(), requeue=False)
    session.cancel(spec.name)
    assert session.queue_counts(spec.name) == (0, 0)


def test_a_consumer_comes_back_by_itself_after_the_broker_app_restarts(
    rabbitmq: RabbitNode, sessions: SessionFactory, amqp_names: AmqpNames
) -> None:
    session = sessions()
    spec = setup_queue(session, amqp_names)
    session.publish([wire(amqp_names.x(), n) for n in range(3)])
    got: list[Delivery] = []
    session.consume(spec.name, 1, got.append)
    while not got:
        assert session.poll(5.0) > 0
    first = got.pop()
    rabbitmq.stop_app()
    try:
        with pytest.raises(BrokerError):
            for _ in range(20):
                session.poll(0.5)
        with pytest.raises(BrokerError):
            session.connect()
    finally:
        rabbitmq.start_app()
    session.connect_with_backoff(max_wait=30)
    session.ack(first)  # stale: dropped, so the broker redelivers it below
    bodies = set()
    while len(bodies) < 3:
        assert session.poll(5.0) > 0
        for d in got:
            bodies.add(d.message.body)
            session.ack(d)
        got.clear()
    assert bodies == {wire(amqp_names.x(), n).body for n in range(3)}


def test_publishes_a_full_queue_refuses_are_nacked_and_publish_raises(
    rabbitmq: RabbitNode, sessions: SessionFactory, amqp_names: AmqpNames
) -> None:
    """A queue with ``x-overflow reject-publish`` makes the broker nack what it cannot hold:
    the confirms read in bulk count the nacks, and the publish raises."""
    import amqp

    session = sessions()
    declare_exchanges(session, [amqp_names.x()])
    conn = amqp.Connection(host=f"127.0.0.1:{rabbitmq.port}", userid="guest", password="guest")
    conn.connect()
    try:
        ch = conn.channel()
        q = amqp_names.q()
        ch.queue_declare(q, durable=False, auto_delete=False,
                         arguments={"x-max-length": 5, "x-overflow": "reject-publish"})  # fmt: skip
        ch.queue_bind(q, amqp_names.x(), "v02.post.#")
        session.publish([wire(amqp_names.x(), i) for i in range(5)])  # room for all five
        with pytest.raises(BrokerError, match="nacked"):
            session.publish([wire(amqp_names.x(), i) for i in range(5, 300)])
        assert ch.queue_declare(q, passive=True).message_count == 5
        ch.queue_delete(q)
    finally:
        conn.close()
