"""sr_winnow against a real broker: each file passes once, even across a SIGKILL."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from sarra.broker.base import BrokerUrl, Delivery, QueueSpec
from sarra.broker.session import BrokerSession
from sarra.codec import v02
from sarra.codec.timestamps import now_timestamp
from sarra.components.winnow import WinnowComponent
from sarra.errors import BrokerError
from sarra.notice import Checksum, Notice, PartSpec, WireMessage
from tests.integration.flowkit import Site, site_env, unique, wait_for

SR_WINNOW = str(Path(sys.executable).with_name("sr_winnow"))


@pytest.fixture
def site(tmp_path: Path, rabbitmq) -> Site:  # type: ignore[no-untyped-def]
    return Site(tmp_path / "site", rabbitmq.port).setup()


def _write_winnow(site: Site, name: str, body: str) -> None:
    d = site.config_dir / "winnow"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.conf").write_text(f"broker {site.broker}\n" + body)


def _notices(exchange: str, base_url: str, count: int) -> list[WireMessage]:
    out = []
    for i in range(count):
        n = v02.make_notice(
            exchange=exchange,
            topic_prefix="v02.post",
            pubtime=now_timestamp(),
            base_url=base_url,
            path=f"data/d{i % 10}/f{i:05d}.txt",
            checksum=Checksum("d", hashlib.md5(f"content {i}".encode()).hexdigest()),
            parts=PartSpec("1", 100 + i, 1, 0, 0),
            headers={"to_clusters": "ALL", "x_custom": f"kept {i}"},
        )
        out.append(v02.to_wire(n))
    return out


class Downstream:
    """A queue bound to the winnow's post exchange; drains and decodes everything on it."""

    def __init__(self, url: BrokerUrl, exchange: str) -> None:
        self.session = BrokerSession(url, name="downstream")
        self.session.connect()
        self.session.declare_exchange(exchange)
        self.queue = f"q_guest.count.{unique()}"
        self.session.declare_queue(
            QueueSpec(self.queue, ((exchange, "#"),), durable=False, auto_delete=False)
        )

    def ready(self) -> int:
        return self.session.queue_counts(self.queue)[0]

    def drain(self) -> list[Notice]:
        got: list[Delivery] = []

        def take(d: Delivery) -> None:
            got.append(d)
            self.session.ack(d)

        self.session.consume(self.queue, 1000, take)
        idle = 0
        while idle < 10:
            idle = 0 if self.session.poll(0.1) else idle + 1
        out = []
        for d in got:
            m = d.message
            decoded = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
            assert isinstance(decoded, Notice)
            out.append(decoded)
        return out

    def close(self) -> None:
        self.session.delete_queue(self.queue)
        self.session.close()


