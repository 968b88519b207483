"""v03 interoperability with the reference sr3 (metpx-sr3 3.3.1) run as a peer.

(1) sr3 ``sr3_post`` announces v03 (its default format) and our sr_subscribe, bound with
``topic_prefix v03``, downloads every file (names with spaces, ``#``, non-ASCII, nested);
what sr3 published is captured and checked as sr3's wire form (application/json, no
headers). (2) our sr_post with ``post_format v03`` and ``post_topic_prefix v03`` announces
the same set and sr3's ``subscribe`` downloads it; its ``callback report`` reports (sr3's
nested ``report`` table) decode with our codec. (3) a subscriber of ours that posts v03
emits v03 reports that sr3's own v03 reader accepts. Findings are in docs/interop.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sarra.codec import v02
from sarra.notice import Notice, Report
from tests.integration.flowkit import (
    AWKWARD,
    ReportTap,
    Site,
    make_files,
    md5_tree,
    post,
    running_subscriber,
    unique,
    wait_for,
)
from tests.interop.peers import (
    SR3_POSTED_LINE,
    PeerError,
    Sr3Subscriber,
    count_lines,
    mgmt_bindings,
    peers_dir,
    sr3_post,
)
from tests.interop.test_interop_v02 import Capture, Captured

pytestmark = [pytest.mark.servers, pytest.mark.interop, pytest.mark.timeout(180)]


#: the directories of AWKWARD, which sr3 announces as mkdir (fileOp directory)
DIRS = ["deep", "deep/er"]


def _sr3_reads(body: bytes, content_type: str) -> dict[str, Any]:
    """What sr3's own v03 reader makes of a message (run in the peer's python, never
    imported here): whether it claims the content type, and the message it imports."""
    script = (
        "import json, sys\n"
        "from sarracenia.postformat.v03 import V03\n"
        "body = sys.stdin.read()\n"
        "msg = V03.importMine(body, {}, {})\n"
        "print(json.dumps({'mine': V03.mine(body, {}, sys.argv[1], {}),\n"
        "                  'msg': None if msg is None else dict(msg)}, default=str))\n"
    )
    proc = subprocess.run(
        [str(peers_dir() / "sr3" / "bin" / "python"), "-c", script, content_type],
        input=body.decode("utf-8"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return dict(json.loads(proc.stdout))


# -- 1. sr3 posts v03 -> our sr_subscribe ---------------------------------------------------


def test_files_posted_in_v03_by_sr3_are_downloaded_by_our_subscriber(
    site: Site, rabbitmq: Any, nginx: Any, tmp_path: Path
) -> None:
    tag = unique("sr3v")
    src = nginx.root / tag
    make_files(src, AWKWARD, size=5000)
    dest = tmp_path / "dest"
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\ntopic_prefix v03\nsubtopic {tag}.#\ndirectory {dest}\n"
        "mirror on\nstrip 1\nexpire 10m\naccept .*\n",
    )
    expected = sorted(f"{tag}/{n}" for n in AWKWARD)
    cap = Capture(rabbitmq, "xs_guest", f"v03.{tag}.#")
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            proc = sr3_post(
                tmp_path / "sr3", rabbitmq.url(), nginx.base_url, nginx.root, [src],
                post_format="v03",
            )  # fmt: skip
            # sr3 also announces each directory it walks (fileOp directory: a mkdir), the
            # top one (topic "v03", outside the binding) included
            assert count_lines(proc.stdout + proc.stderr, SR3_POSTED_LINE) == len(expected) + 3
            wait_for(
                lambda: (
                    len([r for r in tap.reports if r.notice.path.startswith(tag)])
                    >= len(expected) + len(DIRS)
                ),
                timeout=60,
                what="a report per posted path",
            )
        captured = cap.drain()
    finally:
        tap.stop()
        cap.close()
    ours = [r for r in tap.reports if r.notice.path.startswith(f"{tag}/")]
    dirs = sorted(f"{tag}/{d}" for d in DIRS)
    assert sorted(r.notice.path for r in ours) == sorted(expected + dirs)
    assert {r.code for r in ours} == {201}, [(r.notice.path, r.code, r.message) for r in ours]
    assert {r.message for r in ours if r.notice.path in dirs} == {"directory created"}
    assert md5_tree(dest) == md5_tree(src)
    assert [p for p in dest.rglob("*") if "~sr" in p.name or p.name.endswith(".tmp")] == []
    # sr3's wire form: JSON bodies, application/json, no application headers, v03.<dirs>
    assert len(captured) == len(expected) + len(DIRS)
    for m in captured:
        assert m.content_type == "application/json" and m.headers == {}
        body = json.loads(m.body)
        assert not body["relPath"].startswith("/")  # sr3 strips the leading slash
        assert body["pubTime"][8] == "T"
        if "fileOp" in body:
            assert body["fileOp"] == {"directory": ""} and "identity" not in body
        else:
            assert body["identity"]["method"] == "sha512"
        n = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        assert isinstance(n, Notice) and n.path == body["relPath"]
        assert m.routing_key == "v03." + ".".join(body["relPath"].split("/")[:-1])
    raw_names = sorted(json.loads(m.body)["relPath"] for m in captured)
    # relPath is the raw name in v03: no %20, no %23
    assert raw_names == sorted(expected + dirs)


# -- 2. our sr_post in v03 -> sr3 subscribe; sr3's v03 reports -> our codec -----------------


def test_files_posted_in_v03_by_us_are_downloaded_by_sr3(
    site: Site, rabbitmq: Any, nginx: Any, tmp_path: Path
) -> None:
    tag = unique("ourv")
    src = nginx.root / tag
    make_files(src, AWKWARD, size=7000)
    dest = tmp_path / "dest"
    cap = Capture(rabbitmq, "xs_guest", f"v03.{tag}.#")
    sub = Sr3Subscriber(
        tmp_path / "sr3",
        rabbitmq.url(),
        "xs_guest",
        dest,
        topic_prefix="v03",
        subtopic=f"{tag}.#",
        bindings=mgmt_bindings(rabbitmq.mgmt_get),
    )
    try:
        with sub:
            rc = post(
                site, nginx.base_url, nginx.root, [src],
                ("post_format", "v03"), ("post_topic_prefix", "v03"),
            )  # fmt: skip
            assert rc == 0
            sub.wait_downloaded(len(AWKWARD), timeout=90)
            log = sub.log_text()
        posted = cap.drain()
    finally:
        cap.close()
    assert md5_tree(dest / tag) == md5_tree(src), log[-4000:]
    assert "Traceback" not in log
    # what we published is sr3's form, and sr3's own reader takes it
    assert len(posted) == len(AWKWARD)
    for m in posted:
        assert m.content_type == "application/json" and m.headers == {}
        read = _sr3_reads(m.body, m.content_type or "")
        assert read["mine"] is True
        assert read["msg"]["relPath"].lstrip("/") in {f"{tag}/{n}" for n in AWKWARD}
        assert read["msg"]["identity"]["method"] == "md5"
        # and sr3 makes a report of it that our codec reads as a Report
        report = _sr3_report(m.body, 201)
        decoded = v02.decode("xr_guest", m.routing_key, report, None, "application/json")
        assert isinstance(decoded, Report) and decoded.code == 201
        assert decoded.notice.path == read["msg"]["relPath"].lstrip("/")
        assert set(json.loads(report)["report"]) == {"code", "timeCompleted", "message"}


def test_sr3_report_callback_in_a_subscriber_without_post_broker_does_not_load(
    rabbitmq: Any, tmp_path: Path
) -> None:
    """Pins an sr3 3.3.1 defect (docs/interop.md): ``callback report`` in a subscriber that
    has no post_broker fails to load (``list index out of range`` in Moth.pubFactory), so
    sr3 subscribers cannot send reports in the usual configuration."""
    sub = Sr3Subscriber(tmp_path / "sr3", rabbitmq.url(), "xs_guest", tmp_path / "d")
    sub.extra = ("callback report", f"report_broker {sub._bare}", "report_exchange xr_guest")
    with pytest.raises(PeerError, match="plugin report did not load: list index out of range"):
        sub.start(timeout=60)
    sub.stop()


def _sr3_report(body: bytes, code: int) -> bytes:
    """The v03 report sr3's own code makes of a message (Message.setReport, then its v03
    export), run in the peer's python."""
    script = (
        "import sys\n"
        "import sarracenia\n"
        "from sarracenia.postformat.v03 import V03\n"
        "msg = V03.importMine(sys.stdin.read(), {}, {})\n"
        "msg['_deleteOnPost'] = set(['_format'])\n"
        "sarracenia.Message.setReport(msg, int(sys.argv[1]))\n"
        "out = {k: v for k, v in msg.items() if not k.startswith('_')}\n"
        "import json; print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [str(peers_dir() / "sr3" / "bin" / "python"), "-c", script, str(code)],
        input=body.decode("utf-8"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout.strip().encode("utf-8")


# -- 3. our v03 reports -> sr3's reader -------------------------------------------------------


def test_a_subscriber_posting_v03_reports_in_v03_and_sr3_reads_the_reports(
    site: Site, rabbitmq: Any, nginx: Any, tmp_path: Path
) -> None:
    tag = unique("rv3")
    src = nginx.root / tag
    make_files(src, ["a.txt", "sp ace#x.txt"], size=300)
    dest = tmp_path / "dest"
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\ntopic_prefix v03\nsubtopic {tag}.#\ndirectory {dest}\n"
        "mirror on\nstrip 1\nexpire 10m\naccept .*\npost_format v03\n",
    )
    cap = Capture(rabbitmq, "xs_guest", f"v03.{tag}.#")
    try:
        with running_subscriber(site, name):
            rc = post(
                site, nginx.base_url, nginx.root, [src],
                ("post_format", "v03"), ("post_topic_prefix", "v03"),
            )  # fmt: skip
            assert rc == 0
            wait_for(
                lambda: len([m for m in cap.drain() if b'"report"' in m.body]) >= 2,
                timeout=60,
                what="two v03 reports",
            )
        msgs = cap.drain()
    finally:
        cap.close()
    reports = [m for m in msgs if b'"report"' in m.body]
    assert len(reports) == 2
    for m in reports:
        assert m.content_type == "application/json"
        read = _sr3_reads(m.body, m.content_type or "")
        assert read["mine"] is True
        table = read["msg"]["report"]
        assert table["code"] == 201 and table["timeCompleted"][8] == "T"
        assert table["message"]
        ours = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        assert isinstance(ours, Report) and ours.code == 201
    assert sorted(p.name for p in (dest).rglob("*") if p.is_file()) == ["a.txt", "sp ace#x.txt"]


#: sr3's read buffer (bufSize default, 1 MiB): its block sums are taken in these steps
SR3_BUFSIZE = 1024 * 1024


def _sr3_block_digest(data: bytes, offset: int, length: int) -> str:
    """The block identity sr3 3.3.1 computes (Message.computeIdentity with an offset): it
    seeks to the offset and reads whole buffers while the bytes read are below
    offset + length, so a block other than the first or last is hashed past its end."""
    h, i, pos = hashlib.sha512(), 0, offset
    while i < offset + length:
        buf = data[pos : pos + SR3_BUFSIZE]
        if not buf:
            break
        h.update(buf)
        i += len(buf)
        pos += len(buf)
    return base64.b64encode(h.digest()).decode()


def _sr3_blocks(
    site: Site, rabbitmq: Any, nginx: Any, tmp_path: Path, size: int, blocksize: str
) -> tuple[Path, Path, list[Captured], ReportTap, bool]:
    """sr3 posts one file of ``size`` bytes in v03 blocks; our subscriber takes them. Returns
    the source, the destination file, the captured posts, the report tap and whether the
    destination equalled the source within 45 s."""
    tag = unique("sr3b")
    src = nginx.root / tag / "big file #1.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(os.urandom(size))
    dest = tmp_path / "dest"
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\ntopic_prefix v03\nsubtopic {tag}.#\ndirectory {dest}\n"
        "mirror on\nstrip 1\nexpire 10m\naccept .*\n",
    )
    cap = Capture(rabbitmq, "xs_guest", f"v03.{tag}.#")
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    target = dest / src.name
    try:
        with running_subscriber(site, name):
            sr3_post(
                tmp_path / "sr3", rabbitmq.url(), nginx.base_url, nginx.root, [src],
                post_format="v03", blocksize=blocksize,
            )  # fmt: skip
            try:
                wait_for(
                    lambda: target.exists() and target.read_bytes() == src.read_bytes(),
                    timeout=45,
                    what="the reassembled file",
                )
                whole = True
            except AssertionError:
                whole = False
        captured = cap.drain()
    finally:
        tap.stop()
        cap.close()
    return src, target, captured, tap, whole


