"""v03 codec properties: a v03 message decoded and encoded again is the same object; a v02
notice encoded in v03 decodes to the same notice; any body at all is decoded or refused as
malformed, never a crash; publishers pick the format from ``post_format``."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sarra.codec import v02, v03
from sarra.errors import MalformedMessage
from sarra.integrity.sums import name_sum
from sarra.notice import Notice, PartSpec, Report

_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=12)
# a name: no "/", no line breaks, never a literal %20 or %23 (every peer decodes those)
_NAME = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/%"),
    min_size=1,
    max_size=10,
).filter(lambda s: s not in (".", ".."))
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(_TEXT, kids, max_size=3),
    max_leaves=6,
)


@st.composite
def _stamp(draw: st.DrawFn) -> str:
    day = draw(st.integers(1, 28))
    secs = draw(st.integers(0, 86399))
    frac = draw(st.sampled_from(["", ".1", ".862766504", ".0711872578"]))
    h, rem = divmod(secs, 3600)
    return f"202611{day:02d}T{h:02d}{rem // 60:02d}{rem % 60:02d}{frac}"


def _digest(draw: st.DrawFn, n: int) -> str:
    return base64.b64encode(draw(st.binary(min_size=n, max_size=n))).decode()


@st.composite
def v03_messages(draw: st.DrawFn, report: bool = False) -> dict[str, Any]:
    """v03 objects in the forms sr3 sends (any nesting of user fields)."""
    dirs = draw(st.lists(_NAME, max_size=3))
    name = draw(_NAME)
    obj: dict[str, Any] = {
        "pubTime": draw(_stamp()),
        "baseUrl": draw(st.sampled_from(["sftp://guest@127.0.0.1", "http://h:8080/d", "file:"])),
        "relPath": draw(st.sampled_from(["", "/"])) + "/".join([*dirs, name]),
    }
    kind = draw(st.sampled_from(["file", "blocks", "manifest", "link", "remove", "mkdir", "rmdir"]))
    if kind in ("file", "blocks", "manifest"):
        method = draw(st.sampled_from(["md5", "sha512", "cod", "random", "arbitrary"]))
        value = {
            "md5": _digest(draw, 16),
            "sha512": _digest(draw, 64),
            "cod": draw(st.sampled_from(["md5", "sha512"])),
            "random": str(draw(st.integers(0, 9999))),
            "arbitrary": "x" + draw(_TEXT),
        }[method]
        obj["identity"] = {"method": method, "value": value}
        if draw(st.booleans()):
            obj["fileOp"] = {"rename": "/old/" + draw(_NAME)}
    if kind == "file":
        obj["size"] = draw(st.integers(0, 2**40))
    elif kind in ("blocks", "manifest"):
        bs = draw(st.integers(1, 2**30))
        count = draw(st.integers(1, 5))
        rem = draw(st.integers(1, bs))
        number = draw(st.integers(0, count - 1))
        obj["size"] = rem if number == count - 1 else bs
        # sr3 sends inplace blocks only (partitioned needs a .Part relPath: the v02 tests)
        blocks: dict[str, Any] = {"method": "inplace", "size": bs, "number": number}
        if kind == "manifest":
            blocks["manifest"] = {
                str(i): {"size": rem if i == count - 1 else bs, "identity": _digest(draw, 64)}
                for i in range(count)
            }
        else:
            blocks.update(count=count, remainder=rem)
        obj["blocks"] = blocks
    elif kind == "link":
        obj["fileOp"] = {"link": draw(_NAME)}
    elif kind == "remove":
        obj["fileOp"] = {"remove": ""}
    elif kind == "mkdir":
        obj["fileOp"] = {"directory": ""}
        obj["contentType"] = "text/directory"
    elif kind == "rmdir":
        obj["fileOp"] = {"remove": "", "directory": ""}
    for key in ("mtime", "atime"):
        if draw(st.booleans()):
            obj[key] = draw(_stamp())
    if draw(st.booleans()):
        obj["mode"] = draw(st.sampled_from(["644", "600", "755"]))
    for key in ("source", "from_cluster", "to_clusters"):
        if draw(st.booleans()):
            obj[key] = draw(_TEXT)
    obj.update(draw(st.dictionaries(st.text("xyz", min_size=1, max_size=3).map("x_".__add__),
                                    _JSON, max_size=3)))  # fmt: skip
    if report:
        table: dict[str, Any] = {"code": draw(st.sampled_from([201, 205, 304, 417, 499]))}
        if draw(st.booleans()):
            table["timeCompleted"] = draw(_stamp())
        if draw(st.booleans()):
            table["message"] = draw(_TEXT)
        obj["report"] = table
    return obj


@settings(max_examples=300, deadline=None)
@given(v03_messages())
def test_a_v03_post_decoded_and_encoded_again_is_the_same_object(obj: dict[str, Any]) -> None:
    text = json.dumps(obj)
    n = v02.decode("xs_guest", "v03.x", text.encode(), None, "application/json")
    assert isinstance(n, Notice)
    wire = v03.to_wire(n)
    assert json.loads(wire.body) == obj
    # and decoding that again gives the same notice
    assert v02.decode("xs_guest", wire.routing_key, wire.body, None, wire.content_type) == n


@settings(max_examples=150, deadline=None)
@given(v03_messages(report=True))
def test_a_v03_report_decoded_and_encoded_again_is_the_same_object(obj: dict[str, Any]) -> None:
    r = v02.decode("xr_guest", "v03.x", json.dumps(obj).encode(), None)
    assert isinstance(r, Report)
    assert json.loads(v03.report_to_wire(r, "xreport").body) == obj


@st.composite
def v02_notices(draw: st.DrawFn) -> Notice:
    dirs = draw(st.lists(_NAME, max_size=3))
    path = "/".join([*dirs, draw(_NAME)])
    letter = draw(st.sampled_from("dsLRm0"))
    headers: dict[str, str] = {}
    parts: PartSpec | None = None
    if letter == "d":
        checksum = v02.Checksum("d", draw(st.binary(min_size=16, max_size=16)).hex())
    elif letter == "s":
        checksum = v02.Checksum("s", draw(st.binary(min_size=64, max_size=64)).hex())
    elif letter == "0":
        checksum = v02.Checksum("0", f"{draw(st.integers(0, 9999)):04d}")
    elif letter == "L":
        target = draw(_NAME)
        headers["link"] = target
        checksum = name_sum("L", target)
    else:
        checksum = name_sum(letter, path)
    if not checksum.file_op:
        bs = draw(st.integers(1, 2**30))
        parts = draw(
            st.sampled_from([PartSpec("1", bs, 1, 0, 0), PartSpec("i", bs, 3, max(1, bs // 2), 1)])
        )
    for key in ("source", "from_cluster", "to_clusters", "x_user"):
        if draw(st.booleans()):
            headers[key] = draw(_TEXT)
    if draw(st.booleans()):
        headers["mtime"] = draw(_stamp()).replace("T", "")
    return v02.make_notice(
        exchange="xs_guest",
        topic_prefix="v02.post",
        pubtime=draw(_stamp()).replace("T", ""),
        base_url="sftp://guest@h",
        path=path,
        checksum=checksum,
        parts=parts,
        headers=headers,
    )


@settings(max_examples=200, deadline=None)
@given(v02_notices())
def test_a_v02_notice_encoded_in_v03_decodes_to_the_same_notice(n: Notice) -> None:
    wire = v02.encode(n, "xs_guest", post_format="v03")
    assert wire.content_type == "application/json"
    assert v02.decode("xs_guest", wire.routing_key, wire.body, None, wire.content_type) == n


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        _JSON.map(json.dumps),
        v03_messages().map(json.dumps).map(lambda s: s[: len(s) // 2]),
        st.dictionaries(
            st.sampled_from(
                ["pubTime", "baseUrl", "relPath", "identity", "integrity", "fileOp", "blocks",
                 "size", "parts", "mtime", "report", "mode", "retPath"]
            ),
            _JSON,
        ).map(json.dumps),
    )
)  # fmt: skip
def test_any_json_body_is_decoded_or_refused_as_malformed(text: str) -> None:
    try:
        out = v02.decode("xs_guest", "v03.a", text.encode(), None, "application/json")
    except MalformedMessage as exc:
        assert str(exc)  # a one-line reason for the log and the 417 report
        return
    assert isinstance(out, Notice | Report)


def test_deep_nesting_and_bad_fields_are_malformed_not_a_crash() -> None:
    base = {"pubTime": "20261123T071923", "baseUrl": "sftp://h", "relPath": "a/b"}
    bad: list[object] = [
        "[" * 100000,
        {**base, "size": 12, "identity": {"method": "md5", "value": "!!"}},
        {**base, "size": "12x", "identity": {"method": "md5", "value": "AAAA"}},
        {**base, "fileOp": {"link": 5}},
        {**base, "fileOp": {"rename": ["x"]}, "size": 1, "identity": {"method": "x", "value": "y"}},
        {**base, "blocks": {"method": "weird", "size": 1, "number": 0}, "identity": {}},
        {**base, "report": "nope", "size": 1},
        {**base, "report": {"code": 99}, "size": 1},
        {**base, "report": {"code": 201, "elapsedTime": "NaN"}, "size": 1},
        {**base, "pubTime": "yesterday", "size": 1, "identity": {"method": "md5", "value": "A"}},
    ]
    for body in bad:
        text = body if isinstance(body, str) else json.dumps(body)
        try:
            v02.decode("xs_guest", "v03.a", text.encode(), None, "application/json")
        except MalformedMessage:
            continue
        raise AssertionError(f"accepted {text[:80]!r}")


def test_a_v02_body_on_a_v03_topic_is_read_as_v02() -> None:
    n = v02.decode(
        "xs_guest",
        "v03.a",
        b"20261123071900.07 sftp://h /a/c.txt",
        {"parts": "1,1,1,0,0", "sum": "0,0001"},
        "text/plain",
    )
    assert isinstance(n, Notice) and n.topic == "v03.a"


def test_a_relay_keeps_the_one_level_v03_prefix_and_the_v03_fields() -> None:
    obj = {
        "pubTime": "20261123T071923",
        "baseUrl": "sftp://h",
        "relPath": "a/b/c.txt",
        "size": 3,
        "identity": {"method": "random", "value": "0042"},
        "geometry": {"type": "Point", "coordinates": [1, 2]},
    }
    n = v02.decode("xs_guest", "v03.a.b", json.dumps(obj).encode(), None)
    assert isinstance(n, Notice)
    moved = v02.derive(n, path="x/y/c.txt")
    assert json.loads(v03.to_wire(moved).body)["geometry"] == obj["geometry"]
    relay = v02.derive(n.__class__(**{**_fields(n), "topic": "v03.a.b"}), path="x/c.txt")
    assert relay.topic == "v03.x"


def _fields(n: Notice) -> dict[str, Any]:
    return {k: getattr(n, k) for k in n.__slots__}  # type: ignore[attr-defined]