def _start(site: Site, name: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [SR_WINNOW, "foreground", name],
            env={**os.environ, **site.env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_each_file_passes_exactly_once_when_the_winnow_is_killed_midway(
    site: Site, tmp_path: Path
) -> None:
    tag = unique()
    xin, xout = f"xwinnow_{tag}", f"xwout_{tag}"
    _write_winnow(site, "w", f"exchange {xin}\npost_exchange {xout}\nexpire 10m\nprefetch 50\n")
    downstream = Downstream(site.broker_url(), xout)
    with site_env(site):
        WinnowComponent().declare(site.load("winnow", "w"))
    # two redundant sources post the same 2,000 files, interleaved in chunks
    a = _notices(xin, "http://a.example", 2000)
    b = _notices(xin, "sftp://b.example/~", 2000)
    session = BrokerSession(site.broker_url(), name="sources")
    session.connect()
    for start in range(0, 2000, 100):
        session.publish(a[start : start + 100])
        session.publish(b[start : start + 100])
    session.close()

    log = tmp_path / "winnow.log"
    first = _start(site, "w", log)
    try:
        wait_for(lambda: downstream.ready() >= 300, 60, "the first forwarded posts")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        passed_before_kill = downstream.ready()
        assert passed_before_kill < 2000, "the kill came too late to test anything"
        second = _start(site, "w", log)
        try:
            wait_for(lambda: downstream.ready() >= 2000, 60, "all files downstream")
            with site_env(site):
                cfg = site.load("winnow", "w")
                component = WinnowComponent()
                assert str(component.status(cfg).queue).startswith("q_guest.sr_winnow.w")
                wait_for(lambda: component.status(cfg).backlog == 0, 30, "the input drained")
            time.sleep(1.0)  # let any straggler show up before counting
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    notices = downstream.drain()
    downstream.close()
    counts = Counter(n.path for n in notices)
    assert len(counts) == 2000, log.read_text()[-3000:]
    assert [p for p, c in counts.items() if c != 1] == []
    # the message is forwarded unchanged but for the exchange: unknown headers kept
    sample = next(n for n in notices if n.path == "data/d7/f00007.txt")
    assert sample.header("x_custom") == "kept 7"
    assert sample.exchange == xout
    assert "journal: " in log.read_text()


def test_the_cache_survives_a_restart_and_a_duplicate_is_not_forwarded_again(
    site: Site, tmp_path: Path
) -> None:
    tag = unique()
    xin, xout = f"xwinnow_{tag}", f"xwout_{tag}"
    _write_winnow(site, "r", f"exchange {xin}\npost_exchange {xout}\nexpire 10m\n")
    downstream = Downstream(site.broker_url(), xout)
    component = WinnowComponent()
    with site_env(site):
        cfg = site.load("winnow", "r")
        component.declare(cfg)
        for source in ("http://a.example", "http://b.example"):
            publish = BrokerSession(site.broker_url(), name="source")
            publish.connect()
            publish.publish(_notices(xin, source, 20))
            publish.close()
            stop = threading.Event()
            runner = threading.Thread(target=component.run, args=(cfg, 0, stop), daemon=True)
            runner.start()
            wait_for(lambda: component.status(cfg).backlog == 0, 30, "the input drained")
            time.sleep(0.5)
            stop.set()
            runner.join(30)
            assert not runner.is_alive()
        component.cleanup(cfg)
    probe = BrokerSession(site.broker_url(), name="probe")
    probe.connect()
    with pytest.raises(BrokerError):  # the journal queue went with the rest
        probe.queue_counts("q_guest.sr_winnow.r.journal00")
    probe.close()
    notices = downstream.drain()
    downstream.close()
    assert sorted(n.path for n in notices) == sorted({n.path for n in notices})
    assert len(notices) == 20
    assert {n.base_url for n in notices} == {"http://a.example"}


def test_a_post_published_just_before_a_crash_is_known_after_restart_through_the_journal(
    site: Site, tmp_path: Path
) -> None:
    """The window between the broker accepting a forwarded post and the cache recording it."""
    from sarra.flow.winnow import WinnowCache, Winnower, replay_journal
    from sarra.flow.work import WorkItem

    xout = f"xwout_{unique()}"
    journal = QueueSpec(f"q_guest.journal.{unique()}", ((xout, "#"),), durable=True)
    session = BrokerSession(site.broker_url(), name="post")
    session.connect()
    session.declare_exchange(xout)
    cache = WinnowCache(tmp_path / "cache", ttl=1200)
    assert replay_journal(session, journal, cache) == 0
    notice = v02.decode(*_fields(_notices("xwinnow", "http://a.example", 1)[0]))
    assert isinstance(notice, Notice)

    class Crash(Exception):
        pass

    def crash(_notice: Notice) -> None:
        raise Crash  # killed after the publish was confirmed, before the cache write

    winnower = Winnower(cache, session, xout)
    item = WorkItem(notice=notice)
    assert winnower.select(item) is False and item.code == 201
    cache.record = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        winnower.before_settle()
    session.close()
    cache.close()  # what the killed process had recorded: not this post

    restarted = WinnowCache(tmp_path / "cache", ttl=1200)
    assert not restarted.seen(notice)  # the cache alone would let the redelivery through
    session = BrokerSession(site.broker_url(), name="post")
    session.connect()
    assert replay_journal(session, journal, restarted) == 1
    assert restarted.seen(notice)
    again = WorkItem(notice=notice)
    assert Winnower(restarted, session, xout).select(again) is False
    assert again.code == 304
    session.delete_queue(journal.name)
    session.close()
    restarted.close()


def _fields(m: WireMessage) -> tuple[str, str, bytes, object, str]:
    return (m.exchange, m.routing_key, m.body, m.headers, m.content_type)


def test_an_on_message_plugin_keeps_the_notices_it_drops_from_being_forwarded(
    site: Site, tmp_path: Path
) -> None:
    tag = unique()
    xin, xout = f"xwinnow_{tag}", f"xwout_{tag}"
    plugin = tmp_path / "odd_only.py"
    plugin.write_text(
        "def on_message(work):\n"
        "    return int(work.notice.path[-9:-4]) % 2 == 1  # f00001.txt ... forwarded\n"
    )
    _write_winnow(
        site, "p", f"exchange {xin}\npost_exchange {xout}\nexpire 10m\non_message {plugin}\n"
    )
    downstream = Downstream(site.broker_url(), xout)
    component = WinnowComponent()
    with site_env(site):
        cfg = site.load("winnow", "p")
        component.declare(cfg)
        publish = BrokerSession(site.broker_url(), name="source")
        publish.connect()
        publish.publish(_notices(xin, "http://a.example", 10))
        publish.close()
        stop = threading.Event()
        runner = threading.Thread(target=component.run, args=(cfg, 0, stop), daemon=True)
        runner.start()
        wait_for(lambda: component.status(cfg).backlog == 0, 30, "the input drained")
        time.sleep(0.5)
        stop.set()
        runner.join(30)
        assert not runner.is_alive()
        component.cleanup(cfg)
    notices = downstream.drain()
    downstream.close()
    assert sorted(n.path.rsplit("/", 1)[-1] for n in notices) == [
        f"f{i:05d}.txt" for i in (1, 3, 5, 7, 9)
    ]
