"""The MQTT session (sarra/broker/mqtt.py) against a real Mosquitto started by the suite:
confirmed publishes, manual acknowledgements, persistent sessions across a reconnect and a
broker restart, shared subscriptions, and the topic mapping."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from sarra.broker.base import BrokerUrl, Delivery, QueueSpec
from sarra.broker.mqtt import MqttSession
from sarra.errors import BrokerError
from sarra.notice import WireMessage, frozen_headers
from tests.integration.flowkit import unique
from tests.servers.mosquitto import Mosquitto

pytestmark = pytest.mark.servers


def _url(m: Mosquitto) -> BrokerUrl:
    return BrokerUrl("127.0.0.1", m.port, m.user, m.password, protocol="mqtt")


def _msg(exchange: str, key: str, n: int) -> WireMessage:
    return WireMessage(
        exchange=exchange,
        routing_key=key,
        body=json.dumps({"n": n}).encode(),
        headers=frozen_headers({}),
        content_type="application/json",
    )


def _collect(s: MqttSession, got: list[Delivery], pred: Callable[[], bool], t: float = 10) -> None:
    deadline = time.monotonic() + t
    while not pred() and time.monotonic() < deadline:
        s.poll(0.1)


def _expect(s: MqttSession, got: list[Delivery], numbers: range) -> None:
    """Wait for the deliveries numbered ``numbers``, check that each came once, ack them."""
    _collect(s, got, lambda: len(got) >= len(numbers))
    s.poll(0.3)  # a second copy would be here by now
    assert sorted(json.loads(d.message.body)["n"] for d in got) == list(numbers)
    for d in got:
        s.ack(d)


def _consumer(
    m: Mosquitto, queue: str, x: str, got: list[Delivery], n: int = 0, *, shared: bool = True
) -> MqttSession:
    s = MqttSession(_url(m), name="test-consumer", shared=shared)
    s.instance = n
    s.connect()
    s.declare_queue(QueueSpec(queue, ((x, "v03.#"),)))
    s.consume(queue, 100, got.append)
    return s


def test_publish_is_confirmed_and_an_unacked_delivery_comes_back_on_the_session(
    mosquitto: Mosquitto,
) -> None:
    x, q = unique("x"), unique("q_sarra.test.")
    got: list[Delivery] = []
    sub = _consumer(mosquitto, q, x, got)
    pub = MqttSession(_url(mosquitto), name="test-publisher")
    pub.connect()
    try:
        pub.publish([_msg(x, f"v03.d{i % 2}", i) for i in range(10)])
        _collect(sub, got, lambda: len(got) >= 10)
        assert sorted(json.loads(d.message.body)["n"] for d in got) == list(range(10))
        assert got[0].message.content_type == "application/json"
        assert {d.message.exchange for d in got} == {x}
        assert {d.message.routing_key for d in got} == {"v03.d0", "v03.d1"}
        first = sub.generation
        for d in got[:6]:
            sub.ack(d)
        # the connection drops with 4 deliveries unacked: the session resumes and sends them
        sub.close()
        pub.publish([_msg(x, "v03.d9", 100)])  # while the consumer is away: kept for it
        again: list[Delivery] = []
        sub._consumers[q] = (sub._consumers[q][0], again.append)
        sub.connect()
        assert sub.generation > first
        _collect(sub, again, lambda: len(again) >= 5)
        sub.poll(0.5)
        numbers = sorted(json.loads(d.message.body)["n"] for d in again)
        assert numbers == sorted([*(json.loads(d.message.body)["n"] for d in got[6:]), 100])
        assert all(d.redelivered for d in again if json.loads(d.message.body)["n"] != 100)
        for d in again:
            sub.ack(d)
        # a stale ack (of the old generation) is dropped, not sent
        sub.ack(got[7])
        sub.close()
        later: list[Delivery] = []
        sub._consumers[q] = (sub._consumers[q][0], later.append)
        sub.connect()
        sub.poll(1.0)
        assert later == []
    finally:
        pub.close()
        sub.close()
        sub.delete_queue(q)


def test_queued_messages_and_the_session_survive_a_broker_restart(mosquitto: Mosquitto) -> None:
    x, q = unique("x"), unique("q_sarra.test.")
    got: list[Delivery] = []
    sub = _consumer(mosquitto, q, x, got)
    assert sub.take_created_queues() == [q]  # a new session
    sub.close()  # away: the broker keeps what is published for the session
    pub = MqttSession(_url(mosquitto), name="test-publisher")
    pub.connect()
    pub.publish([_msg(x, "v03.r", i) for i in range(20)])
    pub.close()
    mosquitto.restart()
    sub.connect()
    try:
        assert sub.take_created_queues() == []  # the session was present
        _expect(sub, got, range(20))
    finally:
        sub.close()
        sub.delete_queue(q)


def test_a_single_instance_session_keeps_what_is_published_after_a_broker_restart(
    mosquitto: Mosquitto,
) -> None:
    """One instance subscribes with the plain filter: what is published after a broker
    restart and before the consumer is back is kept for it. (Mosquitto 2.0.11 drops part or
    all of it for a shared subscription: measured when this was changed, see docs/mqtt.md.)"""
    x, q = unique("x"), unique("q_sarra.test.")
    got: list[Delivery] = []
    sub = _consumer(mosquitto, q, x, got, shared=False)
    sub.close()
    mosquitto.restart()
    pub = MqttSession(_url(mosquitto), name="test-publisher")
    pub.connect()
    pub.publish([_msg(x, "v03.r", i) for i in range(30)])
    pub.close()
    sub.connect()
    try:
        _expect(sub, got, range(30))
    finally:
        sub.close()
        sub.delete_queue(q)


def test_a_second_instance_shares_with_the_first_and_gets_no_copy_of_its_messages(
    mosquitto: Mosquitto,
) -> None:
    """Instance 0 runs alone (a plain subscription), then the configuration gets a second
    instance: instance 0's session subscribes in the shared form and drops the plain one,
    which would otherwise still give it every message, so each message reaches one
    instance once, and both instances get a share."""
    x, q = unique("x"), unique("q_sarra.test.")
    pub = MqttSession(_url(mosquitto), name="test-publisher")
    pub.connect()
    alone: list[Delivery] = []
    s0 = _consumer(mosquitto, q, x, alone, 0, shared=False)
    try:
        pub.publish([_msg(x, "v03.f", i) for i in range(20)])
        _expect(s0, alone, range(20))
        s0.close()
        a: list[Delivery] = []
        b: list[Delivery] = []
        s0 = _consumer(mosquitto, q, x, a, 0, shared=True)
        s1 = _consumer(mosquitto, q, x, b, 1, shared=True)
        try:
            pub.publish([_msg(x, "v03.f", i) for i in range(100, 140)])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(a) + len(b) < 40:
                s0.poll(0.05)
                s1.poll(0.05)
            for _ in range(10):  # a copy through a leftover plain subscription shows by now
                s0.poll(0.05)
                s1.poll(0.05)
            numbers = sorted(json.loads(d.message.body)["n"] for d in [*a, *b])
            assert numbers == list(range(100, 140))
            assert a and b
            for s, ds in ((s0, a), (s1, b)):
                for d in ds:
                    s.ack(d)
        finally:
            s1.close()
    finally:
        s0.close()
        pub.close()
        MqttSession(_url(mosquitto)).delete_queue(q)


def test_instances_share_a_subscription(mosquitto: Mosquitto) -> None:
    x, q = unique("x"), unique("q_sarra.test.")
    a: list[Delivery] = []
    b: list[Delivery] = []
    sa = _consumer(mosquitto, q, x, a, 1)
    sb = _consumer(mosquitto, q, x, b, 2)
    pub = MqttSession(_url(mosquitto), name="test-publisher")
    pub.connect()
    try:
        pub.publish([_msg(x, "v03.s", i) for i in range(40)])
        deadline = time.monotonic() + 10
        while len(a) + len(b) < 40 and time.monotonic() < deadline:
            sa.poll(0.05)
            sb.poll(0.05)
        for s, ds in ((sa, a), (sb, b)):
            for d in ds:
                s.ack(d)
        numbers = sorted(json.loads(d.message.body)["n"] for d in [*a, *b])
        assert numbers == list(range(40))  # each once
        assert a and b  # both instances got a share
    finally:
        pub.close()
        sa.close()
        sb.close()
        sa.delete_queue(q)


def test_a_v02_message_is_refused_and_a_lost_broker_raises(mosquitto: Mosquitto) -> None:
    pub = MqttSession(_url(mosquitto), name="test-publisher")
    pub.connect()
    try:
        v02 = WireMessage("x", "v02.post.a", b"t b r", frozen_headers({}), "text/plain")
        with pytest.raises(Exception, match="v03 messages only"):
            pub.publish([v02])
    finally:
        pub.close()
    bad = MqttSession(BrokerUrl("127.0.0.1", mosquitto.port, "sarra", "wrong", protocol="mqtt"))
    with pytest.raises(BrokerError, match="refused"):
        bad.connect()


def test_mqtts_checks_the_certificate(
    mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mqtts:// verifies the broker's certificate against the trusted CAs: refused while the
    throwaway CA is not trusted, working once it is (SSL_CERT_FILE, OpenSSL's system store)."""
    url = BrokerUrl(
        "127.0.0.1", mosquitto.tls_port, mosquitto.user, mosquitto.password, tls=True,
        protocol="mqtt",
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent")
    untrusted = MqttSession(url, name="tls-untrusted")
    with pytest.raises(BrokerError, match=r"(?i)certificate"):
        untrusted.connect()
    monkeypatch.setenv("SSL_CERT_FILE", str(mosquitto.ca_file))
    x, q = unique("x"), unique("q_sarra.tls.")
    got: list[Delivery] = []
    sub = MqttSession(url, name="tls-consumer")
    sub.connect()
    sub.declare_queue(QueueSpec(q, ((x, "v03.#"),)))
    sub.consume(q, 10, got.append)
    pub = MqttSession(url, name="tls-publisher")
    pub.connect()
    try:
        pub.publish([_msg(x, "v03.t", 7)])
        _collect(sub, got, lambda: len(got) >= 1)
        assert [json.loads(d.message.body)["n"] for d in got] == [7]
        sub.ack(got[0])
    finally:
        pub.close()
        sub.close()
        sub.delete_queue(q)
