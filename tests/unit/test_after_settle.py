"""ConsumingLoop's ``after_settle`` (what ``delete`` and ``discard`` run on): called with the
items of a flush only once their outcomes are durable, reported and acked."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sarra.broker.base import QueueSpec
from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.flow.work import WorkItem
from tests.unit.memloop import memory_loop
from tests.unit.test_engine_reconnect import _name, _wire


def test_after_settle_runs_after_the_durability_step_the_reports_and_the_acks(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker()
    session = MemorySession(broker, name="flow")
    events: list[tuple[str, object]] = []

    def work(item: WorkItem) -> None:
        item.settle(201 if _name(item) != "bad" else 499, "done")

    def before_settle() -> None:
        events.append(("durable", None))

    def after_settle(items: list[WorkItem]) -> None:
        reports = len(broker.ready("reports"))
        events.append(("after", (sorted(_name(i) for i in items), broker.unacked(), reports)))

    loop, stop = memory_loop(
        session, tmp_path, work, reports=True, before_settle=before_settle,
        after_settle=after_settle,
    )  # fmt: skip
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        pub = broker.session("publisher")
        pub.connect()
        pub.declare_exchange("xin")
        pub.declare_exchange("xr")
        pub.declare_queue(QueueSpec("reports", (("xr", "#"),)))
        deadline = time.monotonic() + 20
        while "q" not in broker.queues:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        pub.publish([_wire("good"), _wire("bad")])
        while sum(len(e[1][0]) for e in events if e[0] == "after") < 2:  # type: ignore[index,arg-type]
            assert time.monotonic() < deadline, events
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(30)
    afters = [e for e in events if e[0] == "after"]
    seen = sorted(n for _, (names, _, _) in afters for n in names)  # type: ignore[misc]
    assert seen == ["bad", "good"]  # every outcome, the caller picks what it acts on
    settled = 0
    for _, (names, unacked, reports) in afters:  # type: ignore[misc]
        settled += len(names)
        assert unacked <= 2 - settled  # these (and the earlier ones) are acked already
        assert reports >= settled  # and their reports published
    assert events.index(("durable", None)) < events.index(afters[0])


def test_a_failing_after_settle_is_counted_and_the_loop_goes_on(tmp_path: Path) -> None:
    broker = MemoryBroker()
    session = MemorySession(broker, name="flow")
    done: list[str] = []

    def work(item: WorkItem) -> None:
        done.append(_name(item))
        item.settle(201, "done")

    def after_settle(items: list[WorkItem]) -> None:
        raise RuntimeError("a bug in delete")

    loop, stop = memory_loop(session, tmp_path, work, threads=1, after_settle=after_settle)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        pub = broker.session("publisher")
        pub.connect()
        pub.declare_exchange("xin")
        deadline = time.monotonic() + 20
        while "q" not in broker.queues:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        pub.publish([_wire("first")])
        while loop.after_settle_failed < 1:
            assert time.monotonic() < deadline, done
            time.sleep(0.01)
        pub.publish([_wire("second")])  # the loop still consumes after the failure
        while loop.after_settle_failed < 2:
            assert time.monotonic() < deadline, done
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert done == ["first", "second"]
    assert loop.after_settle_failed == 2
    assert broker.unacked() == 0 and broker.ready("q") == []  # both acked: outcomes were durable
