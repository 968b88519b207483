"""``on_failure CLASS drop|queue`` end to end: RabbitMQ, nginx and the subscriber.

Each failure class follows its configured action: ``drop`` reports the failure and acks the
notice (never retried), ``queue`` reports it, keeps it in the disk retry queue and delivers
the file once the cause is gone (the file appears on the origin, the origin's content comes
to match the notice, space is freed on the destination).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarra.codec.timestamps import now_timestamp
from sarra.notice import WireMessage
from tests.integration.flowkit import (
    ReportTap,
    Site,
    make_files,
    publish_raw,
    running_subscriber,
    unique,
    wait_for,
)


@pytest.fixture
def site(tmp_path: Path, rabbitmq) -> Site:  # type: ignore[no-untyped-def]
    return Site(tmp_path / "site", rabbitmq.port).setup()


def _subscription(site: Site, tag: str, dest: Path, policy: str) -> str:
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        f"expire 10m\nattempts 1\nretry_delay 1s\nretry_delay_max 2s\n{policy}accept .*\n",
    )
    return name


def _notice(tag: str, base_url: str, name: str, announced: bytes) -> WireMessage:
    """A notice of ``/{tag}/{name}`` on ``base_url`` announcing ``announced`` (size, md5)."""
    return WireMessage(
        exchange="xs_guest",
        routing_key=f"v02.post.{tag}",
        body=f"{now_timestamp()} {base_url} /{tag}/{name}".encode(),
        headers={
            "parts": f"1,{len(announced)},1,0,0",
            "sum": "d," + hashlib.md5(announced).hexdigest(),
        },
    )


def _retry_entries(site: Site) -> int:
    """Entries in the subscribers' disk retry queues (their lines, in every state dir)."""
    return sum(
        len([line for line in p.read_text().splitlines() if line.strip()])
        for p in site.state_dir.rglob("*retry*")
        if p.is_file()
    )


def _not_retried(site: Site, tap: ReportTap, nginx, tag: str, name: str, dest: Path) -> None:  # type: ignore[no-untyped-def]
    """The dropped notice stays dropped: once a later notice of the same subscriber is
    delivered and several retry delays have passed, ``name`` has exactly its one report and
    is not at the destination."""
    (marker,) = make_files(nginx.root / tag, ["marker.bin"])
    publish_raw(
        site.broker_url(), [_notice(tag, nginx.base_url, "marker.bin", marker.read_bytes())]
    )
    wait_for(lambda: any(r.code == 201 for r in tap.about("marker.bin")), what="marker 201")
    time.sleep(3 * 2)  # three times retry_delay_max: a retry from disk would have run
    assert len(tap.about(name)) == 1
    assert not (dest / name).exists()


# -- origin 404 -----------------------------------------------------------------------------


