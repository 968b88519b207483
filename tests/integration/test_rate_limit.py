"""Bandwidth and notice rate limits, measured against the suite's real servers.

Each test times a transfer that takes a few seconds at the cap and checks the measured rate
is within :data:`TOLERANCE` of it: the limiter's burst (0.1 s of the rate) and the broker's
latency are the only expected excess, a few per cent here.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sarra.flow.engine import STOP_GRACE
from tests.integration.flowkit import (
    ReportTap,
    Site,
    make_files,
    post,
    running_subscriber,
    unique,
    wait_for,
)

TOLERANCE = 0.15


@pytest.fixture
def site(tmp_path: Path, rabbitmq) -> Site:  # type: ignore[no-untyped-def]
    return Site(tmp_path / "site", rabbitmq.port).setup()


def _subscribe(site: Site, tag: str, dest: Path, limits: str) -> str:
    name = f"rate_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror off\n"
        f"expire 10m\ntransfer_threads 4\n{limits}accept .*\n",
    )
    return name


def _assert_near(measured: float, cap: float) -> None:
    assert abs(measured - cap) <= TOLERANCE * cap, (
        f"measured {measured:,.0f} bytes/s, cap {cap:,.0f} bytes/s "
        f"({(measured / cap - 1) * 100:+.1f} %)"
    )


def test_byte_rate_max_caps_a_whole_file_download_from_nginx(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("cap")
    src = nginx.root / tag
    size = 6 << 20
    make_files(src, ["big.bin"], size=size)
    size = (src / "big.bin").stat().st_size
    dest = tmp_path / "dest"
    cap = 2_000_000  # byteRateMax 2m: sr3 units, decimal
    with running_subscriber(site, _subscribe(site, tag, dest, "byteRateMax 2m\n")):
        started = time.monotonic()
        assert post(site, nginx.base_url, nginx.root, [src]) == 0
        wait_for(lambda: (dest / "big.bin").exists(), timeout=60, what="the capped download")
        elapsed = time.monotonic() - started
    assert (dest / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    _assert_near(size / elapsed, cap)


def test_kbytes_ps_caps_blocks_fetched_by_several_threads_together(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("blk")
    src = nginx.root / tag
    make_files(src, ["parts.bin"], size=5 << 20)
    size = (src / "parts.bin").stat().st_size
    dest = tmp_path / "dest"
    cap = 1536 * 1024  # kbytes_ps 1536: sr2 units, x 1024
    limits = "kbytes_ps 1536\nbyteRateMax 10m\n"  # both set: the smaller wins
    with running_subscriber(site, _subscribe(site, tag, dest, limits)):
        started = time.monotonic()
        # 1 MiB blocks: the four transfer threads share the one limit of the instance
        assert post(site, nginx.base_url, nginx.root, [src], ("blocksize", "1M")) == 0
        wait_for(lambda: (dest / "parts.bin").exists(), timeout=60, what="the capped blocks")
        elapsed = time.monotonic() - started
    assert (dest / "parts.bin").read_bytes() == (src / "parts.bin").read_bytes()
    _assert_near(size / elapsed, cap)


def test_an_uncapped_download_is_much_faster_than_the_cap_tests(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    """The reference for the two tests above: without a limit the same file arrives at least
    five times faster than at 2 MB/s, so their timings measure the limiter."""
    tag = unique("free")
    src = nginx.root / tag
    make_files(src, ["big.bin"], size=6 << 20)
    size = (src / "big.bin").stat().st_size
    dest = tmp_path / "dest"
    with running_subscriber(site, _subscribe(site, tag, dest, "")):
        started = time.monotonic()
        assert post(site, nginx.base_url, nginx.root, [src]) == 0
        wait_for(lambda: (dest / "big.bin").exists(), timeout=60, what="the download")
        elapsed = time.monotonic() - started
    assert size / elapsed > 5 * 2_000_000


def test_message_rate_max_spreads_notices_out_in_time(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("msg")
    src = nginx.root / tag
    names = [f"f{i:02d}.txt" for i in range(16)]
    make_files(src, names, size=100)
    dest = tmp_path / "dest"
    rate = 5.0
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, _subscribe(site, tag, dest, "messageRateMax 5\n")):
            started = time.monotonic()
            assert post(site, nginx.base_url, nginx.root, [src]) == 0
            wait_for(lambda: len(tap.about(".txt")) >= len(names), what="a report per file")
            elapsed = time.monotonic() - started
    finally:
        tap.stop()
    # the first notice passes at once (burst of one), each later one waits 1/rate
    expected = (len(names) - 1) / rate
    assert abs(elapsed - expected) <= TOLERANCE * expected + 0.3, (elapsed, expected)
    assert {r.code for r in tap.about(".txt")} == {201}
    # held notices do not hold up the flow: outcomes are reported as they happen, spread
    # over the whole interval, not in one batch once the last notice has had its turn
    ours = [t for r, t in zip(tap.reports, tap.arrivals, strict=True) if tag in r.notice.path]
    assert ours[-1] - ours[0] >= 0.7 * expected, (ours[-1] - ours[0], expected)


def test_a_stop_is_not_held_up_by_a_slow_capped_download(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    """At 100 kB/s the file needs a minute; stopping leaves at once, places nothing, and the
    notice (unacked) is fetched whole by the next run, uncapped."""
    tag = unique("stop")
    src = nginx.root / tag
    make_files(src, ["slow.bin"], size=6 << 20)
    dest = tmp_path / "dest"
    name = _subscribe(site, tag, dest, "byteRateMax 100k\n")
    with running_subscriber(site, name) as stop:
        assert post(site, nginx.base_url, nginx.root, [src]) == 0
        wait_for(lambda: any(dest.rglob("*")), what="the download to start")
        time.sleep(0.5)
        asked = time.monotonic()
        stop.set()
    stopped_after = time.monotonic() - asked
    # well within STOP_GRACE (2 s, after which transfers are aborted): the limiter's wait
    # itself ends on the stop event
    assert stopped_after < STOP_GRACE * 0.75, f"took {stopped_after:.1f} s to stop"
    assert not (dest / "slow.bin").exists()
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror off\n"
        "expire 10m\naccept .*\n",
    )
    with running_subscriber(site, name):
        wait_for(lambda: (dest / "slow.bin").exists(), what="the redelivered download")
    assert (dest / "slow.bin").read_bytes() == (src / "slow.bin").read_bytes()
