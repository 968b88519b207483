"""Two pump "nodes" (separate state, and for subscribers separate destination directories) on
one queue with the shared duplicate store (``nodupe_driver redis``): real RabbitMQ, real Redis
(tests/servers/redis.py), real nginx. The same files announced several times by different
posters pass (are forwarded, are downloaded) exactly once across the nodes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sarra.broker.session import BrokerSession
from sarra.codec import v02
from sarra.codec.timestamps import now_timestamp
from sarra.components.subscribe import SubscribeComponent
from sarra.components.winnow import WinnowComponent
from sarra.notice import Checksum, PartSpec, WireMessage
from tests.integration.flowkit import ReportTap, Site, make_files, site_env, unique, wait_for
from tests.integration.test_winnow import Downstream
from tests.servers.redis import Redis

BIN = Path(sys.executable).parent
FILES = 300
POSTERS = ("http://a.example", "sftp://b.example/~", "ftp://c.example")


# each winnow test names its configuration after its tag: the journal queue
# (q_guest.sr_winnow.<config>.journal00) is named after the configuration, and another test's
# journal replayed at start would count in this one's store


def _node(tmp_path: Path, name: str, rabbitmq, redis_server: Redis) -> Site:  # type: ignore[no-untyped-def]
    site = Site(tmp_path / name, rabbitmq.port).setup()
    creds = site.config_dir / "credentials.conf"
    creds.write_text(creds.read_text() + redis_server.credentials_line() + "\n")
    return site


def _start(site: Site, command: str, component: str, name: str) -> subprocess.Popen[bytes]:
    log = open(site.root / f"{component}.log", "ab")  # noqa: SIM115 - the child writes it
    try:
        return subprocess.Popen(
            [str(BIN / command), "foreground", name],
            env={**os.environ, **site.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def _stop(procs: list[subprocess.Popen[bytes]]) -> list[int | None]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(30))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait(10))
    return codes


def _consumers(site: Site, queue: str) -> int:
    probe = BrokerSession(site.broker_url(), name="probe")
    probe.connect()
    try:
        return probe.queue_counts(queue)[1]
    finally:
        probe.close()


def _announce(site: Site, notices: list[list[WireMessage]]) -> None:
    """Each poster's copies, interleaved in chunks (the same files, several times)."""
    session = BrokerSession(site.broker_url(), name="posters")
    session.connect()
    for start in range(0, FILES, 25):
        for copies in notices:
            session.publish(copies[start : start + 25])
    session.close()


def test_two_winnow_nodes_on_one_queue_pass_each_file_exactly_once(  # type: ignore[no-untyped-def]
    tmp_path: Path, rabbitmq, redis_server: Redis
) -> None:
    tag = unique()
    xin, xout, queue = f"xwinnow_{tag}", f"xwout_{tag}", f"q_guest.sr_winnow.nodes.{tag}"
    body = (
        f"exchange {xin}\npost_exchange {xout}\nqueue_name {queue}\nexpire 10m\nprefetch 10\n"
        f"nodupe_driver redis\nnodupe_redis_serverurl {redis_server.url()}\n"
        f"nodupe_redis_keybase winnow.{tag}\n"
    )
    nodes = [_node(tmp_path, n, rabbitmq, redis_server) for n in ("node_a", "node_b")]
    for site in nodes:
        (site.config_dir / "winnow").mkdir(parents=True)
        (site.config_dir / "winnow" / f"{tag}.conf").write_text(f"broker {site.broker}\n{body}")
    downstream = Downstream(nodes[0].broker_url(), xout)
    with site_env(nodes[0]):
        WinnowComponent().declare(nodes[0].load("winnow", tag))
    copies = []
    for source in POSTERS:
        wire = []
        for i in range(FILES):
            n = v02.make_notice(
                exchange=xin,
                topic_prefix="v02.post",
                pubtime=now_timestamp(),
                base_url=source,
                path=f"data/f{i:05d}.txt",
                checksum=Checksum("d", hashlib.md5(f"content {i}".encode()).hexdigest()),
                parts=PartSpec("1", 100 + i, 1, 0, 0),
                headers={},
            )
            wire.append(v02.to_wire(n))
        copies.append(wire)
    procs = [_start(site, "sr_winnow", "winnow", tag) for site in nodes]
    try:
        wait_for(lambda: _consumers(nodes[0], queue) == 2, 60, "both nodes consuming")
        _announce(nodes[0], copies)
        wait_for(lambda: downstream.ready() >= FILES, 60, "every file forwarded")
        with site_env(nodes[0]):
            cfg = nodes[0].load("winnow", tag)
            wait_for(lambda: WinnowComponent().status(cfg).backlog == 0, 30, "input drained")
        time.sleep(1.0)  # a duplicate forwarded late would show up now
    finally:
        codes = _stop(procs)
    logs = [(site.root / "winnow.log").read_text(errors="replace") for site in nodes]
    assert codes == [0, 0], "\n".join(log[-2000:] for log in logs)
    notices = downstream.drain()
    downstream.close()
    counts = Counter(n.path for n in notices)
    assert len(counts) == FILES
    assert [p for p, c in counts.items() if c != 1] == []
    # the shared store was in force on both nodes (the entries are in Redis)
    import redis

    client = redis.Redis(
        host="127.0.0.1", port=redis_server.port, username="sarra", password=redis_server.password
    )
    assert len(client.keys(f"winnow.{tag}.*")) == FILES
    client.close()
    for log in logs:
        assert redis_server.password not in log