def test_not_found_under_drop_is_reported_and_acked_never_retried(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("nfdrop")
    content = os.urandom(5000)
    dest = tmp_path / "dest"
    name = _subscription(site, tag, dest, "on_failure not_found drop\n")
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            publish_raw(site.broker_url(), [_notice(tag, nginx.base_url, "gone.bin", content)])
            wait_for(lambda: tap.about("gone.bin") != [], what="a report of gone.bin")
            (report,) = tap.about("gone.bin")
            assert report.code == 499 and "404" in report.message
            assert "queued for retry" not in report.message
            assert _retry_entries(site) == 0
            # the file appears now: a dropped notice is not fetched again
            (nginx.root / tag).mkdir(parents=True, exist_ok=True)
            (nginx.root / tag / "gone.bin").write_bytes(content)
            _not_retried(site, tap, nginx, tag, "gone.bin", dest)
    finally:
        tap.stop()


def test_not_found_under_queue_is_retried_and_delivered_once_the_file_appears(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path
):
    tag = unique("nfqueue")
    content = os.urandom(5000)
    dest = tmp_path / "dest"
    name = _subscription(site, tag, dest, "on_failure not_found queue\n")
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            publish_raw(site.broker_url(), [_notice(tag, nginx.base_url, "late.bin", content)])
            wait_for(lambda: tap.about("late.bin") != [], what="a report of late.bin")
            first = tap.about("late.bin")[0]
            assert first.code == 499 and "404" in first.message
            assert "queued for retry" in first.message
            assert not (dest / "late.bin").exists()
            (nginx.root / tag).mkdir(parents=True, exist_ok=True)
            (nginx.root / tag / "late.bin").write_bytes(content)
            wait_for(lambda: any(r.code == 201 for r in tap.about("late.bin")), what="201")
    finally:
        tap.stop()
    assert (dest / "late.bin").read_bytes() == content


# -- checksum mismatch ------------------------------------------------------------------------


def test_checksum_mismatch_under_drop_is_reported_and_acked_never_retried(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("sumdrop")
    announced = os.urandom(5000)
    (nginx.root / tag).mkdir(parents=True)
    (nginx.root / tag / "bad.bin").write_bytes(os.urandom(5000))  # same size, other bytes
    dest = tmp_path / "dest"
    name = _subscription(site, tag, dest, "on_failure checksum drop\n")
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            publish_raw(site.broker_url(), [_notice(tag, nginx.base_url, "bad.bin", announced)])
            wait_for(lambda: tap.about("bad.bin") != [], what="a report of bad.bin")
            (report,) = tap.about("bad.bin")
            assert report.code == 499 and "queued for retry" not in report.message
            assert "checksum" in report.message or "sum" in report.message
            # the origin now serves what was announced: a dropped notice is not fetched again
            (nginx.root / tag / "bad.bin").write_bytes(announced)
            _not_retried(site, tap, nginx, tag, "bad.bin", dest)
    finally:
        tap.stop()
    assert [p for p in dest.rglob("*") if p.is_file() and "bad.bin" in p.name] == []


def test_checksum_mismatch_under_queue_is_delivered_once_the_origin_matches(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path
):
    tag = unique("sumqueue")
    announced = os.urandom(5000)
    (nginx.root / tag).mkdir(parents=True)
    (nginx.root / tag / "fix.bin").write_bytes(os.urandom(5000))
    dest = tmp_path / "dest"
    name = _subscription(site, tag, dest, "on_failure checksum queue\n")
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            publish_raw(site.broker_url(), [_notice(tag, nginx.base_url, "fix.bin", announced)])
            wait_for(lambda: tap.about("fix.bin") != [], what="a report of fix.bin")
            first = tap.about("fix.bin")[0]
            assert first.code == 499 and "queued for retry" in first.message
            assert not (dest / "fix.bin").exists()  # a mismatching file is never placed
            (nginx.root / tag / "fix.bin").write_bytes(announced)
            wait_for(lambda: any(r.code == 201 for r in tap.about("fix.bin")), what="201")
    finally:
        tap.stop()
    assert (dest / "fix.bin").read_bytes() == announced


# -- disk full --------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB file system (tmpfs) as the destination: writes past it get ENOSPC."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:  # not a skip: the test needs a real full disk
        pytest.fail(f"cannot mount a small tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_under_queue_is_delivered_once_space_is_freed(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path, small_disk
):
    tag = unique("full")
    (src,) = make_files(nginx.root / tag, ["big.bin"], size=120 * 1024)
    content = src.read_bytes()
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 200 * 1024)  # 56 KiB left: the file cannot fit
    dest = small_disk / "dest"
    name = _subscription(site, tag, dest, "on_failure disk_full queue\n")
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            publish_raw(site.broker_url(), [_notice(tag, nginx.base_url, "big.bin", content)])
            wait_for(lambda: tap.about("big.bin") != [], what="a report of big.bin")
            first = tap.about("big.bin")[0]
            assert first.code == 500 and "queued for retry" in first.message
            assert "No space left" in first.message
            assert [p for p in dest.rglob("*") if p.is_file()] == []  # nothing partial kept
            filler.unlink()  # space is freed
            wait_for(lambda: any(r.code == 201 for r in tap.about("big.bin")), what="201")
    finally:
        tap.stop()
    assert (dest / "big.bin").read_bytes() == content


def test_disk_full_under_drop_is_reported_and_acked(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path, small_disk
):
    tag = unique("fulldrop")
    (src,) = make_files(nginx.root / tag, ["big.bin"], size=120 * 1024)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * 200 * 1024)
    dest = small_disk / "dest"
    name = _subscription(site, tag, dest, "on_failure disk_full drop\n")
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            publish_raw(
                site.broker_url(), [_notice(tag, nginx.base_url, "big.bin", src.read_bytes())]
            )
            wait_for(lambda: tap.about("big.bin") != [], what="a report of big.bin")
            (report,) = tap.about("big.bin")
            assert report.code == 500 and "queued for retry" not in report.message
            assert _retry_entries(site) == 0
            filler.unlink()
            _not_retried(site, tap, nginx, tag, "big.bin", dest)
    finally:
        tap.stop()


