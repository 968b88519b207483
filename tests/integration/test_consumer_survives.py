"""A consumer survives what a bad day brings, and never acks work that is not durable.

Each test is a defect found by a fault run (issue 9), against a real broker and web server:
long failure reports crashed the consumer; a plugin bug or a full state file system acked
and lost the notice; a queue that expired during an outage lost its backlog silently.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarra.broker.session import BrokerSession
from sarra.components.subscribe import SubscribeComponent
from sarra.config.loader import resolve_queue_name
from sarra.flow.heartbeat import read_note
from sarra.flow.retryqueue import RetryQueue
from tests.integration.flowkit import (
    ReportTap,
    Site,
    make_files,
    post,
    running_subscriber,
    site_env,
    unique,
    wait_for,
)
from tests.servers.tmpfs import fill, tmpfs


def _subscription(site: Site, tag: str, dest: Path, extra: str = "") -> str:
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        f"expire 10m\nprefetch 10\n{extra}accept .*\n",
    )
    return name


def _declare(site: Site, name: str) -> None:
    with site_env(site):
        SubscribeComponent().declare(site.load("subscribe", name))


def _ready(site: Site, name: str) -> int:
    """Notices ready (not delivered, or delivered and given back) in the subscription's queue."""
    cfg = site.load("subscribe", name)
    queue = resolve_queue_name(cfg, env={**os.environ, **site.env})
    s = BrokerSession(site.broker_url())
    s.connect()
    try:
        ready, _ = s.queue_counts(queue)
    finally:
        s.close()
    return ready


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.bin") if "~sr" not in p.name) if root.exists() else []


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name.startswith(".")]


def test_a_checksum_mismatch_with_sha512_sums_is_reported_and_the_flow_goes_on(  # type: ignore[no-untyped-def]
    site, rabbitmq, nginx, tmp_path
):
    """Both sha512 sums quoted in the 499 message made it too long for v02: the consumer
    crashed before acking, and crash-looped on the redelivery."""
    tag = unique("s512")
    src = nginx.root / tag
    replaced, good = make_files(src, ["a/replaced.bin", "a/good.bin"], size=5000)
    dest = tmp_path / "dest"
    name = _subscription(site, tag, dest, "report_back on\nattempts 1\nretry_ttl 0\n")
    _declare(site, name)
    assert post(site, nginx.base_url, nginx.root, [replaced], ("sum", "s")) == 0
    replaced.write_bytes(replaced.read_bytes()[::-1])  # same size, other content
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            wait_for(lambda: tap.about("replaced.bin"), timeout=60, what="the 499 report")
            assert post(site, nginx.base_url, nginx.root, [good], ("sum", "s")) == 0
            wait_for(lambda: len(_files(dest)) == 1, timeout=60, what="the next file")
        (report,) = tap.about("replaced.bin")
    finally:
        tap.stop()
    assert report.code == 499
    assert "bytes cut]" in report.message
    assert len(report.message.encode("utf-8")) <= 252
    assert _files(dest) == [dest / "a" / "good.bin"]
    assert (dest / "a" / "good.bin").read_bytes() == good.read_bytes()
    assert tap.undecodable == []


def test_a_404_on_a_long_path_is_reported_and_the_flow_goes_on(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path
):
    tag = unique("long")
    src = nginx.root / tag
    deep = "/".join(["x" * 60] * 4) + "/gone.bin"  # about 250 characters of relPath
    (gone,) = make_files(src, [deep], size=100)
    (after,) = make_files(src, ["after.bin"], size=100)
    dest = tmp_path / "dest"
    name = _subscription(site, tag, dest, "report_back on\nattempts 1\nretry_ttl 0\n")
    _declare(site, name)
    assert post(site, nginx.base_url, nginx.root, [gone]) == 0
    gone.unlink()
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            wait_for(lambda: tap.about("gone.bin"), timeout=60, what="the report of the 404")
            assert post(site, nginx.base_url, nginx.root, [after]) == 0
            wait_for(lambda: (dest / "after.bin").exists(), timeout=60, what="the next file")
        (report,) = tap.about("gone.bin")
    finally:
        tap.stop()
    assert report.code == 499 and len(report.message.encode("utf-8")) <= 252


