"""Quotas per source on a real pump (RabbitMQ, nginx, sr_sarra, sr_report): a source over its
quota is refused with a 507 report routed back to its xr_ exchange, another source flows on,
and the usage ledger outlives a restart of the sarra."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from sarra.broker.session import BrokerSession
from sarra.cli.web import police_audit
from sarra.codec import v02
from sarra.codec.timestamps import now_timestamp
from sarra.config import paths
from sarra.config.credentials import parse_url
from sarra.config.quota import Quota
from sarra.flow.quota import FileLedger, RedisLedger, ledger_dir
from sarra.integrity.sums import name_sum
from sarra.police.audit import check_quotas
from tests.integration.flowkit import make_files, md5_tree, unique, wait_for
from tests.pump.pumpkit import Home, Tap, post_files, pump_nginx, running


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rabbitmq: Any) -> Home:
    h = Home(tmp_path / "home")
    for k, v in h.env.items():
        monkeypatch.setenv(k, v)
    h.credentials(rabbitmq.url())
    return h


def _pump_feed(
    home: Home, broker: str, tag: str, base_url: str, root: Path, extra: str = ""
) -> Path:
    """The pump of these tests: sarra ``feed`` (the sources' files into ``root/pub``, served
    at ``base_url/pub``; ``extra`` lines before its directory) and the report router.
    Returns the pump's tree."""
    tree = root / "pub"
    home.write(
        "sarra",
        "feed",
        f"broker {broker}\nread_sources on\ncluster pump{tag}\nexpire 10m\n{extra}"
        f"directory {tree}\npost_exchange xpub{tag}\n"
        f"post_base_url {base_url}/pub\npost_base_dir {tree}\n",
    )
    home.write("report", "router", f"broker {broker}\ncluster pump{tag}\nexpire 10m\n")
    return tree


def test_a_source_over_quota_is_refused_with_its_report_back_and_another_flows_on(
    home: Home, rabbitmq: Any, tmp_path: Path
) -> None:
    tag = unique("")
    alice, bob = f"alice{tag}", f"bob{tag}"
    broker = f"amqp://guest@127.0.0.1:{rabbitmq.port}/"
    (home.root / "config" / "admin.conf").write_text(
        f"admin {broker}\ndeclare source {alice} {bob}\n"
        f"quota {alice} files=2 bytes=1M\nquota {bob} files=100\n"
    )
    with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:
        src = web.root / "src"
        mine = make_files(src, [f"{alice}/f{i}.bin" for i in range(5)], size=3000)
        more = make_files(src, [f"{alice}/later.bin"], size=3000)
        theirs = make_files(src, [f"{bob}/g{i}.bin" for i in range(4)], size=3000)
        tree = _pump_feed(home, broker, tag, web.base_url, web.root)
        announced = Tap(rabbitmq.broker_url(), f"xpub{tag}").start()
        to_alice = Tap(rabbitmq.broker_url(), f"xr_{alice}").start()
        to_bob = Tap(rabbitmq.broker_url(), f"xr_{bob}").start()
        base = f"{web.base_url}/src"
        to = ("to_clusters", f"pump{tag}")
        try:
            with running(home, "report", "router"):
                with running(home, "sarra", "feed"):
                    assert post_files(home, broker, f"xs_{alice}", base, src, mine, to) == 0
                    assert post_files(home, broker, f"xs_{bob}", base, src, theirs, to) == 0
                    wait_for(lambda: len(to_alice.reports) >= 3, 60, "alice's refusals")
                    wait_for(lambda: len(announced.notices) >= 6, 60, "the files placed")
                # the ledger outlives the sarra: after a restart alice is still full
                with running(home, "sarra", "feed"):
                    assert post_files(home, broker, f"xs_{alice}", base, src, more, to) == 0
                    wait_for(lambda: len(to_alice.reports) >= 4, 60, "the refusal after restart")
        finally:
            for tap in (announced, to_alice, to_bob):
                tap.stop()
    placed = md5_tree(tree)
    assert len([p for p in placed if p.startswith(f"{alice}/")]) == 2
    assert {p for p in placed if p.startswith(f"{bob}/")} == {
        str(p.relative_to(src)) for p in theirs
    }
    assert sorted(n.path for n in announced.notices) == sorted(placed)
    refused = to_alice.reports
    assert len(refused) == 4
    for r in refused:
        assert r.code == 507
        assert r.notice.header("source") == alice
        assert "files quota exceeded: 2 used + 1 > 2 allowed" in r.message
    assert not (tree / alice / "later.bin").exists()
    assert not to_bob.reports  # nothing refused, and the sarra reports nothing else
    ledger = FileLedger(ledger_dir(paths.state_dir(env=home.env)))
    usage = ledger.usage(alice)

    def held(source: str) -> int:  # bytes of the source's files on the tree
        return sum(p.stat().st_size for p in (tree / source).iterdir())

    assert (usage.files, usage.bytes, usage.refused) == (2, held(alice), 4)
    assert (ledger.usage(bob).files, ledger.usage(bob).bytes) == (4, held(bob))
    found = check_quotas(
        {alice: Quota(1024**2, 2), bob: Quota(None, 100)}, ledger, 3600, usage.last_refusal_time
    )
    # the same through sr_police audit, as sr web's audit page runs it
    audit = police_audit()
    shown = {(f["check"], f["subject"]): f for f in audit["findings"]}
    assert shown["quota_usage", alice]["detail"] == (
        f"{held(alice)} bytes of {1024**2}, 2 files of 2, 4 refused"
    )
    assert shown["quota_refused", alice]["severity"] == "warning"
    assert shown["quota_usage", bob]["detail"].endswith("4 files of 100, 0 refused")
    assert ("quota_refused", bob) not in shown
    assert {(f.check, f.subject) for f in found} == {
        ("quota_usage", alice),
        ("quota_usage", bob),
        ("quota_refused", alice),
    }


