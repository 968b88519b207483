"""Reports fit the v02 header limit by construction: their text is shortened and marked, never
a reason to refuse (or to crash the consumer that settles the notice)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sarra.codec import v02
from sarra.codec.fields import SHORTENED_MARK, fit_header_value
from sarra.codec.salvage import report_for_undecodable
from sarra.errors import MalformedMessage
from sarra.notice import Checksum, Notice, PartSpec, Report, WireMessage

LIMIT = v02.HEADER_VALUE_MAX


def _notice(path: str, checksum: Checksum) -> Notice:
    return v02.make_notice(
        exchange="xs_guest",
        topic_prefix="v02.post",
        pubtime="20261206032000.123",
        base_url="http://origin.example.com:8080",
        path=path,
        checksum=checksum,
        parts=PartSpec("1", 100, 1, 0, 0),
        headers={"mtime": "20261206031900.5", "mode": "644"},
    )


def _report(notice: Notice, code: int, message: str) -> bytes:
    report = v02.make_report(
        notice,
        code=code,
        message=message,
        host="sub.example.com",
        user="guest",
        elapsed=0.25,
        source="guest",
        from_cluster="pump",
        to_clusters="pump",
    )
    wire = v02.report_to_wire(report, "xs_guest")
    decoded = v02.decode(wire.exchange, wire.routing_key, wire.body, wire.headers)
    assert isinstance(decoded, Report)
    value = decoded.message
    assert len(value.encode("utf-8")) <= LIMIT
    return value.encode("utf-8")


@given(st.text(max_size=2000), st.integers(min_value=0, max_value=600))
def test_a_fitted_value_never_exceeds_the_limit_and_keeps_its_start(text: str, limit: int) -> None:
    out = fit_header_value(text, limit)
    raw = out.encode("utf-8")  # always encodable, even from lone surrogates
    assert len(raw) <= limit
    original = text.encode("utf-8", "replace")
    if len(original) <= limit:
        assert raw == original
    elif limit >= 40:
        head = out[: out.rindex("...[")]
        assert original.startswith(head.encode("utf-8"))
        cut = len(original) - len(head.encode("utf-8"))
        assert out.endswith(SHORTENED_MARK.format(cut=cut))


def test_a_checksum_mismatch_report_with_two_sha512_sums_is_shortened_not_refused() -> None:
    announced = hashlib.sha512(b"old").hexdigest()
    got = hashlib.sha512(b"new").hexdigest()
    notice = _notice("obs/2026/file.txt", Checksum("s", announced))
    message = f"checksum mismatch: announced s,{announced}, downloaded s,{got}"
    assert len(message) > LIMIT
    text = _report(notice, 499, message)
    assert text.startswith(b"checksum mismatch: announced s,")
    assert b"bytes cut]" in text


def test_a_404_report_quoting_the_longest_urls_is_shortened() -> None:
    # a relPath near the body limit, with multi-byte characters so a cut can split one
    path = "/".join(["d\u00e9j\u00e0" * 20] * 200) + "/f.txt"
    notice = _notice(path, Checksum("d", "0" * 32))
    text = _report(notice, 499, f"not found: {notice.url}")
    assert text.startswith(b"not found: http://origin.example.com:8080/")
    text.decode("utf-8")  # the cut never splits a character


def test_a_short_report_message_is_sent_unchanged() -> None:
    notice = _notice("a/b.txt", Checksum("d", "0" * 32))
    assert _report(notice, 201, "Downloaded") == b"Downloaded"


def test_a_417_about_an_undecodable_post_fits_whatever_its_reason() -> None:
    wire = report_for_undecodable(
        "20261206032000.123",
        "http://h",
        "/a/b",
        "v02.post.a",
        {"sum": "d,00000000000000000000000000000000"},
        code=417,
        message="invalid message: " + "\u00fc" * 400,
        host="h",
        user="u",
        exchange="xs_u",
    )
    value = wire.headers["message"]
    assert isinstance(value, str) and len(value.encode("utf-8")) <= LIMIT


def _salvaged(base_url: str, rel_path: str, parts: str | None) -> WireMessage:
    headers = {"sum": "d,00000000000000000000000000000000"}
    if parts is not None:
        headers["parts"] = parts
    return report_for_undecodable(
        "20261206032000.123",
        base_url,
        rel_path,
        "v02.post.a",
        headers,
        code=417,
        message="invalid message",
        host="h",
        user="u",
        exchange="xs_u",
    )


def test_a_417_about_an_undecodable_post_is_itself_decodable_or_not_sent() -> None:
    # a p part without a .Part relPath: the report goes, without the parts
    wire = _salvaged("http://h", "/a/b", "p,10,2,0,0")
    assert "parts" not in wire.headers
    decoded = v02.decode(wire.exchange, wire.routing_key, wire.body, wire.headers)
    assert isinstance(decoded, Report) and decoded.code == 417
    # a baseUrl that does not parse cannot be reported at all
    with pytest.raises(MalformedMessage):
        _salvaged("http://[::1", "/a/b", None)