def test_two_subscriber_nodes_on_one_queue_download_each_file_exactly_once(  # type: ignore[no-untyped-def]
    tmp_path: Path, rabbitmq, redis_server: Redis, nginx
) -> None:
    tag = unique("nodes")
    queue = f"q_guest.sr_subscribe.nodes.{tag}"
    names = [f"f{i:04d}.txt" for i in range(FILES)]
    files = make_files(nginx.root / tag, names, size=2000)
    nodes = [_node(tmp_path, n, rabbitmq, redis_server) for n in ("node_a", "node_b")]
    for site in nodes:
        site.write_subscribe(
            "s",
            f"exchange xs_guest\nsubtopic {tag}.#\nqueue_name {queue}\nprefetch 10\n"
            f"directory {site.root / 'dest'}\nmirror on\nexpire 10m\n"
            f"suppress_duplicates 10m\nnodupe_driver redis\n"
            f"nodupe_redis_serverurl {redis_server.url()}\nnodupe_redis_keybase sub.{tag}\n"
            "accept .*\n",
        )
    with site_env(nodes[0]):
        SubscribeComponent().declare(nodes[0].load("subscribe", "s"))
    copies = []
    for _poster in POSTERS:  # the same notice, announced by three posters
        wire = []
        for p in files:
            n = v02.make_notice(
                exchange="xs_guest",
                topic_prefix="v02.post",
                pubtime=now_timestamp(),
                base_url=nginx.base_url,
                path=f"{tag}/{p.name}",
                checksum=Checksum("d", hashlib.md5(p.read_bytes()).hexdigest()),
                parts=PartSpec("1", p.stat().st_size, 1, 0, 0),
                headers={},
            )
            wire.append(v02.to_wire(n))
        copies.append(wire)
    tap = ReportTap(nodes[0].broker_url(), "xs_guest").start()
    procs = [_start(site, "sr_subscribe", "subscribe", "s") for site in nodes]
    try:
        wait_for(lambda: _consumers(nodes[0], queue) == 2, 60, "both nodes consuming")
        _announce(nodes[0], copies)

        def landed() -> int:
            return sum(len(list((s.root / "dest").rglob("*.txt"))) for s in nodes)

        wait_for(lambda: landed() >= FILES, 60, "every file downloaded")
        probe = BrokerSession(nodes[0].broker_url(), name="probe")
        probe.connect()
        wait_for(lambda: probe.queue_counts(queue)[0] == 0, 30, "the queue drained")
        probe.close()
        time.sleep(1.5)  # a second download would show up now
    finally:
        codes = _stop(procs)
        tap.stop()
    logs = [(site.root / "subscribe.log").read_text(errors="replace") for site in nodes]
    assert codes == [0, 0], "\n".join(log[-2000:] for log in logs)
    per_node = [{p.name for p in (site.root / "dest").rglob("*.txt")} for site in nodes]
    assert per_node[0] | per_node[1] == set(names)
    assert per_node[0] & per_node[1] == set()  # no file downloaded on both nodes
    downloaded = Counter(r.notice.path for r in tap.reports if r.code == 201)
    assert sorted(downloaded) == sorted(f"{tag}/{n}" for n in names)
    assert set(downloaded.values()) == {1}
    for log in logs:
        assert redis_server.password not in log