def _publish_removal(url: Any, exchange: str, base_url: str, path: str) -> None:
    """What sr_watch posts when a source deletes ``path``: an ``R`` notice."""
    notice = v02.make_notice(
        exchange=exchange,
        topic_prefix="v02.post",
        pubtime=now_timestamp(),
        base_url=base_url,
        path=path,
        checksum=name_sum("R", path.rsplit("/", 1)[-1]),
        parts=None,
    )
    session = BrokerSession(url, name="removal")
    session.connect()
    try:
        session.publish([v02.encode(notice, exchange)])
    finally:
        session.close()


def test_under_on_failure_quota_queue_a_refused_file_is_placed_once_a_removal_frees_room(
    home: Home, rabbitmq: Any, tmp_path: Path
) -> None:
    tag = unique("")
    alice = f"alice{tag}"
    broker = f"amqp://guest@127.0.0.1:{rabbitmq.port}/"
    (home.root / "config" / "admin.conf").write_text(
        f"admin {broker}\ndeclare source {alice}\nquota {alice} files=1\n"
    )
    with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:
        src = web.root / "src"
        first = make_files(src, [f"{alice}/first.bin"], size=2000)
        second = make_files(src, [f"{alice}/second.bin"], size=5000)
        tree = _pump_feed(
            home,
            broker,
            tag,
            web.base_url,
            web.root,
            "on_failure quota queue\nretry_delay 1\nretry_delay_max 2\n",
        )
        to_alice = Tap(rabbitmq.broker_url(), f"xr_{alice}").start()
        base = f"{web.base_url}/src"
        to = ("to_clusters", f"pump{tag}")
        try:
            with running(home, "report", "router"), running(home, "sarra", "feed"):
                assert post_files(home, broker, f"xs_{alice}", base, src, first, to) == 0
                wait_for((tree / alice / "first.bin").exists, 60, "the first file placed")
                assert post_files(home, broker, f"xs_{alice}", base, src, second, to) == 0
                wait_for(lambda: any(r.code == 507 for r in to_alice.reports), 60, "a refusal")
                time.sleep(2)  # held in the retry queue, not placed
                assert not (tree / alice / "second.bin").exists()
                _publish_removal(rabbitmq.broker_url(), f"xs_{alice}", base, f"{alice}/first.bin")
                wait_for((tree / alice / "second.bin").exists, 60, "the queued file placed")
        finally:
            to_alice.stop()
    assert not (tree / alice / "first.bin").exists()
    assert (tree / alice / "second.bin").read_bytes() == second[0].read_bytes()
    refusals = [r for r in to_alice.reports if r.code == 507]
    assert refusals and all(r.message.endswith("(queued for retry)") for r in refusals)
    usage = FileLedger(ledger_dir(paths.state_dir(env=home.env))).usage(alice)
    assert (usage.files, usage.bytes) == (1, (tree / alice / "second.bin").stat().st_size)
    assert usage.refused == len(refusals) >= 1  # each refusal (first try, retries) counted


@pytest.mark.parametrize(
    ("extra", "quota", "placed", "refused"),
    [
        ("", "files=4", 4, 6),  # inplace off: each block is a .Part file of its own
        ("inplace on\n", "bytes=1M files=5", 1, 0),  # the whole file charged once complete
        ("inplace on\n", "bytes=500K", 0, 10),  # every block refused: the file would not fit
    ],
)
def test_a_file_in_blocks_is_charged_as_what_it_leaves_on_the_tree(
    home: Home, rabbitmq: Any, tmp_path: Path, extra: str, quota: str, placed: int, refused: int
) -> None:
    tag = unique("")
    alice = f"alice{tag}"
    broker = f"amqp://guest@127.0.0.1:{rabbitmq.port}/"
    (home.root / "config" / "admin.conf").write_text(
        f"admin {broker}\ndeclare source {alice}\nquota {alice} {quota}\n"
    )
    block = 64 * 1024
    with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:
        src = web.root / "src"
        (big,) = make_files(src, [f"{alice}/big.bin"], size=9 * block + 777)
        tree = _pump_feed(home, broker, tag, web.base_url, web.root, extra)
        to_alice = Tap(rabbitmq.broker_url(), f"xr_{alice}").start()
        announced = Tap(rabbitmq.broker_url(), f"xpub{tag}").start()
        ledger = FileLedger(ledger_dir(paths.state_dir(env=home.env)))

        def settled() -> bool:  # every block placed (and announced) or refused
            return len(announced.notices) + len(to_alice.reports) >= 10

        try:
            with running(home, "report", "router"), running(home, "sarra", "feed"):
                options = (("blocksize", str(block)), ("to_clusters", f"pump{tag}"))
                assert (
                    post_files(
                        home, broker, f"xs_{alice}", web.base_url + "/src", src, [big], *options
                    )
                    == 0
                )
                wait_for(settled, 60, "every block placed or refused")
        finally:
            to_alice.stop()
            announced.stop()
    on_tree = [p for p in (tree / alice).iterdir()] if (tree / alice).exists() else []
    assert len(on_tree) == placed
    if extra and placed:
        assert (tree / alice / "big.bin").read_bytes() == big.read_bytes()
    usage = ledger.usage(alice)
    assert (usage.files, usage.bytes) == (placed, sum(p.stat().st_size for p in on_tree))
    assert usage.refused == refused == len(to_alice.reports)
    assert all(r.code == 507 for r in to_alice.reports)


