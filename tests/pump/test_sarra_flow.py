"""sr_sarra against a real broker and nginx: police, place, re-announce; and a SIGKILL."""

from __future__ import annotations

import hashlib
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sarra.notice import Notice
from tests.integration.flowkit import make_files, md5_tree, unique, wait_for
from tests.pump.pumpkit import Home, Tap, foreground, kill, post_files, pump_nginx, running


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rabbitmq: Any) -> Home:
    h = Home(tmp_path / "home")
    for k, v in h.env.items():
        monkeypatch.setenv(k, v)
    h.credentials(rabbitmq.url())
    return h


def _broker(rabbitmq: Any) -> str:
    return f"amqp://guest@127.0.0.1:{rabbitmq.port}/"


def _sarra_conf(rabbitmq: Any, tag: str, tree: Path, base_url: str, users: str) -> str:
    return (
        f"broker {_broker(rabbitmq)}\n"
        f"declare source {users}\n"
        f"cluster pump{tag}\n"
        f"exchange xs_alice{tag}\nsubtopic #\n"
        f"exchange xs_mallory{tag}\nsubtopic #\n"
        f"expire 10m\n"
        f"directory {tree}\n"
        f"post_broker {_broker(rabbitmq)}\n"
        f"post_exchange xpub{tag}\n"
        f"post_base_url {base_url}/pub\n"
        f"post_base_dir {tree}\n"
    )


def test_a_source_notice_is_policed_placed_and_reannounced_for_a_subscriber_behind_nginx(
    home: Home, rabbitmq: Any, tmp_path: Path
) -> None:
    tag = unique("")
    with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:
        src = web.root / "src"
        files = make_files(src, [f"d{i % 3}/f{i}.bin" for i in range(12)], size=5000)
        forged = make_files(src, ["evil/stolen.bin"], size=100)
        tree = web.root / "pub"
        home.write("sarra", "feed", _sarra_conf(rabbitmq, tag, tree, web.base_url, f"alice{tag}"))
        dl = tmp_path / "dl"
        home.write(
            "subscribe",
            "down",
            f"broker {_broker(rabbitmq)}\nexchange xpub{tag}\nsubtopic #\nexpire 10m\n"
            f"directory {dl}\nmirror on\naccept .*\nreport_back off\n",
        )
        tap = Tap(rabbitmq.broker_url(), f"xpub{tag}").start()
        try:
            with running(home, "sarra", "feed") as sarra, running(home, "subscribe", "down"):
                broker = _broker(rabbitmq)
                base = f"{web.base_url}/src"
                # alice claims to be bob and to come from elsewhere: overwritten
                assert (
                    post_files(
                        home,
                        broker,
                        f"xs_alice{tag}",
                        base,
                        src,
                        files,
                        ("source", "bob"),
                        ("cluster", "faraway"),
                        ("to_clusters", f"pump{tag}"),
                    )
                    == 0
                )
                # nobody declared owns xs_mallory<tag>: never forwarded
                assert post_files(home, broker, f"xs_mallory{tag}", base, src, forged) == 0
                wait_for(lambda: len(tap.notices) >= len(files), 60, "re-announcements")
                wait_for(lambda: len(md5_tree(dl)) >= len(files), 60, "downstream downloads")
        finally:
            tap.stop()
        assert sorted(tap.paths()) == sorted(str(p.relative_to(src)) for p in files)
        for n in tap.notices:
            assert n.header("source") == f"alice{tag}"
            assert n.header("from_cluster") == f"pump{tag}"
            assert n.base_url.rstrip("/") == f"{web.base_url}/pub"
        assert md5_tree(dl) == {k: v for k, v in md5_tree(src).items() if "evil" not in k}
        assert not (tree / "evil").exists()
        assert sarra.name == "sarra"
        # the refused forgery is visible to sr_police
        from sarra.security_events import events_path, read_events

        forged = [e for e in read_events(events_path(home.env)) if e.get("kind") == "forged_source"]
        assert any(e.get("exchange") == f"xs_mallory{tag}" for e in forged), forged
        # sync_barrier filesystem (the default): the batches of both flows took the syncfs
        # barrier, whose record of completed syncfs calls is in each configuration's state
        from sarra.localfs import groupsync

        records = list((home.root / "state").rglob("syncfs_*.state"))
        if groupsync.available():
            assert {r.parent.parent.name for r in records} == {"sarra", "subscribe"}, records
            assert all(r.read_text().split()[2] == "completed" for r in records), records


