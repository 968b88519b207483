"""v02 codec: the 417 cases, restored and misrouted messages, paths, topics, output rules."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping

import pytest

from sarra.codec import paths, v02
from sarra.errors import MalformedMessage
from sarra.integrity.sums import name_sum
from sarra.notice import Checksum, Notice, PartSpec, Pulse, Report

HELLO_D = "d,6f5902ac237024bdd0c176cb93063dc4"
BODY = b"20261123071900.0711872578 sftp://user@host /a/b/hello.txt"
HEADERS = {
    "mtime": "20261123071847.471170187",
    "atime": "20261123071847.617987394",
    "mode": "644",
    "parts": "1,12,1,0,0",
    "sum": HELLO_D,
}


def post(
    body: bytes = BODY,
    headers: Mapping[str, object] | None = None,
    key: str = "v02.post.a.b",
    exchange: str = "xs_guest",
    **kw: object,
) -> Notice | Report | Pulse:
    return v02.decode(exchange, key, body, HEADERS if headers is None else headers, **kw)  # type: ignore[arg-type]


def refused(match: str, **kw: object) -> None:
    with pytest.raises(MalformedMessage, match=match):
        post(**kw)  # type: ignore[arg-type]


def with_headers(**changes: object) -> dict[str, object]:
    h: dict[str, object] = dict(HEADERS)
    for k, v in changes.items():
        if v is None:
            h.pop(k, None)
        else:
            h[k] = v
    return h


# --- 417 cases -----------------------------------------------------------------------


def test_a_body_that_is_not_utf8_is_refused() -> None:
    refused("UTF-8", body=b"20261123071900.07 sftp://h /a/\xff.txt")


@pytest.mark.parametrize(
    "body",
    [
        b"20261123071900.07 sftp://h",
        b"20261123071900.07 sftp://h /a/b c",
        b"20261123071900.07  sftp://h /a",
        b"",
        b"20261123071900.07 sftp://h /a/b 2011 localhost guest 0.1",
    ],
)
def test_a_post_body_without_exactly_three_fields_is_refused(body: bytes) -> None:
    refused("fields", body=body)


@pytest.mark.parametrize("stamp", ["2026112307190", "20261323071900.1", "x0261123071900", "1e5"])
def test_a_bad_pubtime_is_refused(stamp: str) -> None:
    refused("timestamp", body=f"{stamp} sftp://h /a/b.txt".encode())


def test_a_bad_mtime_header_is_refused() -> None:
    refused("timestamp", headers=with_headers(mtime="yesterday"))


def test_a_mode_that_is_not_octal_is_refused() -> None:
    refused("octal", headers=with_headers(mode="0x1ff"))


@pytest.mark.parametrize(
    "value",
    [
        "x,0123",
        "D,6f5902ac237024bdd0c176cb93063dc4",
        "d,6f5902ac237024bdd0c176cb93063dc",
        "d,6f5902ac237024bdd0c176cb93063dcg",
        "s,abc",
        "n,",
        "a",
        "a,",
        "z,x",
        "0,12345",
        "L,acec",
        "",
    ],
)
def test_an_unknown_sum_letter_or_malformed_value_is_refused(value: str) -> None:
    refused("sum", headers=with_headers(sum=value))


def test_a_post_without_a_sum_is_refused() -> None:
    refused("no sum", headers=with_headers(sum=None))


def test_a_data_post_without_parts_is_refused() -> None:
    refused("without parts", headers=with_headers(parts=None))


@pytest.mark.parametrize(
    "parts",
    [
        "i,0,3,0,0",
        "i,-5,3,0,0",
        "i,10,0,0,0",
        "i,10,3,0,3",
        "i,10,3,0,-1",
        "i,10,3,-1,0",
        "i,10,3,11,0",
        "1,12,2,0,0",
        "1,12,1,0,1",
        "1,-1,1,0,0",
        "x,12,1,0,0",
        "1,12,1,0",
        "i,1.5,3,0,0",
        "i,10,3,0,0,0",
        "",
    ],
)
def test_malformed_parts_are_refused(parts: str) -> None:
    refused("parts", headers=with_headers(parts=parts))


def test_an_empty_whole_file_and_a_remainder_equal_to_the_block_size_are_accepted() -> None:
    for parts in ("1,0,1,0,0", "i,10,3,10,2"):
        n = post(headers=with_headers(parts=parts))
        assert isinstance(n, Notice) and n.parts is not None
        assert n.parts.wire() == parts


def test_integer_and_bytes_header_values_become_strings() -> None:
    n = post(headers=with_headers(mode=644, source=b"guest"))
    assert isinstance(n, Notice)
    assert n.header("mode") == "644" and n.header("source") == "guest"


@pytest.mark.parametrize("value", [1.5, True, ["a"], {"a": "b"}, None])
def test_other_header_types_are_refused(value: object) -> None:
    h: dict[str, object] = {**HEADERS, "source": value}
    refused("type", headers=h)


def test_bytes_headers_that_are_not_utf8_are_refused() -> None:
    refused("UTF-8", headers=with_headers(source=b"\xff"))


def test_a_body_over_the_bound_is_refused() -> None:
    refused("exceeds", body=BODY + b"\n" + b"x" * 65536)
    small = v02.Limits(max_body=10)
    refused("exceeds", limits=small)


def test_too_many_headers_are_refused() -> None:
    h = {**HEADERS, **{f"h{i}": "v" for i in range(60)}}
    refused("more than 64", headers=h)


def test_too_many_header_bytes_are_refused() -> None:
    h = {**HEADERS, "a": "x" * 40000, "b": "y" * 30000}
    refused("exceed", headers=h)


def test_a_nul_in_relpath_is_refused() -> None:
    refused("NUL", body=b"20261123071900.07 sftp://h /a/b\x00.txt")


def test_a_relpath_naming_no_file_is_refused() -> None:
    refused("names no file", body=b"20261123071900.07 sftp://h /")


def test_a_bad_base_url_is_refused() -> None:
    refused("baseUrl", body=b"20261123071900.07 //host /a.txt")


@pytest.mark.parametrize("base", ["http://[::1", "http://h:99999", "sftp://h:x/"])
def test_a_base_url_that_does_not_parse_is_refused(base: str) -> None:
    refused("baseUrl", body=f"20261123071900.07 {base} /a.txt".encode())


def test_a_link_post_without_a_link_header_is_refused() -> None:
    h = {"to_clusters": "ALL", "sum": name_sum("L", "hello.txt").wire()}
    refused("link header", headers=h)


PART_BODY = b"20261123082921.936393738 http://h /a/b/big.bin.1048576.3.524288.0.d.Part"
PART_H = {"parts": "p,1048576,3,524288,0", "sum": "d,8f293a2f6c19b345152f7a49bb4c643c"}


def test_a_part_notice_names_its_target_through_its_suffix() -> None:
    n = post(body=PART_BODY, headers=PART_H)
    assert isinstance(n, Notice) and n.parts is not None
    assert n.parts.method == "p" and n.parts.length == 1048576


@pytest.mark.parametrize(
    "parts,sum_",
    [
        ("p,1048576,3,524288,1", PART_H["sum"]),
        ("p,1048576,3,0,0", PART_H["sum"]),
        ("p,1048576,3,524288,0", "n,2e54144ba487ae25d03a3caba233da71"),
    ],
)
def test_a_part_suffix_that_disagrees_with_parts_or_sum_is_refused(parts: str, sum_: str) -> None:
    refused("disagrees", body=PART_BODY, headers={"parts": parts, "sum": sum_})


def test_a_p_part_without_a_part_suffix_is_refused() -> None:
    refused(".Part", headers=with_headers(parts="p,10,3,2,0"))


@pytest.mark.parametrize("key", ["v00.post.a", "v02.foo.a", "v02", "other"])
def test_unknown_topics_and_types_are_refused(key: str) -> None:
    refused("topic|type", key=key)


def test_a_report_body_with_a_bad_elapsed_is_refused() -> None:
    body = b"20261123071900.07 http://h /a/b.txt 201 localhost guest soon"
    refused("elapsed", body=body, key="v02.report.a")
    refused("elapsed", body=body.replace(b"soon", b"nan"), key="v02.report.a")


def test_a_post_body_on_a_report_topic_is_refused() -> None:
    refused("report body", key="v02.report.a.b")


# --- lenient input ----------------------------------------------------------------------


def test_a_misrouted_report_on_a_post_topic_is_returned_as_a_report() -> None:
    body = b"20261123071900.07 http://h /a/b.txt 304 localhost guest 0.01"
    r = post(body=body, headers={**HEADERS, "message": "not modified"})
    assert isinstance(r, Report)
    assert (r.code, r.message, r.notice.path) == (304, "not modified", "a/b.txt")


def test_a_report_relpath_may_hold_raw_spaces() -> None:
    body = b"20261123071900.07 http://h /a/my  file #2.txt 201 host.example guest -0.5"
    r = post(body=body, key="v02.log.a")
    assert isinstance(r, Report)
    assert r.notice.path == "a/my  file #2.txt"
    assert r.notice.rel_path == "/a/my%20%20file%20%232.txt"
    assert (r.host, r.elapsed) == ("host.example", -0.5)


def test_a_crlf_line_and_trailing_lines_are_ignored() -> None:
    n = post(body=BODY + b"\r\nmore text here")
    assert isinstance(n, Notice) and n.rel_path == "/a/b/hello.txt"


def test_unknown_headers_are_kept_verbatim_in_order() -> None:
    h = {"zz": "1", **HEADERS, "x-custom": "kept?", "flow": "f"}
    n = post(headers=h)
    assert isinstance(n, Notice)
    assert list(n.headers) == ["zz", *HEADERS, "x-custom", "flow"]
    assert v02.to_wire(n).headers["x-custom"] == "kept?"


def test_stale_parts_on_a_remove_notice_are_ignored() -> None:
    h = {"parts": "1,1,1,0,0", "sum": name_sum("R", "hello.txt").wire()}
    n = post(headers=h)
    assert isinstance(n, Notice)
    assert n.parts is None and n.checksum.letter == "R"


def test_a_restored_message_gets_its_topic_and_exchange_back() -> None:
    n = post(exchange="", key="q_guest.sr_subscribe.x", headers={**HEADERS, "exchange": "xs_guest"})
    assert isinstance(n, Notice)
    assert (n.exchange, n.topic) == ("xs_guest", "v02.post.a.b")
    assert "exchange" not in n.headers
    n = post(exchange="", key="q_guest.x")
    assert isinstance(n, Notice) and n.exchange == "xpublic"


def test_a_restored_report_gets_a_report_topic() -> None:
    body = b"20261123071900.07 http://h /a/b.txt 201 localhost guest 0.01"
    r = post(exchange="", key="q_guest.x", body=body)
    assert isinstance(r, Report)
    assert r.notice.topic == "v02.report.a"


def test_pulses_are_returned_for_logging() -> None:
    p = post(key="v02.pulse.message", body=b"hello all", headers={"odd": 1.5})
    assert p == Pulse(topic="v02.pulse.message", text="hello all")
    tick = post(key="v02.pulse.tick", body=b"20261123071900.07", headers=None)
    assert isinstance(tick, Pulse) and tick.text == "20261123071900.07"


def test_a_v03_post_is_decoded_into_a_v02_notice() -> None:
    digest = base64.b64encode(bytes.fromhex(HELLO_D[2:])).decode()
    msg = {
        "pubTime": "20261123T071923.862766504",
        "baseUrl": "sftp://user@host",
        "relPath": "a/b/my file.txt",
        "identity": {"method": "md5", "value": digest},
        "size": 12,
        "mtime": "20261123T071847.471170187",
        "mode": "644",
        "source": "guest",
        "content": {"encoding": "utf-8", "value": "hello world\n"},
    }
    n = post(key="v03.a.b", body=json.dumps(msg).encode(), headers=None)
    assert isinstance(n, Notice)
    assert n.checksum.wire() == HELLO_D
    assert n.parts == PartSpec("1", 12, 1, 0, 0)
    assert (n.pubtime, n.header("mtime")) == (
        "20261123071923.862766504",
        "20261123071847.471170187",
    )
    assert (n.rel_path, n.path, n.topic) == ("a/b/my%20file.txt", "a/b/my file.txt", "v02.post.a.b")
    assert "content" not in n.headers and n.header("source") == "guest"


def test_a_v03_link_and_block_post_are_mapped() -> None:
    link = {
        "pubTime": "20261123T071923.8",
        "baseUrl": "sftp://h",
        "relPath": "a/l.txt",
        "fileOp": {"link": "hello.txt"},
    }
    n = post(key="v03.a", body=json.dumps(link).encode(), headers=None)
    assert isinstance(n, Notice)
    assert n.checksum == name_sum("L", "hello.txt") and n.header("link") == "hello.txt"
    blocks = {
        "pubTime": "20261123T071923.8",
        "baseUrl": "sftp://h",
        "relPath": "/a/big.bin",
        "identity": {"method": "sha512", "value": base64.b64encode(b"\0" * 64).decode()},
        "blocks": {
            "method": "inplace",
            "size": "1000000",
            "number": 2,
            "manifest": {"0": {"size": 1000000}, "1": {"size": 1000000}, "2": {"size": 621440}},
        },
    }
    n = post(key="v03.a", body=json.dumps(blocks).encode(), headers=None)
    assert isinstance(n, Notice)
    assert n.parts == PartSpec("i", 1000000, 3, 621440, 2)


def test_a_v03_body_that_is_not_an_object_is_refused() -> None:
    refused("JSON", key="v03.a", body=b"{not json", headers=None)
    refused(
        "identity",
        key="v03.a",
        headers=None,
        body=b'{"pubTime": "20261123T071923", "baseUrl": "sftp://h", "relPath": "a"}',
    )


# --- paths and topics -----------------------------------------------------------------


def test_only_space_and_hash_are_escaped_and_decoded_in_one_pass() -> None:
    assert paths.escape_relpath("/a b/c#d%41*.x") == "/a%20b/c%23d%41*.x"
    assert paths.decode_relpath("/a%20b%23c%41%%2520%2") == "/a b#c%41%%2520%2"
    assert paths.decode_relpath("%2520") == "%2520"
    assert paths.logical_path("/a/b/sp%20ace%23hash.txt") == "a/b/sp ace#hash.txt"
    assert paths.logical_path("a/b") == "a/b"


def test_topics_hold_only_escaped_directories() -> None:
    assert paths.topic_for("v02.post", "a/b/hello.txt") == "v02.post.a.b"
    assert paths.topic_for("v02.post", "top.txt") == "v02.post"
    assert paths.topic_for("v02.post", "d ir#x/q.txt") == "v02.post.d%20ir%23x"
    assert paths.topic_for("v02.post", "/a//b.c/*/f") == "v02.post.a.b.c.*"


def test_report_topics_replace_the_second_level() -> None:
    assert paths.report_topic("v02.post.a.b") == "v02.report.a.b"
    assert paths.report_topic("v02.post") == "v02.report"


def test_a_long_topic_is_cut_on_a_character_boundary(caplog: pytest.LogCaptureFixture) -> None:
    path = "é" * 200 + "/f.txt"  # 400 bytes of two-byte characters
    with caplog.at_level(logging.WARNING):
        topic = paths.topic_for("v02.post", path)
    raw = topic.encode()
    assert len(raw) == 253 and topic == "v02.post." + "é" * 122
    assert "cut" in caplog.text
    three = paths.topic_for("v02.post", "€" * 100 + "/f")  # 3-byte characters
    assert len(three.encode()) == 252 and three.endswith("€")


# --- output --------------------------------------------------------------------------


def decoded(headers: Mapping[str, object] | None = None) -> Notice:
    n = post(headers=headers)
    assert isinstance(n, Notice)
    return n


def test_a_header_value_of_253_bytes_is_refused_and_252_passes() -> None:
    ok = decoded(with_headers(flow="x" * 252))
    assert v02.to_wire(ok).headers["flow"] == "x" * 252
    long = decoded(with_headers(flow="é" * 126 + "x"))
    with pytest.raises(MalformedMessage, match=r"'flow' value is 253 bytes"):
        v02.to_wire(long)
    assert v02.to_wire(long, header_value_max=1000).headers["flow"].endswith("x")


def test_a_header_name_over_255_bytes_is_always_refused() -> None:
    n = decoded(with_headers(**{"h" * 256: "v"}))
    with pytest.raises(MalformedMessage, match="256 bytes"):
        v02.to_wire(n, header_value_max=10**6)


def test_output_strips_v03_names_and_uses_sr2_order() -> None:
    h = {"flow": "f", **HEADERS, "source": "guest", "identity": "x", "content": "y"}
    wire = v02.to_wire(decoded(h))
    assert list(wire.headers) == ["source", "mtime", "atime", "mode", "parts", "sum", "flow"]


def test_output_properties_follow_the_options() -> None:
    wire = v02.to_wire(decoded(), exchange="xpublic", persistent=False, message_ttl_ms=60000)
    assert (wire.exchange, wire.delivery_mode, wire.expiration) == ("xpublic", 1, "60000")
    assert wire.content_type == "text/plain"


def test_make_notice_normalizes_base_url_and_rel_path(caplog: pytest.LogCaptureFixture) -> None:
    common = {
        "exchange": "xs_guest",
        "topic_prefix": "v02.post",
        "pubtime": "20261123071900.071187257",
        "checksum": Checksum("d", HELLO_D[2:]),
        "parts": PartSpec("1", 12, 1, 0, 0),
    }
    n = v02.make_notice(base_url="file://", path="/tmp/x y/f.txt", **common)  # type: ignore[arg-type]
    assert (n.base_url, n.rel_path, n.url) == ("file:", "/tmp/x%20y/f.txt", "file:/tmp/x y/f.txt")
    n = v02.make_notice(base_url="http://h:8/", path="a/f", topic_override="x.y", **common)  # type: ignore[arg-type]
    assert (n.base_url, n.rel_path, n.topic) == ("http://h:8", "/a/f", "v02.post.x.y")
    with caplog.at_level(logging.WARNING):
        v02.make_notice(base_url="http://h", path="a/odd%20name", **common)  # type: ignore[arg-type]
    assert "%20" in caplog.text
    with pytest.raises(MalformedMessage, match="password"):
        v02.make_notice(base_url="sftp://u:pw@h", path="a/f", **common)  # type: ignore[arg-type]


def test_derive_keeps_pubtime_and_unknown_headers() -> None:
    n = decoded({**HEADERS, "x-custom": "kept?"})
    d = v02.derive(n, exchange="xpublic", base_url="http://p/", set_headers={"source": "bob"})
    assert (d.exchange, d.base_url, d.pubtime, d.rel_path) == (
        "xpublic",
        "http://p",
        n.pubtime,
        n.rel_path,
    )
    assert d.header("x-custom") == "kept?" and d.header("source") == "bob"
    moved = v02.derive(n, path="c d/e.txt", drop_headers=["mode"])
    assert (moved.rel_path, moved.topic, moved.header("mode")) == (
        "/c%20d/e.txt",
        "v02.post.c%20d",
        None,
    )


def test_make_report_fills_missing_routing_headers_and_drops_content() -> None:
    n = decoded({**HEADERS, "content": "x", "source": "alice"})
    r = v02.make_report(
        n,
        code=499,
        message="failed",
        host="h",
        user="u",
        elapsed=1.5,
        source="guest",
        from_cluster="pumpA",
        to_clusters=None,
    )
    assert r.notice.header("source") == "alice" and r.notice.header("from_cluster") == "pumpA"
    assert "content" not in r.notice.headers and "to_clusters" not in r.notice.headers
    wire = v02.report_to_wire(r, "xs_u")
    assert wire.body.endswith(b" /a/b/hello.txt 499 h u 1.500000")
    assert wire.routing_key == "v02.report.a.b" and wire.headers["message"] == "failed"
    with pytest.raises(MalformedMessage):
        v02.make_report(
            n,
            code=99,
            message="",
            host="h",
            user="u",
            elapsed=0.0,
            source=None,
            from_cluster=None,
            to_clusters=None,
        )


def test_post_exchange_split_uses_the_byte_sum_of_the_sum_header() -> None:
    c = Checksum("d", HELLO_D[2:])
    assert v02.split_exchange("xwinnow", c, 2) == "xwinnow00"
    assert v02.split_exchange("xwinnow", c, 5) == "xwinnow02"
    assert v02.split_exchange("xwinnow", c, 1) == "xwinnow"
