"""Pump-wide bandwidth caps (sarra.flow.bandwidth) against a real Redis
(tests/servers/redis.py), and the issue's test on real pump pieces: two sources' files
fetched from nginx by two subscribers (RabbitMQ) under one pump total, each within 15 % of
its fair share over 30 s."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarra.components.subscribe import SubscribeComponent
from sarra.config.credentials import parse_url
from sarra.flow import bandwidth as bw
from sarra.flow.bandwidth import BandwidthStore, Cap, SharedBucket, refill_take
from tests.integration.flowkit import (
    ReportTap,
    Site,
    make_files,
    md5_tree,
    post,
    running_subscriber,
    site_env,
    unique,
    wait_for,
)
from tests.integration.test_sender import Setup, _codes, running_sender
from tests.servers.redis import Redis, start_redis

TOLERANCE = 0.15


def _store(redis_server: Redis, keybase: str) -> BandwidthStore:
    return BandwidthStore(parse_url(redis_server.credentials_line()), keybase=keybase)


def test_the_lua_bucket_does_the_same_arithmetic_as_the_python_one(redis_server: Redis) -> None:
    store = _store(redis_server, unique("bw"))
    cap = Cap(1000.0)
    burst = max(1.0, cap.cap * bw.BURST_SECONDS)
    steps = [
        (100.0, 50.0),
        (100.0, 250.0),
        (100.3, 0.0),
        (160.0, 10.0),
        (159.0, 500.0),
        (160.5, 1.0),
    ]  # a new bucket, a debt, a refill, an idle minute, a clock going back
    tokens: float | None = None
    last = 0.0
    for now, amount in steps:
        tokens, last, expected = refill_take(tokens, last, now, amount, cap.cap, burst)
        assert store.take("a", amount, cap, now=now) == pytest.approx(expected, abs=1e-9), now
    store.close()


def test_the_lua_bucket_divides_a_total_by_weight_among_active_sources(redis_server: Redis) -> None:
    store = _store(redis_server, unique("bw"))
    alice, bob = Cap(0.0, 2.0, 3000.0), Cap(0.0, 1.0, 3000.0)
    assert store.take("source.bob", 0.0, bob, now=500.0) == 0.0  # bob active
    # alice's share is 2000/s (burst 200): 2200 taken leaves a 2000 debt: 1 s
    assert store.take("source.alice", 2200.0, alice, now=500.0) == pytest.approx(1.0)
    # bob's share is 1000/s (burst 100): 1100 taken: 1 s
    assert store.take("source.bob", 1100.0, bob, now=500.0) == pytest.approx(1.0)
    # bob idle beyond the window: alice alone gets the whole 3000/s (full bucket: burst 300)
    later = 500.0 + bw.ACTIVE_WINDOW + 10
    assert store.take("source.alice", 3300.0, alice, now=later) == pytest.approx(1.0)
    # a source still waiting out its debt stays active beyond the window: bob takes 10 s
    # worth of his share, alice's share stays 2000/s all that time
    t = later + 100
    assert store.take("source.alice", 0.0, alice, now=t) == 0.0
    assert store.take("source.bob", 10_100.0, bob, now=t) == pytest.approx(10.0)
    # (were bob gone, alice alone would get 3000/s: a wait of 1900/3000 s)
    assert store.take("source.alice", 2200.0, alice, now=t + 5) == pytest.approx(1.0)
    # a source's own cap below its share wins
    low = Cap(500.0, 1.0, 3000.0)
    assert store.take("source.carol", 550.0, low, now=later) == pytest.approx(1.0)
    store.close()


_WORKER = r"""
import json, sys, threading, time
from sarra.config.credentials import parse_url
from sarra.flow.bandwidth import BandwidthStore, Cap, SharedBucket
job = json.loads(sys.stdin.read())
store = BandwidthStore(parse_url(job["url"]), keybase=job["keybase"])
bucket = SharedBucket(store, "flow.test", Cap(float(job["rate"])))
counts, firsts = [], []
def work():
    n = 0
    while time.time() < job["start"]:
        time.sleep(0.005)
    firsts.append(time.time())  # a loaded machine may start a process late
    while time.time() < job["end"]:
        bucket.take(job["chunk"])
        n += job["chunk"]
    counts.append(n)
