"""sr_shovel between two real RabbitMQ nodes: the session's node is the source, a node of this
module's own the destination, stopped and started while notices flow.

Copies are counted on a durable queue of the destination, bound before the run: what the
destination confirmed survives its restart. Every notice published upstream must arrive (by
path); duplicates are allowed only within one prefetch window per connection loss (at least
once, nothing more).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sarra.broker.base import Delivery, QueueSpec
from sarra.broker.session import BrokerSession
from sarra.codec import v02
from sarra.codec.timestamps import now_timestamp
from sarra.components.shovel import ShovelComponent
from sarra.notice import Checksum, Notice, PartSpec, WireMessage
from tests.integration.flowkit import Site, site_env, unique, wait_for
from tests.servers.rabbitmq import RabbitNode, start_rabbitmq

pytestmark = pytest.mark.servers

PREFETCH = 20


@pytest.fixture(scope="module")
def dest() -> Iterator[RabbitNode]:
    """The destination node: its app is stopped and started by the tests."""
    try:
        n = start_rabbitmq()
    except RuntimeError as e:
        pytest.fail(f"the shovel tests need a second real node: {e}", pytrace=False)
    try:
        yield n
    finally:
        n.stop()
        shutil.rmtree(n.base_dir, ignore_errors=True)


class Tap:
    """A durable queue on ``node`` bound to ``exchange``; drained to the copies' paths."""

    def __init__(self, node: RabbitNode, exchange: str) -> None:
        self.url = node.broker_url()
        self.queue = f"q_guest.shoveltap.{secrets.token_hex(4)}"
        s = self._session()
        try:
            s.declare_exchange(exchange)
            s.declare_queue(QueueSpec(self.queue, ((exchange, "#"),), durable=True))
        finally:
            s.close()

    def _session(self) -> BrokerSession:
        s = BrokerSession(self.url, name="shovel-tap")
        s.connect()
        return s

    def count(self) -> int:
        try:
            s = self._session()
        except Exception:  # the node is down: nothing to count yet
            return -1
        try:
            return s.queue_counts(self.queue)[0]
        finally:
            s.close()

    def drain(self, expected: int) -> list[WireMessage]:
        got: list[WireMessage] = []
        s = self._session()

        def on(d: Delivery) -> None:
            got.append(d.message)
            s.ack(d)

        try:
            s.consume(self.queue, 1000, on)
            deadline = time.monotonic() + 30
            while len(got) < expected and time.monotonic() < deadline:
                s.poll(0.2)
            s.poll(0.5)
            s.cancel(self.queue)
            s.delete_queue(self.queue)
        finally:
            s.close()
        return got


def _wires(exchange: str, names: list[str]) -> list[WireMessage]:
    out = []
    for name in names:
        n = v02.make_notice(
            exchange=exchange,
            topic_prefix="v02.post",
            pubtime=now_timestamp(),
            base_url="https://origin.example.com/data",
            path=name,
            checksum=Checksum("d", hashlib.md5(name.encode()).hexdigest()),
            parts=PartSpec("1", 10, 1, 0, 0),
            headers={"source": "alice"},
        )
        out.append(v02.to_wire(n, exchange=exchange))
    return out


def _publish(node: RabbitNode, wires: list[WireMessage]) -> None:
    s = BrokerSession(node.broker_url(), name="shovel-test-publisher")
    s.connect()
    try:
        s.declare_exchange(wires[0].exchange)
        for i in range(0, len(wires), 50):
            s.publish(wires[i : i + 50])
    finally:
        s.close()


def _site(tmp: Path, src: RabbitNode, dst: RabbitNode, tag: str, extra: str = "") -> Site:
    site = Site(tmp / "site", src.port).setup()
    (site.config_dir / "credentials.conf").write_text(
        f"amqp://guest:guest@127.0.0.1:{src.port}/\namqp://guest:guest@127.0.0.1:{dst.port}/\n"
    )
    (site.config_dir / "shovel").mkdir()
    (site.config_dir / "shovel" / f"s_{tag}.conf").write_text(
        f"broker amqp://guest@127.0.0.1:{src.port}/\nexchange xin_{tag}\nsubtopic #\n"
        f"prefetch {PREFETCH}\nexpire 10m\nreport_back off\n"
        f"post_broker amqp://guest@127.0.0.1:{dst.port}/\npost_exchange xout_{tag}\n"
        "post_topic_prefix v03\npost_format v03\n" + extra
    )
    return site


