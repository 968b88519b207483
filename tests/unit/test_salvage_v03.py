"""417 reports about malformed v03 messages (sarra.codec.salvage): what is salvaged, what is
not, and that sr_report routes the report back to the source the bad message named."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from sarra.broker.base import BrokerUrl
from sarra.codec import v02
from sarra.codec.salvage import reformat, report_for_undecodable, v03_salvage_fields
from sarra.errors import MalformedMessage
from sarra.flow.reportrouting import PumpIdentity, ReportRouter, Route
from sarra.notice import Report, WireMessage

IDENT = {"method": "sha512", "value": base64.b64encode(hashlib.sha512(b"x").digest()).decode()}


def _body(**kw: object) -> str:
    obj = {
        "pubTime": "20261207T004115.123",
        "baseUrl": "https://example.com/",
        "relPath": "a dir/f#1.txt",
        "identity": IDENT,
        "size": "many",
        "source": "alice",
        **kw,
    }
    return json.dumps({k: v for k, v in obj.items() if v is not None})


def _salvage(text: str, post_format: str = "v02") -> WireMessage:
    pubtime, base, rel, headers = v03_salvage_fields(text)
    wire = report_for_undecodable(
        pubtime, base, rel, "v03.a dir", headers,
        code=417, message="invalid message: v03 size is not an integer",
        host="h", user="sub", exchange="xs_sub",
    )  # fmt: skip
    return reformat(wire, post_format)


def test_a_bad_v03_message_naming_its_file_gives_a_417_report_in_v02_or_v03() -> None:
    for fmt in ("v02", "v03"):
        wire = _salvage(_body(), fmt)
        r = v02.decode(wire.exchange, wire.routing_key, wire.body, wire.headers, wire.content_type)
        assert isinstance(r, Report)
        assert (r.code, r.notice.path, r.user) == (417, "a dir/f#1.txt", "sub")
        assert r.notice.checksum.letter == "s"
        assert r.notice.checksum.value == hashlib.sha512(b"x").hexdigest()
        assert r.notice.header("source") == "alice"
        assert r.message == "invalid message: v03 size is not an integer"
        assert r.notice.pubtime == "20261207004115.123"
    v3 = _salvage(_body(), "v03")
    assert v3.content_type == "application/json" and v3.routing_key == "v03.a%20dir"
    assert json.loads(v3.body)["report"]["code"] == 417
    assert _salvage(_body()).routing_key == "v02.report.a%20dir"


@pytest.mark.parametrize(
    "text",
    [
        '{"pubTime": ',
        "[1, 2]",
        '"just a string"',
        _body(relPath=None),
        _body(relPath=7),
        _body(baseUrl=""),
        _body(identity=None),
        _body(identity="sha512,abc"),
        _body(identity={"method": "nosuch", "value": "x"}),
        _body(identity={"method": "md5", "value": "not base64!"}),
        _body(identity={"method": "md5", "value": 3}),
        _body(pubTime="yesterday"),
        _body(baseUrl="no-scheme"),
        _body(relPath="a\x00b"),
    ],
)
def test_a_bad_v03_message_that_names_nothing_reportable_is_refused(text: str) -> None:
    with pytest.raises(MalformedMessage):
        _salvage(text)


def test_a_source_that_is_not_one_plain_word_is_not_copied() -> None:
    for bad in ("al ice", "x" * 200, "a\nb", ""):
        wire = _salvage(_body(source=bad))
        assert "source" not in wire.headers


def test_sr_report_routes_the_417_to_the_source_or_drops_it_logged_without_one() -> None:
    router = ReportRouter(
        PumpIdentity("pumpa", users=frozenset({"alice", "sub"})),
        frozenset(),
        {"pumpz": Route("pumpz", BrokerUrl("pumpz.example", 5672, "link", "x"))},
        BrokerUrl("pumpa.example", 5672, "feeder", "x"),
    )
    for fmt in ("v02", "v03"):
        (admitted,) = router.handle(_salvage(_body(), fmt))
        (routed,) = router.handle(WireMessage("xreport", *_fields(admitted[1])))
        assert routed[0] is None and routed[1].exchange == "xr_alice"
    (admitted,) = router.handle(_salvage(_body(source=None, relPath="other.txt")))
    assert router.handle(WireMessage("xreport", *_fields(admitted[1]))) == []
    assert router.counts.no_source == 1


def _fields(m: WireMessage) -> tuple[str, bytes, object, str]:
    return m.routing_key, m.body, m.headers, m.content_type
