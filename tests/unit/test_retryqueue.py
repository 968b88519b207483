"""RetryQueue: durability, backoff, torn lines, compaction, ttl."""

from __future__ import annotations

import errno
import json
import random
from pathlib import Path

import pytest

from sarra.errors import DiskFull
from sarra.flow.retryqueue import RetryItem, RetryQueue
from sarra.notice import WireMessage, frozen_headers

T0 = 1_700_000_000.0


def wire(n: int) -> WireMessage:
    return WireMessage(
        exchange="xpublic",
        routing_key=f"v02.post.dir.f{n}",
        body=f"20240101000000.0 http://h /dir/f{n}".encode(),
        headers=frozen_headers({"sum": f"d,{n:032x}", "parts": "1,5,1,0,0"}),
    )


def queue(path: Path, **kw: float) -> RetryQueue:
    args = {"ttl": 3600.0, "base_delay": 10.0, "max_delay": 300.0}
    args.update(kw)
    return RetryQueue(path, rng=random.Random(7), **args)


def test_items_survive_reopening_with_their_state(tmp_path: Path) -> None:
    path = tmp_path / "q" / "retry.001.jsonl"
    with queue(path) as q:
        item = RetryItem.from_wire(wire(1), now=T0, error="first failure")
        q.put(item)
        q.failed(item, "second failure", T0 + 1)
        q.put(RetryItem.from_wire(wire(2), now=T0))
    with queue(path) as q:
        assert len(q) == 2
        items = {it.routing_key: it for it in q.due(T0 + 1000)}
    got = items["v02.post.dir.f1"]
    assert got.attempts == 1 and got.last_error == "second failure"
    assert got.to_wire() == wire(1)
    assert items["v02.post.dir.f2"].to_wire().headers == wire(2).headers


def test_done_items_stay_gone_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "retry"
    with queue(path) as q:
        a = RetryItem.from_wire(wire(1), now=T0)
        b = RetryItem.from_wire(wire(2), now=T0)
        q.put(a)
        q.put(b)
        q.done(a)
        q.done(a)  # absent is fine
        assert a not in q and b in q
    with queue(path) as q:
        assert [it.id for it in q.due(T0)] == [b.id]


def test_undecodable_bodies_round_trip(tmp_path: Path) -> None:
    msg = WireMessage("x", "k", b"\xff\xfe not utf-8", frozen_headers({}))
    with queue(tmp_path / "r") as q:
        q.put(RetryItem.from_wire(msg, now=T0))
    with queue(tmp_path / "r") as q:
        assert q.due(T0)[0].to_wire().body == b"\xff\xfe not utf-8"


def test_backoff_grows_exponentially_with_jitter_and_a_cap(tmp_path: Path) -> None:
    q = queue(tmp_path / "r", base_delay=10.0, max_delay=100.0)
    for attempts, full in [(1, 10.0), (2, 20.0), (3, 40.0), (4, 80.0), (5, 100.0), (60, 100.0)]:
        for _ in range(20):
            assert full * 0.5 <= q.backoff(attempts) <= full
    q.close()


def test_due_returns_only_ready_items_earliest_first(tmp_path: Path) -> None:
    with queue(tmp_path / "r", base_delay=10.0, max_delay=10_000.0) as q:
        fresh = RetryItem.from_wire(wire(1), now=T0)
        once = q.failed(RetryItem.from_wire(wire(2), now=T0), "e", T0)
        often = RetryItem.from_wire(wire(3), now=T0)
        for _ in range(5):
            often = q.failed(often, "e", T0)
        q.put(fresh)
        assert [it.id for it in q.due(T0)] == [fresh.id]
        assert once.next_at < often.next_at
        assert [it.id for it in q.due(once.next_at)] == [fresh.id, once.id]
        assert [it.id for it in q.due(often.next_at)] == [fresh.id, once.id, often.id]
        assert q.next_due() == fresh.next_at


def test_a_torn_last_line_is_ignored_and_appends_continue_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "r"
    with queue(path) as q:
        keep = RetryItem.from_wire(wire(1), now=T0)
        q.put(keep)
    with path.open("ab") as fh:
        fh.write(b'{"op":"put","exchange":"xpub')  # crash mid-write
    with queue(path) as q:
        assert [it.id for it in q.due(T0)] == [keep.id]
        new = RetryItem.from_wire(wire(2), now=T0)
        q.put(new)
    with queue(path) as q:
        assert {it.id for it in q.due(T0)} == {keep.id, new.id}
    for line in path.read_bytes().splitlines():
        json.loads(line)  # every line whole


def test_compaction_keeps_pending_items_and_bounds_the_file(tmp_path: Path) -> None:
    path = tmp_path / "r"
    with queue(path) as q:
        pending = [RetryItem.from_wire(wire(n), now=T0) for n in range(3)]
        for it in pending:
            q.put(it)
        for n in range(500):
            it = RetryItem.from_wire(wire(1000 + n), now=T0)
            q.put(it)
            q.done(it)
        assert len(path.read_bytes().splitlines()) < 200
        q.compact()
        assert len(path.read_bytes().splitlines()) == 3
        q.put(RetryItem.from_wire(wire(9), now=T0))  # still appending after compaction
    with queue(path) as q:
        assert len(q) == 4
        assert {it.id for it in pending} <= {it.id for it in q.due(T0)}


def test_items_past_ttl_are_expired_not_due(tmp_path: Path) -> None:
    with queue(tmp_path / "r", ttl=100.0) as q:
        old = RetryItem.from_wire(wire(1), now=T0)
        young = RetryItem.from_wire(wire(2), now=T0 + 90)
        q.put(old)
        q.put(young)
        now = T0 + 150
        assert [it.id for it in q.expired(now)] == [old.id]
        assert [it.id for it in q.due(now)] == [young.id]
        for it in q.expired(now):
            q.done(it)
        assert len(q) == 1


def test_a_full_disk_on_put_raises_disk_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = queue(tmp_path / "r")

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("sarra.flow.retryqueue.os.write", full)
    with pytest.raises(DiskFull):
        q.put(RetryItem.from_wire(wire(1), now=T0))
    monkeypatch.undo()
    assert len(q) == 0
    q.close()
