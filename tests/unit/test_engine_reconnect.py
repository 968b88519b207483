"""The consuming loop after a connection it finds closed: nothing of the old one is acked by
the new one.

Delivery tags start again at 1 on every connection. The loop used to reconnect, when it found
the session no longer connected, without forgetting the deliveries of the old connection:
their tags stayed at the head of its outstanding list, a new delivery with the same tag took
their place, and its ``multiple`` ack then acked every earlier delivery of the new connection,
including work still running in the pool.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sarra.broker.base import QueueSpec
from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.codec import v02
from sarra.codec.timestamps import now_timestamp
from sarra.flow.engine import ConsumingLoop, LoopSettings, ReportSettings
from sarra.flow.retryqueue import RetryQueue
from sarra.flow.work import WorkItem
from sarra.notice import Checksum, PartSpec, WireMessage
from tests.unit.memloop import memory_loop


def _name(item: WorkItem) -> str:
    return item.notice.path.rsplit("/", 1)[-1]


def _wire(name: str) -> WireMessage:
    data = name.encode()
    notice = v02.make_notice(
        exchange="xin",
        topic_prefix="v02.post",
        pubtime=now_timestamp(),
        base_url="http://example.com",
        path=f"/{name}",
        checksum=Checksum("d", hashlib.md5(data).hexdigest()),
        parts=PartSpec("1", len(data), 1, 0, 0),
    )
    return v02.to_wire(notice, exchange="xin")


def _wait(pred: Callable[[], bool], what: str, state: Callable[[], object]) -> None:
    deadline = time.monotonic() + 20
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {state()}"
        time.sleep(0.01)


def test_a_connection_found_closed_does_not_let_a_new_delivery_ack_running_work(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker()
    session = MemorySession(broker, name="flow")
    release_slow = threading.Event()
    done: list[str] = []
    dropped = threading.Event()

    def select(item: WorkItem) -> bool:
        if _name(item) == "trigger" and not dropped.is_set():
            dropped.set()
            broker.drop_connections()  # lost while the flow thread dispatches
        return True

    def work(item: WorkItem) -> None:
        if _name(item) == "slow":
            release_slow.wait(20)
        done.append(_name(item))
        item.settle(201, "done")

    loop, stop = memory_loop(session, tmp_path, work, select=select, threads=4)

    def state() -> object:
        return done, broker.unacked(), session.generation

    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        pub = broker.session("publisher")
        pub.connect()
        pub.declare_exchange("xin")
        _wait(lambda: "q" in broker.queues, "the queue", state)
        # tags 1-4 settle, tag 5 (slow) keeps running
        pub.publish([_wire(n) for n in ("a1", "a2", "a3", "a4", "slow")])
        _wait(lambda: len(done) == 4 and broker.unacked() == 1, "the fast ones acked", state)
        pub.publish([_wire("trigger")])  # tag 6: the connection is lost at its dispatch
        _wait(lambda: session.generation == 2, "the reconnection", state)
        # the new connection: slow (tag 1, running again) and trigger (tag 2) redelivered,
        # then b3..b5 (tags 3-5): tag 5 used to take the old slow delivery's place
        _wait(lambda: done.count("trigger") == 2, "the trigger redelivered", state)
        pub.connect()  # the publisher lost its connection too
        pub.publish([_wire(n) for n in ("b3", "b4", "b5")])
        _wait(lambda: {"b3", "b4", "b5"} <= set(done), "the new notices processed", state)
        _wait(lambda: broker.unacked() <= 1, "their acks", state)
        time.sleep(0.3)  # let a wrong ack, if any, land
        # the slow notice is still running in the pool: its delivery must still be unacked
        assert not release_slow.is_set()
        assert broker.unacked() == 1
        assert [m.routing_key for m in broker.ready("q")] == []
    finally:
        release_slow.set()
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert broker.unacked() == 0


def test_a_stop_between_attempts_abandons_the_notice_instead_of_waiting_out_the_pause(
    tmp_path: Path,
) -> None:
    """A retryable failure pauses before the next attempt; a stop in that pause ends the
    attempts at once: no attempt starts after the stop, no outcome, no ack (the broker
    redelivers)."""
    from sarra.errors import TransportUnavailable

    broker = MemoryBroker()
    session = MemorySession(broker, name="flow")
    stop = threading.Event()
    failed_once = threading.Event()
    calls: list[bool] = []  # per attempt: was the stop already set when it started?

    def work(item: WorkItem) -> None:
        calls.append(stop.is_set())
        failed_once.set()
        raise TransportUnavailable("server went away")

    loop = ConsumingLoop(
        session,
        LoopSettings(
            queue=QueueSpec("q", (("xin", "#"),)),
            prefetch=20,
            threads=1,
            attempts=5,
            retry_ttl=60.0,
            exchanges=("xin",),
        ),
        ReportSettings(False, "xr", "host", "user", None, None, None),
        lambda item: True,
        work,
        RetryQueue(tmp_path / "retry.jsonl", ttl=60.0),
        stop=stop,
    )
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        pub = broker.session("publisher")
        pub.connect()
        pub.declare_exchange("xin")
        _wait(lambda: "q" in broker.queues, "the queue", lambda: broker.queues)
        pub.publish([_wire("flaky")])
        assert failed_once.wait(20)
        stop.set()  # during the pause before the second attempt (0.4 s)
        thread.join(30)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    # the old loop slept the pause out and started the next attempt after the stop
    assert calls and True not in calls, calls
    # not acked: back in the queue for the next run
    assert len(broker.ready("q")) == 1 and broker.unacked() == 0


def test_inline_work_is_committed_and_acked_half_a_prefetch_window_at_a_time(
    tmp_path: Path,
) -> None:
    """Work done in the flow thread (``inline``) never reaches the pool; its outcomes are
    committed (the batch barrier) before their acks, and a batch is committed as soon as half
    the prefetch window is pending, while the rest of the window is being worked on."""
    broker = MemoryBroker()
    session = MemorySession(broker, name="flow")
    inline_threads: set[int] = set()
    batches: list[list[str]] = []
    unacked_at_commit: list[int] = []

    def inline(item: WorkItem) -> bool:
        inline_threads.add(threading.get_ident())
        item.settle(201, "done inline")
        return True

    def work(item: WorkItem) -> None:
        raise AssertionError("inline work went to the pool")

    def commit_batch(items: list[WorkItem]) -> None:
        batches.append([_name(i) for i in items])
        unacked_at_commit.append(broker.unacked())

    loop, stop = memory_loop(session, tmp_path, work, commit_batch=commit_batch, inline=inline)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    names = [f"f{i:02d}" for i in range(50)]
    try:
        pub = broker.session("publisher")
        pub.connect()
        pub.declare_exchange("xin")
        _wait(lambda: "q" in broker.queues, "the queue", lambda: None)
        pub.publish([_wire(n) for n in names])

        def state() -> object:
            return batches, broker.unacked()

        _wait(lambda: sum(map(len, batches)) == 50, "every notice committed", state)
        _wait(lambda: broker.unacked() == 0, "every notice acked", state)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert inline_threads == {thread.ident}
    assert sorted(n for b in batches for n in b) == names  # each committed once
    # each batch was committed while its deliveries were still unacked
    assert all(u >= len(b) for u, b in zip(unacked_at_commit, batches, strict=True))
    # half a window (prefetch 20: 10) at a time, not one window per poll
    assert max(map(len, batches)) <= 10
    assert loop.counts == {201: 50}
