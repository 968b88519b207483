"""Our basic.publish frames are byte for byte the frames py-amqp writes for the same message."""

from __future__ import annotations

from types import MappingProxyType, SimpleNamespace
from typing import Any

import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_writer
from amqp.serialization import dumps

from sarra.broker.frames import FrameError, publish_frames
from sarra.notice import WireMessage


def amqp_frames(channel: int, frame_max: int, m: WireMessage) -> bytes:
    """What py-amqp's ``basic_publish`` hands to the socket for ``m`` (as our session
    called it before: content_type, delivery_mode, application_headers, expiration)."""
    written: list[bytes] = []
    transport = SimpleNamespace(write=lambda data: written.append(bytes(data)))
    conn = SimpleNamespace(frame_max=frame_max, bytes_sent=0)
    write = frame_writer(conn, transport)
    props: dict[str, Any] = {
        "content_type": m.content_type,
        "delivery_mode": m.delivery_mode,
        "application_headers": dict(m.headers),
    }
    if m.expiration is not None:
        props["expiration"] = m.expiration
    args = dumps("Bssbb", (0, m.exchange, m.routing_key, False, False))
    write(1, channel, spec.Basic.Publish, args, amqp.Message(m.body, **props))
    return b"".join(written)


def wire(**kw: Any) -> WireMessage:
    fields: dict[str, Any] = {
        "exchange": "xs_guest",
        "routing_key": "v02.post.obs.radar",
        "body": b"20261207004349.123456 http://localhost /obs/radar/f1.bin",
        "headers": MappingProxyType(
            {"to_clusters": "localhost", "sum": "d,0123abcd", "parts": "1,2048,1,0,0"}
        ),
    }
    fields.update(kw)
    return WireMessage(**fields)


@pytest.mark.parametrize(
    "message",
    [
        wire(),
        wire(delivery_mode=1),
        wire(expiration="60000"),
        wire(headers=MappingProxyType({})),
        wire(body=b""),
        wire(exchange="", routing_key=""),
        wire(headers=MappingProxyType({"rename": "/données/é.txt", "x" * 255: "y" * 300})),
        wire(routing_key="v02.post." + "a" * 246),
        wire(content_type="application/json"),
    ],
    ids=[
        "post",
        "transient",
        "ttl",
        "no headers",
        "empty body",
        "default exchange",
        "unicode and long values",
        "255-byte routing key",
        "other content type",
    ],
)
def test_a_publish_is_packed_exactly_as_py_amqp_packs_it(message: WireMessage) -> None:
    for channel in (1, 2, 65535):
        assert publish_frames(channel, 131072, message) == amqp_frames(channel, 131072, message)


@pytest.mark.parametrize("size", [4096 - 8 - 1, 4096 - 8, 4096 - 8 + 1, 3 * (4096 - 8), 20000])
def test_a_body_longer_than_the_frame_size_is_split_as_py_amqp_splits_it(size: int) -> None:
    message = wire(body=bytes(range(256)) * (size // 256) + b"z" * (size % 256))
    ours = publish_frames(1, 4096, message)
    assert ours == amqp_frames(1, 4096, message)
    # and every frame fits in frame_max
    offset, frames = 0, 0
    while offset < len(ours):
        length = int.from_bytes(ours[offset + 3 : offset + 7], "big")
        assert length + 8 <= 4096
        assert ours[offset + 7 + length] == 0xCE
        offset += length + 8
        frames += 1
    assert offset == len(ours)
    assert frames == 2 + -(-size // (4096 - 8))


@pytest.mark.parametrize(
    "message",
    [
        wire(exchange="x" * 256),
        wire(routing_key="r" * 256),
        wire(headers=MappingProxyType({"n" * 256: "v"})),
        wire(expiration="9" * 256),
        wire(headers=MappingProxyType({"size": 5})),
    ],
    ids=["exchange", "routing key", "header name", "expiration", "non-string value"],
)
def test_what_does_not_fit_the_field_sizes_is_refused(message: WireMessage) -> None:
    with pytest.raises(FrameError):
        publish_frames(1, 131072, message)
