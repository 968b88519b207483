"""The ceiling program's own AMQP frames (``bench/floor.py publish``): its publishes are byte
for byte what py-amqp writes for the same message, and its reader of the broker's replies
splits frames and counts confirms as AMQP 0-9-1 defines them."""

from __future__ import annotations

import struct
from types import SimpleNamespace

import amqp
import pytest
from amqp import spec
from amqp.method_framing import frame_writer
from amqp.serialization import dumps

from bench.floor import (
    Confirms,
    FrameReader,
    frame,
    on_frame,
    pack_writes,
    publish_frames,
    v02_notices,
)

HEADERS = {
    "to_clusters": "127.0.0.1",
    "mtime": "20261207065058.170888461",
    "atime": "20261207065058.166323430",
    "mode": "644",
    "parts": "1,2048,1,0,0",
    "sum": "d,6d20d4e6c153d6c566f21e0b8efdb338",
}
BODY = b"20261207065058.465006982 http://127.0.0.1:8080 /bench/d00/f000000.bin"


def py_amqp_frames(channel: int, frame_max: int, topic: str, headers: dict, body: bytes) -> bytes:
    """What py-amqp's ``basic_publish`` hands to the socket for the same message."""
    written: list[bytes] = []
    transport = SimpleNamespace(write=lambda data: written.append(bytes(data)))
    write = frame_writer(SimpleNamespace(frame_max=frame_max, bytes_sent=0), transport)
    msg = amqp.Message(body, content_type="text/plain", delivery_mode=2,
                       application_headers=headers)  # fmt: skip
    args = dumps("Bssbb", (0, "xs_bench", topic, False, False))
    write(1, channel, spec.Basic.Publish, args, msg)
    return b"".join(written)


def method_frame(channel: int, class_id: int, method_id: int, args: bytes) -> bytes:
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


def ack(tag: int, multiple: bool, nack: bool = False) -> bytes:
    return method_frame(1, 60, 120 if nack else 80, struct.pack(">QB", tag, int(multiple)))


@pytest.mark.parametrize("channel", [1, 2, 65535])
def test_a_publish_is_the_bytes_py_amqp_writes(channel: int) -> None:
    ours = publish_frames(channel, 131072, "xs_bench", "v02.post.bench.d00", HEADERS, BODY)
    assert ours == py_amqp_frames(channel, 131072, "v02.post.bench.d00", HEADERS, BODY)


@pytest.mark.parametrize("size", [0, 4088, 4089, 3 * 4088, 10000])
def test_a_body_longer_than_a_frame_is_split_as_py_amqp_splits_it(size: int) -> None:
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    ours = publish_frames(1, 4096, "xs_bench", "v02.post.x", {"sum": "d,0"}, body)
    assert ours == py_amqp_frames(1, 4096, "v02.post.x", {"sum": "d,0"}, body)
    frames = FrameReader().feed(ours)
    assert [k for k, _c, _p in frames] == [1, 2] + [3] * -(-size // 4088)
    assert b"".join(p for k, _c, p in frames if k == 3) == body


def test_the_reader_gives_the_same_frames_however_the_bytes_arrive() -> None:
    data = publish_frames(7, 131072, "xs_bench", "v02.post.a", HEADERS, BODY) + ack(3, True)
    whole = FrameReader().feed(data)
    reader = FrameReader()
    piecemeal = [f for i in range(len(data)) for f in reader.feed(data[i : i + 1])]
    assert piecemeal == whole
    assert [(k, c) for k, c, _p in whole] == [(1, 7), (2, 7), (3, 7), (1, 1)]
    assert whole[2][2] == BODY
    assert reader.buf == bytearray()


def test_an_incomplete_frame_waits_for_its_end() -> None:
    reader = FrameReader()
    data = ack(1, False)
    assert reader.feed(data[:-1]) == []
    assert reader.feed(data[-1:]) == [(1, 1, data[7:-1])]


def test_a_frame_without_its_end_octet_is_refused() -> None:
    with pytest.raises(ValueError, match="not 0xce"):
        FrameReader().feed(ack(1, False)[:-1] + b"\x00")


def test_single_and_multiple_acks_count_every_tag_once() -> None:
    confirms = Confirms(10)
    for data in (ack(2, False), ack(5, False), ack(3, True), ack(4, False)):
        for kind, _channel, payload in FrameReader().feed(data):
            on_frame(kind, payload, confirms)
    assert (confirms.low, confirms.confirmed, confirms.done) == (5, 5, False)
    confirms.ack(7, False)
    confirms.ack(9, True)
    assert (confirms.confirmed, confirms.done) == (9, False)
    confirms.ack(10, False)
    assert (confirms.confirmed, confirms.done, confirms.singles) == (10, True, set())


def test_an_ack_of_a_tag_never_sent_is_refused() -> None:
    with pytest.raises(ValueError, match="delivery tag 4"):
        Confirms(3).ack(4, True)


def test_a_nack_or_a_close_stops_the_ceiling_and_a_heartbeat_does_not() -> None:
    confirms = Confirms(3)
    on_frame(8, b"", confirms)
    assert confirms.confirmed == 0
    with pytest.raises(RuntimeError, match="nacked 2"):
        on_frame(1, FrameReader().feed(ack(2, False, nack=True))[0][2], confirms)
    close = struct.pack(">HH", 20, 40) + struct.pack(">HB", 404, 9) + b"NOT_FOUND" + bytes(4)
    with pytest.raises(RuntimeError, match="404 NOT_FOUND"):
        on_frame(1, close, confirms)


def test_writes_hold_whole_messages_and_reach_the_size() -> None:
    messages = [bytes([i]) * (100 + i) for i in range(50)]
    writes = pack_writes(messages, 1000)
    assert b"".join(writes) == b"".join(messages)
    assert all(len(w) >= 1000 for w in writes[:-1])
    assert all(len(w) < 1000 + 150 for w in writes)  # at most one message past the size
    ends = {sum(len(m) for m in messages[: i + 1]) for i in range(len(messages))}
    at = 0
    for w in writes:
        at += len(w)
        assert at in ends


def test_the_notices_have_our_post_s_v02_shape() -> None:
    notices = v02_notices(8, "http://127.0.0.1:8080/", "127.0.0.1", 2048)
    assert len({body for _t, _h, body in notices}) == 8
    topic, headers, body = notices[5]
    assert topic == "v02.post.bench.d01"
    assert list(headers) == ["to_clusters", "mtime", "atime", "mode", "parts", "sum"]
    assert headers["parts"] == "1,2048,1,0,0"
    assert len(headers["sum"]) == len(HEADERS["sum"]) and headers["sum"].startswith("d,")
    assert len(headers["mtime"]) == len(HEADERS["mtime"])
    stamp, base, rel = body.decode().split(" ")
    assert (len(stamp), base, rel) == (len(HEADERS["mtime"]), "http://127.0.0.1:8080",
                                       "/bench/d01/f000005.bin")  # fmt: skip
