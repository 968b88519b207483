"""Golden v03 messages (sr3 3.3.1 forms, facts 1.7, 1.8, 1.11), beside the v02 goldens of
test_codec_golden.py: each is decoded, checked field by field, and encoded back to the same
JSON object with sr3's content type."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pytest

from sarra.codec import v02, v03
from sarra.integrity.sums import name_sum
from sarra.notice import Checksum, Notice, PartSpec, Report

HELLO = b"hello world\n"
SHA512_HELLO = base64.b64encode(hashlib.sha512(HELLO).digest()).decode()
MD5_HELLO = base64.b64encode(hashlib.md5(HELLO).digest()).decode()
T = "20261123T071923.862766504"
M = "20261123T071847.471170187"
BASE = {"pubTime": T, "baseUrl": "sftp://guest@127.0.0.1", "from_cluster": "testcluster"}


def _b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha512(data).digest()).decode()


@dataclass(frozen=True)
class GoldenV03:
    name: str
    key: str
    body: dict[str, Any]
    sum: str
    parts: str | None
    headers: dict[str, str]
    #: the object encoded back when it differs from ``body`` (sr3's input quirks normalized)
    reencoded: dict[str, Any] | None = None


GOLDEN_V03 = [
    GoldenV03(
        "V3-1 file",
        "v03.a.b",
        {**BASE, "relPath": "a/b/hello.txt", "source": "guest", "mode": "644", "size": 12,
         "mtime": M, "atime": M, "identity": {"method": "sha512", "value": SHA512_HELLO}},
        "s," + hashlib.sha512(HELLO).hexdigest(),
        "1,12,1,0,0",
        {"mtime": M.replace("T", ""), "mode": "644", "source": "guest"},
    ),
    GoldenV03(
        "V3-2 blocks with manifest",
        "v03.a.b",
        {**BASE, "relPath": "a/b/big.bin", "size": 621440, "source": "guest",
         "identity": {"method": "sha512", "value": _b64(b"big")},
         "blocks": {"method": "inplace", "size": 1000000, "number": 2, "manifest": {
             "0": {"size": 1000000, "identity": _b64(b"0")},
             "1": {"size": 1000000, "identity": _b64(b"1")},
             "2": {"size": 621440, "identity": _b64(b"2")}}}},
        "s," + hashlib.sha512(b"big").hexdigest(),
        "i,1000000,3,621440,2",
        {},
    ),
    GoldenV03(
        "V3-3 name with space, hash and non-ASCII",
        "v03.d ir%23x",
        {**BASE, "relPath": "d ir#x/q été #1.txt", "size": 12,
         "identity": {"method": "md5", "value": MD5_HELLO}},
        "d," + hashlib.md5(HELLO).hexdigest(),
        "1,12,1,0,0",
        {},
    ),
    GoldenV03(
        "V3-4 link",
        "v03.a",
        {**BASE, "relPath": "a/l.txt", "fileOp": {"link": "hello.txt"}},
        name_sum("L", "hello.txt").wire(),
        None,
        {"link": "hello.txt"},
    ),
    GoldenV03(
        "V3-5 remove",
        "v03.wdir",
        {**BASE, "relPath": "wdir/f1.txt", "fileOp": {"remove": ""}},
        name_sum("R", "f1.txt").wire(),
        None,
        {},
    ),
    GoldenV03(
        "V3-6 mkdir",
        "v03.wdir",
        {**BASE, "relPath": "wdir/sub", "fileOp": {"directory": ""},
         "contentType": "text/directory"},
        name_sum("m", "sub").wire(),
        None,
        {"contentType": "text/directory"},
    ),
    GoldenV03(
        "V3-7 rmdir",
        "v03.wdir",
        {**BASE, "relPath": "wdir/sub", "fileOp": {"remove": "", "directory": ""}},
        name_sum("r", "sub").wire(),
        None,
        {},
    ),
    GoldenV03(
        "V3-8 rename (one message, absolute old path)",
        "v03.wdir",
        {**BASE, "relPath": "wdir/f2.txt", "size": 12,
         "fileOp": {"rename": "/tmp/srres/wdir/f1.txt"},
         "identity": {"method": "sha512", "value": SHA512_HELLO}},
        "s," + hashlib.sha512(HELLO).hexdigest(),
        "1,12,1,0,0",
        {"oldname": "/tmp/srres/wdir/f1.txt"},
    ),
    GoldenV03(
        "V3-9 cod (poll) with GeoJSON and inline content",
        "v03.p",
        {**BASE, "relPath": "p/obs.json", "size": 12,
         "identity": {"method": "cod", "value": "sha512"},
         "type": "Feature", "geometry": {"type": "Point", "coordinates": [-75.7, 45.4]},
         "content": {"encoding": "utf-8", "value": "hello world\n"}},
        "z,s",
        "1,12,1,0,0",
        {"type": "Feature"},
    ),
    GoldenV03(
        "V3-10 sr2 2.20 quirks: integrity, retPath, parts string, string size",
        "v03.post.a",
        {**BASE, "relPath": "/a/hello.txt", "parts": "1,12,1,0,0", "retPath": "x/y",
         "integrity": {"method": "md5", "value": MD5_HELLO}},
        "d," + hashlib.md5(HELLO).hexdigest(),
        "1,12,1,0,0",
        {"retrievePath": "x/y"},
        reencoded={**BASE, "relPath": "/a/hello.txt", "size": 12, "retrievePath": "x/y",
                   "identity": {"method": "md5", "value": MD5_HELLO}},
    ),
]  # fmt: skip


@pytest.mark.parametrize("g", GOLDEN_V03, ids=lambda g: g.name)
def test_a_golden_v03_post_decodes_and_encodes_back(g: GoldenV03) -> None:
    raw = json.dumps(g.body).encode()
    n = v02.decode("xs_guest", g.key, raw, None, "application/json")
    assert isinstance(n, Notice)
    assert n.checksum.wire() == g.sum
    assert (n.parts.wire() if n.parts else None) == g.parts
    for name, value in g.headers.items():
        assert n.header(name) == value
    assert n.path == g.body["relPath"].lstrip("/")
    # the same body is recognized without the content type, by its shape
    assert v02.decode("xs_guest", g.key, raw, None) == n
    wire = v02.encode(n, "xs_out", post_format="v03")
    assert wire.content_type == "application/json" and dict(wire.headers) == {}
    assert wire.exchange == "xs_out"
    assert json.loads(wire.body) == (g.reencoded or g.body)
    assert wire.routing_key == "v03." + ".".join(
        d.replace(" ", "%20").replace("#", "%23") for d in n.path.split("/")[:-1]
    )


SR3_REPORT = {
    **BASE,
    "relPath": "a/b/hello.txt",
    "source": "guest",
    "size": 12,
    "identity": {"method": "sha512", "value": SHA512_HELLO},
    "report": {"code": 201, "timeCompleted": "20261123T071925.1", "message": "Download successful"},
}
SR2_V03_REPORT = {
    **BASE,
    "relPath": "/a/b/hello.txt",
    "size": 12,
    "identity": {"method": "md5", "value": MD5_HELLO},
    "report": {"resultCode": 499, "elapsedTime": 0.25, "host": "pump1", "user": "tsub"},
}


def test_an_sr3_report_decodes_as_a_report_and_encodes_back() -> None:
    r = v02.decode("xr_guest", "v03.a.b", json.dumps(SR3_REPORT).encode(), None)
    assert isinstance(r, Report)
    assert (r.code, r.message, r.host, r.user) == (
        201,
        "Download successful",
        "testcluster",
        "guest",
    )
    assert r.notice.topic == "v03.a.b" and r.notice.path == "a/b/hello.txt"
    wire = v02.encode(r, "xreport", post_format=v02.report_format(r))
    assert wire.content_type == "application/json" and wire.routing_key == "v03.a.b"
    assert json.loads(wire.body) == SR3_REPORT


def test_an_sr2_v03_report_and_a_report_without_identity_are_read() -> None:
    r = v02.decode("xr_tsub", "v03.post.a.b", json.dumps(SR2_V03_REPORT).encode(), None)
    assert isinstance(r, Report)
    assert (r.code, r.host, r.user, r.elapsed) == (499, "pump1", "tsub", 0.25)
    assert json.loads(v03.report_to_wire(r, "xreport").body) == SR2_V03_REPORT
    bare = {k: v for k, v in SR3_REPORT.items() if k not in ("identity", "size")}
    r = v02.decode("xr_guest", "v03.a.b", json.dumps(bare).encode(), None)
    assert isinstance(r, Report) and r.notice.checksum.letter == "n"
    assert json.loads(v03.report_to_wire(r, "xreport").body) == bare


def test_our_report_in_v03_has_the_table_sr3_reads() -> None:
    n = v02.decode("xs_guest", "v02.post.a.b", b"20261123071900.07 sftp://h /a/b/c.txt", {
        "parts": "1,12,1,0,0", "sum": "d," + hashlib.md5(HELLO).hexdigest(), "source": "guest",
    })  # fmt: skip
    assert isinstance(n, Notice)
    rep = v02.make_report(
        n,
        code=201,
        message="Downloaded",
        host="node1",
        user="tsub",
        elapsed=0.5,
        source=None,
        from_cluster="pump",
        to_clusters=None,
    )
    wire = v02.encode(rep, "xs_tsub", post_format="v03")
    body = json.loads(wire.body)
    assert wire.routing_key == "v03.a.b" and wire.content_type == "application/json"
    assert body["report"]["code"] == 201 and body["report"]["message"] == "Downloaded"
    assert body["report"]["timeCompleted"][8] == "T"
    assert (body["report"]["host"], body["report"]["user"]) == ("node1", "tsub")
    assert body["pubTime"] == "20261123T071900.07" and body["relPath"] == "/a/b/c.txt"
    assert body["identity"] == {"method": "md5", "value": MD5_HELLO}
    # and sarra reads its own v03 report back
    back = v02.decode("xs_tsub", wire.routing_key, wire.body, None, wire.content_type)
    assert isinstance(back, Report) and (back.code, back.host, back.user) == (201, "node1", "tsub")


def test_a_v02_post_encodes_to_v03_and_back_to_the_same_notice() -> None:
    n = v02.decode(
        "xs_guest",
        "v02.post.a.b",
        b"20261123082716.0793294907 sftp://user@host/ /a/b/sp%20ace%23hash.txt",
        {"mtime": "20261123071847.471170187", "mode": "644", "parts": "i,4,3,1,2",
         "sum": "d,9dd4e461268c8034f5c8564e155c67a6"},
    )  # fmt: skip
    assert isinstance(n, Notice)
    wire = v03.to_wire(n)
    body = json.loads(wire.body)
    assert body["relPath"] == "/a/b/sp ace#hash.txt" and body["size"] == 1
    assert body["blocks"] == {
        "method": "inplace", "size": 4, "count": 3, "remainder": 1, "number": 2,
    }  # fmt: skip
    assert v02.decode("xs_guest", wire.routing_key, wire.body, None, wire.content_type) == n
    assert n.parts == PartSpec("i", 4, 3, 1, 2) and n.checksum == Checksum(
        "d", "9dd4e461268c8034f5c8564e155c67a6"
    )
