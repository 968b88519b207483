"""The peer helpers drive the real sr2/sr3 against the suite's RabbitMQ and nginx."""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest

from bench.peers import run_measured
from tests.interop.peers import (
    SR2_POSTED_LINE,
    SR3_POSTED_LINE,
    PeerError,
    Sr2Subscriber,
    Sr3Subscriber,
    count_lines,
    mgmt_bindings,
    peer_bin,
    sr2_post,
    sr3_post,
)

pytestmark = [pytest.mark.servers, pytest.mark.interop, pytest.mark.timeout(120)]


@pytest.fixture
def channel(rabbitmq: Any) -> Iterator[Any]:
    conn = amqp.Connection(f"{rabbitmq.host}:{rabbitmq.port}", userid="guest", password="guest")
    conn.connect()
    try:
        yield conn.channel()
    finally:
        conn.close()


def capture_queue(channel: Any, exchange: str, key: str) -> str:
    """Declare ``exchange`` as the peers do (topic, durable) and a queue bound with ``key``."""
    channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
    queue = f"q_guest.capture.{secrets.token_hex(4)}"
    channel.queue_declare(queue, durable=False, auto_delete=True)
    channel.queue_bind(queue, exchange, key)
    return queue


def get_messages(channel: Any, queue: str, count: int, timeout: float = 30.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        msg = channel.basic_get(queue, no_ack=True)
        if msg is None:
            time.sleep(0.05)
        else:
            got.append(msg)
    assert len(got) == count, f"got {len(got)} of {count} messages"
    return got


def body_text(msg: Any) -> str:
    """py-amqp hands text/plain bodies over as str, others as bytes."""
    body = msg.body
    return body if isinstance(body, str) else bytes(body).decode()


def test_sr2_post_announces_a_file_as_a_v02_message(
    rabbitmq: Any, nginx: Any, channel: Any, amqp_names: Any, tmp_path: Path
) -> None:
    tag = secrets.token_hex(3)
    src = nginx.root / tag / "a" / "hello.txt"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"hello world\n")
    queue = capture_queue(channel, amqp_names.x(), "v02.post.#")

    proc = sr2_post(
        tmp_path, rabbitmq.url(), nginx.base_url, nginx.root, [src], exchange=amqp_names.x()
    )

    assert count_lines(proc.stdout + proc.stderr, SR2_POSTED_LINE) == 1
    (msg,) = get_messages(channel, queue, 1)
    assert msg.delivery_info["exchange"] == amqp_names.x()
    assert msg.delivery_info["routing_key"] == f"v02.post.{tag}.a"
    assert msg.properties["content_type"] == "text/plain"
    headers = dict(msg.properties["application_headers"])
    assert headers["sum"] == "d,6f5902ac237024bdd0c176cb93063dc4"
    assert headers["parts"] == "1,12,1,0,0"
    assert headers["mode"] == "644"
    assert len(headers["mtime"]) >= 14 and headers["mtime"][:14].isdigit()
    pubtime, base_url, rel_path = body_text(msg).split(" ")
    assert pubtime[:14].isdigit()
    assert base_url == nginx.base_url
    assert rel_path == f"/{tag}/a/hello.txt"
    assert (tmp_path / ".config" / "sarra" / "credentials.conf").stat().st_mode & 0o777 == 0o600


def test_sr3_post_announces_v02_when_told_post_format_v02(
    rabbitmq: Any, nginx: Any, channel: Any, amqp_names: Any, tmp_path: Path
) -> None:
    tag = secrets.token_hex(3)
    src = nginx.root / tag / "hello.txt"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"hello world\n")
    queue = capture_queue(channel, amqp_names.x(), "#")

    proc = sr3_post(
        tmp_path, rabbitmq.url(), nginx.base_url, nginx.root, [src],
        exchange=amqp_names.x(), sum="d",
    )  # fmt: skip

    assert count_lines(proc.stdout + proc.stderr, SR3_POSTED_LINE) == 1
    (msg,) = get_messages(channel, queue, 1)
    assert msg.delivery_info["routing_key"] == f"v02.post.{tag}"
    assert msg.properties["content_type"] == "text/plain"
    headers = dict(msg.properties["application_headers"])
    assert headers["sum"] == "d,6f5902ac237024bdd0c176cb93063dc4"
    assert headers["parts"] == "1,12,1,0,0"
    assert headers["source"] == "guest"
    _, base_url, rel_path = body_text(msg).split(" ")
    assert (base_url, rel_path) == (nginx.base_url, f"{tag}/hello.txt")  # sr3: no leading /


