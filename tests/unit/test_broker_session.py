"""Fast tests of BrokerSession's pure parts (the broker paths are in tests/integration)."""

from __future__ import annotations

import contextlib
import logging
import random
import socket
from itertools import islice

import amqp
import amqp.exceptions
import pytest

from sarra.broker import BrokerSession, BrokerUrl, Delivery, backoff_delays
from sarra.broker.base import BrokerNode, QueueSpec
from sarra.broker.session import _delivery, _translate
from sarra.errors import AccessRefused, BrokerError
from sarra.notice import WireMessage


def closed_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_backoff_delays_grow_are_capped_and_never_spin() -> None:
    delays = list(islice(backoff_delays(0.5, 8.0, random.Random(7)), 40))
    assert all(0.25 <= d <= 8.0 for d in delays)
    assert max(delays[:2]) <= 1.0
    assert max(delays[10:]) > 1.0  # the bound has grown well past the first ones


def test_backoff_delays_are_jittered() -> None:
    a = list(islice(backoff_delays(1.0, 30.0, random.Random(1)), 10))
    b = list(islice(backoff_delays(1.0, 30.0, random.Random(2)), 10))
    assert a != b


def test_a_delivery_passes_raw_headers_through_unconverted() -> None:
    msg = amqp.Message(
        b"20261123065900.1 http://h /a/f",
        content_type="text/plain",
        delivery_mode=2,
        application_headers={"sum": "d,00", "n": 5, "raw": b"\xc3\xa9"},
    )
    msg.delivery_info = {
        "exchange": "xpublic",
        "routing_key": "v02.post.a",
        "delivery_tag": 42,
        "redelivered": True,
    }
    d = _delivery(msg, generation=3)
    assert d == Delivery(
        message=WireMessage(
            exchange="xpublic",
            routing_key="v02.post.a",
            body=b"20261123065900.1 http://h /a/f",
            headers=d.message.headers,
            content_type="text/plain",
            delivery_mode=2,
        ),
        delivery_tag=42,
        generation=3,
        redelivered=True,
    )
    assert dict(d.message.headers) == {"sum": "d,00", "n": 5, "raw": b"\xc3\xa9"}
    with pytest.raises(TypeError):
        d.message.headers["sum"] = "x"  # type: ignore[index]


def test_a_delivery_without_properties_says_so() -> None:
    msg = amqp.Message("décodé")  # py-amqp hands over str when a peer set content_encoding
    msg.delivery_info = {
        "exchange": "",
        "routing_key": "q_u.x",
        "delivery_tag": 1,
        "redelivered": False,
    }
    d = _delivery(msg, generation=1)
    assert d.message.body == "décodé".encode()
    assert d.message.content_type == ""
    assert d.message.delivery_mode == 1
    assert dict(d.message.headers) == {}


def test_a_403_becomes_access_refused_and_other_errors_broker_error() -> None:
    refused = amqp.exceptions.AccessRefused("ACCESS_REFUSED - no", (60, 40))
    assert type(_translate(refused, "publish")) is AccessRefused
    lost = _translate(ConnectionResetError(104, "reset"), "poll")
    assert type(lost) is BrokerError
    assert lost.retryable
    assert "poll" in str(lost)


def test_acks_and_rejects_on_a_session_that_is_not_connected_are_dropped() -> None:
    session = BrokerSession(BrokerUrl("127.0.0.1", closed_port()))
    d = Delivery(WireMessage("x", "k", b"", {}), delivery_tag=1, generation=0)
    session.ack(d)
    session.reject(d, requeue=False)
    assert not session.connected
    session.publish([])  # nothing to do, nothing to fail


def test_polling_or_publishing_without_a_connection_is_a_broker_error() -> None:
    session = BrokerSession(BrokerUrl("127.0.0.1", closed_port()))
    with pytest.raises(BrokerError, match="not connected"):
        session.poll(0.1)
    with pytest.raises(BrokerError, match="not connected"):
        session.publish([WireMessage("x", "k", b"", {})])


def test_a_refused_connection_names_host_and_user_but_not_the_password() -> None:
    port = closed_port()
    session = BrokerSession(BrokerUrl("127.0.0.1", port, "alice", "s3cr3t-pw"), connect_timeout=2)
    with pytest.raises(BrokerError) as err:
        session.connect()
    assert not isinstance(err.value, AccessRefused)
    text = str(err.value)
    assert f"alice@127.0.0.1:{port}" in text
    assert "s3cr3t-pw" not in text
    assert session.generation == 0
    assert "s3cr3t-pw" not in repr(session)


