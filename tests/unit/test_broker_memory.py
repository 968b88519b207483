"""The in-memory broker keeps the AMQP rules the flows rely on, so tests on it can be trusted."""

from __future__ import annotations

import threading
import time

import pytest

from sarra.broker.base import Delivery, QueueSpec
from sarra.broker.memory import MemoryBroker, MemorySession, topic_matches
from sarra.errors import BrokerError, BrokerNotFound
from sarra.notice import WireMessage


def wire(key: str, exchange: str = "xpublic", body: bytes = b"b") -> WireMessage:
    return WireMessage(exchange=exchange, routing_key=key, body=body, headers={})


def consumer(
    broker: MemoryBroker, queue: str = "q", *bindings: str, prefetch: int = 10
) -> tuple[MemorySession, list[Delivery]]:
    s = broker.session("consumer")
    s.connect()
    s.declare_exchange("xpublic")
    s.declare_queue(QueueSpec(queue, tuple(("xpublic", b) for b in bindings or ("#",))))
    got: list[Delivery] = []
    s.consume(queue, prefetch, got.append)
    return s, got


def publisher(broker: MemoryBroker) -> MemorySession:
    s = broker.session("publisher")
    s.connect()
    s.declare_exchange("xpublic")
    return s


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("v02.post.#", "v02.post.a.b", True),
        ("v02.post.#", "v02.post", True),  # '#' matches zero words
        ("v02.post.#", "v02.report.a", False),
        ("v02.*.a", "v02.post.a", True),
        ("v02.*.a", "v02.a", False),  # '*' is exactly one word
        ("v02.*.a", "v02.post.x.a", False),
        ("#", "anything.at.all", True),
        ("#.a", "x.y.a", True),
        ("#.a", "x.y.b", False),
        ("a.#.z", "a.z", True),
        ("a.#.z", "a.b.c.z", True),
        ("a.b", "a.b", True),
        ("a.b", "a.bc", False),
    ],
)
def test_topic_matching_follows_amqp(pattern: str, key: str, expected: bool) -> None:
    assert topic_matches(pattern, key) is expected


def test_a_message_goes_once_to_every_queue_whose_binding_matches() -> None:
    broker = MemoryBroker()
    pub = publisher(broker)
    s = broker.session()
    s.connect()
    s.declare_queue(QueueSpec("both", (("xpublic", "v02.#"), ("xpublic", "v02.post.#"))))
    s.declare_queue(QueueSpec("posts", (("xpublic", "v02.post.*"),)))
    s.declare_queue(QueueSpec("other", (("xpublic", "v03.#"),)))
    pub.publish([wire("v02.post.a"), wire("v02.report.a")])
    assert [m.routing_key for m in broker.ready("both")] == ["v02.post.a", "v02.report.a"]
    assert [m.routing_key for m in broker.ready("posts")] == ["v02.post.a"]
    assert broker.ready("other") == []
    assert s.queue_counts("both") == (2, 0)


def test_publishing_to_a_missing_exchange_routes_nothing() -> None:
    broker = MemoryBroker()
    _s, _got = consumer(broker)
    pub = publisher(broker)
    with pytest.raises(BrokerNotFound):
        pub.publish([wire("a"), wire("b", exchange="nowhere")])
    assert broker.ready("q") == []
    assert broker.published == []


def test_deliveries_respect_prefetch_and_acks_open_the_window() -> None:
    broker = MemoryBroker()
    s, got = consumer(broker, prefetch=2)
    publisher(broker).publish([wire(f"k{i}") for i in range(5)])
    assert s.poll(0) == 2
    assert s.poll(0) == 0  # the window is full
    s.ack(got[1], multiple=True)  # acks tags 1 and 2
    assert s.poll(0) == 2
    s.ack(got[3])  # a single ack frees one slot only
    assert s.poll(0) == 1
    assert [d.message.routing_key for d in got] == ["k0", "k1", "k2", "k3", "k4"]
    assert [d.delivery_tag for d in got] == [1, 2, 3, 4, 5]
    assert broker.unacked() == 2  # k2 and k4


def test_unacked_deliveries_are_redelivered_in_order_after_close() -> None:
    broker = MemoryBroker()
    s, got = consumer(broker)
    publisher(broker).publish([wire("a"), wire("b"), wire("c")])
    s.poll(0)
    s.ack(got[1])  # b is done; a and c are not
    s.close()
    assert [m.routing_key for m in broker.ready("q")] == ["a", "c"]
    other, again = consumer(broker)
    other.poll(0)
    assert [(d.message.routing_key, d.redelivered) for d in again] == [("a", True), ("c", True)]


