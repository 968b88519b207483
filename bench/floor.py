"""The bench's reference loops: what this machine allows, written in the bench, not in sarra.

``floor.py subscribe``: a minimal single-process Python subscriber doing only the irreducible
work of a durable v02 subscriber: consume with prefetch (py-amqp), GET over one kept-alive
HTTP connection per origin (http.client), md5 check against the notice's ``sum``, write to a
temporary name, rename, ``syncfs`` once per batch (default 100 files) and one ``basic_ack``
(multiple) per batch after that ``syncfs``. No configuration, no logging per file, no
reports, no retries: a failure stops it with a non-zero exit status.

``floor.py publish``: the broker's ceiling for posting. N v02 notices shaped like our sr_post's
(same headers, body and topic; no files read) are published on one channel with publisher
confirms pipelined. The default mode (``frames``) builds every message's AMQP frames before
the clock starts and writes them in large writes (128 KiB by default) on the socket py-amqp
opened, reading the ``basic.ack`` confirms back with its own small frame reader, so that the
client costs next to nothing and the broker sets the pace. ``--mode py-amqp`` is the former
reference: py-amqp's ``basic_publish`` for each message, then its event loop for the
confirms. The timing runs from the open channel to the last confirm, as our sr_post's
summary line does.

Both print one JSON line on stdout at the end (``files``/``messages``, ``first``, ``last``,
``seconds``; ``mode`` for publish; the subscriber also ``marks``, the time of every 100th
file, for ``bench_backlog.py``'s halves), which ``bench_core.py`` reads. Run by
``bench_core.py --sides ...,floor`` and ``bench_backlog.py``.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import http.client
import json
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, urlsplit

import amqp

_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(fd: int) -> None:
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def connect(port: int) -> amqp.Connection:
    conn = amqp.Connection(host=f"127.0.0.1:{port}", userid="guest", password="guest")
    conn.connect()
    return conn


class Floor:
    """The subscriber loop's state: open HTTP connections, made directories, the batch."""

    def __init__(self, dest: Path, batch: int) -> None:
        self.dest = dest
        self.batch = batch
        self.http: dict[str, http.client.HTTPConnection] = {}
        self.dirs: set[Path] = set()
        self.unacked_tag: int | None = None
        self.in_batch = 0
        self.done = 0
        self.first = 0.0
        self.last = 0.0
        self.marks: list[float] = []  # the time of every 100th file (the backlog bench's halves)
        dest.mkdir(parents=True, exist_ok=True)
        self.dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)

    def get(self, url: str) -> bytes:
        parts = urlsplit(url)
        conn = self.http.get(parts.netloc)
        if conn is None:
            conn = self.http[parts.netloc] = http.client.HTTPConnection(parts.netloc, timeout=30)
        conn.request("GET", parts.path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {url}: HTTP {resp.status}")
        return body

    def handle(self, msg: amqp.Message) -> None:
        body = msg.body.decode() if isinstance(msg.body, bytes) else msg.body
        _stamp, base_url, rel = body.split()[:3]
        logical = rel.replace("%20", " ").replace("%23", "#").lstrip("/")
        data = self.get(base_url.rstrip("/") + "/" + quote(logical))
        letter, _, want = str(msg.headers["sum"]).partition(",")
        if letter != "d" or hashlib.md5(data).hexdigest() != want:
            raise RuntimeError(f"{logical}: sum {msg.headers['sum']} does not match")
        final = self.dest / logical
        parent = final.parent
        if parent not in self.dirs:
            parent.mkdir(parents=True, exist_ok=True)
            self.dirs.add(parent)
        tmp = parent / f".{final.name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        self.last = time.time()
        if not self.done:
            self.first = self.last
        self.done += 1
        if self.done % 100 == 0:
            self.marks.append(self.last)
        self.unacked_tag = msg.delivery_tag
        self.in_batch += 1
        if self.in_batch >= self.batch:
            self.commit(msg.channel)

    def commit(self, channel: amqp.Channel) -> None:
        """The batch's data is durable (syncfs), then one ack covers the whole batch."""
        if self.unacked_tag is None:
            return
        syncfs(self.dest_fd)
        channel.basic_ack(self.unacked_tag, multiple=True)
        self.unacked_tag, self.in_batch = None, 0


def subscribe(args: argparse.Namespace) -> int:
    floor = Floor(Path(args.dest), args.batch)
    conn = connect(args.port)
    ch = conn.channel()
    ch.basic_qos(0, args.prefetch, False)
    ch.basic_consume(args.queue, callback=floor.handle, no_ack=False)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop and (args.count <= 0 or floor.done < args.count):
        try:
            conn.drain_events(timeout=0.1)
        except TimeoutError:
            floor.commit(ch)  # idle: do not hold a partial batch unacked
    floor.commit(ch)
    conn.close()
    print(
        json.dumps(
            {"files": floor.done, "first": floor.first, "last": floor.last, "marks": floor.marks}
        )
    )
    return 0


# -- publish: the broker's ceiling ------------------------------------------------------------
#
# AMQP 0-9-1 (spec sections 2.3.5 and 4.2.3-4.2.6), written here so that the ceiling does not
# depend on the code it measures. A frame is type:octet channel:short size:long payload
# 0xCE. A publish is a method frame (basic.publish: class 60, method 40, reserved short,
# exchange and routing key as short strings, the mandatory/immediate bits), a content header
# frame (class 60, weight 0, body size:longlong, property flags:short, then the flagged
# properties in flag order) and the body in frames of at most frame_max - 8 bytes.

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
_FRAME_HEAD = struct.Struct(">BHI")
_METHOD_ID = struct.Struct(">HH")
_CONTENT_HEAD = struct.Struct(">HHQH")
_LONG = struct.Struct(">I")
_ACK = struct.Struct(">QB")  # basic.ack / basic.nack: delivery tag, bits (multiple first)
BASIC_PUBLISH, BASIC_ACK, BASIC_NACK = (60, 40), (60, 80), (60, 120)
CHANNEL_CLOSE, CONNECTION_CLOSE = (20, 40), (10, 50)
# basic property flags, highest bit first: content-type, content-encoding, headers, delivery-mode
PROP_CONTENT_TYPE, PROP_HEADERS, PROP_DELIVERY_MODE = 1 << 15, 1 << 13, 1 << 12


@functools.cache  # names, exchange, topics repeat: encode them once
def shortstr(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"{text[:40]!r}...: a short string holds at most 255 bytes")
    return bytes((len(raw),)) + raw


def field_table(headers: dict[str, str]) -> bytes:
    """A field table of long-string values (type ``S``), in the mapping's order."""
    out = bytearray()
    for name, value in headers.items():
        raw = value.encode()
        out += shortstr(name) + b"S" + _LONG.pack(len(raw)) + raw
    return _LONG.pack(len(out)) + bytes(out)


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME_HEAD.pack(kind, channel, len(payload)) + payload + bytes((FRAME_END,))


def publish_frames(channel: int, frame_max: int, exchange: str, routing_key: str,
                   headers: dict[str, str], body: bytes, content_type: str = "text/plain",
                   delivery_mode: int = 2) -> bytes:  # fmt: skip
    """The frames of one basic.publish (not mandatory, not immediate) with a content type,
    headers and a delivery mode, as our sr_post sends its notices."""
    method = _METHOD_ID.pack(*BASIC_PUBLISH) + b"\0\0" + shortstr(exchange) + shortstr(routing_key)
    flags = PROP_CONTENT_TYPE | PROP_HEADERS | PROP_DELIVERY_MODE
    header = (_CONTENT_HEAD.pack(60, 0, len(body), flags) + shortstr(content_type)
              + field_table(headers) + bytes((delivery_mode,)))  # fmt: skip
    out = [frame(FRAME_METHOD, channel, method + b"\0"), frame(FRAME_HEADER, channel, header)]
    step = frame_max - 8
    out += [frame(FRAME_BODY, channel, body[i : i + step]) for i in range(0, len(body), step)]
    return b"".join(out)


def pack_writes(messages: Iterable[bytes], size: int) -> list[bytes]:
    """Whole messages joined into writes of at least ``size`` bytes (the last may be less)."""
    writes, pending, held = [], [], 0
    for m in messages:
        pending.append(m)
        held += len(m)
        if held >= size:
            writes.append(b"".join(pending))
            pending, held = [], 0
    if pending:
        writes.append(b"".join(pending))
    return writes


class FrameReader:
    """Splits the bytes read from the socket into (type, channel, payload) frames."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        self.buf += data
        frames, at = [], 0
        while len(self.buf) - at >= 8:
            kind, channel, size = _FRAME_HEAD.unpack_from(self.buf, at)
            end = at + 7 + size
            if len(self.buf) <= end:
                break
            if self.buf[end] != FRAME_END:
                raise ValueError(f"frame type {kind}: ends with {self.buf[end]:#x}, not 0xce")
            frames.append((kind, channel, bytes(self.buf[at + 7 : end])))
            at = end + 1
        del self.buf[:at]
        return frames


class Confirms:
    """Which of the delivery tags 1..total the broker confirmed (tags are consecutive)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.low = 0  # every tag up to this one is confirmed
        self.singles: set[int] = set()  # and these, above it

    def ack(self, tag: int, multiple: bool) -> None:
        if not 0 < tag <= self.total:
            raise ValueError(f"basic.ack of delivery tag {tag}: only 1..{self.total} were sent")
        if multiple:
            self.low = max(self.low, tag)
            self.singles = {t for t in self.singles if t > self.low}
        else:
            self.singles.add(tag)
        while self.low + 1 in self.singles:
            self.low += 1
            self.singles.discard(self.low)

    @property
    def confirmed(self) -> int:
        return self.low + len(self.singles)

    @property
    def done(self) -> bool:
        return self.low == self.total


def on_frame(kind: int, payload: bytes, confirms: Confirms) -> None:
    """Note a confirm; raise on a nack, a channel or connection close, or anything else."""
    if kind == FRAME_HEARTBEAT:
        return
    if kind != FRAME_METHOD:
        raise RuntimeError(f"unexpected frame type {kind} while waiting for confirms")
    method = _METHOD_ID.unpack_from(payload)
    if method == BASIC_ACK:
        tag, bits = _ACK.unpack_from(payload, 4)
        confirms.ack(tag, bool(bits & 1))
    elif method == BASIC_NACK:
        raise RuntimeError(f"broker nacked {_ACK.unpack_from(payload, 4)[0]}")
    elif method in (CHANNEL_CLOSE, CONNECTION_CLOSE):
        code, n = struct.unpack_from(">HB", payload, 4)
        raise RuntimeError(f"broker closed {method}: {code} {payload[7 : 7 + n].decode()}")
    else:
        raise RuntimeError(f"unexpected method {method} while waiting for confirms")


Notice = tuple[str, dict[str, str], bytes]  # topic, headers, body


def v02_notices(count: int, base_url: str, host: str, size: int) -> list[Notice]:
    """(topic, headers, body) of ``count`` notices shaped as our sr_post's for files of
    ``size`` bytes in 4 directories: the same header names in the same order, values of the
    same lengths (the sum an md5's length, not a file's md5: no file is read), the same body
    line."""
    now = time.time()
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}"
    base = base_url.rstrip("/")
    notices = []
    for i in range(count):
        folder = f"bench/d{i % 4:02d}"
        headers = {"to_clusters": host, "mtime": stamp, "atime": stamp, "mode": "644",
                   "parts": f"1,{size},1,0,0",
                   "sum": f"d,{i:032x}"}  # fmt: skip
        body = f"{stamp} {base} /{folder}/f{i:06d}.bin".encode()
        notices.append(("v02.post." + folder.replace("/", "."), headers, body))
    return notices


