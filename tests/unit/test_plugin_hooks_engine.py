"""on_report and on_post in the consuming loop (in-memory broker): each outcome's report is
offered to on_report, then its outgoing notices to on_post, in the flow thread; False
suppresses only that report or those notices, and every delivery is still acked."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

from sarra.broker.base import QueueSpec
from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.codec import v02
from sarra.codec.timestamps import now_timestamp
from sarra.flow.engine import ConsumingLoop, LoopSettings, ReportSettings
from sarra.flow.retryqueue import RetryQueue
from sarra.flow.work import WorkItem
from sarra.notice import Checksum, PartSpec, Report, WireMessage

NAMES = ("loud", "quiet", "post-pass", "post-hold")


def _name(item: WorkItem) -> str:
    return item.notice.path.rsplit("/", 1)[-1]


def _wire(name: str, exchange: str = "xin") -> WireMessage:
    data = name.encode()
    notice = v02.make_notice(
        exchange=exchange, topic_prefix="v02.post", pubtime=now_timestamp(),
        base_url="http://example.com", path=f"/{name}",
        checksum=Checksum("d", hashlib.md5(data).hexdigest()),
        parts=PartSpec("1", len(data), 1, 0, 0),
    )  # fmt: skip
    return v02.to_wire(notice, exchange=exchange)


def test_on_report_then_on_post_per_outcome_and_false_suppresses_only_that(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker()
    calls: list[tuple[str, str, int | None, str]] = []

    def work(item: WorkItem) -> None:
        if _name(item).startswith("post-"):
            item.outgoing.append(_wire(_name(item), exchange="xout"))
        item.settle(201, "done")

    def on_report(item: WorkItem) -> bool:
        calls.append(("on_report", _name(item), item.code, threading.current_thread().name))
        return _name(item) != "quiet"

    def on_post(item: WorkItem) -> bool:
        calls.append(("on_post", _name(item), item.code, threading.current_thread().name))
        return _name(item) != "post-hold"

    stop = threading.Event()
    loop = ConsumingLoop(
        MemorySession(broker, name="flow"),
        LoopSettings(
            queue=QueueSpec("q", (("xin", "#"),)), prefetch=20, threads=2, attempts=1,
            retry_ttl=0.0, exchanges=("xin",),
        ),
        ReportSettings(True, "xr", "host", "user", None, None, None),
        lambda item: True,
        work,
        RetryQueue(tmp_path / "retry.jsonl", ttl=0.0),
        stop=stop,
        on_report=on_report,
        on_post=on_post,
    )  # fmt: skip
    thread = threading.Thread(target=loop.run, name="flow-thread", daemon=True)
    thread.start()
    try:
        pub = broker.session("publisher")
        pub.connect()
        pub.declare_exchange("xin")
        pub.declare_exchange("xout")
        deadline = time.monotonic() + 20
        while "q" not in broker.queues:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        pub.publish([_wire(n) for n in NAMES])
        while len(calls) < 6 or broker.unacked() or broker.ready("q"):
            assert time.monotonic() < deadline, (calls, broker.unacked())
            time.sleep(0.01)
        time.sleep(0.2)  # let a publish that should not happen land
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    # each hook runs in the flow thread, once per outcome, on_report before on_post
    assert all(thread_name == "flow-thread" for *_, thread_name in calls)
    by_name = {n: [(hook, code) for hook, name, code, _ in calls if name == n] for n in NAMES}
    assert by_name == {
        "loud": [("on_report", 201)],
        "quiet": [("on_report", 201)],
        "post-pass": [("on_report", 201), ("on_post", 201)],
        "post-hold": [("on_report", 201), ("on_post", 201)],
    }
    reports = [
        v02.decode(m.exchange, m.routing_key, m.body, m.headers)
        for m in broker.published
        if m.exchange == "xr"
    ]
    reported = sorted(r.notice.path for r in reports if isinstance(r, Report))
    assert reported == ["loud", "post-hold", "post-pass"]
    posted = [m.routing_key for m in broker.published if m.exchange == "xout"]
    assert posted == ["v02.post"]  # post-pass only (its path has no directory)
    assert [m.body.split(b" ")[-1] for m in broker.published if m.exchange == "xout"] == [
        b"/post-pass"
    ]
    assert loop.reports_suppressed == 1 and loop.posts_suppressed == 1
    assert broker.unacked() == 0 and broker.ready("q") == []