def test_a_plugin_that_raises_leaves_the_notice_to_a_retry_not_to_an_ack(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path
):
    """An unexpected exception used to settle as 500 and ack: the file was never fetched."""
    tag = unique("bug")
    (src,) = make_files(nginx.root / tag, ["f.bin"], size=3000)
    broken = tmp_path / "plugin-is-broken"
    broken.touch()
    plugin = tmp_path / "flaky_plugin.py"
    plugin.write_text(
        "import os\n"
        "def on_message(work):\n"
        f"    if os.path.exists({str(broken)!r}):\n"
        "        raise RuntimeError('plugin bug')\n"
    )
    dest = tmp_path / "dest"
    name = _subscription(
        site,
        tag,
        dest,
        f"on_message {plugin}\nreport_back off\nretry_delay 1s\nretry_delay_max 1s\n",
    )
    with running_subscriber(site, name):
        assert post(site, nginx.base_url, nginx.root, [src]) == 0
        retry_files = lambda: list(site.state_dir.rglob("retry_*.jsonl"))  # noqa: E731
        wait_for(
            lambda: any('"op":"put"' in p.read_text() for p in retry_files()),
            timeout=30,
            what="the notice in the disk retry queue",
        )
        broken.unlink()  # the operator fixes the plugin
        wait_for(lambda: (dest / "f.bin").exists(), timeout=60, what="the retried file")
    assert (dest / "f.bin").read_bytes() == src.read_bytes()


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs that the test fills up (unmounted at teardown)."""
    with tmpfs(tmp_path / "small", "4m") as mnt:
        yield mnt


def test_a_full_state_file_system_pauses_without_acking_and_everything_arrives_after(  # type: ignore[no-untyped-def]
    tmp_path, rabbitmq, nginx, full_disk, caplog
):
    """The retry queue could not be written: the notice was acked anyway (or the instance
    died). Now nothing is acked until the disk has room again, then every file arrives."""
    caplog.set_level(logging.INFO)
    site = Site(full_disk / "site", rabbitmq.port).setup()  # state on the small disk
    tag = unique("full")
    src = nginx.root / tag
    files = make_files(src, [f"f{i:02d}.bin" for i in range(20)], size=20000)
    dest = full_disk / "dest"  # and the destination too: downloads fail for want of room
    name = _subscription(site, tag, dest, "report_back off\nattempts 1\n")
    _declare(site, name)
    with running_subscriber(site, name):
        wait_for(lambda: any(site.state_dir.rglob("*.heart")), timeout=30, what="a heartbeat")
        filler = fill(full_disk)
        assert post(site, nginx.base_url, nginx.root, files) == 0
        wait_for(
            lambda: any("PAUSED" in r.getMessage() for r in caplog.records),
            timeout=60,
            what="the pause",
        )
        (heart,) = site.state_dir.rglob("*.heart")
        wait_for(lambda: read_note(heart).startswith("paused: "), timeout=30, what="status")
        queue = resolve_queue_name(site.load("subscribe", name), env={**os.environ, **site.env})

        def unsettled() -> int:  # ready or delivered, not acked: nothing acked is lost
            info = rabbitmq.queue_info(queue)
            return int(info.get("messages_ready", 0)) + int(info.get("messages_unacknowledged", 0))

        wait_for(
            lambda: unsettled() == len(files) - len(_files(dest)),
            timeout=30,
            what="every notice not placed to stay on the broker, unacked",
        )
        assert not [f for f in _files(dest) if f.read_bytes() != (src / f.name).read_bytes()]
        filler.unlink()  # the operator makes room
        wait_for(lambda: len(_files(dest)) == len(files), timeout=90, what="every file")
        wait_for(lambda: _ready(site, name) == 0, timeout=30, what="an empty queue")
        wait_for(lambda: read_note(heart) == "", timeout=30, what="status back to running")
    for f in files:
        assert (dest / f.name).read_bytes() == f.read_bytes()
    assert _leftovers(dest) == []
    assert any("resuming after" in r.getMessage() for r in caplog.records)


def test_a_queue_that_vanished_between_runs_is_reported_loudly(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    tag = unique("gone")
    name = _subscription(site, tag, tmp_path / "dest", "report_back off\n")
    with running_subscriber(site, name):
        wait_for(
            lambda: any("consuming from" in r.getMessage() for r in caplog.records),
            what="the first run to consume",
        )
    assert not [r for r in caplog.records if "QUEUE LOST" in r.getMessage()]
    # 10 minutes does not ride out a long outage: said at start
    assert [r for r in caplog.records if "expire is 600 s" in r.getMessage()]
    cfg = site.load("subscribe", name)
    queue = resolve_queue_name(cfg, env={**os.environ, **site.env})
    s = BrokerSession(site.broker_url())
    s.connect()
    try:
        s.delete_queue(queue)  # as the broker does when it expires
    finally:
        s.close()
    caplog.clear()
    stop = threading.Event()
    with site_env(site):
        component = SubscribeComponent()
        thread = threading.Thread(target=component.run, args=(cfg, 0, stop), daemon=True)
        thread.start()
        try:
            wait_for(
                lambda: any("QUEUE LOST" in r.getMessage() for r in caplog.records),
                timeout=30,
                what="the loss to be reported",
            )
        finally:
            stop.set()
            thread.join(30)
    (lost,) = [r.getMessage() for r in caplog.records if "QUEUE LOST" in r.getMessage()]
    assert queue in lost and "600 s" in lost and "expire" in lost


def test_a_stop_during_a_stalled_download_is_prompt_leaves_nothing_and_loses_nothing(  # type: ignore[no-untyped-def]
    site, broken_http, tmp_path
):
    """A stop waited for a stalled transfer (past the 10 s after which ``stop`` kills) and
    left its in-flight file behind. Now the transfer is abandoned at once, unacked, with
    nothing left in the destination, and the next run fetches the file."""
    tag = unique("stall")
    (src,) = make_files(broken_http.root / tag, ["big.bin"], size=200_000)
    dest = tmp_path / "dest"
    name = _subscription(site, tag, dest, "report_back off\n")
    _declare(site, name)
    broken_http.slow_seconds = 60.0  # the origin stalls halfway through the body
    base = f"{broken_http.base_url}/slow"
    assert post(site, base, broken_http.root, [src]) == 0
    stop = threading.Event()
    with site_env(site):
        cfg = site.load("subscribe", name)
        thread = threading.Thread(target=SubscribeComponent().run, args=(cfg, 0, stop), daemon=True)
        thread.start()
        try:
            wait_for(
                lambda: any("~sr" in p.name for p in dest.rglob("*")) if dest.exists() else False,
                timeout=30,
                what="the download to be in flight",
            )
        finally:
            stopped_at = time.monotonic()
            stop.set()
            thread.join(30)
    took = time.monotonic() - stopped_at
    assert not thread.is_alive()
    assert took < 8, f"stop took {took:.1f} s: stop would have escalated to SIGKILL"
    assert [p for p in dest.rglob("*") if p.is_file()] == []
    wait_for(lambda: _ready(site, name) == 1, timeout=30, what="the notice back in the queue")
    broken_http.slow_seconds = 0.0
    with running_subscriber(site, name):
        wait_for(lambda: (dest / "big.bin").exists(), timeout=60, what="the file")
    assert (dest / "big.bin").read_bytes() == src.read_bytes()


def test_a_notice_that_outlives_retry_ttl_is_reported_499_about_giving_up(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path
):
    """An expired retry entry was dropped with a log line only: the source never heard."""
    tag = unique("ttl")
    (gone,) = make_files(nginx.root / tag, ["gone.bin"], size=100)
    dest = tmp_path / "dest"
    name = _subscription(
        site, tag, dest, "report_back on\nattempts 1\nretry_ttl 3s\nretry_delay 1s\n"
    )
    _declare(site, name)
    assert post(site, nginx.base_url, nginx.root, [gone]) == 0
    gone.unlink()
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            wait_for(
                lambda: any("gave up after" in r.message for r in tap.about("gone.bin")),
                timeout=60,
                what="the report about giving up",
            )
    finally:
        tap.stop()
    final = [r for r in tap.about("gone.bin") if "gave up after" in r.message]
    assert [r.code for r in final] == [499]
    (path,) = site.state_dir.rglob("retry_*.jsonl")
    with RetryQueue(path, ttl=3.0) as left:
        assert len(left) == 0  # given up is settled, not kept