def publish(args: argparse.Namespace) -> int:
    notices = v02_notices(args.count, args.base_url, "127.0.0.1", args.size)
    conn = connect(args.port)
    ch = conn.channel()
    if args.mode == "frames":  # every frame packed before the clock starts
        packed = (publish_frames(ch.channel_id, conn.frame_max, args.exchange, topic, headers, body)
                  for topic, headers, body in notices)  # fmt: skip
        writes = pack_writes(packed, args.write_size)
        t0 = time.perf_counter()
        ch.confirm_select()
        confirmed = publish_frames_pipelined(conn, writes, args.count)
    else:
        messages = [(amqp.Message(body, content_type="text/plain", delivery_mode=2,
                                  application_headers=headers), topic)
                    for topic, headers, body in notices]  # fmt: skip
        t0 = time.perf_counter()
        ch.confirm_select()
        confirmed = publish_py_amqp(conn, ch, messages, args.exchange, args.count)
    seconds = time.perf_counter() - t0
    conn.close()
    write_size = args.write_size if args.mode == "frames" else None
    done = {"messages": confirmed, "seconds": seconds, "mode": args.mode, "write_size": write_size}
    print(json.dumps(done))
    return 0


def publish_frames_pipelined(conn: amqp.Connection, writes: list[bytes], count: int) -> int:
    """Write ``writes`` on py-amqp's socket, reading the confirms that are already there after
    each write; then wait for the rest. Returns the number confirmed (``count``)."""
    if getattr(conn.transport, "_read_buffer", b""):
        raise RuntimeError("py-amqp holds unread bytes: the frame reader would miss them")
    sock: socket.socket = conn.transport.sock
    sock.settimeout(None)  # blocking: sendall whole, recv with MSG_DONTWAIT between writes
    confirms, reader = Confirms(count), FrameReader()
    for data in writes:
        sock.sendall(data)
        while True:
            try:
                got = sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not got:
                raise ConnectionError("the broker closed the connection")
            for kind, _channel, payload in reader.feed(got):
                on_frame(kind, payload, confirms)
    sock.settimeout(30)
    while not confirms.done:
        got = sock.recv(65536)
        if not got:
            raise ConnectionError("the broker closed the connection")
        for kind, _channel, payload in reader.feed(got):
            on_frame(kind, payload, confirms)
    return confirms.confirmed