# -- remote refuses ---------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "queued"), [("", False), ("on_failure refused queue\n", True)])
def test_a_refusal_is_dropped_by_default_and_queued_when_configured(  # type: ignore[no-untyped-def]
    site, broken_http, tmp_path, policy, queued
):
    tag = unique("refused")
    content = os.urandom(5000)
    (broken_http.root / tag).mkdir(parents=True)
    (broken_http.root / tag / "no.bin").write_bytes(content)
    dest = tmp_path / "dest"
    name = _subscription(site, tag, dest, policy)
    # the fault server answers 403 Forbidden to everything under /status/403
    base = f"{broken_http.base_url}/status/403"
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            publish_raw(site.broker_url(), [_notice(tag, base, "no.bin", content)])
            wait_for(lambda: tap.about("no.bin") != [], what="a report of no.bin")
            first = tap.about("no.bin")[0]
            assert first.code == 499 and "403" in first.message
            assert ("queued for retry" in first.message) is queued
            assert (_retry_entries(site) > 0) is queued  # the entry is on disk, or not
            if queued:  # tried again from disk, refused again
                wait_for(lambda: len(tap.about("no.bin")) >= 2, what="a second try")
    finally:
        tap.stop()
    assert not (dest / "no.bin").exists()


# -- bandwidth caps past bandwidth_wait_max -------------------------------------------------


def _partial_or_final(dest: Path, name: str) -> list[Path]:
    """Every file under ``dest`` whose name holds ``name`` (the final name or a temporary)."""
    return [p for p in dest.rglob("*") if p.is_file() and name in p.name] if dest.exists() else []


def test_a_transfer_held_past_bandwidth_wait_max_under_drop_is_reported_499_and_acked(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path
):
    # 1 MiB at 100 kB/s needs 10 s; the instance's own cap may hold it 1 s in all
    tag = unique("bwdrop")
    (src,) = make_files(nginx.root / tag, ["slow.bin"], size=1 << 20)
    dest = tmp_path / "dest"
    name = _subscription(
        site,
        tag,
        dest,
        "byte_rate_max 100k\nbandwidth_wait_max 1s\non_failure bandwidth drop\n",
    )
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            started = time.monotonic()
            publish_raw(
                site.broker_url(), [_notice(tag, nginx.base_url, "slow.bin", src.read_bytes())]
            )
            wait_for(lambda: tap.about("slow.bin") != [], what="a report of slow.bin")
            elapsed = time.monotonic() - started
            (report,) = tap.about("slow.bin")
            assert report.code == 499, report
            assert "bandwidth_wait_max" in report.message
            assert "queued for retry" not in report.message
            assert elapsed < 8.0, f"failed after {elapsed:.1f} s: it waited the cap out"
            assert _retry_entries(site) == 0
            assert _partial_or_final(dest, "slow.bin") == []  # no temporary, no final name
            _not_retried(site, tap, nginx, tag, "slow.bin", dest)
    finally:
        tap.stop()
    assert _partial_or_final(dest, "slow.bin") == []


def test_a_transfer_held_past_bandwidth_wait_max_by_a_pump_wide_cap_is_queued_then_delivered(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path, redis_server
):
    # a pump-wide cap of its source (Redis): 1 MiB at 100 kB/s, 1 s of waiting allowed
    tag = unique("bwqueue")
    source = f"src{tag}"  # a bucket of this run only: the session's Redis keeps others
    cred = site.config_dir / "credentials.conf"
    cred.write_text(cred.read_text() + redis_server.credentials_line() + "\n")
    (site.config_dir / "admin.conf").write_text(
        f"bandwidth {source} 100k\nbandwidth_redis_serverurl {redis_server.url()}\n"
    )
    (src,) = make_files(nginx.root / tag, ["held.bin"], size=1 << 20)
    content = src.read_bytes()
    dest = tmp_path / "dest"
    name = _subscription(site, tag, dest, "bandwidth_wait_max 1s\n")  # default: queue
    notice = _notice(tag, nginx.base_url, "held.bin", content)
    notice = dataclasses.replace(notice, headers={**notice.headers, "source": source})
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            publish_raw(site.broker_url(), [notice])
            wait_for(lambda: tap.about("held.bin") != [], what="a report of held.bin")
            first = tap.about("held.bin")[0]
            assert first.code == 499 and "bandwidth_wait_max" in first.message
            assert "queued for retry" in first.message
            assert _retry_entries(site) > 0  # on disk, in the retry queue
            assert not (dest / "held.bin").exists()
            # tried again from disk (retry_delay 1 s), held up again
            wait_for(lambda: len(tap.about("held.bin")) >= 2, what="a second try")
            assert all(r.code == 499 for r in tap.about("held.bin"))
            assert not (dest / "held.bin").exists()
        # the limit raised (a restart reads the configuration): the queued notice lands
        _subscription(site, tag, dest, "bandwidth_wait_max 60s\n")
        with running_subscriber(site, name):
            wait_for(lambda: any(r.code == 201 for r in tap.about("held.bin")), 60, "201")
    finally:
        tap.stop()
    assert (dest / "held.bin").read_bytes() == content
    assert _partial_or_final(dest, "held.bin") == [dest / "held.bin"]