def test_sr2_subscribe_downloads_what_sr2_post_announced_and_reports_it(
    rabbitmq: Any, nginx: Any, channel: Any, amqp_names: Any, tmp_path: Path
) -> None:
    tag = secrets.token_hex(3)
    sources = []
    for i, size in enumerate((1, 70_000)):
        path = nginx.root / tag / "d" / f"f{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        sources.append(path)
    capture_queue(channel, amqp_names.x(), "#")  # the exchange must exist before binding
    reports = capture_queue(channel, "xs_guest", f"v02.report.{tag}.#")
    dest = tmp_path / "dest"
    sub = Sr2Subscriber(
        tmp_path / "sub", rabbitmq.url(), amqp_names.x(), dest,
        bindings=mgmt_bindings(rabbitmq.mgmt_get),
    )  # fmt: skip
    with sub:
        sr2_post(
            tmp_path / "post", rabbitmq.url(), nginx.base_url, nginx.root, sources,
            exchange=amqp_names.x(),
        )  # fmt: skip
        assert sub.wait_downloaded(2, timeout=45) == 2
        got = get_messages(channel, reports, 2)
    for src in sources:
        copy = dest / tag / "d" / src.name
        assert hashlib.md5(copy.read_bytes()).digest() == hashlib.md5(src.read_bytes()).digest()
    fields = sorted(body_text(m).split(" ")[2:4] for m in got)
    assert fields == [[f"/{tag}/d/f0.bin", "201"], [f"/{tag}/d/f1.bin", "201"]]
    assert {dict(m.properties["application_headers"])["message"] for m in got} == {"Downloaded"}
    assert sub.process is not None and sub.process.poll() is not None  # stopped


def test_sr3_subscribe_downloads_v02_announced_by_sr2_and_by_sr3(
    rabbitmq: Any, nginx: Any, channel: Any, amqp_names: Any, tmp_path: Path
) -> None:
    tag = secrets.token_hex(3)
    by2, by3 = nginx.root / tag / "by2.bin", nginx.root / tag / "by3.bin"
    by2.parent.mkdir(parents=True)
    by2.write_bytes(os.urandom(50_000))
    by3.write_bytes(os.urandom(60_000))
    capture_queue(channel, amqp_names.x(), "#")
    dest = tmp_path / "dest"
    url = rabbitmq.url()
    with Sr3Subscriber(
        tmp_path / "sub", url, amqp_names.x(), dest, bindings=mgmt_bindings(rabbitmq.mgmt_get)
    ) as sub:
        sr2_post(tmp_path / "p2", url, nginx.base_url, nginx.root, [by2], exchange=amqp_names.x())
        sr3_post(tmp_path / "p3", url, nginx.base_url, nginx.root, [by3], exchange=amqp_names.x())
        assert sub.wait_downloaded(2, timeout=45) == 2
    assert (dest / tag / "by2.bin").read_bytes() == by2.read_bytes()
    assert (dest / tag / "by3.bin").read_bytes() == by3.read_bytes()


def test_run_measured_sees_the_peak_memory_of_a_child_process(tmp_path: Path) -> None:
    # the grandchild holds 60 MiB for a moment; the parent stays small
    code = (
        "import subprocess, sys; subprocess.run([sys.executable, '-c', "
        '\'import time; b = bytearray(60 * 2**20); b[::4096] = b"x" * len(b[::4096]); '
        "time.sleep(0.5)'], check=True)"
    )
    seconds, peak_kib = run_measured([sys.executable, "-c", code], dict(os.environ))
    assert seconds >= 0.5
    assert peak_kib >= 60 * 1024


def test_a_missing_peer_is_reported_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SARRA_PEERS_DIR", str(tmp_path))
    with pytest.raises(PeerError, match="scripts/install-peers"):
        peer_bin("sr_subscribe")
