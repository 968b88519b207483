"""AMQP 0-9-1 ``basic.publish`` frames for a :class:`~sarra.notice.WireMessage`, as bytes.

py-amqp builds each publish through several generic layers (a ``Message`` object, a
property serializer that walks every possible property, a format-string packer, one
socket write per frame): about 35 us of CPU per message, more than the rest of a post. A
poster only ever sends one shape of message (string headers, a short text body, at most
four properties), so :func:`publish_frames` packs exactly that, byte for byte what
py-amqp's own writer produces for it (tests/unit/test_broker_frames.py compares the two),
and the session writes a whole window of them at once on the connection py-amqp keeps.

Grammar (AMQP 0-9-1, 4.2.3 and 4.2.6): each frame is ``type:octet channel:short
size:long payload 0xCE``. A publish is a method frame (class 60, method 40: ticket,
exchange, routing key, mandatory/immediate bits), a content header frame (class 60,
weight 0, body size, property flags, properties in flag order) and the body in frames of
at most ``frame_max - 8`` bytes (none for an empty body).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from struct import Struct

from sarra.notice import WireMessage

_FRAME_END = b"\xce"
_FRAME_HEAD = Struct(">BHI")
_LONG = Struct(">I")
#: class 60 (basic), method 40 (publish), ticket 0
_PUBLISH_METHOD = Struct(">HHH").pack(60, 40, 0)
#: class 60, weight 0, body size, property flags
_CONTENT_HEAD = Struct(">HHQH")
# basic property flags, highest bit first in the order the properties follow
_CONTENT_TYPE = 1 << 15
_HEADERS = 1 << 13
_DELIVERY_MODE = 1 << 12
_EXPIRATION = 1 << 8


class FrameError(ValueError):
    """The message does not fit the AMQP field sizes (a short string over 255 bytes)."""


@functools.lru_cache(maxsize=1024)
def _short(text: str) -> bytes:
    """An AMQP short string. Cached: header names, exchanges, routing keys and the content
    type repeat from one message to the next."""
    raw = text.encode("utf-8")
    if len(raw) > 255:
        raise FrameError(f"{text[:40]!r}...: longer than 255 bytes")
    return bytes((len(raw),)) + raw


def _table(headers: Mapping[str, object]) -> bytes:
    """A field table of string values (type ``S``, long strings), in the mapping's order."""
    out = bytearray()
    for name, value in headers.items():
        if not isinstance(value, str):
            raise FrameError(f"header {name!r}: not a string ({type(value).__name__})")
        raw = value.encode("utf-8")
        out += _short(name)
        out += b"S"
        out += _LONG.pack(len(raw))
        out += raw
    return _LONG.pack(len(out)) + out


def publish_frames(channel: int, frame_max: int, m: WireMessage) -> bytes:
    """The frames that publish ``m`` on ``channel`` (not mandatory, not immediate).

    ``frame_max`` is the connection's negotiated maximum frame size; bodies longer than
    ``frame_max - 8`` are split over several body frames.

    Raises:
        FrameError: an exchange, routing key, header name, content type or expiration over
            255 bytes, or a header value that is not a string.
    """
    method = _PUBLISH_METHOD + _short(m.exchange) + _short(m.routing_key) + b"\x00"
    flags = _CONTENT_TYPE | _HEADERS | _DELIVERY_MODE
    props = _short(m.content_type) + _table(m.headers) + bytes((m.delivery_mode,))
    if m.expiration is not None:
        flags |= _EXPIRATION
        props += _short(m.expiration)
    body = m.body
    header = _CONTENT_HEAD.pack(60, 0, len(body), flags) + props
    parts = [
        _FRAME_HEAD.pack(1, channel, len(method)),
        method,
        _FRAME_END,
        _FRAME_HEAD.pack(2, channel, len(header)),
        header,
        _FRAME_END,
    ]
    chunk = frame_max - 8
    for start in range(0, len(body), chunk):
        piece = body[start : start + chunk]
        parts += (_FRAME_HEAD.pack(3, channel, len(piece)), piece, _FRAME_END)
    return b"".join(parts)


#: a basic.ack or basic.nack method frame: type 1, channel, size 13; class 60, method 80
#: (ack) or 120 (nack), delivery tag, flags (bit 0: multiple); then the frame end
_CONFIRM_FRAME = Struct(">BHIHHQBB")
CONFIRM_FRAME_SIZE = _CONFIRM_FRAME.size  # 21
_ACK, _NACK = 80, 120


def scan_confirms(buf: bytes, channel: int) -> tuple[int, list[tuple[int, bool, bool]]]:
    """The publisher confirms (basic.ack / basic.nack on ``channel``) at the start of ``buf``.

    Returns how many bytes they take and, for each in order, ``(delivery_tag, multiple,
    nack)``. Scanning stops at the first thing that is not a complete confirm frame on
    ``channel`` (another frame, another channel, a frame cut by the end of ``buf``, a bad
    frame end): what follows is left to py-amqp, which reads it as it would have.
    """
    pos, end = 0, len(buf)
    out: list[tuple[int, bool, bool]] = []
    unpack = _CONFIRM_FRAME.unpack_from
    while end - pos >= CONFIRM_FRAME_SIZE:
        ftype, ch, size, cls, method, tag, flags, frame_end = unpack(buf, pos)
        if (
            ftype != 1
            or ch != channel
            or size != 13
            or cls != 60
            or method not in (_ACK, _NACK)
            or frame_end != 0xCE
        ):
            break
        out.append((tag, bool(flags & 1), method == _NACK))
        pos += CONFIRM_FRAME_SIZE
    return pos, out
