"""``commit_async``: the batch commit and ``before_settle`` run in a thread of their own while
the flow thread goes on consuming and working; acks still come only once they returned."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.errors import LocalError
from sarra.flow.engine import ConsumingLoop
from sarra.flow.work import WorkItem
from tests.unit.memloop import memory_loop, publisher
from tests.unit.test_engine_reconnect import _name, _wait, _wire


@dataclass
class Probe:
    """What the flow did, from the threads that did it."""

    worked: list[str] = field(default_factory=list)
    work_threads: set[int] = field(default_factory=set)
    committed: list[list[str]] = field(default_factory=list)
    commit_threads: set[int] = field(default_factory=set)
    unacked_at_commit: list[int] = field(default_factory=list)
    synced_after: list[int] = field(default_factory=list)  # batches committed at each sync


def _run(
    tmp_path: Path,
    broker: MemoryBroker,
    names: list[str],
    commit: Callable[[list[WorkItem]], None],
    until: Callable[[MemoryBroker, Probe], bool],
    probe: Probe,
    *,
    stop_first: Callable[[threading.Event], None] | None = None,
) -> ConsumingLoop:
    session = MemorySession(broker, name="flow")

    def inline(item: WorkItem) -> bool:
        probe.worked.append(_name(item))
        probe.work_threads.add(threading.get_ident())
        item.settle(201, "done inline")
        return True

    def work(item: WorkItem) -> None:
        raise AssertionError("inline work went to the pool")

    def commit_batch(items: list[WorkItem]) -> None:
        probe.commit_threads.add(threading.get_ident())
        probe.unacked_at_commit.append(broker.unacked())
        commit(items)
        probe.committed.append([_name(i) for i in items])

    loop, stop = memory_loop(
        session,
        tmp_path,
        work,
        commit_batch=commit_batch,
        before_settle=lambda: probe.synced_after.append(len(probe.committed)),
        inline=inline,
        commit_async=True,
    )
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        publisher(broker).publish([_wire(n) for n in names])
        if stop_first is not None:
            stop_first(stop)
        _wait(lambda: until(broker, probe), "the flow", lambda: (probe, broker.unacked()))
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert probe.work_threads == {thread.ident}
    assert thread.ident not in probe.commit_threads and len(probe.commit_threads) == 1
    return loop


def test_the_flow_works_on_while_a_commit_waits_and_acks_only_after_it(tmp_path: Path) -> None:
    names = [f"f{i:02d}" for i in range(60)]
    broker = MemoryBroker()
    release = threading.Event()
    probe = Probe()
    seen_while_blocked: list[tuple[int, int]] = []

    def commit(items: list[WorkItem]) -> None:
        if not release.is_set():  # the first commit waits: the flow must not
            _wait(lambda: len(probe.worked) >= 20, "work beside the commit", lambda: probe)
            seen_while_blocked.append((len(probe.worked), broker.unacked()))
            release.set()

    loop = _run(
        tmp_path, broker, names, commit,
        lambda b, p: sum(map(len, p.committed)) == 60 and b.unacked() == 0, probe,
    )  # fmt: skip
    # while the first commit was held, the flow thread worked the rest of the prefetch
    # window (20) and acked none of it
    worked, unacked = seen_while_blocked[0]
    assert worked >= 20 and unacked == 20
    # each batch was committed while its deliveries were unacked, and synced after it
    assert all(u >= len(b) for u, b in zip(probe.unacked_at_commit, probe.committed, strict=True))
    assert probe.synced_after[: len(probe.committed)] == list(range(1, len(probe.committed) + 1))
    assert sorted(n for b in probe.committed for n in b) == names  # each committed once
    assert loop.counts == {201: 60}
    assert broker.ready("q") == []


def test_a_failed_commit_keeps_its_batch_and_its_acks_for_the_next_flush(tmp_path: Path) -> None:
    names = [f"g{i:02d}" for i in range(10)]
    probe = Probe()
    failures: list[list[str]] = []

    def commit(items: list[WorkItem]) -> None:
        if not failures:
            failures.append([_name(i) for i in items])
            raise LocalError("barrier failed: disk gone")

    broker = MemoryBroker()
    loop = _run(
        tmp_path, broker, names, commit,
        lambda b, p: sum(map(len, p.committed)) == 10 and b.unacked() == 0, probe,
    )  # fmt: skip
    # the failed batch came back whole, first, in the next commit; nothing was acked before
    assert failures and probe.committed[0][: len(failures[0])] == failures[0]
    assert probe.unacked_at_commit[0] == probe.unacked_at_commit[1] == 10
    assert sorted(n for b in probe.committed for n in b) == names
    assert loop.counts == {201: 10}


def test_a_stop_waits_for_the_commit_under_way_then_acks(tmp_path: Path) -> None:
    names = [f"h{i:02d}" for i in range(8)]
    probe = Probe()
    entered = threading.Event()
    stopping = threading.Event()

    def commit(items: list[WorkItem]) -> None:
        entered.set()
        assert stopping.wait(10)  # held until the stop is under way

    def stop_during_commit(stop: threading.Event) -> None:
        assert entered.wait(10)
        stop.set()
        stopping.set()

    broker = MemoryBroker()
    loop = _run(
        tmp_path, broker, names, commit, lambda b, p: True, probe, stop_first=stop_during_commit
    )
    assert sorted(n for b in probe.committed for n in b) == names
    assert broker.unacked() == 0 and broker.ready("q") == []
    assert loop.counts == {201: 8}


def test_acks_follow_a_commit_at_once_when_the_session_cannot_wake_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session with no file descriptor (TLS; the in-memory one here) cannot be woken by the
    commit thread: the loop polls it briefly while a commit is under way, so a batch's acks
    follow the end of its commit at once, not after a full poll timeout (0.5 s)."""
    names = [f"m{i:02d}" for i in range(40)]
    ends: list[float] = []
    acked_at: list[float] = []
    real_ack = ConsumingLoop._ack

    def timed_ack(self: ConsumingLoop, acks: list[object]) -> None:
        if acks:
            acked_at.append(time.monotonic())
        real_ack(self, acks)  # type: ignore[arg-type]

    monkeypatch.setattr(ConsumingLoop, "_ack", timed_ack)

    def commit(items: list[WorkItem]) -> None:
        time.sleep(0.05)  # a barrier: the flow thread has gone idle by its end
        ends.append(time.monotonic())

    broker = MemoryBroker()
    probe = Probe()
    _run(
        tmp_path, broker, names, commit,
        lambda b, p: sum(map(len, p.committed)) == 40 and b.unacked() == 0, probe,
    )  # fmt: skip
    lags = [min(a - e for a in acked_at if a >= e) for e in ends]
    assert max(lags) < 0.25, f"acks came {max(lags):.2f} s after their commit ended"
