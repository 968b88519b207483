"""Components over MQTT against a real Mosquitto started by the suite: sr_post (v03) and
sr_subscribe over mqtt://, and sr_shovel from RabbitMQ to Mosquitto with a Mosquitto restart
mid-stream (nothing lost), with credentials from credentials.conf."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sarra.broker.base import BrokerUrl, Delivery, QueueSpec
from sarra.broker.mqtt import MqttSession
from sarra.codec import v02
from sarra.config.loader import resolve_queue_name
from sarra.errors import ConfigError
from sarra.notice import Notice
from tests.integration.flowkit import (
    Site,
    make_files,
    md5_tree,
    post,
    running_subscriber,
    unique,
    wait_for,
)
from tests.integration.test_shovel import (
    PREFETCH,
    Running,
    Tap,
    _left,
    _paths,
    _publish,
    _wires,
)
from tests.servers.mosquitto import Mosquitto

pytestmark = pytest.mark.servers


def _site(tmp: Path, rabbitmq: Any, m: Mosquitto) -> Site:
    site = Site(tmp / "site", rabbitmq.port).setup()
    cred = site.config_dir / "credentials.conf"
    cred.write_text(cred.read_text() + m.credentials_line + "\n")
    return site


class MqttTap:
    """A persistent MQTT session subscribed to ``exchange`` (v03.#), drained on demand."""

    def __init__(self, m: Mosquitto, exchange: str) -> None:
        # a plain subscription, as a single-instance consumer of sarra makes: Mosquitto drops
        # what matches a shared one between its restart and the subscriber's return
        self.session = MqttSession(
            BrokerUrl("127.0.0.1", m.port, m.user, m.password, protocol="mqtt"),
            name="tap",
            shared=False,
        )
        self.queue = unique("q_sarra.tap.")
        self.got: list[Delivery] = []
        self.session.connect()
        self.session.declare_queue(QueueSpec(self.queue, ((exchange, "v03.#"),)))
        self.session.consume(self.queue, 1000, self._on)

    def _on(self, d: Delivery) -> None:
        self.got.append(d)
        self.session.ack(d)

    def poll(self, seconds: float) -> int:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if not self.session.connected:
                    self.session.connect()
                self.session.poll(0.05)
            except Exception:  # the broker is restarting: try again
                self.session.close()
                time.sleep(0.2)
        return len(self.got)

    def paths(self) -> list[str]:
        return [json.loads(d.message.body)["relPath"].lstrip("/") for d in self.got]

    def close(self) -> None:
        self.session.close()
        self.session.delete_queue(self.queue)


def test_post_and_subscribe_over_mqtt(
    rabbitmq: Any, mosquitto: Mosquitto, nginx: Any, tmp_path: Path
) -> None:
    tag = unique("mq")
    site = _site(tmp_path, rabbitmq, mosquitto)
    src = nginx.root / tag
    names = ["plain.txt", "with space.txt", "hash#mark.txt", "plus+sign.txt", "a+b/c#d/e.bin"]
    make_files(src, names, size=2000)
    dest = tmp_path / "dest"
    site.write_subscribe(
        f"sub_{tag}",
        f"broker {mosquitto.url()}\nexchange xs_{tag}\ntopic_prefix v03\nsubtopic {tag}.#\n"
        f"post_format v03\nreport_back off\ndirectory {dest}\nmirror on\nstrip 1\n"
        "accept .*\n",
    )
    with running_subscriber(site, f"sub_{tag}"):
        # the persistent session is made when the subscriber starts
        mosquitto.wait_subscribed(resolve_queue_name(site.load("subscribe", f"sub_{tag}")))
        rc = post(
            site, nginx.base_url, nginx.root, [src],
            ("post_broker", mosquitto.url()), ("post_exchange", f"xs_{tag}"),
            ("post_format", "v03"), ("post_topic_prefix", "v03"),
        )  # fmt: skip
        assert rc == 0
        wait_for(lambda: md5_tree(dest) == md5_tree(src), 60, "every file over MQTT")
    assert md5_tree(dest) == md5_tree(src)


def test_an_mqtt_broker_needs_post_format_v03(
    rabbitmq: Any, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    site = _site(tmp_path, rabbitmq, mosquitto)
    with pytest.raises(ConfigError, match="v03 messages only"):
        post(
            site, "http://127.0.0.1/", tmp_path, [tmp_path],
            ("post_broker", mosquitto.url()), ("post_exchange", "x"),
        )  # fmt: skip


def test_a_shovel_from_rabbitmq_to_mosquitto_survives_a_mosquitto_restart(
    rabbitmq: Any, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    tag = unique("")
    site = _site(tmp_path, rabbitmq, mosquitto)
    (site.config_dir / "shovel").mkdir()
    (site.config_dir / "shovel" / f"s_{tag}.conf").write_text(
        f"broker {site.broker}\nexchange xin_{tag}\nsubtopic #\nprefetch {PREFETCH}\n"
        f"expire 10m\nreport_back off\npost_broker {mosquitto.url()}\n"
        f"post_exchange xout_{tag}\npost_topic_prefix v03\npost_format v03\n"
    )
    tap = MqttTap(mosquitto, f"xout_{tag}")
    names = [f"d{i // 100}/f{i:04d}.txt" for i in range(400)]
    wires = _wires(f"xin_{tag}", names)
    try:
        with Running(site, tag) as run:
            _publish(rabbitmq, wires[:200])
            wait_for(lambda: tap.poll(0.1) >= 50, 30, "the first copies")
            tap.session.close()
            # its acks are in (see wait_disconnected): a copy it gets twice is the shovel's
            mosquitto.wait_disconnected(f"{tap.queue}_00")
            mosquitto.stop()  # the destination goes away mid-stream
            _publish(rabbitmq, wires[200:])
            time.sleep(2)
            mosquitto.start()

            def all_copied() -> bool:
                assert not run.errors, f"the shovel stopped: {run.errors[0]!r}"
                return tap.poll(0.2) >= len(names)

            try:
                wait_for(all_copied, 120, "every copy after the restart")
            except AssertionError as e:
                missing = sorted(set(names) - set(tap.paths()))
                raise AssertionError(
                    f"{e}: {len(tap.got)} copies, {len(missing)} missing "
                    f"(first {missing[:5]}); mosquitto log:\n{mosquitto.log_tail(3000)}"
                ) from e
            queue = run.component.queue_name(run.cfg)
        tap.poll(1.0)
        assert _left(rabbitmq, queue) == 0
        copies = tap.paths()
    finally:
        tap.close()
    assert set(copies) == set(names)
    dups = sum(c - 1 for c in Counter(copies).values())
    flagged = Counter(
        (json.loads(d.message.body)["relPath"].lstrip("/"), d.redelivered, d.generation)
        for d in tap.got
    )
    twice = sorted((k, n) for k, n in flagged.items() if Counter(copies)[k[0]] > 1)
    assert dups <= PREFETCH, (dups, twice[:60])


def test_a_shovel_from_mosquitto_to_rabbitmq_posts_v02(
    rabbitmq: Any, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    tag = unique("")
    site = _site(tmp_path, rabbitmq, mosquitto)
    (site.config_dir / "shovel").mkdir()
    (site.config_dir / "shovel" / f"s_{tag}.conf").write_text(
        f"broker {mosquitto.url()}\nexchange xin_{tag}\ntopic_prefix v03\nsubtopic #\n"
        f"report_back off\npost_broker {site.broker}\npost_exchange xout_{tag}\n"
        "post_topic_prefix v02.post\npost_format v02\n"
    )
    tap = Tap(rabbitmq, f"xout_{tag}")
    names = [f"m/f{i:03d}.txt" for i in range(50)]
    pub = MqttSession(
        BrokerUrl("127.0.0.1", mosquitto.port, mosquitto.user, mosquitto.password,
                  protocol="mqtt"),
        name="publisher",
    )  # fmt: skip
    with Running(site, tag) as run:
        mosquitto.wait_subscribed(run.component.queue_name(run.cfg))
        pub.connect()
        try:
            for w in _wires(f"xin_{tag}", names):
                n = v02.decode(w.exchange, w.routing_key, w.body, w.headers, w.content_type)
                assert isinstance(n, Notice)
                pub.publish([v02.encode(n, w.exchange, post_format="v03")])
        finally:
            pub.close()
        wait_for(lambda: tap.count() >= len(names), 30, "every copy on RabbitMQ")
    copies = tap.drain(len(names))
    assert sorted(_paths(copies)) == sorted(names)
    assert {m.content_type for m in copies} == {"text/plain"}
    assert all(m.routing_key == "v02.post.m" for m in copies)


def _sr_shovel(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "sr_shovel"), *args],
        env={**os.environ, **site.env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sr_shovel_daemons_share_an_mqtt_subscription(
    rabbitmq: Any, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """``sr_shovel start`` with two instances reading MQTT: each instance has its own
    persistent session in one shared subscription, every notice is copied once to RabbitMQ."""
    tag = unique("")
    site = _site(tmp_path, rabbitmq, mosquitto)
    (site.config_dir / "shovel").mkdir()
    (site.config_dir / "shovel" / f"d_{tag}.conf").write_text(
        f"broker {mosquitto.url()}\nexchange xin_{tag}\ntopic_prefix v03\nsubtopic #\n"
        f"instances 2\nreport_back off\npost_broker {site.broker}\n"
        f"post_exchange xout_{tag}\npost_topic_prefix v02.post\n"
    )
    tap = Tap(rabbitmq, f"xout_{tag}")
    names = [f"i/f{i:03d}.txt" for i in range(200)]
    declared = _sr_shovel(site, "declare", f"d_{tag}")
    assert declared.returncode == 0, declared.stdout + declared.stderr
    assert "no session is made by declare" in declared.stdout
    started = _sr_shovel(site, "start", f"d_{tag}")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        share = f"$share/q_{mosquitto.user}.sr_shovel.d_{tag}."
        deadline = time.monotonic() + 30
        while mosquitto.log_tail(1 << 20).count(share) < 2:
            assert time.monotonic() < deadline, mosquitto.log_tail()
            time.sleep(0.1)
        pub = MqttSession(
            BrokerUrl("127.0.0.1", mosquitto.port, mosquitto.user, mosquitto.password,
                      protocol="mqtt"),
            name="publisher",
        )  # fmt: skip
        pub.connect()
        try:
            for w in _wires(f"xin_{tag}", names):
                n = v02.decode(w.exchange, w.routing_key, w.body, w.headers, w.content_type)
                assert isinstance(n, Notice)
                pub.publish([v02.encode(n, w.exchange, post_format="v03")])
        finally:
            pub.close()
        wait_for(lambda: tap.count() >= len(names), 60, "every copy")
        status = _sr_shovel(site, "status", f"d_{tag}")
        assert "running" in status.stdout + status.stderr
    finally:
        stopped = _sr_shovel(site, "stop", f"d_{tag}")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    copies = tap.drain(len(names))
    assert sorted(_paths(copies)) == sorted(names)  # each once
    logs = sorted(site.state_dir.rglob(f"*shovel*d_{tag}*.log"))
    copied = [re.search(r"copied (\d+)", p.read_text()) for p in logs]
    counts = [int(m.group(1)) for m in copied if m]
    assert len(counts) == 2 and all(c > 0 for c in counts) and sum(counts) == len(names), (
        logs,
        counts,
    )


def test_what_is_posted_while_an_mqtt_subscriber_is_stopped_arrives_when_it_restarts(
    rabbitmq: Any, mosquitto: Mosquitto, nginx: Any, tmp_path: Path
) -> None:
    tag = unique("mqs")
    site = _site(tmp_path, rabbitmq, mosquitto)
    src = nginx.root / tag
    make_files(src, ["one.txt", "two.txt"], size=1000)
    dest = tmp_path / "dest"
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"broker {mosquitto.url()}\nexchange xs_{tag}\ntopic_prefix v03\nsubtopic {tag}.#\n"
        f"post_format v03\nreport_back off\ndirectory {dest}\nmirror on\nstrip 1\n"
        "accept .*\n",
    )
    with running_subscriber(site, name):  # its persistent session is made, then it stops
        mosquitto.wait_subscribed(resolve_queue_name(site.load("subscribe", name)))
    rc = post(
        site, nginx.base_url, nginx.root, [src],
        ("post_broker", mosquitto.url()), ("post_exchange", f"xs_{tag}"),
        ("post_format", "v03"), ("post_topic_prefix", "v03"),
    )  # fmt: skip
    assert rc == 0
    with running_subscriber(site, name):
        wait_for(lambda: md5_tree(dest) == md5_tree(src), 30, "what was posted while stopped")
    assert md5_tree(dest) == md5_tree(src)
