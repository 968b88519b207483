"""The v02 codec: AMQP deliveries to notices, reports and pulses, and back (spec 1-8).

Strict on output, lenient on input (the quirks of spec 11), never lenient on safety (9.5).
Only this package constructs :class:`~sarra.notice.Notice` and :class:`~sarra.notice.Report`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from typing import Protocol

from sarra.codec import v03
from sarra.codec.build import build_notice, poster_base_url, poster_rel_path
from sarra.codec.fields import (
    DEFAULT_LIMITS,
    V03_NAMES,
    Limits,
    check_emittable,
    check_text,
    fit_header_value,
    normalize_headers,
    ordered,
)
from sarra.codec.paths import cut_topic, escape_relpath, report_topic, topic_for
from sarra.errors import MalformedMessage
from sarra.notice import Checksum, Notice, PartSpec, Pulse, Report, WireMessage, frozen_headers

__all__ = [
    "DEFAULT_LIMITS",
    "Limits",
    "decode",
    "derive",
    "encode",
    "make_notice",
    "make_report",
    "report_to_wire",
    "split_exchange",
    "to_wire",
]

#: sr2 refuses header values of 253 bytes or more (4.4)
HEADER_VALUE_MAX = 252
#: AMQP short string limit for routing keys
ROUTING_KEY_MAX = 255
_CODE = re.compile(r"\d{3}", re.ASCII)


def decode(
    exchange: str,
    routing_key: str,
    body: bytes,
    headers: Mapping[str, object] | None,
    content_type: str | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> Notice | Report | Pulse:
    """Decode one delivery.

    A report misrouted onto a post topic (Q3) is classified by its body and returned as a
    :class:`Report`. A restored message (exchange ``''``, key ``q_*``) gets its topic rebuilt
    from relPath and its exchange from the ``exchange`` header (default ``xpublic``), which is
    dropped. v03 messages (content type ``application/json``, or a body starting with ``{``)
    are decoded from JSON (:func:`sarra.codec.v03.decode`), whatever their topic.

    Raises:
        MalformedMessage: everything the spec answers with 417, with a one-line reason.
    """
    if len(body) > limits.max_body:
        raise MalformedMessage(f"body of {len(body)} bytes exceeds {limits.max_body}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"body is not valid UTF-8: {exc.reason}") from exc
    restored = exchange == "" and routing_key.startswith("q_")
    levels = routing_key.split(".")
    # the format of each message goes by its content type or body shape, not its topic: a
    # v02 body on a v03 topic (old sarra, a retry queue) is read as v02
    is_v03 = v03.looks_like_v03(text, content_type)
    kind = "post" if restored or is_v03 else _kind(routing_key, levels)
    if kind == "pulse":  # acked and ignored: its headers do not matter
        return Pulse(topic=routing_key, text=text)
    hdrs = normalize_headers(headers, limits)
    if restored:
        exchange = hdrs.pop("exchange", "xpublic")
    if is_v03:
        return v03.decode(exchange, None if restored else routing_key, text, hdrs)
    line = text.split("\n", 1)[0]
    if line.endswith("\r"):
        line = line[:-1]
    fields = line.split(" ")
    topic = None if restored else routing_key
    if kind == "post" and len(fields) == 3 and all(fields):
        return build_notice(
            exchange=exchange,
            topic=topic,
            pubtime=fields[0],
            base_url=fields[1],
            rel_path=fields[2],
            headers=hdrs,
            post=True,
        )
    if len(fields) >= 7 and _CODE.fullmatch(fields[-4]):
        return _decode_report(exchange, topic, fields, hdrs)
    if kind == "post":
        raise MalformedMessage(f"post body has {len(fields)} fields, not 3: {line[:80]!r}")
    raise MalformedMessage("report body is not <3 fields> <code> <host> <user> <elapsed>")


def _kind(routing_key: str, levels: list[str]) -> str:
    """The message type named by the second topic level (2.3); a v02 body on a ``v03.*``
    topic (what sarra sent before it spoke v03) is a post."""
    if levels[0] == "v03":
        return "post"
    if levels[0] != "v02" or len(levels) < 2:
        raise MalformedMessage(f"unsupported topic {routing_key[:80]!r}")
    kind = {"post": "post", "report": "report", "log": "report", "pulse": "pulse"}.get(levels[1])
    if kind is None:
        raise MalformedMessage(f"unknown message type {levels[1]!r} in topic")
    return kind


def _decode_report(
    exchange: str, topic: str | None, fields: list[str], hdrs: dict[str, str]
) -> Report:
    """Parse a report body per 8.5: two fields from the left, four from the right."""
    raw_rel = " ".join(fields[2:-4])
    host, user, elapsed_text = fields[-3], fields[-2], fields[-1]
    if not host or not user:
        raise MalformedMessage("report body has an empty host or user")
    try:
        elapsed = float(elapsed_text)
    except ValueError as exc:
        raise MalformedMessage(f"report elapsed {elapsed_text[:20]!r} is not a number") from exc
    if not math.isfinite(elapsed):
        raise MalformedMessage(f"report elapsed {elapsed_text!r} is not finite")
    # sr2 writes relPath decoded (Q4): escape it back into wire form
    rel_path = escape_relpath(raw_rel)
    message = hdrs.pop("message", "")
    notice = build_notice(
        exchange=exchange,
        topic=topic,
        pubtime=fields[0],
        base_url=fields[1],
        rel_path=rel_path,
        headers=hdrs,
        post=False,
    )
    if topic is None:  # restored: the rebuilt topic is a post topic
        notice = dataclasses.replace(notice, topic=report_topic(notice.topic))
    return Report(
        notice=notice,
        code=int(fields[-4]),
        host=host,
        user=user,
        elapsed=elapsed,
        message=message,
    )


def _body(*fields: str) -> bytes:
    """One body line of space-separated fields, each checked to hold no separator."""
    for f in fields:
        if not f or " " in f or "\n" in f or "\r" in f:
            raise MalformedMessage(f"body field {f[:80]!r} is empty or holds a separator")
    line = " ".join(fields)
    try:
        return line.encode("utf-8")
    except UnicodeEncodeError:
        for f in fields:
            check_text("body field", f)
        raise  # unreachable: one field holds the surrogate


def _wire(
    exchange: str,
    topic: str,
    body: bytes,
    headers: dict[str, str],
    header_value_max: int,
    persistent: bool,
    message_ttl_ms: int | None,
) -> WireMessage:
    check_emittable(headers, header_value_max)
    check_text("topic", topic)
    if len(topic.encode("utf-8")) > ROUTING_KEY_MAX:
        raise MalformedMessage(f"topic longer than {ROUTING_KEY_MAX} bytes")
    return WireMessage(
        exchange=exchange,
        routing_key=topic,
        body=body,
        headers=frozen_headers(headers),
        content_type="text/plain",
        delivery_mode=2 if persistent else 1,
        expiration=None if message_ttl_ms is None else str(message_ttl_ms),
    )


def to_wire(
    notice: Notice,
    *,
    exchange: str | None = None,
    header_value_max: int = HEADER_VALUE_MAX,
    persistent: bool = True,
    message_ttl_ms: int | None = None,
) -> WireMessage:
    """Encode a notice for publishing: one body line, string headers in sr2 order, v03
    names stripped. ``exchange`` overrides the notice's.

    Raises:
        MalformedMessage: a header value over ``header_value_max`` bytes (naming it and its
            length), a header name over 255 bytes, or an unencodable field.
    """
    body = _body(notice.pubtime, notice.base_url, notice.rel_path)
    return _wire(
        notice.exchange if exchange is None else exchange,
        notice.topic,
        body,
        ordered(notice.headers),
        header_value_max,
        persistent,
        message_ttl_ms,
    )


def make_notice(
    *,
    exchange: str,
    topic_prefix: str,
    pubtime: str,
    base_url: str,
    path: str,
    checksum: Checksum,
    parts: PartSpec | None,
    headers: Mapping[str, str] | None = None,
    topic_override: str | None = None,
) -> Notice:
    """Build a notice for a poster.

    ``path`` is the logical path (a leading ``/`` is optional; absolute for ``file:``).
    relPath gets a leading ``/`` and is escaped; the topic is derived from its directories
    unless ``topic_override`` replaces that derived part (``sr_post -sub``); the baseUrl
    loses any trailing ``/``. ``sum`` and ``parts`` are merged into ``headers`` in sr2 order.

    Raises:
        MalformedMessage: a field that would not be a valid v02 post.
    """
    merged = dict(headers or {})
    if parts is not None:
        merged["parts"] = parts.wire()
    else:
        merged.pop("parts", None)
    merged["sum"] = checksum.wire()
    rel_path = poster_rel_path(path)
    if topic_override is None:
        topic = topic_for(topic_prefix, path.lstrip("/"))
    else:
        topic = cut_topic(f"{topic_prefix}.{topic_override}" if topic_override else topic_prefix)
    return build_notice(
        exchange=exchange,
        topic=topic,
        pubtime=pubtime,
        base_url=poster_base_url(base_url),
        rel_path=rel_path,
        headers=ordered(merged),
        post=True,
    )


def derive(
    notice: Notice,
    *,
    exchange: str | None = None,
    base_url: str | None = None,
    path: str | None = None,
    set_headers: Mapping[str, str] | None = None,
    drop_headers: Iterable[str] = (),
    checksum: Checksum | None = None,
    parts: PartSpec | None = None,
) -> Notice:
    """A relayed or re-announced copy of ``notice`` with some fields changed.

    pubTime and unknown headers are kept. A new ``path`` (logical) rebuilds relPath and the
    topic under the notice's first two topic levels. ``drop_headers`` go first, then
    ``set_headers``, ``checksum`` and ``parts`` are set; v03 names are stripped.

    Raises:
        MalformedMessage: the result would not be a valid v02 post.
    """
    drop = set(drop_headers)
    hdrs = {k: v for k, v in notice.headers.items() if k not in drop}
    hdrs.update(set_headers or {})
    if checksum is not None:
        hdrs["sum"] = checksum.wire()
    if parts is not None:
        hdrs["parts"] = parts.wire()
    rel_path, topic = notice.rel_path, notice.topic
    if path is not None:
        rel_path = poster_rel_path(path)
        levels = notice.topic.split(".")
        # sr3's v03 prefix is one level (v03.<dirs>), v02's two (v02.post.<dirs>)
        prefix = ".".join(levels[:1] if levels[0] == "v03" else levels[:2])
        topic = topic_for(prefix, path.lstrip("/"))
    return build_notice(
        exchange=notice.exchange if exchange is None else exchange,
        topic=topic,
        pubtime=notice.pubtime,
        base_url=notice.base_url if base_url is None else poster_base_url(base_url),
        rel_path=rel_path,
        headers=ordered(hdrs),
        post=True,
        v03_fields=notice.v03_fields,
    )


def make_report(
    notice: Notice,
    *,
    code: int,
    message: str,
    host: str,
    user: str,
    elapsed: float,
    source: str | None,
    from_cluster: str | None,
    to_clusters: str | None,
) -> Report:
    """A report about ``notice`` (8.3, 8.4): its headers minus ``content``, with a missing
    ``source``/``from_cluster``/``to_clusters`` filled from the given values (when not None).

    Raises:
        MalformedMessage: a code that is not 3 digits, a host or user with a space, or a
            non-finite elapsed time.
    """
    if not 100 <= code <= 999:
        raise MalformedMessage(f"report code {code} is not 3 digits")
    _body(host, user)
    if not math.isfinite(elapsed):
        raise MalformedMessage(f"report elapsed {elapsed} is not finite")
    hdrs = {k: v for k, v in notice.headers.items() if k not in ("content", "message")}
    for name, value in (
        ("source", source),
        ("from_cluster", from_cluster),
        ("to_clusters", to_clusters),
    ):
        if name not in hdrs and value is not None:
            hdrs[name] = value
    reported = dataclasses.replace(notice, headers=frozen_headers(hdrs))
    return Report(
        notice=reported, code=code, host=host, user=user, elapsed=elapsed, message=message
    )


def report_to_wire(
    report: Report,
    exchange: str,
    *,
    header_value_max: int = HEADER_VALUE_MAX,
    persistent: bool = True,
    message_ttl_ms: int | None = None,
) -> WireMessage:
    """Encode a report: topic per 2.3, body per 8.3 (relPath escaped, elapsed as ``%f``),
    headers = the notice's minus ``content`` (and v03 names) plus ``message``.

    Raises:
        MalformedMessage: as :func:`to_wire`.
    """
    n = report.notice
    body = _body(
        n.pubtime,
        n.base_url,
        escape_relpath(n.rel_path),
        f"{report.code:03d}",
        report.host,
        report.user,
        f"{report.elapsed:f}",
    )
    hdrs = {k: v for k, v in n.headers.items() if k not in V03_NAMES and k != "message"}
    # the message quotes URLs, paths, sums: it is shortened to fit, never a reason to refuse
    hdrs["message"] = fit_header_value(report.message, header_value_max)
    return _wire(
        exchange,
        report_topic(n.topic),
        body,
        hdrs,
        header_value_max,
        persistent,
        message_ttl_ms,
    )


def encode(
    x: Notice | Report,
    exchange: str,
    *,
    header_value_max: int = HEADER_VALUE_MAX,
    persistent: bool = True,
    message_ttl_ms: int | None = None,
    post_format: str = "v02",
) -> WireMessage:
    """Encode a notice (:func:`to_wire`) or a report (:func:`report_to_wire`) for ``exchange``
    in ``post_format`` (``v02``, or ``v03``: :mod:`sarra.codec.v03`)."""
    if post_format == "v03":
        if isinstance(x, Report):
            return v03.report_to_wire(
                x, exchange, persistent=persistent, message_ttl_ms=message_ttl_ms
            )
        return v03.to_wire(
            x, exchange=exchange, persistent=persistent, message_ttl_ms=message_ttl_ms
        )
    if isinstance(x, Report):
        return report_to_wire(
            x,
            exchange,
            header_value_max=header_value_max,
            persistent=persistent,
            message_ttl_ms=message_ttl_ms,
        )
    return to_wire(
        x,
        exchange=exchange,
        header_value_max=header_value_max,
        persistent=persistent,
        message_ttl_ms=message_ttl_ms,
    )


def split_exchange(exchange: str, checksum: Checksum, split: int) -> str:
    """The exchange for ``post_exchange_split`` (sr2 rule, spec 1.3): ``exchange`` +
    ``"%02d" % (S mod split)``, S the byte sum of the ASCII ``sum`` header value.
    ``split`` of 1 or less returns ``exchange`` unchanged.
    """
    if split <= 1:
        return exchange
    return f"{exchange}{sum(checksum.wire().encode('utf-8')) % split:02d}"


class PublishOptions(Protocol):
    """What a publisher's settings say about the messages it sends (see :func:`publish_wire`)."""

    @property
    def exchange_split(self) -> int: ...
    @property
    def header_value_max(self) -> int: ...
    @property
    def persistent(self) -> bool: ...
    @property
    def message_ttl_ms(self) -> int | None: ...
    @property
    def post_format(self) -> str: ...


def publish_wire(notice: Notice, exchange: str, options: PublishOptions) -> WireMessage:
    """:func:`encode` as a publisher sends ``notice``: to ``exchange`` split by
    ``options.exchange_split`` (:func:`split_exchange`), in ``options.post_format``, with the
    options' header value limit, delivery mode and message TTL."""
    return encode(
        notice,
        split_exchange(exchange, notice.checksum, options.exchange_split),
        header_value_max=options.header_value_max,
        persistent=options.persistent,
        message_ttl_ms=options.message_ttl_ms,
        post_format=options.post_format,
    )


def report_format(report: Report) -> str:
    """The format a relayed report keeps: ``v03`` when it came as v03, else ``v02``."""
    return "v03" if report.notice.topic.split(".", 1)[0] == "v03" else "v02"
