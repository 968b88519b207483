"""Multi-part files under faults: a full disk, a missing block, truncated block responses.

The disk-full test mounts a real 2 MiB tmpfs as the destination (the suite runs as root).
The retry queue's first delay is 15 to 30 s (``RetryQueue`` base_delay 30 s with jitter in
[0.5, 1]; no option sets it), so that test takes about 20 to 40 s.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.integration.flowkit import (
    ReportTap,
    Site,
    post,
    publish_raw,
    running_subscriber,
    unique,
    wait_for,
)
from tests.integration.test_parts_flow import (
    _content,
    _leftovers,
    _on_file_plugin,
    _part_notices,
    _subscription,
)
from tests.servers.tmpfs import grow, tmpfs

pytestmark = [pytest.mark.servers, pytest.mark.timeout(150)]

BLOCK = 256 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (unmounted at teardown); the test may grow it."""
    with tmpfs(tmp_path / "small", "2m") as mnt:
        yield mnt


def _retry_puts(site: Site) -> int:
    """How many items were ever put in the subscriber's disk retry queues."""
    return sum(p.read_text().count('"op":"put"') for p in site.state_dir.rglob("retry_*.jsonl"))


def test_a_full_disk_queues_blocks_for_retry_and_the_file_completes_once_space_is_freed(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path, small_disk, caplog
):
    caplog.set_level(logging.INFO)
    tag = unique("full")
    data = _content(24 * BLOCK + 4321)  # 6 MiB: three times the space there is
    src = nginx.root / tag / "big.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    plugin, on_file_log = _on_file_plugin(tmp_path)
    # one attempt in-process: a full disk goes straight to the disk retry queue
    name = _subscription(
        site, tag, small_disk, plugin, "attempts 1\nretry_delay 1s\nretry_delay_max 2s\n"
    )
    with running_subscriber(site, name):
        assert post(site, nginx.base_url, nginx.root, [src], ("blocksize", str(BLOCK))) == 0
        wait_for(lambda: _retry_puts(site) > 0, timeout=60, what="a block in the retry queue")
        assert not (small_disk / "big.bin").exists()
        grow(small_disk, "64m")
        # the first retry is due 15 to 30 s after the failure
        wait_for(lambda: (small_disk / "big.bin").exists(), timeout=90, what="the file")
        wait_for(on_file_log.exists, what="on_file")
    assert (small_disk / "big.bin").read_bytes() == data
    assert len(on_file_log.read_text().splitlines()) == 1
    assert _leftovers(small_disk) == []
    full = [r for r in caplog.records if "No space left" in r.getMessage()]
    assert full, "no block hit the full disk"
    # the failures were handled as outcomes, never as a crash of the flow
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


def test_a_missing_block_is_reported_499_and_the_file_never_appears(  # type: ignore[no-untyped-def]
    site, broken_http, tmp_path
):
    tag = unique("gone")
    data = _content(5 * BLOCK + 77)
    target = broken_http.root / tag / "big.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    dest = tmp_path / "dest"
    base = broken_http.base_url
    good = _part_notices(tag, base, data, BLOCK)
    # block 2 (same version: same pubTime and mtime) under a base URL that answers 404
    body = good[2].body.replace(f" {base} ".encode(), f" {base}/status/404 ".encode(), 1)
    assert body != good[2].body
    messages = [*good[:2], replace(good[2], body=body), *good[3:]]
    plugin, on_file_log = _on_file_plugin(tmp_path)
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    name = _subscription(site, tag, dest, plugin, "report_back on\nattempts 2\n")
    try:
        with running_subscriber(site, name):
            publish_raw(site.broker_url(), messages)
            wait_for(lambda: len(tap.about("big.bin")) >= len(messages), what="the reports")
    finally:
        tap.stop()
    by_block = {r.notice.parts.block_number: r.code for r in tap.about("big.bin")}  # type: ignore[union-attr]
    assert by_block == {0: 201, 1: 201, 2: 499, 3: 201, 4: 201, 5: 201}
    assert not (dest / "big.bin").exists()
    assert not on_file_log.exists()


def test_truncated_block_responses_are_retried_then_499_and_nothing_is_placed(  # type: ignore[no-untyped-def]
    site, broken_http, tmp_path, caplog
):
    caplog.set_level(logging.INFO)
    tag = unique("short")
    data = _content(3 * BLOCK + 5)
    target = broken_http.root / tag / "big.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    dest = tmp_path / "dest"
    # the server sends the headers of each range, then half the body, then closes
    messages = _part_notices(tag, f"{broken_http.base_url}/truncate", data, BLOCK)
    plugin, on_file_log = _on_file_plugin(tmp_path)
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    name = _subscription(site, tag, dest, plugin, "report_back on\nattempts 2\n")
    try:
        with running_subscriber(site, name):
            publish_raw(site.broker_url(), messages)
            wait_for(lambda: len(tap.about("big.bin")) >= len(messages), what="the reports")
    finally:
        tap.stop()
    assert [r.code for r in tap.about("big.bin")] == [499] * len(messages)
    retried = [r for r in caplog.records if "attempt 1 failed" in r.getMessage()]
    assert len(retried) == len(messages), [r.getMessage() for r in caplog.records]
    assert not (dest / "big.bin").exists()
    assert not on_file_log.exists()
    placed = [p.name for p in dest.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert placed == [], placed  # no final name, no .Part: only hidden in-flight data


def test_a_file_whose_other_blocks_never_come_is_expired_reported_499_and_cleaned_up(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path
):
    tag = unique("never")
    data = _content(5 * BLOCK + 77)
    src = nginx.root / tag / "big.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    dest = tmp_path / "dest"
    messages = _part_notices(tag, nginx.base_url, data, BLOCK)
    sent = [messages[0], messages[1], messages[3]]  # blocks 2, 4 and 5 never come
    plugin, on_file_log = _on_file_plugin(tmp_path)
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    name = _subscription(site, tag, dest, plugin, "report_back on\npart_expiry 2s\n")
    try:
        with running_subscriber(site, name):
            publish_raw(site.broker_url(), sent)
            # housekeeping runs every 5 s; the version expires 2 s after its last block
            wait_for(
                lambda: 499 in [r.code for r in tap.about("big.bin")],
                timeout=60,
                what="the 499 report about the abandoned file",
            )
    finally:
        tap.stop()
    reports = tap.about("big.bin")
    codes = sorted(r.code for r in reports)
    assert codes == [201, 201, 201, 499], codes
    expired = next(r for r in reports if r.code == 499)
    assert expired.notice.rel_path.endswith(f"{tag}/big.bin")
    assert "3 of 6 blocks arrived" in expired.message
    assert not (dest / "big.bin").exists()
    assert not on_file_log.exists()
    assert _leftovers(dest) == []
    assert [p for p in site.state_dir.rglob("open/*.json")] == []  # no tracking record left