def test_connect_with_backoff_gives_up_once_max_wait_is_spent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = BrokerSession(BrokerUrl("127.0.0.1", closed_port()), connect_timeout=2)
    slept: list[float] = []
    # a zero budget: the first failure is final, without sleeping
    with (
        caplog.at_level(logging.WARNING, logger="sarra.broker.session"),
        pytest.raises(BrokerError),
    ):
        session.connect_with_backoff(max_wait=0.0, sleep=slept.append)
    assert slept == []
    assert any("giving up" in r.message for r in caplog.records)


def test_connect_with_backoff_logs_and_sleeps_between_attempts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = BrokerSession(BrokerUrl("127.0.0.1", closed_port()), connect_timeout=2)
    slept: list[float] = []

    def sleep(delay: float) -> None:
        slept.append(delay)
        if len(slept) == 3:
            raise KeyboardInterrupt  # stop the endless retry from inside

    with (
        caplog.at_level(logging.WARNING, logger="sarra.broker.session"),
        pytest.raises(KeyboardInterrupt),
    ):
        session.connect_with_backoff(initial=0.5, cap=4.0, sleep=sleep)
    assert len(slept) == 3
    assert [r.message.split(" to ")[0] for r in caplog.records] == [
        "attempt 1",
        "attempt 2",
        "attempt 3",
    ]
    assert all(0.25 <= s <= 4.0 for s in slept)


def test_a_cluster_url_tries_every_node_and_names_them_all_when_none_answers() -> None:
    ports = [closed_port(), closed_port()]
    nodes = tuple(BrokerNode("127.0.0.1", p, "s3cr3t-pw") for p in ports)
    url = BrokerUrl("127.0.0.1", ports[0], "alice", "s3cr3t-pw", nodes=nodes)
    session = BrokerSession(url, connect_timeout=2)
    with pytest.raises(BrokerError) as err:
        session.connect()
    text = str(err.value)
    assert all(f"alice@127.0.0.1:{p}" in text for p in ports)
    assert "s3cr3t-pw" not in text and session.generation == 0


def test_connect_moves_on_to_the_next_node_and_after_a_loss_starts_past_the_lost_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The order of the nodes tried (the real connections: tests/cluster)."""
    nodes = tuple(BrokerNode(h, 5672, "pw") for h in ("a", "b", "c"))
    session = BrokerSession(BrokerUrl("a", 5672, "u", "pw", nodes=nodes))
    tried: list[str] = []
    down = {"a"}

    class Conn:
        def __init__(self) -> None:
            self.connected = True
            self.transport = self

        def having_timeout(self, timeout: float) -> contextlib.nullcontext[None]:
            return contextlib.nullcontext()

        def close(self) -> None:
            self.connected = False

        def collect(self) -> None:
            pass

    def fake_open(node: BrokerNode) -> Conn:
        tried.append(node.host)
        if node.host in down:
            raise BrokerError(f"cannot connect to {node.host}")
        return Conn()

    def fake_attach(conn: Conn, node: BrokerNode) -> None:
        session._conn = conn
        session._generation += 1

    monkeypatch.setattr(session, "_open", fake_open)
    monkeypatch.setattr(session, "_attach", fake_attach)
    session.connect()
    assert tried == ["a", "b"] and session.node.host == "b"
    session.close()  # a polite close: the same node again
    tried.clear()
    session.connect()
    assert tried == ["b"]
    session._conn.connected = False  # the node died under the session
    with pytest.raises(BrokerError, match="not connected"):
        session.poll(0)
    tried.clear()
    down = {"c"}
    session.connect()
    assert tried == ["c", "a"] and session.node.host == "a"


def test_a_quorum_queue_is_declared_with_its_x_queue_type_and_a_classic_one_without() -> None:
    """The arguments sent (the broker's view of them: tests/cluster)."""
    calls: list[tuple[str, dict[str, object]]] = []

    class Channel:
        def queue_declare(self, name: str, **kw: object) -> object:
            calls.append((name, kw))
            return type("Ok", (), {"message_count": 0, "consumer_count": 0})()

    BrokerSession._declare_queue_on(Channel(), QueueSpec("q1", queue_type="quorum", expire_ms=5))
    BrokerSession._declare_queue_on(Channel(), QueueSpec("q2"))
    assert calls[0][1]["arguments"] == {"x-queue-type": "quorum", "x-expires": 5}
    assert calls[0][1]["durable"] is True and calls[0][1]["auto_delete"] is False
    assert calls[1][1]["arguments"] is None