def test_a_reconnect_makes_old_deliveries_stale_and_redelivers_them() -> None:
    broker = MemoryBroker()
    s, got = consumer(broker)
    publisher(broker).publish([wire("a")])
    s.poll(0)
    old = got[0]
    s.connect()  # the consumer is re-established on the new connection
    assert s.generation == old.generation + 1
    s.ack(old)  # dropped: it belongs to the previous connection
    assert s.poll(0) == 1
    assert got[1].redelivered and got[1].message.routing_key == "a"
    assert broker.unacked() == 1
    s.ack(got[1])
    assert broker.unacked() == 0


def test_an_ack_of_an_unknown_tag_ends_the_connection() -> None:
    broker = MemoryBroker()
    s, got = consumer(broker)
    publisher(broker).publish([wire("a")])
    s.poll(0)
    s.ack(got[0])
    with pytest.raises(BrokerError):
        s.ack(got[0])  # a double ack: PRECONDITION_FAILED on a real broker
    assert not s.connected


def test_reject_requeues_or_drops() -> None:
    broker = MemoryBroker()
    s, got = consumer(broker)
    publisher(broker).publish([wire("keep"), wire("drop")])
    s.poll(0)
    s.reject(got[0], requeue=True)
    s.reject(got[1], requeue=False)
    assert [m.routing_key for m in broker.ready("q")] == ["keep"]
    s.poll(0)
    assert got[2].redelivered


def test_a_publish_fault_routes_nothing_and_the_next_publish_succeeds() -> None:
    broker = MemoryBroker()
    _s, _got = consumer(broker)
    pub = publisher(broker)
    broker.fail_publishes(1)
    with pytest.raises(BrokerError):
        pub.publish([wire("a"), wire("b")])
    assert broker.ready("q") == [] and broker.published == []
    assert pub.connected  # a nack does not end the connection
    pub.publish([wire("c")])
    assert [m.routing_key for m in broker.ready("q")] == ["c"]


def test_a_dropped_connection_raises_on_next_use_and_requeues_unacked() -> None:
    broker = MemoryBroker()
    s, got = consumer(broker)
    publisher(broker).publish([wire("a"), wire("b")])
    s.poll(0)
    s.ack(got[0])
    broker.drop_connections()
    assert not s.connected
    s.ack(got[1])  # stale: dropped, as on a closed BrokerSession
    with pytest.raises(BrokerError):
        s.poll(0)
    assert [m.routing_key for m in broker.ready("q")] == ["b"]
    s.connect()
    s.poll(0)
    assert got[-1].message.routing_key == "b" and got[-1].redelivered


def test_refused_connects_then_success() -> None:
    broker = MemoryBroker()
    broker.refuse_connects(2)
    s = broker.session()
    for _ in range(2):
        with pytest.raises(BrokerError):
            s.connect()
        assert not s.connected
    s.connect()
    assert s.connected and s.generation == 1


def test_a_lost_queue_is_redeclared_on_reconnect_and_reported_created() -> None:
    broker = MemoryBroker()
    s, _got = consumer(broker)
    assert s.take_created_queues() == ["q"]
    assert s.queue_counts("q") == (0, 1)
    publisher(broker).delete_queue("q")
    s.connect()
    assert s.take_created_queues() == ["q"]
    assert s.queue_exists("q") and s.queue_counts("q") == (0, 1)
    publisher(broker).publish([wire("a")])
    assert s.poll(0) == 1


def test_poll_wakes_when_another_thread_publishes() -> None:
    broker = MemoryBroker()
    s, got = consumer(broker)
    pub = publisher(broker)
    timer = threading.Timer(0.1, lambda: pub.publish([wire("late")]))
    timer.start()
    started = time.monotonic()
    assert s.poll(5.0) == 1
    assert time.monotonic() - started < 2.0
    assert got[0].message.routing_key == "late"
    timer.join()


def test_cancel_stops_deliveries() -> None:
    broker = MemoryBroker()
    s, _got = consumer(broker)
    s.cancel("q")
    publisher(broker).publish([wire("a")])
    assert s.poll(0) == 0
    assert s.queue_counts("q") == (1, 0)


def test_an_unbound_queue_gets_nothing_until_bound_by_hand() -> None:
    """``bind_queue off``: the queue is declared, its bindings are left to an administrator
    (here a second declaration that binds, as RabbitMQ's queue_bind would)."""
    broker = MemoryBroker()
    pub = publisher(broker)
    s = broker.session()
    s.connect()
    wanted = (("xpublic", "v02.post.#"), ("xnowhere", "v02.post.#"))
    s.declare_queue(QueueSpec("locked", wanted, bind=False))  # a missing exchange is not bound to
    pub.publish([wire("v02.post.a")])
    assert "locked" in broker.queues
    assert broker.ready("locked") == []
    s.declare_queue(QueueSpec("locked", wanted[:1]))
    pub.publish([wire("v02.post.b")])
    assert [m.routing_key for m in broker.ready("locked")] == ["v02.post.b"]
