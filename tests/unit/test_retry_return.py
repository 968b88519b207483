"""Retry entries handed back to the broker: the message format, the trust rule, what a failed
hand-back keeps, and how the consuming loop restores one (the real broker path is in
tests/integration/test_retry_return.py)."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path

import pytest

from sarra.broker.base import Delivery, QueueSpec
from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.codec import v02
from sarra.codec.timestamps import now_timestamp
from sarra.errors import AccessRefused, BrokerError
from sarra.flow import retryreturn
from sarra.flow.engine import ConsumingLoop, LoopSettings, ReportSettings
from sarra.flow.retryqueue import RetryItem, RetryQueue
from sarra.notice import Checksum, PartSpec, WireMessage, frozen_headers


def _item(name: str = "a.bin", *, first: float = 1000.0, due: float = 2000.0) -> RetryItem:
    data = name.encode()
    notice = v02.make_notice(
        exchange="xs_alice",
        topic_prefix="v02.post",
        pubtime=now_timestamp(),
        base_url="http://example.com",
        path=f"/d/{name}",
        checksum=Checksum("d", hashlib.md5(data).hexdigest()),
        parts=PartSpec("1", len(data), 1, 0, 0),
    )
    wire = v02.to_wire(notice, exchange="xs_alice")
    return RetryItem(
        exchange=wire.exchange,
        routing_key=wire.routing_key,
        body=wire.body.decode(),
        headers={**wire.headers, "x-sarra-retry-exchange": "xs_mallory"},  # brought along
        attempts=3,
        first_seen=first,
        next_at=due,
        last_error="HTTP 404 Not Found",
    )


def test_an_entry_goes_through_the_default_exchange_to_its_queue_and_back_as_it_was() -> None:
    item = _item()
    msg = retryreturn.to_returned(item, "q_feeder.sr_sarra.pump")
    assert msg.exchange == "" and msg.routing_key == "q_feeder.sr_sarra.pump"
    assert msg.delivery_mode == 2
    assert msg.headers["x-sarra-retry-exchange"] == "xs_alice"  # ours, not the notice's
    assert retryreturn.is_returned(msg)
    back = retryreturn.from_returned(msg)
    assert back.exchange == "xs_alice" and back.routing_key == item.routing_key
    assert back.body == item.body and back.content_type == item.content_type
    assert (back.attempts, back.first_seen, back.next_at) == (3, 1000.0, 2000.0)
    assert back.last_error == "HTTP 404 Not Found"
    assert not any(k.startswith("x-sarra-retry-") for k in back.headers)
    assert back.headers == {k: v for k, v in item.headers.items() if not k.startswith("x-sarra")}


def test_only_the_default_exchange_is_believed() -> None:
    """A source may publish our headers on its own exchange: the broker sets the delivery's
    exchange, so such a message is an ordinary notice, not a returned entry."""
    msg = retryreturn.to_returned(_item(), "q")
    forged = WireMessage("xs_mallory", "v02.post.d", msg.body, msg.headers)
    assert not retryreturn.is_returned(forged)


@pytest.mark.parametrize(
    "drop, change",
    [
        ("x-sarra-retry-topic", {}),
        ("x-sarra-retry-attempts", {}),
        ("", {"x-sarra-retry-attempts": "many"}),
        ("", {"x-sarra-retry-next-at": "nan"}),
        ("", {"x-sarra-retry-exchange": ""}),
    ],
)
def test_a_bad_returned_entry_is_refused(drop: str, change: dict[str, str]) -> None:
    msg = retryreturn.to_returned(_item(), "q")
    headers = {k: v for k, v in msg.headers.items() if k != drop} | change
    bad = WireMessage("", "q", msg.body, frozen_headers(headers))
    with pytest.raises(ValueError):
        retryreturn.from_returned(bad)


def _queue(tmp_path: Path, n: int) -> RetryQueue:
    rq = RetryQueue(tmp_path / "retry_001.jsonl", ttl=3600)
    for i in range(n):
        rq.put(_item(f"f{i}.bin"))
    return rq


def test_refused_by_the_broker_every_entry_stays_on_disk(tmp_path: Path) -> None:
    broker = MemoryBroker()
    broker.fail_publishes(1, AccessRefused("access to exchange 'amq.default' refused"))
    rq = _queue(tmp_path, 3)
    returned, reason = retryreturn.hand_back(rq, MemorySession(broker), "q")
    assert returned == 0 and len(rq) == 3
    assert reason is not None and "may not write to the default exchange" in reason
    rq.close()
    assert len(RetryQueue(tmp_path / "retry_001.jsonl", ttl=3600)) == 3


def test_a_batch_not_confirmed_stays_on_disk(tmp_path: Path) -> None:
    broker = MemoryBroker()
    broker.fail_publishes(1, BrokerError("nacked"))
    rq = _queue(tmp_path, 2)
    returned, reason = retryreturn.hand_back(rq, MemorySession(broker), "q")
    assert (returned, len(rq)) == (0, 2)
    assert reason == "broker: nacked"


def test_nothing_to_hand_back(tmp_path: Path) -> None:
    rq = _queue(tmp_path, 0)
    assert retryreturn.hand_back(rq, MemorySession(MemoryBroker()), "q") == (0, None)


def _loop(tmp_path: Path) -> ConsumingLoop:
    return ConsumingLoop(
        MemorySession(MemoryBroker(), name="flow"),
        LoopSettings(queue=QueueSpec("q"), prefetch=10, threads=1, attempts=1, retry_ttl=3600),
        ReportSettings(False, "xs_feeder", "h", "feeder", None, None, None),
        lambda item: True,
        lambda item: item.settle(201, "done"),
        RetryQueue(tmp_path / "retry_001.jsonl", ttl=3600),
        stop=threading.Event(),
    )


def test_the_loop_restores_a_returned_entry_not_due_yet_and_acks_it(tmp_path: Path) -> None:
    loop = _loop(tmp_path)
    now = time.time()
    item = _item(first=now - 600, due=now + 300)
    d = Delivery(retryreturn.to_returned(item, "q"), delivery_tag=1, generation=0)
    loop._intake(d)
    (restored,) = loop.retry_queue.items()
    assert restored.exchange == "xs_alice" and restored.routing_key == item.routing_key
    assert (restored.attempts, restored.first_seen) == (3, now - 600)
    assert loop.retry_queue.due(now) == []  # not retried before it is due
    assert loop.retry_queue.due(now + 301) != []
    assert loop._settle_acks == [d]
    assert loop.counts == {}  # no outcome: it was not processed


def test_the_loop_acks_a_malformed_returned_entry_and_goes_on(tmp_path: Path) -> None:
    loop = _loop(tmp_path)
    msg = retryreturn.to_returned(_item(), "q")
    headers = {k: v for k, v in msg.headers.items() if k != "x-sarra-retry-topic"}
    d = Delivery(WireMessage("", "q", msg.body, frozen_headers(headers)), 1, 0)
    loop._intake(d)
    assert len(loop.retry_queue) == 0
    assert loop._settle_acks == [d] and loop.counts == {417: 1}


def test_a_stopping_instance_alone_on_its_queue_keeps_its_entries(tmp_path: Path) -> None:
    session = MemorySession(MemoryBroker())
    session.connect()
    session.declare_queue(QueueSpec("q"))
    rq = _queue(tmp_path, 2)
    returned, reason = retryreturn.hand_back(rq, session, "q", others_only=True)
    assert (returned, len(rq)) == (0, 2)
    assert reason is not None and reason.startswith("no other consumer on the queue")


def test_past_its_deadline_the_rest_stays_on_disk(tmp_path: Path) -> None:
    rq = _queue(tmp_path, 2)
    session = MemorySession(MemoryBroker())
    returned, reason = retryreturn.hand_back(rq, session, "q", deadline=time.monotonic() - 1)
    assert (returned, len(rq), reason) == (0, 2, "out of time for the stop")


def test_a_stop_without_a_connection_keeps_the_entries_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loop = _loop(tmp_path)  # never connected
    loop.retry_queue.put(_item())
    with caplog.at_level(logging.WARNING):
        loop._return_retries()
    assert len(loop.retry_queue) == 1
    assert (
        "1 retry entries kept on this node (not returned: not connected to the broker at the stop)"
        in caplog.text
    )