def test_a_winnow_node_waits_while_redis_is_down_and_loses_nothing(  # type: ignore[no-untyped-def]
    tmp_path: Path, rabbitmq
) -> None:
    """Redis cut while notices flow: nothing is forwarded nor acked meanwhile (the input
    stays queued); Redis back, every file is forwarded once."""
    from tests.servers.redis import start_redis

    server = start_redis()
    try:
        tag = unique()
        xin, xout, queue = f"xwinnow_{tag}", f"xwout_{tag}", f"q_guest.sr_winnow.down.{tag}"
        site = _node(tmp_path, "node", rabbitmq, server)
        (site.config_dir / "winnow").mkdir(parents=True)
        (site.config_dir / "winnow" / f"{tag}.conf").write_text(
            f"broker {site.broker}\nexchange {xin}\npost_exchange {xout}\nqueue_name {queue}\n"
            f"expire 10m\nprefetch 10\nnodupe_driver redis\n"
            f"nodupe_redis_serverurl {server.url()}\n"
        )
        downstream = Downstream(site.broker_url(), xout)
        with site_env(site):
            WinnowComponent().declare(site.load("winnow", tag))
        wire = [
            v02.to_wire(
                v02.make_notice(
                    exchange=xin,
                    topic_prefix="v02.post",
                    pubtime=now_timestamp(),
                    base_url=source,
                    path=f"data/g{i:03d}.txt",
                    checksum=Checksum("d", hashlib.md5(f"g {i}".encode()).hexdigest()),
                    parts=PartSpec("1", 10, 1, 0, 0),
                    headers={},
                )
            )
            for source in POSTERS[:2]
            for i in range(50)
        ]
        proc = _start(site, "sr_winnow", "winnow", tag)
        try:
            wait_for(lambda: _consumers(site, queue) == 1, 60, "the winnow consuming")
            server.stop()
            _announce_raw(site, wire)
            time.sleep(3.0)
            assert downstream.ready() == 0  # nothing forwarded without the store
            probe = BrokerSession(site.broker_url(), name="probe")
            probe.connect()
            ready, _ = probe.queue_counts(queue)
            probe.close()
            log = (site.root / "winnow.log").read_text(errors="replace")
            assert "shared duplicate store" in log and "unreachable" in log
            # 100 announced, 10 (the prefetch) held unacked by the waiting winnow: none acked
            assert ready == 90
            server.start()
            wait_for(lambda: downstream.ready() >= 50, 60, "every file forwarded")
            time.sleep(1.0)
        finally:
            codes = _stop([proc])
        assert codes == [0]
        notices = downstream.drain()
        downstream.close()
        counts = Counter(n.path for n in notices)
        assert len(counts) == 50 and set(counts.values()) == {1}
        assert "reachable again" in (site.root / "winnow.log").read_text(errors="replace")
    finally:
        server.stop()


def _announce_raw(site: Site, wire: list[WireMessage]) -> None:
    session = BrokerSession(site.broker_url(), name="poster")
    session.connect()
    session.publish(wire)
    session.close()


