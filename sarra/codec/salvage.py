"""Reports about messages that could not be decoded (spec 3.1: 417 for malformed posts).

A malformed post cannot become a :class:`~sarra.notice.Notice`, yet its source deserves a
417 report when its body still names what it was about (three fields, a valid pubTime) and
it carries a valid ``sum`` (a report without one would itself be malformed). The report has
the three fields as received, the ``sum`` and, when valid, the ``parts`` of the bad message,
and ``message``; of the other headers only ``source`` and ``from_cluster`` are copied, and
only when each is one plain word, so that sr_report can route the report back to the source
(a report without a source is dropped there, logged). Nothing else is copied, since it may be
what was wrong.

A malformed v03 message (sr3's JSON) is salvaged the same way (:func:`v03_salvage_fields`):
when the body is a JSON object whose ``pubTime``, ``baseUrl`` and ``relPath`` are strings and
whose ``identity`` (or ``integrity``) maps to a v02 sum, those become the report's fields; the
report is then written in the reporter's own format (:func:`reformat`).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping

from sarra.codec.fields import fit_header_value, parse_checksum, parse_parts
from sarra.codec.paths import escape_relpath, logical_path, report_topic, topic_for
from sarra.codec.timestamps import parse_timestamp
from sarra.codec.v02 import HEADER_VALUE_MAX, _body, _wire, decode, encode
from sarra.errors import MalformedMessage
from sarra.integrity.sums import v03_to_v02
from sarra.notice import Report, WireMessage

#: a ``source`` or ``from_cluster`` value copied into a salvage report: one plain word
_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")


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
    for name in ("source", "from_cluster"):
        value = raw.get(name)
        if isinstance(value, str) and _WORD.fullmatch(value):
            out[name] = value
    out["message"] = fit_header_value(message, HEADER_VALUE_MAX)
    body = _body(pubtime, base_url, rel_path, f"{code:03d}", host, user, f"{elapsed:f}")
    if routing_key.startswith("v02."):
        topic = report_topic(routing_key)
    else:  # a v03 (or unknown) topic: the report's topic is made from the path, as for v02
        topic = topic_for("v02.report", logical_path(rel_path))
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


def v03_salvage_fields(text: str) -> tuple[str, str, str, dict[str, str]]:
    """From the body of a malformed v03 message: the v02 body fields (pubTime without its
    ``T``, baseUrl, escaped relPath with its leading ``/``) and the headers a report about it
    may carry (``sum`` from ``identity``/``integrity``, ``source``, ``from_cluster``).

    Raises:
        MalformedMessage: the body does not name what it was about (not a JSON object, one of
            the three fields missing or not a string, no identity with a v03 method).
    """
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessage("not JSON: nothing names what it was about") from exc
    if not isinstance(obj, dict):
        raise MalformedMessage("not a JSON object: nothing names what it was about")
    fields = [obj.get(k) for k in ("pubTime", "baseUrl", "relPath")]
    if not all(isinstance(f, str) and f for f in fields):
        raise MalformedMessage("pubTime, baseUrl or relPath missing or not a string")
    pubtime, base_url, rel = (str(f) for f in fields)
    if len(pubtime) > 8 and pubtime[8] == "T":
        pubtime = pubtime[:8] + pubtime[9:]
    ident = obj.get("identity", obj.get("integrity"))
    if not isinstance(ident, dict):
        raise MalformedMessage("no identity to report with")
    method, value = ident.get("method"), ident.get("value")
    if not isinstance(method, str) or not isinstance(value, str):
        raise MalformedMessage("identity method or value is not a string")
    headers = {"sum": v03_to_v02(method, value).wire()}
    for name in ("source", "from_cluster"):
        if isinstance(obj.get(name), str):
            headers[name] = obj[name]
    return pubtime, base_url, escape_relpath("/" + rel.lstrip("/")), headers


def reformat(wire: WireMessage, post_format: str) -> WireMessage:
    """A salvage report (v02 on the wire) in ``post_format``: itself for v02, else decoded
    and written again (v03: sr3's ``report`` table)."""
    if post_format == "v02":
        return wire
    report = decode(wire.exchange, wire.routing_key, wire.body, wire.headers, wire.content_type)
    if not isinstance(report, Report):  # pragma: no cover - report_for_undecodable checks it
        raise MalformedMessage("a salvage report did not decode as a report")
    return encode(report, wire.exchange, post_format=post_format)


def _check_decodable(wire: WireMessage) -> None:
    """Raise MalformedMessage unless a receiver (sr_report, the source) can decode ``wire``:
    a report that is itself malformed would only be refused again downstream."""
    decode(wire.exchange, wire.routing_key, wire.body, wire.headers, wire.content_type)
