"""The bench's reference loops: what this machine allows, written in the bench, not in sarra.

``floor.py subscribe``: a minimal single-process Python subscriber doing only the irreducible
work of a durable v02 subscriber: consume with prefetch (py-amqp), GET over one kept-alive
HTTP connection per origin (http.client), md5 check against the notice's ``sum``, write to a
temporary name, rename, ``syncfs`` once per batch (default 100 files) and one ``basic_ack``
(multiple) per batch after that ``syncfs``. No configuration, no logging per file, no
reports, no retries: a failure stops it with a non-zero exit status.

``floor.py publish``: the broker's ceiling for posting. N v02 notices (no files read) are
published on one channel with publisher confirms pipelined (all sent, then the confirms are
drained); the timing runs from the open connection to the last confirm, as our sr_post's
summary line does.

Both print one JSON line on stdout at the end (``files``/``messages``, ``first``, ``last``,
``seconds``), which ``bench_core.py`` reads. Run by ``bench_core.py --sides ...,floor``.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import http.client
import json
import os
import signal
import sys
import time
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
    print(json.dumps({"files": floor.done, "first": floor.first, "last": floor.last}))
    return 0


def publish(args: argparse.Namespace) -> int:
    base = args.base_url.rstrip("/")
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + ".000"
    notices = []  # built before the clock starts: only publishing and confirms are timed
    for i in range(args.count):
        folder = f"bench/d{i % 4:02d}"
        msg = amqp.Message(f"{stamp} {base}/ {folder}/f{i:06d}.bin", content_type="text/plain",
                           application_headers={"sum": "d," + "0" * 32,
                                                "parts": "1,2048,1,0,0"})  # fmt: skip
        notices.append((msg, "v02.post." + folder.replace("/", ".")))
    conn = connect(args.port)
    ch = conn.channel()
    t0 = time.perf_counter()
    ch.confirm_select()
    upto, singles = [0], set()  # confirmed: every tag <= upto, and these

    def on_ack(tag: int, multiple: bool) -> None:
        if multiple:
            upto[0] = max(upto[0], tag)
        else:
            singles.add(tag)

    def confirmed() -> int:
        return upto[0] + sum(1 for t in singles if t > upto[0])

    def on_nack(tag: int, multiple: bool) -> None:
        raise RuntimeError(f"broker nacked {tag}")

    ch.events["basic_ack"].add(on_ack)
    ch.events["basic_nack"].add(on_nack)
    for msg, topic in notices:  # all sent before any confirm is awaited
        ch.basic_publish(msg, exchange=args.exchange, routing_key=topic)
    while confirmed() < args.count:
        conn.drain_events(timeout=30)
    seconds = time.perf_counter() - t0
    conn.close()
    print(json.dumps({"messages": confirmed(), "seconds": seconds}))
    return 0


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
    args = ap.parse_args()
    return subscribe(args) if args.cmd == "subscribe" else publish(args)


if __name__ == "__main__":
    sys.exit(main())
