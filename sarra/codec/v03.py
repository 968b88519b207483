"""The v03 codec: sr3's JSON messages to notices and reports, and back (facts 1.8, 1.11).

A v03 message is one JSON object sent with content type ``application/json``; sr3 detects
the format by that content type, so every v03 message sarra sends carries it. Inside sarra a
notice keeps its v02 form (headers, ``sum``, ``parts``): decoding maps pubTime/baseUrl/relPath,
``identity`` (or the older ``integrity``), ``fileOp``, ``blocks`` or ``size``, timestamps
without the ``T``, and every string field to a header; integers become headers too. What
has no header form (nested objects such as ``geometry`` or ``content``, typed numbers,
sr3's block manifest, the report table) is kept in :attr:`Notice.v03_fields`, so that a
notice decoded from v03 and encoded again in v03 gives back the same object.

Input quirks accepted (as sr3 itself does, ``postformat/v03.py``): ``integrity`` for
``identity``, ``retPath`` for ``retrievePath``, sr2 2.20's ``parts`` string, numbers sent as
strings, a relPath with or without its leading ``/``. A ``report`` table (sr3's
``{code, timeCompleted, message}`` or sr2's ``{resultCode, elapsedTime, host, user}``) makes
the message a :class:`~sarra.notice.Report`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from sarra.codec.build import build_notice
from sarra.codec.paths import decode_relpath, escape_relpath, topic_for
from sarra.errors import MalformedMessage
from sarra.integrity.sums import name_sum, v02_to_v03, v03_to_v02
from sarra.notice import Checksum, Notice, PartSpec, Report, WireMessage, frozen_headers

#: what sr3 sends v03 messages with, and how it recognizes them
CONTENT_TYPE = "application/json"
#: the topic prefix of sr3's v03 posts and reports
TOPIC_PREFIX = "v03"
#: AMQP short string limit for routing keys
ROUTING_KEY_MAX = 255

#: fields mapped explicitly, never copied as headers
_MAPPED = frozenset(
    {
        "pubTime",
        "baseUrl",
        "relPath",
        "identity",
        "integrity",
        "fileOp",
        "blocks",
        "size",
        "mtime",
        "atime",
        "topic",
        "parts",
        "report",
    }
)
#: v02 headers that become v03 fields of another shape (never copied as plain fields)
_HEADER_MAPPED = frozenset(
    {"sum", "parts", "link", "oldname", "mtime", "atime", "message", "topic", "exchange"}
)
_BLOCK_METHODS = {"inplace": "i", "partitioned": "p", "i": "i", "p": "p"}
_BLOCK_NAMES = {"i": "inplace", "p": "partitioned"}


# -- decoding ----------------------------------------------------------------------------------


def looks_like_v03(text: str, content_type: str | None) -> bool:
    """True when a body is v03: sent as ``application/json`` or shaped as a JSON object."""
    if content_type is not None and content_type.split(";", 1)[0].strip() == CONTENT_TYPE:
        return True
    return text.lstrip().startswith("{")


def decode(
    exchange: str, routing_key: str | None, text: str, headers: Mapping[str, str]
) -> Notice | Report:
    """Decode a v03 body into a v02-form notice (topic rebuilt under ``v02.post``), or a
    report when it carries a ``report`` table.

    Raises:
        MalformedMessage: invalid JSON, missing fields or values that do not map to v02.
    """
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessage(f"v03 body is not JSON: {str(exc)[:120]}") from exc
    if not isinstance(obj, dict):
        raise MalformedMessage("v03 body is not a JSON object")
    if _SURROGATE_ESCAPE.search(text):
        _check_unicode(obj)
    if "retPath" in obj and "retrievePath" not in obj:  # sr3 before #628
        obj["retrievePath"] = obj.pop("retPath")
    pubtime, base_url, rel = (_text(obj, k) for k in ("pubTime", "baseUrl", "relPath"))
    # AMQP headers first (sr3 sends none but may add ``topic``), then the body's fields
    hdrs = {k: v for k, v in headers.items() if k not in _HEADER_MAPPED}
    extra: dict[str, Any] = {}
    for key, value in obj.items():
        if key in _MAPPED:
            continue
        if isinstance(value, str):
            hdrs[key] = value
            continue
        extra[key] = value
        if isinstance(value, int) and not isinstance(value, bool):
            hdrs[key] = str(value)
    for key in ("mtime", "atime"):
        if key in obj:
            hdrs[key] = _untee(_text(obj, key))
    report = obj.get("report")
    if report is not None and not isinstance(report, dict):
        raise MalformedMessage("v03 report is not an object")
    checksum = _checksum(obj, decode_relpath(rel), hdrs, lenient=report is not None)
    hdrs["sum"] = checksum.wire()
    if report is not None and checksum.letter == "n" and not {"identity", "integrity"} & obj.keys():
        extra["identity"] = None  # sr3 reports may carry none: none goes back out
    if not checksum.file_op:
        parts = _parts(obj)
        if parts is not None:
            hdrs["parts"] = parts.wire()
            blocks = obj.get("blocks")
            if isinstance(blocks, dict) and "manifest" in blocks:
                extra["blocks"] = blocks
    if report is not None:
        extra["report"] = report
    notice = build_notice(
        exchange=exchange,
        topic=None,
        pubtime=_untee(pubtime),
        base_url=base_url,
        rel_path=escape_relpath(rel),
        headers=hdrs,
        post=report is None,
        v03_fields=json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else "",
    )
    if report is None:
        return notice
    return _report(notice, report, hdrs)


def _report(notice: Notice, table: Mapping[str, object], hdrs: Mapping[str, str]) -> Report:
    """A report from sr3's ``{code, timeCompleted, message}`` or sr2's
    ``{resultCode, elapsedTime, host, user}``; a missing host or user is taken from
    ``from_cluster`` and ``source`` (sr3 does not send them), else ``-``."""
    code = _int(table.get("code", table.get("resultCode")), "report code")
    if not 100 <= code <= 999:
        raise MalformedMessage(f"v03 report code {code} is not 3 digits")
    message = table.get("message", "")
    if not isinstance(message, str):
        raise MalformedMessage("v03 report message is not a string")
    elapsed_raw = table.get("elapsedTime", 0.0)
    if isinstance(elapsed_raw, bool) or not isinstance(elapsed_raw, int | float | str):
        raise MalformedMessage("v03 report elapsedTime is not a number")
    try:
        elapsed = float(elapsed_raw)
    except ValueError as exc:
        raise MalformedMessage("v03 report elapsedTime is not a number") from exc
    if not math.isfinite(elapsed):
        raise MalformedMessage("v03 report elapsedTime is not finite")
    host = _word(table.get("host"), hdrs.get("from_cluster"))
    user = _word(table.get("user"), hdrs.get("source"))
    return Report(
        notice=dataclasses.replace(notice, topic=topic_for(TOPIC_PREFIX, notice.path)),
        code=code,
        host=host,
        user=user,
        elapsed=elapsed,
        message=message,
    )


#: a JSON escape of a UTF-16 surrogate: a pair is a character, a lone one is no text at all
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _check_unicode(obj: object) -> None:
    """Refuse a body whose escapes decode to a lone surrogate (``"\\ud800"``): no UTF-8
    encoder, file system or peer could carry it.

    Raises:
        MalformedMessage: some key or string value holds a lone surrogate.
    """
    try:
        _dump(obj).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedMessage(
            "v03 body holds a lone surrogate escape (\\ud800-\\udfff): not valid Unicode"
        ) from exc


def _word(value: object, fallback: str | None) -> str:
    """A report host or user: a non-empty string without spaces, else ``fallback``, else -."""
    for candidate in (value, fallback):
        if isinstance(candidate, str) and candidate and not any(c in candidate for c in " \n\r"):
            return candidate
    return "-"


def _dump(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _untee(stamp: str) -> str:
    """A v03 timestamp in v02 form: the ``T`` at index 8 removed."""
    return stamp[:8] + stamp[9:] if len(stamp) > 8 and stamp[8] == "T" else stamp


def _text(obj: Mapping[str, object], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise MalformedMessage(f"v03 field {key!r} missing or not a string")
    return value


def _checksum(
    obj: Mapping[str, object], path: str, hdrs: dict[str, str], *, lenient: bool
) -> Checksum:
    """The v02 sum: from ``fileOp`` for links, removals and directories, else ``identity``
    (a report without either gets sr3's ``n``: md5 of the name)."""
    op = obj.get("fileOp")
    if op is not None:
        if not isinstance(op, dict):
            raise MalformedMessage("v03 fileOp is not an object")
        if "rename" in op:
            if not isinstance(op["rename"], str):
                raise MalformedMessage("v03 fileOp rename is not a string")
            hdrs["oldname"] = op["rename"]
        if "link" in op:
            if not isinstance(op["link"], str):
                raise MalformedMessage("v03 fileOp link is not a string")
            hdrs["link"] = op["link"]
            return name_sum("L", op["link"])
        name = path.rsplit("/", 1)[-1]
        if "directory" in op:
            return name_sum("r" if "remove" in op else "m", name)
        if "remove" in op:
            return name_sum("R", name)
    ident = obj.get("identity", obj.get("integrity"))
    if ident is None and lenient:
        return name_sum("n", path.rsplit("/", 1)[-1])
    if not isinstance(ident, dict):
        raise MalformedMessage("v03 post without identity or a mappable fileOp")
    method, value = ident.get("method"), ident.get("value")
    if not isinstance(method, str) or not isinstance(value, str):
        raise MalformedMessage("v03 identity needs string method and value")
    return v03_to_v02(method, value)


def _int(value: object, what: str) -> int:
    """An integer from a v03 number or numeric string (sr2 writes strings)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit() and len(value) < 40:
        return int(value)
    raise MalformedMessage(f"v03 {what} is not an integer")


def _parts(obj: Mapping[str, object]) -> PartSpec | None:
    """``blocks`` (sr3 manifest form or sr2 string form), sr2 2.20's ``parts`` string, or
    ``size``, as a PartSpec."""
    blocks = obj.get("blocks")
    if blocks is not None:
        if not isinstance(blocks, dict):
            raise MalformedMessage("v03 blocks is not an object")
        return _blocks(blocks)
    legacy = obj.get("parts")
    if isinstance(legacy, str):
        fields = legacy.split(",")
        if len(fields) != 5 or fields[0] not in ("1", "i", "p"):
            raise MalformedMessage(f"bad v03 parts {legacy[:60]!r}")
        bs, cnt, rem, num = (_int(f, "parts") for f in fields[1:])
        return PartSpec(fields[0], bs, cnt, rem, num)
    if "size" in obj:
        return PartSpec("1", _int(obj["size"], "size"), 1, 0, 0)
    return None


def _blocks(blocks: Mapping[str, object]) -> PartSpec:
    method = _BLOCK_METHODS.get(str(blocks.get("method")))
    if method is None:
        raise MalformedMessage(f"unknown v03 blocks method {str(blocks.get('method'))[:40]!r}")
    bs = _int(blocks.get("size"), "blocks.size")
    number = _int(blocks.get("number"), "blocks.number")
    manifest = blocks.get("manifest")
    if isinstance(manifest, dict) and manifest:
        count = len(manifest)
        last = manifest.get(str(count - 1))
        rem = _int(last.get("size") if isinstance(last, dict) else None, "manifest size")
    else:
        count = _int(blocks.get("count"), "blocks.count")
        rem = _int(blocks.get("remainder"), "blocks.remainder")
    return PartSpec(method, bs, count, rem, number)


# -- encoding ----------------------------------------------------------------------------------


def _tee(stamp: str) -> str:
    """A v02 timestamp in v03 form: ``T`` after the date."""
    return stamp if len(stamp) <= 8 or stamp[8] == "T" else f"{stamp[:8]}T{stamp[8:]}"


def _extra(notice: Notice) -> dict[str, Any]:
    if not notice.v03_fields:
        return {}
    value = json.loads(notice.v03_fields)
    return value if isinstance(value, dict) else {}


def fields(notice: Notice) -> dict[str, Any]:
    """The v03 object of a notice (without any ``report`` table).

    Raises:
        MalformedMessage: a sum with no v03 form.
    """
    extra = _extra(notice)
    extra.pop("report", None)
    obj: dict[str, Any] = {
        "pubTime": _tee(notice.pubtime),
        "baseUrl": notice.base_url,
        "relPath": decode_relpath(notice.rel_path),
    }
    hdrs = notice.headers
    for key, value in hdrs.items():
        if key in _HEADER_MAPPED or key in _MAPPED:
            continue
        typed = extra.get(key)
        # a number kept from v03 goes back typed unless a relay changed the header since
        obj[key] = typed if typed is not None and _as_header(typed) == value else value
    for key, value in extra.items():
        if key not in obj and key not in hdrs and key not in _MAPPED:
            obj[key] = value
    for key in ("mtime", "atime"):
        if key in hdrs:
            obj[key] = _tee(hdrs[key])
    checksum = notice.checksum
    op: dict[str, str] = {}
    if "oldname" in hdrs:
        op["rename"] = hdrs["oldname"]
    if checksum.letter == "L":
        op["link"] = hdrs.get("link", "")
    elif checksum.letter == "R":
        op["remove"] = ""
    elif checksum.letter == "m":
        op["directory"] = ""
    elif checksum.letter == "r":
        op.update(remove="", directory="")
    elif not ("identity" in extra and extra["identity"] is None):
        method, value = v02_to_v03(checksum)
        obj["identity"] = {"method": method, "value": value}
    if op:
        obj["fileOp"] = op
    parts = notice.parts
    if parts is not None and not checksum.file_op:
        if parts.whole:
            obj["size"] = parts.block_size
        else:
            kept = extra.get("blocks")
            if isinstance(kept, dict) and _same_blocks(kept, parts):
                obj["blocks"] = kept
            else:
                obj["blocks"] = {
                    "method": _BLOCK_NAMES[parts.method],
                    "size": parts.block_size,
                    "count": parts.block_count,
                    "remainder": parts.remainder,
                    "number": parts.block_number,
                }
            obj["size"] = parts.length
    return obj


def _as_header(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def same_blocks(blocks: Mapping[str, object], parts: PartSpec) -> bool:
    """Whether a v03 ``blocks`` table reads as ``parts``."""
    return _same_blocks(blocks, parts)


def _same_blocks(blocks: Mapping[str, object], parts: PartSpec) -> bool:
    try:
        return _blocks(blocks) == parts
    except MalformedMessage:
        return False


def topic(notice: Notice) -> str:
    """The v03 topic of a notice: a ``v02.*`` topic becomes sr3's ``v03.<dirs>`` (its
    prefix is one level); any other (``post_topic_prefix v03``, sr2's ``v03.post``, a site's
    own) is kept."""
    if notice.topic.split(".", 1)[0] != "v02":
        return notice.topic
    return topic_for(TOPIC_PREFIX, notice.path)


def _wire(
    exchange: str,
    routing_key: str,
    obj: Mapping[str, object],
    persistent: bool,
    message_ttl_ms: int | None,
) -> WireMessage:
    try:
        if len(routing_key.encode("utf-8")) > ROUTING_KEY_MAX:
            raise MalformedMessage(f"topic longer than {ROUTING_KEY_MAX} bytes")
        body = _dump(obj).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedMessage(f"v03 field is not valid UTF-8: {exc.reason}") from exc
    return WireMessage(
        exchange=exchange,
        routing_key=routing_key,
        body=body,
        headers=frozen_headers({}),
        content_type=CONTENT_TYPE,
        delivery_mode=2 if persistent else 1,
        expiration=None if message_ttl_ms is None else str(message_ttl_ms),
    )


def to_wire(
    notice: Notice,
    *,
    exchange: str | None = None,
    persistent: bool = True,
    message_ttl_ms: int | None = None,
) -> WireMessage:
    """Encode a notice as sr3 does: one JSON object, content type ``application/json``, no
    application headers, topic per :func:`topic`.

    Raises:
        MalformedMessage: a sum with no v03 form, or a topic too long.
    """
    return _wire(
        notice.exchange if exchange is None else exchange,
        topic(notice),
        fields(notice),
        persistent,
        message_ttl_ms,
    )


def report_fields(report: Report, *, now: float | None = None) -> dict[str, Any]:
    """The v03 object of a report: the notice's fields plus a ``report`` table.

    sr3 reads ``code``, ``message`` and ``timeCompleted``; sr2's v03 names ``host``, ``user``
    and ``elapsedTime`` are added for a report sarra makes. A report decoded from v03 keeps
    exactly the keys it came with.
    """
    n = report.notice
    obj = fields(n)
    obj.pop("content", None)
    kept = _extra(n).get("report")
    table: dict[str, Any] = dict(kept) if isinstance(kept, dict) else {}
    if not table:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(time.time() if now is None else now))
        table = {"code": 0, "timeCompleted": stamp, "message": ""}
        table.update(host=report.host, user=report.user, elapsedTime=report.elapsed)
    else:
        for key, value in (("host", report.host), ("user", report.user)):
            if key in table:
                table[key] = value
        if "elapsedTime" in table:
            table["elapsedTime"] = report.elapsed
    if "resultCode" in table and "code" not in table:
        table["resultCode"] = report.code
    else:
        table["code"] = report.code
    if "message" in table or report.message:
        table["message"] = report.message
    obj["report"] = table
    return obj


def report_to_wire(
    report: Report,
    exchange: str,
    *,
    persistent: bool = True,
    message_ttl_ms: int | None = None,
    now: float | None = None,
) -> WireMessage:
    """Encode a report as sr3 emits them (``report_topicPrefix v03``): topic ``v03.<dirs>``,
    body = the notice's v03 fields plus the ``report`` table.

    Raises:
        MalformedMessage: as :func:`to_wire`.
    """
    return _wire(
        exchange,
        topic(report.notice),
        report_fields(report, now=now),
        persistent,
        message_ttl_ms,
    )


__all__ = [
    "CONTENT_TYPE",
    "decode",
    "fields",
    "looks_like_v03",
    "report_fields",
    "report_to_wire",
    "same_blocks",
    "to_wire",
    "topic",
]