def test_a_file_posted_in_two_v03_blocks_by_sr3_is_reassembled_by_our_subscriber(
    site: Site, rabbitmq: Any, nginx: Any, tmp_path: Path
) -> None:
    """sr3's v03 blocks (inplace, each message carrying the whole manifest, ``size`` = this
    block's length) become our ``i`` parts and the file is rebuilt from byte ranges. With
    blocks of exactly sr3's buffer size and two blocks, sr3's block sums are right."""
    src, target, captured, _tap, whole = _sr3_blocks(
        site, rabbitmq, nginx, tmp_path, 1_500_000, "1Mi"
    )
    assert whole and target.read_bytes() == src.read_bytes()
    parts = []
    for m in captured:
        body = json.loads(m.body)
        assert body["blocks"]["method"] == "inplace" and len(body["blocks"]["manifest"]) == 2
        n = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        assert isinstance(n, Notice) and n.parts is not None
        parts.append(n.parts.wire())
    assert sorted(parts) == [f"i,1048576,2,451424,{i}" for i in range(2)]
    assert [p for p in target.parent.rglob("*") if p != target] == []


def test_sr3_block_sums_of_middle_blocks_are_wrong_and_our_subscriber_refuses_them(
    site: Site, rabbitmq: Any, nginx: Any, tmp_path: Path
) -> None:
    """Pins the sr3 3.3.1 defect of docs/interop.md: with 1,000,000-byte blocks and a 1 MiB
    read buffer, every block but the last is hashed past its end. Our subscriber checks
    each block, refuses those (499, retried) and never shows a partial file under its name."""
    src, target, captured, tap, whole = _sr3_blocks(
        site, rabbitmq, nginx, tmp_path, 2_621_440, "1M"
    )
    assert not whole and not target.exists()
    data = src.read_bytes()
    (first, *_) = captured
    manifest = json.loads(first.body)["blocks"]["manifest"]
    for n, entry in manifest.items():
        offset, length = int(n) * 1_000_000, entry["size"]
        true = base64.b64encode(hashlib.sha512(data[offset : offset + length]).digest()).decode()
        assert entry["identity"] == _sr3_block_digest(data, offset, length)
        assert (entry["identity"] == true) == (int(n) == 2)  # only the last block is right
    refused = [r for r in tap.reports if r.code == 499]
    assert refused and all("checksum mismatch" in r.message for r in refused)