def test_two_nodes_share_a_quota_in_redis_and_an_outage_holds_files_back_until_it_answers(
    home: Home, rabbitmq: Any, tmp_path: Path
) -> None:
    """``quota_redis_serverurl``: what another node placed counts on this one (a refusal
    with its 507 report), and while Redis is down a file is held back, not placed unchecked,
    and placed once Redis answers again."""
    from tests.servers.redis import start_redis

    server = start_redis()
    tag = unique("")
    alice, bob = f"alice{tag}", f"bob{tag}"
    keybase = f"quota{tag}"
    broker = f"amqp://guest@127.0.0.1:{rabbitmq.port}/"
    home.credentials(rabbitmq.url(), server.credentials_line())
    (home.root / "config" / "admin.conf").write_text(
        f"admin {broker}\ndeclare source {alice} {bob}\n"
        f"quota {alice} files=3\nquota {bob} files=10\n"
        f"quota_redis_serverurl {server.url()}\nquota_redis_keybase {keybase}\n"
    )
    other_node = RedisLedger(parse_url(server.credentials_line()), keybase)
    other_node.charge(alice, 1000, 1, Quota(None, 3))  # a file another node placed
    try:
        with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:
            src = web.root / "src"
            mine = make_files(src, [f"{alice}/f{i}.bin" for i in range(4)], size=3000)
            theirs = make_files(src, [f"{bob}/g.bin"], size=2000)
            tree = _pump_feed(
                home, broker, tag, web.base_url, web.root, "retry_delay 1\nretry_delay_max 2\n"
            )
            to_alice = Tap(rabbitmq.broker_url(), f"xr_{alice}").start()
            to_bob = Tap(rabbitmq.broker_url(), f"xr_{bob}").start()
            base = f"{web.base_url}/src"
            to = ("to_clusters", f"pump{tag}")
            try:
                with running(home, "report", "router"), running(home, "sarra", "feed"):
                    assert post_files(home, broker, f"xs_{alice}", base, src, mine, to) == 0
                    wait_for(lambda: len(to_alice.reports) >= 2, 60, "alice's refusals")
                    wait_for(lambda: len(list((tree / alice).glob("*.bin"))) == 2, 60, "2 placed")
                    alice_usage = other_node.usage(alice)
                    audit = police_audit()  # sr web's audit page: read from Redis
                    server.stop()
                    assert post_files(home, broker, f"xs_{bob}", base, src, theirs, to) == 0
                    time.sleep(4)  # tried (and retried) while Redis is down: not placed
                    assert not (tree / bob / "g.bin").exists()
                    server.start()  # empty (no persistence): only what comes next counts
                    wait_for((tree / bob / "g.bin").exists, 60, "bob's file once Redis is back")
                    bob_usage = other_node.usage(bob)
            finally:
                to_alice.stop()
                to_bob.stop()
    finally:
        other_node.close()
        server.stop()
    placed = [p for p in (tree / alice).iterdir()]
    assert len(placed) == 2
    assert (alice_usage.files, alice_usage.refused) == (3, 2)
    assert alice_usage.bytes == 1000 + sum(p.stat().st_size for p in placed)
    refused = to_alice.reports
    assert len(refused) == 2
    for r in refused:
        assert r.code == 507
        assert "files quota exceeded: 3 used + 1 > 3 allowed" in r.message
    assert not [r for r in to_bob.reports if r.code == 507]
    assert (bob_usage.files, bob_usage.bytes) == (1, (tree / bob / "g.bin").stat().st_size)
    assert not FileLedger(ledger_dir(paths.state_dir(env=home.env))).sources()  # not the node's
    shown = {(f["check"], f["subject"]): f for f in audit["findings"]}
    assert shown["quota_usage", alice]["detail"] == (
        f"{alice_usage.bytes} bytes of no limit, 3 files of 3, 2 refused"
    )
    assert shown["quota_refused", alice]["severity"] == "warning"