def test_a_subscriber_stopped_while_redis_is_down_acks_nothing_and_a_restart_gets_all(  # type: ignore[no-untyped-def]
    tmp_path: Path, rabbitmq, nginx
) -> None:
    """Redis down: the subscriber waits in its duplicate check; stopped then, it gives every
    notice back to the broker (none acked, none downloaded); with Redis back, a restart
    downloads each file once."""
    from tests.servers.redis import start_redis

    server = start_redis()
    try:
        tag = unique("down")
        queue = f"q_guest.sr_subscribe.down.{tag}"
        names = [f"g{i:03d}.txt" for i in range(20)]
        files = make_files(nginx.root / tag, names, size=500)
        site = _node(tmp_path, "node", rabbitmq, server)
        site.write_subscribe(
            "s",
            f"exchange xs_guest\nsubtopic {tag}.#\nqueue_name {queue}\nprefetch 5\n"
            f"directory {site.root / 'dest'}\nmirror on\nexpire 10m\nsuppress_duplicates 10m\n"
            f"nodupe_driver redis\nnodupe_redis_serverurl {server.url()}\naccept .*\n",
        )
        with site_env(site):
            SubscribeComponent().declare(site.load("subscribe", "s"))
        wire = [
            v02.to_wire(
                v02.make_notice(
                    exchange="xs_guest",
                    topic_prefix="v02.post",
                    pubtime=now_timestamp(),
                    base_url=nginx.base_url,
                    path=f"{tag}/{p.name}",
                    checksum=Checksum("d", hashlib.md5(p.read_bytes()).hexdigest()),
                    parts=PartSpec("1", p.stat().st_size, 1, 0, 0),
                    headers={},
                )
            )
            for p in files
        ]
        probe = BrokerSession(site.broker_url(), name="probe")
        probe.connect()
        server.stop()
        proc = _start(site, "sr_subscribe", "subscribe", "s")
        try:
            wait_for(lambda: probe.queue_counts(queue)[1] == 1, 60, "the subscriber consuming")
            _announce_raw(site, wire)
            wait_for(
                lambda: "unreachable" in (site.root / "subscribe.log").read_text(), 30, "the log"
            )
            time.sleep(1.0)
            assert probe.queue_counts(queue)[0] == 15  # 5 held (the prefetch), none acked
        finally:
            assert _stop([proc]) == [0]
        wait_for(lambda: probe.queue_counts(queue)[0] == 20, 30, "every notice given back")
        assert not (site.root / "dest").exists() or list((site.root / "dest").rglob("*")) == []
        server.start()
        tap = ReportTap(site.broker_url(), "xs_guest").start()
        proc = _start(site, "sr_subscribe", "subscribe", "s")
        try:
            wait_for(lambda: len(tap.about(".txt")) >= 20, 60, "a report per file")
            wait_for(lambda: probe.queue_counts(queue)[0] == 0, 30, "the queue drained")
        finally:
            assert _stop([proc]) == [0]
            tap.stop()
            probe.close()
        got = Counter(r.notice.path for r in tap.reports if r.code == 201)
        assert sorted(got) == sorted(f"{tag}/{n}" for n in names)
        assert set(got.values()) == {1}
        assert sorted(p.name for p in (site.root / "dest").rglob("*.txt")) == sorted(names)
    finally:
        server.stop()


def test_a_file_a_dead_subscriber_node_had_selected_is_downloaded_by_the_live_one(  # type: ignore[no-untyped-def]
    tmp_path: Path, rabbitmq, redis_server: Redis, nginx
) -> None:
    """Node A takes the first copy of a file, makes its shared entry, and dies before acking
    it (its connection closes). Node B then gets the other poster's copy (a duplicate by A's
    entry) and A's copy again, redelivered: the redelivered one is not suppressed, so the
    file arrives once, on B."""
    from sarra.broker.base import Delivery
    from sarra.config.credentials import parse_url
    from sarra.flow.sharedstore import SharedDuplicateCache, SharedStore

    tag = unique("dead")
    queue = f"q_guest.sr_subscribe.dead.{tag}"
    (src,) = make_files(nginx.root / tag, ["only.txt"], size=800)
    site = _node(tmp_path, "node_b", rabbitmq, redis_server)
    keybase = f"sub.{tag}"
    site.write_subscribe(
        "s",
        f"exchange xs_guest\nsubtopic {tag}.#\nqueue_name {queue}\n"
        f"directory {site.root / 'dest'}\nmirror on\nexpire 10m\nsuppress_duplicates 10m\n"
        f"nodupe_driver redis\nnodupe_redis_serverurl {redis_server.url()}\n"
        f"nodupe_redis_keybase {keybase}\naccept .*\n",
    )
    with site_env(site):
        SubscribeComponent().declare(site.load("subscribe", "s"))
    copies = [
        v02.make_notice(
            exchange="xs_guest",
            topic_prefix="v02.post",
            pubtime=now_timestamp(),
            base_url=nginx.base_url,
            path=f"{tag}/only.txt",
            checksum=Checksum("d", hashlib.md5(src.read_bytes()).hexdigest()),
            parts=PartSpec("1", src.stat().st_size, 1, 0, 0),
            headers={},
        )
        for _poster in POSTERS[:2]
    ]
    _announce_raw(site, [v02.to_wire(copies[0])])
    # node A: takes the first copy, checks it in the shared store (a new entry), then dies
    node_a = BrokerSession(site.broker_url(), name="node-a")
    node_a.connect()
    taken: list[Delivery] = []
    node_a.consume(queue, 1, taken.append)
    wait_for(lambda: node_a.poll(0.1) >= 0 and len(taken) == 1, 30, "node A's delivery")
    a_cache = SharedDuplicateCache(
        SharedStore(parse_url(redis_server.credentials_line()), keybase, 600.0), ttl=600.0
    )
    assert a_cache.check(copies[0]) is False  # node A selected it ...
    node_a.close()  # ... and died: no ack
    a_cache.close()
    _announce_raw(site, [v02.to_wire(copies[1])])
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    proc = _start(site, "sr_subscribe", "subscribe", "s")
    probe = BrokerSession(site.broker_url(), name="probe")
    probe.connect()
    try:
        wait_for(lambda: (site.root / "dest" / tag / "only.txt").exists(), 30, "the file on B")
        wait_for(lambda: probe.queue_counts(queue)[0] == 0, 30, "the queue drained")
        time.sleep(1.0)
    finally:
        assert _stop([proc]) == [0]
        tap.stop()
        probe.close()
    assert (site.root / "dest" / tag / "only.txt").read_bytes() == src.read_bytes()
    assert [r.code for r in tap.reports if r.notice.path == f"{tag}/only.txt"] == [201]