def publish_py_amqp(
    conn: amqp.Connection,
    ch: amqp.Channel,
    messages: list[tuple[amqp.Message, str]],
    exchange: str,
    count: int,
) -> int:
    """py-amqp's ``basic_publish`` per message (one socket write each), all sent before any
    confirm is awaited; then its event loop until every one is confirmed."""
    confirms = Confirms(count)

    def on_nack(tag: int, multiple: bool) -> None:
        raise RuntimeError(f"broker nacked {tag}")

    ch.events["basic_ack"].add(confirms.ack)
    ch.events["basic_nack"].add(on_nack)
    for msg, topic in messages:
        ch.basic_publish(msg, exchange=exchange, routing_key=topic)
    while not confirms.done:
        conn.drain_events(timeout=30)
    return confirms.confirmed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("subscribe", help="the minimal subscriber")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--queue", required=True)
    s.add_argument("--dest", required=True)
    s.add_argument("--count", type=int, default=0, help="exit after this many files (0: never)")
    s.add_argument("--prefetch", type=int, default=200)
    s.add_argument("--batch", type=int, default=100, help="files per syncfs and ack")
    p = sub.add_parser("publish", help="the broker's pipelined-confirm ceiling")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--exchange", required=True)
    p.add_argument("--base-url", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--size", type=int, default=2048, help="the file size the notices announce")
    p.add_argument("--mode", choices=("frames", "py-amqp"), default="frames",
                   help="frames: pre-packed frames in large writes (the ceiling); py-amqp: "
                   "basic_publish per message (the former reference)")  # fmt: skip
    p.add_argument("--write-size", type=int, default=128 * 1024, help="bytes per write (frames)")
    args = ap.parse_args()
    return subscribe(args) if args.cmd == "subscribe" else publish(args)


if __name__ == "__main__":
    sys.exit(main())