def test_a_sarra_killed_after_placing_files_still_announces_every_one_after_restart(
    home: Home, rabbitmq: Any, tmp_path: Path
) -> None:
    tag = unique("")
    with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:
        src = web.root / "src"
        files = make_files(src, [f"k/f{i}.bin" for i in range(20)], size=3000)
        tree = web.root / "pub"
        home.write("sarra", "feed", _sarra_conf(rabbitmq, tag, tree, web.base_url, f"alice{tag}"))
        from sarra.components import REGISTRY

        REGISTRY["sarra"].declare(home.load("sarra", "feed"))
        tap = Tap(rabbitmq.broker_url(), f"xpub{tag}").start()
        log = tmp_path / "sarra.log"
        hold = tmp_path / "holding"
        proc = foreground(home, "sarra", "feed", log, SARRA_TEST_HOLD_BEFORE_ANNOUNCE=str(hold))
        try:
            broker = _broker(rabbitmq)
            assert (
                post_files(
                    home,
                    broker,
                    f"xs_alice{tag}",
                    f"{web.base_url}/src",
                    src,
                    files,
                    ("to_clusters", f"pump{tag}"),
                )
                == 0
            )
            wait_for(hold.exists, 60, "files placed and the instance holding")
            placed = [p for p in tree.rglob("*.bin")]
            assert placed, "nothing was placed before the kill"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            assert tap.notices == [], "announced before the kill: the test proves nothing"
            proc = foreground(home, "sarra", "feed", log)
            wait_for(
                lambda: set(tap.paths()) >= {str(p.relative_to(src)) for p in files},
                60,
                "every file announced after the restart",
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            kill(proc)
            tap.stop()
        # the redelivered files found unchanged were re-announced, not skipped
        found = re.findall(r"re-announced (\d+)", log.read_text())
        assert found and int(found[-1]) >= 1, log.read_text()[-3000:]
        assert md5_tree(tree) == md5_tree(src)
        pump_url = f"{web.base_url}/pub"
        for p in placed:
            rel = str(p.relative_to(tree))
            assert any(n.path == rel and n.base_url.rstrip("/") == pump_url for n in tap.notices)


def test_with_nodupe_on_a_sarra_killed_before_announcing_announces_every_file_then_suppresses(
    home: Home, rabbitmq: Any, tmp_path: Path
) -> None:
    """``nodupe_ttl 300``: the cache recorded every notice at selection, and the instance is
    killed after placing the files but before announcing or acking them. On restart the
    notices come back redelivered: each is re-announced, none suppressed by the entries of
    the killed instance (that would lose them downstream). Posted again afterwards, the
    same files are suppressed (not announced twice)."""
    tag = unique("")
    with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:
        src = web.root / "src"
        files = make_files(src, [f"k/f{i}.bin" for i in range(20)], size=3000)
        tree = web.root / "pub"
        conf = _sarra_conf(rabbitmq, tag, tree, web.base_url, f"alice{tag}") + "nodupe_ttl 300\n"
        home.write("sarra", "feed", conf)
        from sarra.components import REGISTRY

        REGISTRY["sarra"].declare(home.load("sarra", "feed"))
        tap = Tap(rabbitmq.broker_url(), f"xpub{tag}").start()
        log = tmp_path / "sarra.log"
        hold = tmp_path / "holding"
        broker = _broker(rabbitmq)
        base = f"{web.base_url}/src"
        route = ("to_clusters", f"pump{tag}")
        proc = foreground(home, "sarra", "feed", log, SARRA_TEST_HOLD_BEFORE_ANNOUNCE=str(hold))
        try:
            assert post_files(home, broker, f"xs_alice{tag}", base, src, files, route) == 0
            wait_for(hold.exists, 60, "files placed and the instance holding")
            cache = list((home.root / "state").rglob("recent_files_000.cache"))
            assert cache and cache[0].read_text().count("\n") >= 1, "no entry before the kill"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            assert tap.notices == [], "announced before the kill: the test proves nothing"
            proc = foreground(home, "sarra", "feed", log)
            want = {str(p.relative_to(src)) for p in files}
            wait_for(lambda: set(tap.paths()) >= want, 60, "every file announced after restart")
            announced = len(tap.notices)
            # the same files again, then one new file as a marker: only the marker goes on
            assert post_files(home, broker, f"xs_alice{tag}", base, src, files, route) == 0
            marker = make_files(src, ["k/marker.bin"], size=3000)
            assert post_files(home, broker, f"xs_alice{tag}", base, src, marker, route) == 0
            wait_for(lambda: "k/marker.bin" in tap.paths(), 60, "the marker announced")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            kill(proc)
            tap.stop()
        text = log.read_text()
        assert len(tap.notices) == announced + 1, (tap.paths(), text[-3000:])
        assert text.count("duplicate suppressed") >= len(files), text[-3000:]
        assert md5_tree(tree) == md5_tree(src)


@dataclass
class _Pumped:
    """What one pumping of a file in blocks left behind."""

    source: bytes
    tree: Path  # the pump's web tree
    downstream: Path  # the file as the subscriber behind the pump got it
    notices: list[Notice]  # what the pump announced


def _pump_in_blocks(
    home: Home,
    rabbitmq: Any,
    tmp_path: Path,
    sarra_extra: str,
    announced: int,
    *post_extra: tuple[str, str],
) -> _Pumped:
    """Post a 10-block file (shuffled) to a sarra with ``sarra_extra`` options, wait for
    ``announced`` announcements and the file behind the pump, and collect what happened."""
    tag = unique("")
    block = 64 * 1024
    with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:
        src = web.root / "src"
        (big,) = make_files(src, ["d/big.bin"], size=9 * block + 777)
        tree = web.root / "pub"
        home.write(
            "sarra",
            "feed",
            _sarra_conf(rabbitmq, tag, tree, web.base_url, f"alice{tag}") + sarra_extra,
        )
        dl = tmp_path / "dl"
        home.write(
            "subscribe",
            "down",
            f"broker {_broker(rabbitmq)}\nexchange xpub{tag}\nsubtopic #\nexpire 10m\n"
            f"directory {dl}\nmirror on\naccept .*\nreport_back off\n",
        )
        tap = Tap(rabbitmq.broker_url(), f"xpub{tag}").start()
        try:
            with running(home, "sarra", "feed"), running(home, "subscribe", "down"):
                assert (
                    post_files(
                        home,
                        _broker(rabbitmq),
                        f"xs_alice{tag}",
                        f"{web.base_url}/src",
                        src,
                        [big],
                        ("blocksize", str(block)),
                        ("randomize", "on"),
                        ("to_clusters", f"pump{tag}"),
                        *post_extra,
                    )
                    == 0
                )
                wait_for(lambda: len(tap.notices) >= announced, 60, "the announcements")
                wait_for(lambda: (dl / "d" / "big.bin").exists(), 60, "the file downstream")
        finally:
            tap.stop()
        return _Pumped(big.read_bytes(), tree, dl / "d" / "big.bin", list(tap.notices))


def test_a_file_in_blocks_is_kept_as_parts_by_sarra_and_reassembled_downstream(
    home: Home, rabbitmq: Any, tmp_path: Path
) -> None:
    got = _pump_in_blocks(home, rabbitmq, tmp_path, "", announced=10)
    # the pump holds segments only (inplace off, the sarra default), announced as p
    parts = sorted(p.name for p in (got.tree / "d").glob("*.Part"))
    assert len(parts) == 10
    assert not (got.tree / "d" / "big.bin").exists()
    assert {n.parts.method for n in got.notices if n.parts} == {"p"}
    assert all(n.path.endswith(".Part") for n in got.notices)
    assert got.downstream.read_bytes() == got.source


def test_with_inplace_on_sarra_announces_the_assembled_file_block_by_block_once_complete(
    home: Home, rabbitmq: Any, tmp_path: Path
) -> None:
    got = _pump_in_blocks(home, rabbitmq, tmp_path, "inplace on\n", announced=10)
    # the pump holds the assembled file and announced its 10 blocks once it was complete
    assert (got.tree / "d" / "big.bin").read_bytes() == got.source
    assert not list((got.tree / "d").glob("*.Part"))
    assert sorted(n.parts.block_number for n in got.notices if n.parts) == list(range(10))
    assert {n.path for n in got.notices} == {"d/big.bin"}
    assert {n.parts.method for n in got.notices if n.parts} == {"i"}
    for n in got.notices:
        assert n.parts is not None
        piece = got.source[n.parts.offset : n.parts.offset + n.parts.length]
        assert n.checksum.value == hashlib.md5(piece).hexdigest()
    assert got.downstream.read_bytes() == got.source


def test_a_growing_file_through_sarra_with_inplace_on_is_announced_once_as_an_ordinary_file(
    home: Home, rabbitmq: Any, tmp_path: Path
) -> None:
    # sr_post --growing: its 9 full blocks go out as provisional blocks of a growth, then,
    # after growing_idle, the last one as final (the growth itself: tests/integration)
    got = _pump_in_blocks(
        home, rabbitmq, tmp_path, "inplace on\n", 10, ("growing", "on"), ("growing_idle", "1")
    )
    assert (got.tree / "d" / "big.bin").read_bytes() == got.source
    # complete at the pump: its blocks carry the final parts and no growth any more, so the
    # next hop (sarra, sr2 or sr3) takes them as an ordinary file
    assert sorted(n.parts.block_number for n in got.notices if n.parts) == list(range(10))
    rem = len(got.source) - 9 * 65536
    assert {n.parts.wire()[:-2] for n in got.notices if n.parts} == {f"i,65536,10,{rem}"}
    assert all(n.header("growing") is None for n in got.notices)
    assert got.downstream.read_bytes() == got.source


def test_with_delete_on_sarra_removes_each_sftp_source_once_its_copy_is_placed_and_announced(
    home: Home, rabbitmq: Any, sshd: Any, tmp_path: Path
) -> None:
    tag = unique("")
    origin = f"sftp://{sshd.user}@127.0.0.1:{sshd.port}/"
    home.credentials(rabbitmq.url(), f"{origin} ssh_keyfile={sshd.key_path}")
    src = sshd.root_dir / f"del{tag}"
    files = make_files(src, ["a.bin", "d/b.bin"], size=5000)
    before = md5_tree(src)
    tree = tmp_path / "pub"
    conf = _sarra_conf(rabbitmq, tag, tree, "http://pump.example.com", f"alice{tag}")
    home.write("sarra", "feed", conf + "delete on\n")
    tap = Tap(rabbitmq.broker_url(), f"xpub{tag}").start()
    try:
        with running(home, "sarra", "feed"):
            base = origin + str(src).lstrip("/")
            broker = _broker(rabbitmq)
            to = ("to_clusters", f"pump{tag}")
            assert post_files(home, broker, f"xs_alice{tag}", base, src, files, to) == 0
            wait_for(lambda: len(tap.notices) >= len(files), 60, "re-announcements")
            wait_for(lambda: not any(f.exists() for f in files), 30, "the sources deleted")
    finally:
        tap.stop()
    assert sorted(tap.paths()) == ["a.bin", "d/b.bin"]
    assert md5_tree(tree) == before  # placed under the pump's tree before the sources went