def test_when_one_winnow_node_is_killed_the_other_forwards_the_rest_nothing_lost(  # type: ignore[no-untyped-def]
    tmp_path: Path, rabbitmq, redis_server: Redis
) -> None:
    """SIGKILL one of two winnow nodes mid-flow: its claims expire (nodupe_redis_claim) and
    the live node forwards every file it had not; duplicates are bounded by the prefetch of
    the dead node."""
    tag = unique()
    xin, xout, queue = f"xwinnow_{tag}", f"xwout_{tag}", f"q_guest.sr_winnow.kill.{tag}"
    prefetch = 10
    body = (
        f"exchange {xin}\npost_exchange {xout}\nqueue_name {queue}\nexpire 10m\n"
        f"prefetch {prefetch}\nnodupe_driver redis\nnodupe_redis_serverurl {redis_server.url()}\n"
        f"nodupe_redis_keybase kill.{tag}\nnodupe_redis_claim 3s\n"
    )
    nodes = [_node(tmp_path, n, rabbitmq, redis_server) for n in ("node_a", "node_b")]
    for site in nodes:
        (site.config_dir / "winnow").mkdir(parents=True)
        (site.config_dir / "winnow" / f"{tag}.conf").write_text(f"broker {site.broker}\n{body}")
    downstream = Downstream(nodes[0].broker_url(), xout)
    with site_env(nodes[0]):
        WinnowComponent().declare(nodes[0].load("winnow", tag))
    total = 1000
    copies = [
        [
            v02.to_wire(
                v02.make_notice(
                    exchange=xin,
                    topic_prefix="v02.post",
                    pubtime=now_timestamp(),
                    base_url=source,
                    path=f"data/k{i:05d}.txt",
                    checksum=Checksum("d", hashlib.md5(f"k {i}".encode()).hexdigest()),
                    parts=PartSpec("1", 10, 1, 0, 0),
                    headers={},
                )
            )
            for i in range(total)
        ]
        for source in POSTERS[:2]
    ]
    procs = [_start(site, "sr_winnow", "winnow", tag) for site in nodes]
    try:
        wait_for(lambda: _consumers(nodes[0], queue) == 2, 60, "both nodes consuming")
        session = BrokerSession(nodes[0].broker_url(), name="posters")
        session.connect()
        for start in range(0, total, 50):
            for wire in copies:
                session.publish(wire[start : start + 50])
        session.close()
        wait_for(lambda: downstream.ready() >= 100, 60, "the first forwarded posts")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        assert downstream.ready() < total, "the kill came too late to test anything"
        wait_for(lambda: downstream.ready() >= total, 60, "every file forwarded")
        probe = BrokerSession(nodes[0].broker_url(), name="probe")
        probe.connect()
        wait_for(lambda: probe.queue_counts(queue)[0] == 0, 30, "the input drained")
        probe.close()
        time.sleep(1.0)
    finally:
        codes = _stop(procs)
    assert codes[1] == 0
    notices = downstream.drain()
    downstream.close()
    counts = Counter(n.path for n in notices)
    assert len(counts) == total  # nothing lost
    extra = sum(c - 1 for c in counts.values())
    assert extra <= prefetch, f"{extra} duplicates"
