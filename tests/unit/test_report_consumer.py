"""The report readers' consuming loop (flow/reportqueue.py), on the in-memory broker: a batch
is acked only after ``handle`` returned, a lost connection gets the batch redelivered and is
retried with a backoff that ``stop`` cuts short, a refusal is raised, and an idle reader
returns."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sarra.broker.base import Delivery, QueueSpec
from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.errors import AccessRefused, BrokerError
from sarra.flow.reportqueue import ReportConsumer
from sarra.notice import WireMessage

QUEUE = QueueSpec(name="q_reports", bindings=(("xr_alice", "v02.report.#"),))


def _wire(n: int) -> WireMessage:
    return WireMessage("xr_alice", "v02.report.a", f"report {n}".encode(), {})


def _feed(broker: MemoryBroker, count: int) -> None:
    feeder = MemorySession(broker, name="feeder")
    feeder.connect()
    feeder.publish([_wire(n) for n in range(count)])
    feeder.close()


def _consumer(
    session: MemorySession, handle: object, stop: threading.Event, **kw: object
) -> ReportConsumer:
    return ReportConsumer(
        session,
        QUEUE,
        ("xr_alice",),
        10,
        handle,
        stop,
        poll_every=0.05,
        **kw,  # type: ignore[arg-type]
    )


def _run(consumer: ReportConsumer) -> threading.Thread:
    t = threading.Thread(target=consumer.run, daemon=True)
    t.start()
    return t


def _wait(pred: object, what: str) -> None:
    deadline = time.monotonic() + 10
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_batch_is_acked_once_handle_returned_and_a_failing_handle_gets_it_redelivered(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker()
    stop = threading.Event()
    seen: list[bytes] = []
    lost: list[int] = []
    fail_once = [True]

    def handle(batch: list[Delivery]) -> None:
        assert broker.unacked() == len(batch)  # nothing of the batch is acked yet
        if fail_once[0]:
            fail_once[0] = False
            raise BrokerError("publish to xreport nacked")
        seen.extend(d.message.body for d in batch)

    session = MemorySession(broker, name="reader")
    t = _run(_consumer(session, handle, stop, on_lost=lambda: lost.append(1), initial_delay=0.02))
    _wait(lambda: "q_reports" in broker.queues, "the queue")
    _feed(broker, 3)
    _wait(lambda: len(seen) == 3, "the batch, redelivered after the failure")
    stop.set()
    t.join(5)
    assert not t.is_alive()
    assert sorted(seen) == [b"report 0", b"report 1", b"report 2"]
    assert lost == [1]
    assert broker.unacked() == 0 and broker.ready("q_reports") == []
    assert not session.connected


def test_an_unreachable_broker_is_retried_with_backoff_and_stop_ends_the_wait() -> None:
    broker = MemoryBroker()
    broker.refuse_connects(1000)
    stop = threading.Event()
    session = MemorySession(broker, name="reader")
    # the first delay is at least initial/2 = 30 s: only the stop can end it this soon
    t = _run(_consumer(session, lambda batch: None, stop, initial_delay=60.0))
    _wait(lambda: broker._refuse_connects < 1000, "a connect attempt")
    started = time.monotonic()
    stop.set()
    t.join(5)
    assert not t.is_alive()
    assert time.monotonic() - started < 2
    assert broker._refuse_connects == 999  # one attempt, then the (interrupted) wait


def test_a_dropped_connection_is_reconnected_and_the_unacked_batch_redelivered() -> None:
    broker = MemoryBroker()
    stop = threading.Event()
    seen: list[bytes] = []
    dropped = threading.Event()

    def handle(batch: list[Delivery]) -> None:
        if not dropped.is_set():
            dropped.set()
            broker.drop_connections()  # the ack that follows fails: redelivered
        seen.extend(d.message.body for d in batch)

    session = MemorySession(broker, name="reader")
    t = _run(_consumer(session, handle, stop, initial_delay=0.02))
    _wait(lambda: "q_reports" in broker.queues, "the queue")
    _feed(broker, 2)
    _wait(lambda: len(seen) >= 4, "the redelivery")
    stop.set()
    t.join(5)
    assert not t.is_alive()
    assert sorted(seen) == [b"report 0", b"report 0", b"report 1", b"report 1"]
    assert session.generation == 2
    assert broker.unacked() == 0 and broker.ready("q_reports") == []


class _Refusing(MemorySession):
    def connect(self) -> None:
        raise AccessRefused("ACCESS_REFUSED: login refused for alice")


def test_a_refused_login_is_raised_not_retried() -> None:
    session = _Refusing(MemoryBroker(), name="reader")
    with pytest.raises(AccessRefused):
        _consumer(session, lambda batch: None, threading.Event()).run()


def test_an_idle_reader_returns_after_idle_after_seconds_once_the_queue_is_read() -> None:
    broker = MemoryBroker()
    session = MemorySession(broker, name="reader")
    session.connect()
    session.declare_exchange("xr_alice")
    session.declare_queue(QUEUE)
    session.close()
    _feed(broker, 2)
    seen: list[bytes] = []
    started = time.monotonic()
    _consumer(
        session,
        lambda batch: seen.extend(d.message.body for d in batch),
        threading.Event(),
        idle_after=0.3,
    ).run()
    assert 0.3 <= time.monotonic() - started < 5
    assert sorted(seen) == [b"report 0", b"report 1"]
    assert broker.unacked() == 0 and broker.ready("q_reports") == []