threads = [threading.Thread(target=work) for _ in range(job["threads"])]
for t in threads: t.start()
for t in threads: t.join()
print(sum(counts), min(firsts))
"""


def test_several_processes_on_one_cap_stay_within_it_together(
    redis_server: Redis, tmp_path: Path
) -> None:
    rate, chunk, processes, threads, seconds = 1_000_000, 32 * 1024, 3, 2, 6.0
    start = time.time() + 3.0  # most processes started by then (a late one is allowed for)
    job = {
        "url": redis_server.credentials_line(),
        "keybase": unique("bw"),
        "rate": rate,
        "chunk": chunk,
        "threads": threads,
        "start": start,
        "end": start + seconds,
    }
    job_file = tmp_path / "job.json"  # the password on stdin, never on a command line
    job_file.write_text(json.dumps(job))
    job_file.chmod(0o600)
    procs = []
    for _ in range(processes):
        with open(job_file) as stdin:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", _WORKER],
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
    totals: list[int] = []
    firsts: list[float] = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        n, first = out.split()[-2:]
        totals.append(int(n))
        firsts.append(float(first))
    taken = sum(totals)
    # from the first take of any process: the cap was there for the taking from then on
    seconds = job["end"] - min(firsts)
    print(f"{processes} processes x {threads} threads, cap {rate:,}/s: {taken / seconds:,.0f}/s")
    # each worker's last take may be a chunk of debt it waited out past the end; the burst
    allowed = rate * seconds + rate * bw.BURST_SECONDS + processes * threads * chunk
    assert taken <= allowed * (1 + TOLERANCE) and taken <= allowed + 0.05 * rate * seconds, (
        f"{taken:,} bytes in {seconds} s by {processes} processes at a cap of {rate:,}/s"
    )
    assert taken >= rate * seconds * (1 - TOLERANCE), f"only {taken:,} bytes: {totals}"
    assert all(t > 0 for t in totals), totals  # every process got some


def test_with_redis_down_transfers_go_on_limited_per_process_then_share_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    node = start_redis()  # its own, so stopping it disturbs no other test
    try:
        monkeypatch.setattr(bw, "RETRY_AFTER", 0.5)
        store = BandwidthStore(parse_url(node.credentials_line()), keybase=unique("bw"))
        waited: list[float] = []
        bucket = SharedBucket(
            store, "source.a", Cap(100_000.0), wait=lambda d: waited.append(d) or False
        )
        assert bucket.take(50_000)  # shared: a 40,000 byte debt
        assert waited[-1] == pytest.approx(0.4, abs=0.05)
        node.stop()
        with caplog.at_level(logging.WARNING, logger="sarra.flow.bandwidth"):
            started = time.monotonic()
            assert bucket.take(50_000)  # the local bucket: full (10,000), a 40,000 debt
            assert time.monotonic() - started < 3.0  # no long hang on the dead server
            assert waited[-1] == pytest.approx(0.4, abs=0.05)
            assert bucket.take(100_000)  # the local debt grows: the limit holds meanwhile
            assert waited[-1] == pytest.approx(1.4, abs=0.1)
        assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1
        assert node.password not in caplog.text
        node.start()
        time.sleep(0.6)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="sarra.flow.bandwidth"):
            assert bucket.take(1000)
        assert any("reachable again" in r.getMessage() for r in caplog.records)
        # the shared bucket again: its state survived nothing (a fresh server), full
        assert bucket.take(200_000)
        assert waited[-1] == pytest.approx(1.9, abs=0.1)
        store.close()
    finally:
        node.stop()
        shutil.rmtree(node.base_dir, ignore_errors=True)


# -- the test: two sources, one pump total, real pump pieces -------------------------


def _bytes_under(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            # a file renamed from its temporary name meanwhile is counted under the other
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(dirpath, f)).st_size
    return total


def test_two_sources_share_a_pump_total_within_15_percent_of_their_fair_shares(  # type: ignore[no-untyped-def]
    tmp_path, rabbitmq, nginx, redis_server: Redis
) -> None:
    site = Site(tmp_path / "site", rabbitmq.port).setup()
    cred = site.config_dir / "credentials.conf"
    cred.write_text(cred.read_text() + redis_server.credentials_line() + "\n")
    total = 1_200_000
    run = unique("")  # sources of this run only: the session's Redis keeps earlier buckets
    alice, bob = f"alice{run}", f"bob{run}"
    (site.config_dir / "admin.conf").write_text(
        f"bandwidth * {total}\n"
        f"bandwidth {alice} {total} 2\n"  # weight 2: two thirds of the total
        f"bandwidth_redis_serverurl {redis_server.url()}\n"
    )
    shares = {alice: total * 2 / 3, bob: total / 3}
    files = {alice: 40, bob: 24}  # more than each can fetch in the test
    dests = {}
    for src in (alice, bob):
        tag = unique(src[:5])
        root = nginx.root / tag
        make_files(root, [f"f{i:02d}.bin" for i in range(files[src])], size=1 << 20)
        dests[src] = tmp_path / f"dest_{src}"
        site.write_subscribe(
            f"bw_{src}",
            f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dests[src]}\nmirror off\n"
            "expire 10m\ntransfer_threads 2\naccept .*\n",
        )
        with running_subscriber(site, f"bw_{src}"):
            pass  # declares the queue, so the posts below wait in it
        assert post(site, nginx.base_url, nginx.root, [root], ("source", src)) == 0
    with running_subscriber(site, f"bw_{alice}"), running_subscriber(site, f"bw_{bob}"):
        time.sleep(3.0)  # both started and transferring: the shares settle
        before = {s: _bytes_under(d) for s, d in dests.items()}
        started = time.monotonic()
        time.sleep(30.0)
        after = {s: _bytes_under(d) for s, d in dests.items()}
        elapsed = time.monotonic() - started
    rates = {s: (after[s] - before[s]) / elapsed for s in dests}
    print(f"fair shares {shares}, measured {rates} over {elapsed:.1f} s")
    for s, share in shares.items():
        assert abs(rates[s] - share) <= TOLERANCE * share, (
            f"{s}: {rates[s]:,.0f} bytes/s, fair share {share:,.0f} "
            f"({(rates[s] / share - 1) * 100:+.1f} %); all: {rates}"
        )


def _with_redis(site: Site, redis_server: Redis, admin: str) -> None:
    cred = site.config_dir / "credentials.conf"
    cred.write_text(cred.read_text() + redis_server.credentials_line() + "\n")
    (site.config_dir / "admin.conf").write_text(
        f"{admin}bandwidth_redis_serverurl {redis_server.url()}\n"
    )


@contextlib.contextmanager
def _instance(site: Site, name: str, number: int) -> Iterator[None]:
    """Run instance ``number`` of a subscribe config in a thread; stopped on exit."""
    stop = threading.Event()
    errors: list[BaseException] = []
    with site_env(site):
        cfg = site.load("subscribe", name)
        component = SubscribeComponent()
        component.declare(cfg)

        def target() -> None:
            try:
                component.run(cfg, number, stop)
            except BaseException as e:  # surfaced below
                errors.append(e)

        thread = threading.Thread(target=target, name=f"subscribe-{name}-{number}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(60)
    assert not thread.is_alive(), "subscriber did not stop within 60 s"
    if errors:
        raise errors[0]


def test_bandwidth_shared_caps_two_instances_of_a_configuration_together_blocks_included(  # type: ignore[no-untyped-def]
    tmp_path, rabbitmq, nginx, redis_server: Redis
) -> None:
    site = Site(tmp_path / "site", rabbitmq.port).setup()
    _with_redis(site, redis_server, "")
    tag = unique("bws")
    root = nginx.root / tag
    make_files(root, [f"f{i}.bin" for i in range(3)], size=4 << 20)
    dest = tmp_path / "dest"
    cap = 1_000_000
    name = f"bw_{tag}"  # its own bucket (component and configuration name)
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror off\nexpire 10m\n"
        f"transfer_threads 2\nbandwidth_shared {cap}\naccept .*\n",
    )
    expected = md5_tree(root)
    with _instance(site, name, 0), _instance(site, name, 1):
        time.sleep(2.0)  # both consuming the one queue
        started = time.monotonic()
        # 1 MiB blocks: each a transfer of its own, spread over both instances' threads
        assert post(site, nginx.base_url, nginx.root, [root], ("blocksize", "1M")) == 0
        wait_for(lambda: md5_tree(dest) == expected, 60, "the files, whole")
        elapsed = time.monotonic() - started
    moved = sum(p.stat().st_size for p in root.iterdir())
    rate = moved / elapsed
    print(f"bandwidth_shared {cap:,}: two instances together {rate:,.0f} bytes/s")
    assert abs(rate - cap) <= TOLERANCE * cap, f"{rate:,.0f} bytes/s for a cap of {cap:,}"


def test_a_source_cap_holds_for_a_sender_over_sftp(  # type: ignore[no-untyped-def]
    tmp_path, rabbitmq, sshd, redis_server: Redis
) -> None:
    site = Site(tmp_path / "site", rabbitmq.port).setup()
    src = unique("carol")
    cap = 2_000_000
    _with_redis(site, redis_server, f"bandwidth {src} 2m\n")
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        s = Setup(site, sshd, tmp_path)
        s.write()
        files = make_files(s.local, [f"{s.tag}/big.bin"], size=6 << 20)
        size = files[0].stat().st_size
        with running_sender(site, s.name):
            s.post(files, ("source", src))
            # timed from the first byte written remotely: the SSH handshake is not the cap's
            wait_for(lambda: any(p.is_file() for p in s.remote.rglob("*")), 60, "a remote file")
            started = time.monotonic()
            wait_for(lambda: _codes(tap, s.tag).get(201) == 1, 60, "a 201 report")
            elapsed = time.monotonic() - started
    finally:
        tap.stop()
    assert md5_tree(s.remote) == md5_tree(s.local)
    rate = size / elapsed
    print(f"sender, source cap {cap:,}: {rate:,.0f} bytes/s")
    assert abs(rate - cap) <= TOLERANCE * cap, f"{rate:,.0f} bytes/s for a cap of {cap:,}"
