"""bench/floor.py, the bench's reference loops, against a real RabbitMQ and nginx.

The floor is only a fair reference if it does the durable work it claims: every file checked
against its sum and complete under its final name, an ack only after the batch is synced, and
a failure that stops it without acking anything it did not finish. The ceiling must publish
every notice it counts. No timing is asserted.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import amqp
import pytest

ROOT = Path(__file__).resolve().parents[2]
FLOOR = [sys.executable, str(ROOT / "bench" / "floor.py")]


@pytest.fixture
def channel(rabbitmq) -> Iterator[amqp.Channel]:  # type: ignore[no-untyped-def]
    conn = amqp.Connection(host=f"127.0.0.1:{rabbitmq.port}", userid="guest", password="guest")
    conn.connect()
    try:
        yield conn.channel()
    finally:
        conn.close()


def setup_queue(ch: amqp.Channel, binding: str = "v02.post.#") -> tuple[str, str]:
    tag = secrets.token_hex(4)
    exchange, queue = f"x_floor_{tag}", f"q_guest.floor.{tag}"
    ch.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
    ch.queue_declare(queue, durable=True, auto_delete=False)
    ch.queue_bind(queue, exchange, binding)
    return exchange, queue


def announce(ch: amqp.Channel, exchange: str, base_url: str, rel: str, sumval: str) -> None:
    body = f"20261207000000.000 {base_url}/ {rel}"
    headers = {"sum": f"d,{sumval}", "parts": "1,2048,1,0,0"}
    topic = "v02.post." + rel.rsplit("/", 1)[0].replace("/", ".")
    ch.basic_publish(amqp.Message(body, application_headers=headers), exchange, topic)


def depth(ch: amqp.Channel, queue: str, want: int) -> int:
    """The queue's depth once it equals ``want`` (unacked messages return when their
    consumer's connection closes), or whatever it is after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        n = int(ch.queue_declare(queue, passive=True).message_count)
        if n == want or time.monotonic() > deadline:
            return n
        time.sleep(0.1)


def make_files(root: Path, count: int) -> list[tuple[str, bytes]]:
    rel_dir = f"floor_{secrets.token_hex(4)}/sub"
    (root / rel_dir).mkdir(parents=True)
    out = []
    for i in range(count):
        data = secrets.token_bytes(2048)
        (root / rel_dir / f"f{i}.bin").write_bytes(data)
        out.append((f"{rel_dir}/f{i}.bin", data))
    return out


def run_floor(port: int, queue: str, dest: Path, count: int, batch: int = 100):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [*FLOOR, "subscribe", "--port", str(port), "--queue", queue, "--dest", str(dest),
         "--count", str(count), "--batch", str(batch)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_floor_downloads_checks_and_acks_every_file(rabbitmq, nginx, channel, tmp_path) -> None:  # type: ignore[no-untyped-def]
    exchange, queue = setup_queue(channel)
    files = make_files(nginx.root, 7)
    for rel, data in files:
        announce(channel, exchange, nginx.base_url, rel, hashlib.md5(data).hexdigest())
    assert depth(channel, queue, 7) == 7
    dest = tmp_path / "dest"
    done = run_floor(rabbitmq.port, queue, dest, 7, batch=3)  # two full batches and a rest
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["files"] == 7 and summary["last"] >= summary["first"] > 0
    for rel, data in files:
        assert (dest / rel).read_bytes() == data
    assert sorted(p.name for p in (dest / files[0][0]).parent.iterdir()) == [
        f"f{i}.bin" for i in range(7)
    ]  # no temporary left behind
    assert depth(channel, queue, 0) == 0  # every notice acked


def test_floor_stops_on_a_wrong_sum_without_acking_the_batch(  # type: ignore[no-untyped-def]
    rabbitmq, nginx, channel, tmp_path
) -> None:
    exchange, queue = setup_queue(channel)
    files = make_files(nginx.root, 3)
    for i, (rel, data) in enumerate(files):
        good = hashlib.md5(data).hexdigest()
        announce(channel, exchange, nginx.base_url, rel, "0" * 32 if i == 1 else good)
    assert depth(channel, queue, 3) == 3
    dest = tmp_path / "dest"
    done = run_floor(rabbitmq.port, queue, dest, 3)
    assert done.returncode != 0
    assert "does not match" in done.stderr
    assert not (dest / files[1][0]).exists()  # never under its final name
    # the first file was written but its batch was never synced, so nothing was acked
    assert depth(channel, queue, 3) == 3


def test_ceiling_publishes_every_notice_it_counts(rabbitmq, nginx, channel) -> None:  # type: ignore[no-untyped-def]
    exchange, queue = setup_queue(channel, "#")
    done = subprocess.run(
        [*FLOOR, "publish", "--port", str(rabbitmq.port), "--exchange", exchange,
         "--base-url", nginx.base_url, "--count", "250"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["messages"] == 250 and summary["seconds"] > 0
    assert depth(channel, queue, 250) == 250
    msg = channel.basic_get(queue, no_ack=True)
    body = msg.body.decode() if isinstance(msg.body, bytes) else msg.body
    # as our sr_post emits them (v02 3.3, 3.4): baseUrl without its last /, relPath with a first /
    _, base_url, rel_path = body.split()
    assert base_url == nginx.base_url.rstrip("/")
    assert rel_path.startswith("/bench/d00/f") and rel_path.endswith(".bin")
    assert msg.delivery_info["routing_key"] == "v02.post.bench.d00"
