"""Per-instance metrics: the counters (sarra/flow/metrics.py), the loop that keeps them
(ConsumingLoop on the in-memory broker) and the file an instance publishes them in."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from sarra.broker.base import QueueSpec
from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.codec import v02
from sarra.codec.timestamps import format_timestamp_ns
from sarra.errors import NotFound
from sarra.flow.engine import ConsumingLoop, LoopSettings, ReportSettings
from sarra.flow.metrics import (
    MAX_SOURCES,
    NO_SOURCE,
    OTHER_SOURCES,
    FlowMetrics,
    MetricsWriter,
    metrics_name,
    open_reassemblies,
    poster_snapshot,
    read_metrics,
    write_metrics,
)
from sarra.flow.retryqueue import RetryQueue
from sarra.flow.work import WorkItem
from sarra.localfs.confined import SafeRoot
from sarra.notice import Checksum, Notice, PartSpec, WireMessage
from sarra.parts.arithmetic import split
from sarra.parts.tracker import PartTracker
from tests.unit.test_engine_reconnect import _name, _wire


def _notice(name: str = "f", source: str | None = None, age: float = 0.0) -> Notice:
    return v02.make_notice(
        exchange="xin",
        topic_prefix="v02.post",
        pubtime=format_timestamp_ns(int((time.time() - age) * 1e9)),
        base_url="http://example.com",
        path=f"/{name}",
        checksum=Checksum("d", "0" * 32),
        parts=PartSpec("1", 1, 1, 0, 0),
        headers=None if source is None else {"source": source},
    )


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_lag_is_now_minus_pubtime_and_its_max_is_per_window() -> None:
    clock = Clock()
    m = FlowMetrics(clock)
    m.received(_notice(age=3.0))
    m.received(_notice(age=10.0))
    m.received(_notice(age=1.0))
    first = m.snapshot()
    assert first["notices"] == {"in": 3, "out": 0}
    assert 0.5 < first["lag"]["last"] < 1.5
    assert 9.5 < first["lag"]["max"] < 10.5
    second = m.snapshot()  # a new window: no notice since
    assert second["lag"]["max"] is None
    assert second["lag"]["last"] == first["lag"]["last"]
    assert second["last_activity"] == clock.now


def test_outcomes_count_files_bytes_rejects_blocks_and_codes_by_source() -> None:
    m = FlowMetrics()
    m.settled(_notice(source="alice"), 201, 1000)
    m.settled(_notice(source="alice"), 205, 24)
    m.settled(_notice(source="bob"), 499, 0)
    m.settled(_notice(source="bob"), 0, 0)  # rejected by the masks
    m.settled(_notice(), 404, 0)
    m.settled(_notice(source="bob"), 201, 10, block=True, whole=False)
    m.settled(_notice(source="bob"), 201, 10, block=True, whole=True)
    m.published(3)
    doc = m.snapshot(retry={"depth": 2})
    assert doc["files"] == 3  # two whole files and one completed from blocks
    assert doc["blocks"] == 2
    assert doc["bytes"] == 1044
    assert doc["rejects"] == 1
    assert doc["notices"]["out"] == 3
    assert doc["codes"] == {"0": 1, "201": 3, "205": 1, "404": 1, "499": 1}
    assert doc["by_source"] == {
        "alice": {"201": 1, "205": 1},
        "bob": {"201": 2, "499": 1},
        NO_SOURCE: {"404": 1},
    }
    assert doc["retry"] == {"depth": 2}
    json.dumps(doc)  # JSON-able as it is


def test_sources_beyond_the_bound_are_counted_together() -> None:
    m = FlowMetrics()
    for n in range(MAX_SOURCES + 5):
        m.settled(_notice(source=f"s{n}"), 201, 1)
    doc = m.snapshot()
    assert len(doc["by_source"]) == MAX_SOURCES + 1
    assert doc["by_source"][OTHER_SOURCES] == {"201": 5}


def test_the_metrics_file_is_replaced_whole_and_a_failure_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / metrics_name("subscribe", "feed", 7)
    assert path.name == "sr_subscribe_feed_007.metrics.json"
    assert write_metrics(path, {"a": 1})
    inode = path.stat().st_ino
    assert write_metrics(path, {"a": 2})
    assert read_metrics(path) == {"a": 2}
    assert path.stat().st_ino != inode  # a rename, not a rewrite in place
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left
    assert not write_metrics(tmp_path / "gone" / "x.json", {"a": 1})
    assert not write_metrics(path, {"a": object()})  # not JSON-able: the old one stays
    assert read_metrics(path) == {"a": 2}
    assert os.listdir(tmp_path) == [path.name]
    path.write_text("{not json")
    assert read_metrics(path) is None
    assert read_metrics(tmp_path / "missing.json") is None


def test_open_reassemblies_reads_the_trackers_progress(tmp_path: Path) -> None:
    state = tmp_path / "state"
    tracker = PartTracker(state / "parts" / "k1", SafeRoot(tmp_path / "root"))
    size, bs = 5 * 4096, 4096
    data = bytes(size)
    specs: list[PartSpec] = split(size, bs)
    for spec in specs[:2]:
        with tracker.begin("d/big.bin", spec, "v1") as ticket:
            if ticket.needs():
                ticket.write_block(data[spec.offset : spec.offset + spec.length])
            tracker.mark(ticket)
    (state / "parts" / "k1" / "open" / "junk.json").write_text("{")  # skipped
    found = open_reassemblies(state)
    assert [(r["path"], r["present"], r["blocks"]) for r in found] == [("d/big.bin", 2, 5)]
    assert open_reassemblies(tmp_path / "nothing") == []


def _loop(tmp_path: Path, broker: MemoryBroker, stop: threading.Event) -> ConsumingLoop:
    def select(item: WorkItem) -> bool:
        if _name(item).startswith("skip"):
            item.settle(0, "rejected by the configuration")
            return False
        return True

    def work(item: WorkItem) -> None:
        if _name(item).startswith("missing"):
            raise NotFound("404 not there")
        item.size = 100
        item.settle(201, "Downloaded")

    return ConsumingLoop(
        MemorySession(broker, name="flow"),
        LoopSettings(
            queue=QueueSpec("q", (("xin", "#"),)),
            prefetch=20,
            threads=2,
            attempts=1,
            retry_ttl=3600.0,
            exchanges=("xin",),
        ),
        ReportSettings(False, "xr", "host", "user", None, None, None),
        select,
        work,
        RetryQueue(tmp_path / "retry.jsonl", ttl=3600.0),
        stop=stop,
    )


def test_the_loop_counts_what_it_was_sent(tmp_path: Path) -> None:
    broker = MemoryBroker()
    stop = threading.Event()
    loop = _loop(tmp_path, broker, stop)
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
        junk = WireMessage("xin", "v02.post.x", b"not a notice", {})
        wires = [_wire(n) for n in ("a", "b", "c", "skip1", "missing1")]
        pub.publish([*wires, junk])
        while sum(loop.counts.values()) < 6 or broker.unacked():
            assert time.monotonic() < deadline, loop.counts
            time.sleep(0.01)
        doc = loop.metrics_snapshot()  # read here, the flow is idle
    finally:
        stop.set()
        thread.join(30)
    assert doc["notices"]["in"] == 5
    assert doc["malformed"] == 1
    assert doc["files"] == 3 and doc["bytes"] == 300
    assert doc["rejects"] == 1
    assert doc["codes"] == {"0": 1, "201": 3, "499": 1}  # NotFound's report code
    assert doc["retry"]["depth"] == 1  # the 404 is retried later from disk
    assert 0 <= doc["retry"]["oldest_age"] < 20
    assert doc["connection"] == "connected"
    assert doc["in_flight"] == 0
    assert doc["lag"]["max"] is not None and 0 <= doc["lag"]["max"] < 20


class _Pub:
    """The counters a Publisher exposes (poster_snapshot reads nothing else)."""

    def __init__(self) -> None:
        self.published = self.items_posted = self.bytes_posted = 0
        self.rejected = self.suppressed = 0
        self.waiting = 0

    def outage_seconds(self, now: float | None = None) -> float:
        return 0.0


def test_a_metrics_writer_writes_starting_running_stopped_and_survives_a_bad_document(
    tmp_path: Path,
) -> None:
    pub = _Pub()
    counters = FlowMetrics()
    calls = []

    def document() -> dict[str, object]:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("a bad moment")
        return poster_snapshot(counters, pub, connected=True)

    path = tmp_path / "sr_post_pc_000.metrics.json"
    writer = MetricsWriter(path, document, every=0.05).start()
    first = read_metrics(path)
    assert first is not None and first["state"] == "starting"
    assert first["files"] == 0 and first["last_activity"] is None
    pub.published, pub.items_posted, pub.bytes_posted, pub.rejected, pub.waiting = 5, 4, 900, 1, 2
    deadline = time.monotonic() + 10
    while (read_metrics(path) or {}).get("files") != 4:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    running = read_metrics(path)
    assert running is not None and running["state"] == "running"
    assert (running["notices"]["out"], running["bytes"], running["rejects"]) == (5, 900, 1)
    assert running["retry"]["depth"] == 2 and running["connection"] == "connected"
    assert running["last_activity"] is not None
    writer.stop()
    last = read_metrics(path)
    assert last is not None and last["state"] == "stopped"
