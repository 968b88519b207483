"""A subscriber against notices that lie: claims of space no file has, part values past 64
bits, and baseUrls naming internal services (issue 9, defects 6 and 7).

Real RabbitMQ and a real HTTP origin (the fault-injecting server on 127.0.0.1, whose count
of accepted connections tells whether anything was fetched).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from sarra.codec import v02
from sarra.codec.timestamps import now_timestamp
from sarra.notice import Checksum, PartSpec, WireMessage
from tests.integration.flowkit import (
    ReportTap,
    Site,
    publish_raw,
    running_subscriber,
    unique,
    wait_for,
)

pytestmark = [pytest.mark.servers, pytest.mark.timeout(90)]


def _notice(tag: str, base_url: str, name: str, data: bytes, parts: PartSpec) -> WireMessage:
    ts = now_timestamp()
    n = v02.make_notice(
        exchange="xs_guest", topic_prefix="v02.post", pubtime=ts, base_url=base_url,
        path=f"/{tag}/{name}", checksum=Checksum("d", hashlib.md5(data).hexdigest()),
        parts=parts, headers={"mtime": ts},
    )  # fmt: skip
    return v02.to_wire(n)


def _subscribe(site: Site, tag: str, dest: Path, extra: str = "") -> str:
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        f"expire 10m\nreport_back on\nattempts 1\n{extra}accept .*\n",
    )
    return name


def _everything(root: Path) -> list[tuple[str, int]]:
    """Every file under ``root`` (hidden ones included) with its allocated bytes."""
    if not root.exists():
        return []
    return [(str(p), p.stat().st_blocks * 512) for p in root.rglob("*") if p.is_file()]


def test_a_claim_of_900_mib_for_a_100_byte_file_reserves_nothing_and_leaves_nothing(  # type: ignore[no-untyped-def]
    site, broken_http, tmp_path
):
    tag = unique("claim")
    data = bytes(range(100))
    src = broken_http.root / tag / "small.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    dest = tmp_path / "dest"
    # block 3 of ten 90 MiB blocks: a 900 MiB file, by the notice's word only
    bogus = _notice(tag, broken_http.base_url, "small.bin", data, PartSpec("i", 94371840, 10, 0, 3))
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, _subscribe(site, tag, dest)):
            publish_raw(site.broker_url(), [bogus])
            wait_for(lambda: len(tap.about("small.bin")) >= 1, what="the report")
            # reported, so the failure is handled: what the claim created is gone already
            # (not after part_expiry), while the subscriber still runs
            left = _everything(dest)
            state = [p for p in site.state_dir.rglob("parts/*/open/*.json")]
    finally:
        tap.stop()
    codes = [r.code for r in tap.about("small.bin")]
    assert codes and codes[0] in (416, 417, 499), codes
    assert left == [], left  # no hidden .sr-part, let alone a 900 MiB one
    assert state == [], state  # no tracking record either


def test_a_part_size_of_2_63_is_refused_417_and_the_subscriber_goes_on(  # type: ignore[no-untyped-def]
    site, broken_http, tmp_path
):
    tag = unique("huge")
    data = b"x" * 100
    src = broken_http.root / tag / "ok.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    dest = tmp_path / "dest"
    good = _notice(tag, broken_http.base_url, "ok.bin", data, PartSpec("1", 100, 1, 0, 0))
    huge = []
    for name, parts in (
        ("whole.bin", f"1,{1 << 63},1,0,0"),
        ("block.bin", f"i,{1 << 63},2,0,0"),
        ("product.bin", f"i,{1 << 62},3,0,1"),  # each value fits; the file size does not
    ):
        wire = _notice(tag, broken_http.base_url, name, data, PartSpec("1", 100, 1, 0, 0))
        huge.append(replace(wire, headers={**wire.headers, "parts": parts}))
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, _subscribe(site, tag, dest)):
            publish_raw(site.broker_url(), [*huge, good])
            wait_for(lambda: (dest / "ok.bin").exists(), what="the good file after the bad ones")
            wait_for(lambda: len(tap.reports) >= 4, what="the reports")
    finally:
        tap.stop()
    by_name = {r.notice.path.rsplit("/", 1)[-1]: r.code for r in tap.reports}
    assert by_name == {"whole.bin": 417, "block.bin": 417, "product.bin": 417, "ok.bin": 201}
    assert (dest / "ok.bin").read_bytes() == data
    assert [Path(p).name for p, _ in _everything(dest)] == ["ok.bin"]


@pytest.mark.parametrize("internal", ["origin", "http://169.254.169.254"])
def test_a_subscriber_refuses_internal_base_urls_503_unless_base_url_private(  # type: ignore[no-untyped-def]
    site, broken_http, tmp_path, internal
):
    tag = unique("ssrf")
    data = b"secret" * 10
    src = broken_http.root / tag / "f.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    base = broken_http.base_url if internal == "origin" else internal
    notice = _notice(tag, base, "f.bin", data, PartSpec("1", len(data), 1, 0, 0))
    refused_dest = tmp_path / "refused"
    before = broken_http.accepted
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        # write_subscribe turns base_url_private on for the test servers; off again here
        name = _subscribe(site, tag, refused_dest, "base_url_private off\n")
        with running_subscriber(site, name):
            publish_raw(site.broker_url(), [notice])
            wait_for(lambda: len(tap.about("f.bin")) >= 1, what="the report")
    finally:
        tap.stop()
    report = tap.about("f.bin")[0]
    assert report.code == 503
    assert ("loopback" if internal == "origin" else "link-local") in report.message
    assert broken_http.accepted == before  # nothing was fetched
    assert _everything(refused_dest) == []
    if internal != "origin":
        return
    allowed_dest = tmp_path / "allowed"
    tag2 = unique("ssrf")
    (broken_http.root / tag2).mkdir()
    (broken_http.root / tag2 / "f.bin").write_bytes(data)
    notice = _notice(tag2, base, "f.bin", data, PartSpec("1", len(data), 1, 0, 0))
    with running_subscriber(site, _subscribe(site, tag2, allowed_dest)):  # private on
        publish_raw(site.broker_url(), [notice])
        wait_for(lambda: (allowed_dest / "f.bin").exists(), what="the allowed download")
    assert (allowed_dest / "f.bin").read_bytes() == data