def test_our_v03_blocks_carry_sr3s_manifest_and_sr3_downloads_every_block(
    site: Site, rabbitmq: Any, nginx: Any, tmp_path: Path
) -> None:
    """Our v03 block posts carry sr3's ``manifest`` (every block's size and identity, in
    every message); sr3's reader takes them and sr3's subscriber downloads every block."""
    tag = unique("ourb")
    src = nginx.root / tag / "big file #1.bin"
    src.parent.mkdir(parents=True)
    data = os.urandom(2_621_440)
    src.write_bytes(data)
    dest = tmp_path / "dest"
    cap = Capture(rabbitmq, "xs_guest", f"v03.{tag}.#")
    sub = Sr3Subscriber(
        tmp_path / "sr3",
        rabbitmq.url(),
        "xs_guest",
        dest,
        topic_prefix="v03",
        subtopic=f"{tag}.#",
        bindings=mgmt_bindings(rabbitmq.mgmt_get),
    )
    try:
        with sub:
            rc = post(
                site, nginx.base_url, nginx.root, [src.parent],
                ("post_format", "v03"), ("post_topic_prefix", "v03"), ("blocksize", "1048576"),
            )  # fmt: skip
            assert rc == 0
            got = sub.wait_downloaded(3, timeout=60)
            log = sub.log_text()
        posted = cap.drain()
    finally:
        cap.close()
    assert got >= 3 and "Traceback" not in log, log[-3000:]
    # three block posts, each with the whole manifest, read by sr3's own v03 reader
    assert len(posted) == 3
    for m in posted:
        blocks = json.loads(m.body)["blocks"]
        n = blocks["number"]
        assert blocks["method"] == "inplace" and blocks["size"] == 1_048_576
        assert {k: v["size"] for k, v in blocks["manifest"].items()} == {
            "0": 1_048_576, "1": 1_048_576, "2": 524_288,
        }  # fmt: skip
        part = data[n * 1_048_576 : (n + 1) * 1_048_576]
        assert blocks["manifest"][str(n)]["identity"] == json.loads(m.body)["identity"]["value"]
        assert (
            json.loads(m.body)["identity"]["value"]
            == base64.b64encode(hashlib.md5(part).digest()).decode()
        )
        read = _sr3_reads(m.body, m.content_type or "")
        assert read["mine"] is True and read["msg"]["blocks"] == blocks
    # sr3 (without a reassembly callback) keeps each block as its own file, byte for byte
    for n in range(3):
        block = dest / tag / f"{src.name}§block_{n:04d},1.0mib_§"
        assert block.read_bytes() == data[n * 1_048_576 : (n + 1) * 1_048_576]
    assert not (dest / tag / src.name).exists()