class Running:
    def __init__(self, site: Site, tag: str) -> None:
        self.site, self.tag = site, tag
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def __enter__(self) -> Running:
        self._env = site_env(self.site)
        self._env.__enter__()
        self.cfg = self.site.load("shovel", f"s_{self.tag}")
        self.component = ShovelComponent()
        self.component.declare(self.cfg)
        self.thread = threading.Thread(target=self._run, daemon=True, name="shovel")
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            self.component.run(self.cfg, 0, self.stop)
        except BaseException as e:
            self.errors.append(e)

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(60)
        self._env.__exit__(*exc)
        assert not self.thread.is_alive(), "the shovel did not stop within 60 s"
        if self.errors:
            raise self.errors[0]


def _left(node: RabbitNode, queue: str) -> int:
    """Notices in the shovel's input queue once it stopped: what it did not ack is back."""
    s = BrokerSession(node.broker_url(), name="shovel-test-check")
    s.connect()
    try:
        return s.queue_counts(queue)[0]
    finally:
        s.close()


def _paths(copies: list[WireMessage]) -> list[str]:
    out = []
    for m in copies:
        n = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        assert isinstance(n, Notice)
        out.append(n.path)
    return out


def test_copies_cross_brokers_as_v03_and_the_input_is_acked(
    rabbitmq: RabbitNode, dest: RabbitNode, tmp_path: Path
) -> None:
    tag = unique("")
    tap = Tap(dest, f"xout_{tag}")
    names = [f"obs/site{i % 3}/f{i:03d}.txt" for i in range(30)]
    with Running(_site(tmp_path, rabbitmq, dest, tag), tag) as run:
        _publish(rabbitmq, _wires(f"xin_{tag}", names))
        wait_for(lambda: tap.count() >= len(names), 30, "30 copies on the destination")
        queue = run.component.queue_name(run.cfg)
    assert _left(rabbitmq, queue) == 0
    copies = tap.drain(len(names))
    assert sorted(_paths(copies)) == sorted(names)
    m = copies[0]
    assert m.content_type == "application/json"
    assert m.routing_key.startswith("v03.obs.site")
    assert json.loads(m.body)["source"] == "alice"


def test_a_destination_restart_mid_stream_loses_nothing(
    rabbitmq: RabbitNode, dest: RabbitNode, tmp_path: Path
) -> None:
    tag = unique("")
    tap = Tap(dest, f"xout_{tag}")
    names = [f"d{i // 100}/f{i:04d}.txt" for i in range(600)]
    wires = _wires(f"xin_{tag}", names)
    losses = 0
    with Running(_site(tmp_path, rabbitmq, dest, tag), tag) as run:
        _publish(rabbitmq, wires[:200])
        wait_for(lambda: tap.count() >= 50, 30, "the first copies")
        dest.stop_app()  # the destination goes away mid-stream
        losses += 1
        _publish(rabbitmq, wires[200:400])  # the source keeps receiving meanwhile
        time.sleep(3)
        dest.start_app()
        _publish(rabbitmq, wires[400:])
        wait_for(lambda: tap.count() >= len(names), 120, "every copy after the restart")
        queue = run.component.queue_name(run.cfg)
    assert _left(rabbitmq, queue) == 0  # every input acked (an unacked one is requeued)
    copies = _paths(tap.drain(len(names)))
    assert set(copies) == set(names)  # nothing lost
    dups = sum(c - 1 for c in Counter(copies).values())
    # at least once: only what was in flight (one prefetch window) at a loss comes twice
    assert dups <= PREFETCH * losses, dups


def test_a_source_connection_loss_mid_stream_loses_nothing(
    rabbitmq: RabbitNode, dest: RabbitNode, tmp_path: Path
) -> None:
    tag = unique("")
    tap = Tap(dest, f"xout_{tag}")
    names = [f"s/f{i:04d}.txt" for i in range(400)]
    wires = _wires(f"xin_{tag}", names)
    with Running(_site(tmp_path, rabbitmq, dest, tag), tag) as run:
        _publish(rabbitmq, wires[:200])
        wait_for(lambda: tap.count() >= 50, 30, "the first copies")
        # every connection of the source node dropped, as by a restart of it
        rabbitmq.ctl("close_all_connections", "test: the source goes away")
        _publish(rabbitmq, wires[200:])
        wait_for(lambda: tap.count() >= len(names), 120, "every copy after the loss")
        queue = run.component.queue_name(run.cfg)
    assert _left(rabbitmq, queue) == 0  # every input acked (an unacked one is requeued)
    copies = _paths(tap.drain(len(names)))
    assert set(copies) == set(names)
    dups = sum(c - 1 for c in Counter(copies).values())
    assert dups <= PREFETCH, dups
