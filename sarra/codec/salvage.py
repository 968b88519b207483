"""Reports about messages that could not be decoded (spec 3.1: 417 for malformed posts).

A malformed post cannot become a :class:`~sarra.notice.Notice`, yet its source deserves a
417 report when its body still names what it was about (three fields, a valid pubTime) and
it carries a valid ``sum`` (a report without one would itself be malformed). The report has
the three fields as received, the ``sum`` and, when valid, the ``parts`` of the bad message,
and ``message``; no other header is copied, since they may be what was wrong.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from sarra.codec.fields import fit_header_value, parse_checksum, parse_parts
from sarra.codec.paths import report_topic
from sarra.codec.timestamps import parse_timestamp
from sarra.codec.v02 import HEADER_VALUE_MAX, _body, _wire, decode
from sarra.errors import MalformedMessage
from sarra.notice import WireMessage


def report_for_undecodable(
    pubtime: str,
    base_url: str,
    rel_path: str,
    routing_key: str,
    headers: Mapping[str, object] | None,
    *,
    code: int,
    message: str,
    host: str,
    user: str,
    exchange: str,
    elapsed: float = 0.0,
) -> WireMessage:
    """The wire form of a report about an undecodable post.

    Raises:
        MalformedMessage: the fields cannot even be written as a report body, or the report
            would not decode (e.g. a baseUrl that does not parse).
    """
    parse_timestamp(pubtime)  # a report must itself be decodable downstream
    if any(ord(c) < 0x20 or c == "\x7f" for c in base_url + rel_path):
        raise MalformedMessage("control characters in baseUrl or relPath")
    if ":" not in base_url:
        raise MalformedMessage(f"baseUrl {base_url[:80]!r} has no scheme")
    raw = dict(headers or {})
    sum_value = raw.get("sum")
    if not isinstance(sum_value, str):
        raise MalformedMessage("no usable sum header to report with")
    out = {"sum": parse_checksum(sum_value).wire()}
    parts = raw.get("parts")
    if isinstance(parts, str):
        with contextlib.suppress(MalformedMessage):
            out["parts"] = parse_parts(parts).wire()
    out["message"] = fit_header_value(message, HEADER_VALUE_MAX)
    body = _body(pubtime, base_url, rel_path, f"{code:03d}", host, user, f"{elapsed:f}")
    topic = report_topic(routing_key) if routing_key.startswith("v02.") else "v02.report"
    wire = _wire(exchange, topic, body, out, HEADER_VALUE_MAX, True, None)
    try:
        _check_decodable(wire)
    except MalformedMessage:
        if "parts" not in out:
            raise
        # the bad post's parts may be what made it malformed (a p part without a .Part
        # relPath): the report goes without them
        del out["parts"]
        wire = _wire(exchange, topic, body, out, HEADER_VALUE_MAX, True, None)
        _check_decodable(wire)
    return wire


def _check_decodable(wire: WireMessage) -> None:
    """Raise MalformedMessage unless a receiver (sr_report, the source) can decode ``wire``:
    a report that is itself malformed would only be refused again downstream."""
    decode(wire.exchange, wire.routing_key, wire.body, wire.headers, wire.content_type)
