"""sr_watch against a real throwaway RabbitMQ: what is posted for each kind of change."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sarra.broker import BrokerSession, Delivery, QueueSpec
from sarra.broker.admin import declare_and_bind
from sarra.codec import v02
from sarra.components.watch import WatchComponent
from sarra.config.settings import load_settings
from sarra.integrity.sums import name_sum
from sarra.notice import Notice
from tests.servers.rabbitmq import RabbitNode

pytestmark = pytest.mark.servers

SLEEP = "0.5"  # coalescing interval and polling period
WAIT = 20.0  # upper bound for a notice to arrive (never asserted as a timing)
BASE_URL = "sftp://user@host"


class Watching:
    """One sr_watch instance on ``<tmp>/wdir`` and a queue bound to what it posts."""

    def __init__(self, rabbitmq: RabbitNode, root: Path, options: dict[str, str]) -> None:
        self.root = root
        self.wdir = root / "wdir"
        self.wdir.mkdir()
        suffix = secrets.token_hex(4)
        self.exchange = f"xs_guest_{suffix}"
        cmdline = [
            ("post_broker", rabbitmq.url()),
            ("post_exchange_suffix", suffix),
            ("post_base_url", BASE_URL),
            ("post_base_dir", str(root)),
            ("path", str(self.wdir)),
            ("sleep", SLEEP),
            *options.items(),
        ]
        self.cfg = load_settings("watch", None, cmdline)
        self.consumer = BrokerSession(rabbitmq.broker_url(), name="watch-test")
        self.consumer.connect()
        self.consumer.declare_exchange(self.exchange)
        queue = f"q_guest.watchtest.{suffix}"
        declare_and_bind(
            self.consumer,
            QueueSpec(queue, ((self.exchange, "#"),), durable=False, auto_delete=True),
        )
        self.received: list[Notice] = []
        self.consumer.consume(queue, 100, self._on_delivery)
        self.stop = threading.Event()
        self.status: list[int] = []
        self.thread = threading.Thread(target=self._run, name="sr_watch", daemon=True)

    def _on_delivery(self, d: Delivery) -> None:
        m = d.message
        notice = v02.decode(m.exchange, m.routing_key, m.body, m.headers)
        assert isinstance(notice, Notice)
        self.received.append(notice)
        self.consumer.ack(d)

    def _run(self) -> None:
        self.status.append(WatchComponent().run(self.cfg, 1, self.stop))

    def start(self) -> None:
        """Start watching; returns once the watcher is active (its start-up post arrived)."""
        (self.wdir / ".ready").write_text("ready\n")
        self.thread.start()
        ready = self.collect(1)
        assert ready[0].path.endswith("wdir/.ready")

    def collect(self, n: int) -> list[Notice]:
        """The next ``n`` notices (fails if they do not come)."""
        deadline = time.monotonic() + WAIT
        while len(self.received) < n and time.monotonic() < deadline:
            self.consumer.poll(0.2)
        got, self.received = self.received[:n], self.received[n:]
        assert len(got) == n, f"expected {n} notices, got {[x.path for x in got]}"
        return got

    def nothing_more(self, seconds: float = 1.5) -> None:
        """No further notice within ``seconds`` (over two coalescing intervals)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.consumer.poll(0.2)
        assert [n.path for n in self.received] == []

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        self.consumer.close()


WatchFactory = Callable[..., Watching]


@pytest.fixture
def watching(
    rabbitmq: RabbitNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WatchFactory]:
    monkeypatch.setenv("SR_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SR_STATE_DIR", str(tmp_path / "state"))
    made: list[Watching] = []

    def make(**options: str) -> Watching:
        w = Watching(rabbitmq, tmp_path, options)
        made.append(w)
        w.start()
        return w

    yield make
    for w in made:
        w.close()
        assert not w.thread.is_alive()
        assert w.status == [0]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_a_created_file_is_posted_with_its_checksum_and_metadata(watching: WatchFactory) -> None:
    w = watching()
    (w.wdir / "hello.txt").write_bytes(b"hello world\n")
    [n] = w.collect(1)
    assert n.exchange == w.exchange
    assert n.topic == "v02.post.wdir"
    assert n.rel_path == "/wdir/hello.txt"
    assert n.base_url == BASE_URL
    assert n.header("sum") == "d,6f5902ac237024bdd0c176cb93063dc4"
    assert n.header("parts") == "1,12,1,0,0"
    assert n.header("mode") and n.header("mtime")
    w.nothing_more()


def test_a_modified_file_is_posted_again_with_the_new_checksum(watching: WatchFactory) -> None:
    w = watching()
    f = w.wdir / "m.txt"
    f.write_bytes(b"one")
    assert w.collect(1)[0].header("sum") == f"d,{md5(b'one')}"
    with f.open("ab") as out:
        out.write(b" two")
    assert w.collect(1)[0].header("sum") == f"d,{md5(b'one two')}"


def test_a_file_written_slowly_is_posted_once_when_complete(watching: WatchFactory) -> None:
    w = watching()
    chunks = [bytes([65 + i]) * 4096 for i in range(12)]
    with (w.wdir / "slow.bin").open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
            out.flush()
            time.sleep(0.15)
    [n] = w.collect(1)
    data = b"".join(chunks)
    assert n.header("sum") == f"d,{md5(data)}"
    assert n.header("parts") == f"1,{len(data)},1,0,0"
    w.nothing_more()


def test_a_symlink_is_posted_as_a_link(watching: WatchFactory) -> None:
    w = watching()
    os.symlink("hello.txt", w.wdir / "link.txt")
    [n] = w.collect(1)
    assert n.rel_path == "/wdir/link.txt"
    assert n.header("link") == "hello.txt"
    assert n.header("sum") == name_sum("L", "hello.txt").wire()
    assert n.parts is None and n.header("mode") is None


def test_a_deleted_file_is_posted_as_a_remove(watching: WatchFactory) -> None:
    w = watching()
    f = w.wdir / "f2.txt"
    f.write_text("bye\n")
    w.collect(1)
    f.unlink()
    [n] = w.collect(1)
    assert n.rel_path == "/wdir/f2.txt"
    assert n.header("sum") == name_sum("R", "f2.txt").wire()  # GM-9
    assert n.parts is None


def test_a_rename_gives_the_old_name_removed_then_the_new_name_posted(
    watching: WatchFactory,
) -> None:
    w = watching()
    (w.wdir / "f1.txt").write_bytes(b"hello world\n")
    w.collect(1)
    os.rename(w.wdir / "f1.txt", w.wdir / "f2.txt")
    first, second = w.collect(2)  # GM-8, in this order
    assert first.rel_path == "/wdir/f1.txt"
    assert first.header("sum") == name_sum("R", "f1.txt").wire()
    assert first.header("newname") == "/wdir/f2.txt"
    assert second.rel_path == "/wdir/f2.txt"
    assert second.header("sum") == "d,6f5902ac237024bdd0c176cb93063dc4"
    assert second.header("oldname") == "/wdir/f1.txt"
    w.nothing_more()


def test_a_directory_rename_gives_a_pair_per_file_then_the_old_directory(
    watching: WatchFactory,
) -> None:
    w = watching()
    (w.wdir / "d1").mkdir()
    (w.wdir / "d1" / "a.txt").write_text("a")
    (w.wdir / "d1" / "b.txt").write_text("b")
    w.collect(2)
    os.rename(w.wdir / "d1", w.wdir / "d2")
    got = w.collect(5)
    assert [(n.rel_path, n.header("newname"), n.header("oldname")) for n in got] == [
        ("/wdir/d1/a.txt", "/wdir/d2/a.txt", None),
        ("/wdir/d2/a.txt", None, "/wdir/d1/a.txt"),
        ("/wdir/d1/b.txt", "/wdir/d2/b.txt", None),
        ("/wdir/d2/b.txt", None, "/wdir/d1/b.txt"),
        ("/wdir/d1", "/wdir/d2", None),
    ]
    assert got[-1].header("sum") == name_sum("R", "d1").wire()


def test_inflight_suffix_files_are_posted_only_under_their_final_name(
    watching: WatchFactory,
) -> None:
    w = watching(inflight=".tmp")
    (w.wdir / "data.csv.tmp").write_text("1,2,3\n")
    time.sleep(1.5)
    os.rename(w.wdir / "data.csv.tmp", w.wdir / "data.csv")
    [n] = w.collect(1)
    assert n.rel_path == "/wdir/data.csv"
    assert n.header("oldname") is None
    w.nothing_more()


def test_events_can_restrict_posting_to_deletions(watching: WatchFactory) -> None:
    w = watching(events="delete")
    (w.wdir / ".ready").unlink()
    [n] = w.collect(1)
    assert n.header("sum") == name_sum("R", ".ready").wire()
    (w.wdir / "new.txt").write_text("ignored\n")
    w.nothing_more()


def test_polling_detects_creations_and_deletions(watching: WatchFactory) -> None:
    w = watching(force_polling="on")
    (w.wdir / "sub").mkdir()
    (w.wdir / "sub" / "p.txt").write_bytes(b"polled")
    [n] = w.collect(1)
    assert n.rel_path == "/wdir/sub/p.txt"
    assert n.header("sum") == f"d,{md5(b'polled')}"
    (w.wdir / "sub" / "p.txt").unlink()
    [r] = w.collect(1)
    assert r.rel_path == "/wdir/sub/p.txt"
    assert r.header("sum") == name_sum("R", "p.txt").wire()


def test_duplicate_suppression_skips_an_unchanged_rewrite(watching: WatchFactory) -> None:
    w = watching(suppress_duplicates="on")
    f = w.wdir / "same.txt"
    f.write_text("same\n")
    w.collect(1)
    f.write_text("same\n")  # same content, same path: a duplicate
    w.nothing_more()
    f.unlink()
    assert w.collect(1)[0].header("sum") == name_sum("R", "same.txt").wire()


def test_a_directory_moved_in_from_outside_is_posted_file_by_file(watching: WatchFactory) -> None:
    w = watching()
    outside = w.root / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "one.txt").write_text("1")
    (outside / "deep" / "two.txt").write_text("2")
    os.rename(outside, w.wdir / "inside")
    got = sorted(n.rel_path for n in w.collect(2))
    assert got == ["/wdir/inside/deep/two.txt", "/wdir/inside/one.txt"]
    w.nothing_more()


def test_mkdir_and_rmdir_are_posted_when_events_asks(watching: WatchFactory) -> None:
    w = watching(events="create|delete|link|modify|mkdir|rmdir")
    (w.wdir / "newdir").mkdir()
    [m] = w.collect(1)
    assert (m.rel_path, m.header("sum")) == ("/wdir/newdir", name_sum("m", "newdir").wire())
    (w.wdir / "newdir").rmdir()
    [r] = w.collect(1)
    assert (r.rel_path, r.header("sum")) == ("/wdir/newdir", name_sum("r", "newdir").wire())


class _BrokenObserver:
    """An observer that cannot watch (as when the inotify watch limit is reached)."""

    def schedule(self, *args: object, **kw: object) -> None:
        raise OSError(28, "inotify watch limit reached")

    def stop(self) -> None:
        pass


def test_watching_falls_back_to_polling_when_events_are_unavailable(
    watching: WatchFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sarra.flow.watcher.Observer", _BrokenObserver)
    w = watching()
    (w.wdir / "polled.txt").write_bytes(b"by polling")
    [n] = w.collect(1)
    assert n.header("sum") == f"d,{md5(b'by polling')}"


def test_cache_basis_data_drops_the_same_content_under_another_name(
    watching: WatchFactory,
) -> None:
    w = watching(suppress_duplicates="on", cache_basis="data")
    (w.wdir / "a.txt").write_text("same\n")
    assert w.collect(1)[0].path.endswith("wdir/a.txt")
    (w.wdir / "b.txt").write_text("same\n")  # other path, same checksum: a duplicate
    w.nothing_more()
    (w.wdir / "c.txt").write_text("other\n")
    assert w.collect(1)[0].path.endswith("wdir/c.txt")


def test_with_post_on_start_off_files_already_there_are_not_posted(
    rabbitmq: RabbitNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SR_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SR_STATE_DIR", str(tmp_path / "state"))
    w = Watching(rabbitmq, tmp_path, {"post_on_start": "off"})
    (w.wdir / "old.txt").write_text("already here\n")
    w.thread.start()
    try:
        # the watcher is up once a file written now is posted; keep writing until one is
        deadline = time.monotonic() + WAIT
        n = 0
        while not w.received and time.monotonic() < deadline:
            (w.wdir / f"new{n}.txt").write_text(f"{n}\n")
            n += 1
            for _ in range(5):
                w.consumer.poll(0.2)
        assert w.received, "the watcher never posted a new file"
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            w.consumer.poll(0.2)
        paths = [x.path for x in w.received]
        assert all("/new" in p for p in paths), paths
        assert not any(p.endswith("old.txt") for p in paths)
    finally:
        w.close()
    assert w.status == [0]


def test_realpath_post_resolves_a_linked_post_base_dir(
    watching: WatchFactory, tmp_path: Path
) -> None:
    link = tmp_path.parent / f"{tmp_path.name}-link"
    link.symlink_to(tmp_path)
    try:
        # the watched tree is the real one; post_base_dir names it through a link
        w = watching(post_base_dir=str(link), realpath_post="on")
        (w.wdir / "r.txt").write_text("r\n")
        [n] = w.collect(1)
        assert n.rel_path == "/wdir/r.txt"
    finally:
        link.unlink()


def test_outlet_json_prints_each_change_and_never_connects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import socket

    monkeypatch.setenv("SR_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SR_STATE_DIR", str(tmp_path / "state"))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    wdir = tmp_path / "wdir"
    wdir.mkdir()
    (wdir / "old.txt").write_text("old\n")
    cmdline = [
        ("post_broker", f"amqp://anonymous@127.0.0.1:{port}/"),
        ("post_base_url", BASE_URL),
        ("post_base_dir", str(tmp_path)),
        ("path", str(wdir)),
        ("sleep", SLEEP),
        ("outlet", "json"),
    ]
    cfg = load_settings("watch", None, cmdline)
    stop = threading.Event()
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(WatchComponent().run(cfg, 1, stop)))
    printed: list[str] = []

    def lines_until(pred: Callable[[list[str]], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not pred(printed) and time.monotonic() < deadline:
            printed.extend(capsys.readouterr().out.splitlines())
            time.sleep(0.1)

    thread.start()
    try:
        lines_until(lambda p: any("old.txt" in x for x in p))
        (wdir / "new.txt").write_bytes(b"hello world\n")
        lines_until(lambda p: any("new.txt" in x for x in p))
    finally:
        stop.set()
        thread.join(timeout=15)
    assert status == [0]  # everything "posted": nothing waits for the unreachable broker
    decoded = [json.loads(x) for x in printed]
    by_body = {body.split(" ")[2]: (topic, headers) for topic, headers, body in decoded}
    assert set(by_body) == {"/wdir/old.txt", "/wdir/new.txt"}
    topic, headers = by_body["/wdir/new.txt"]
    assert topic == "v02.post.wdir"
    assert headers["sum"] == "d,6f5902ac237024bdd0c176cb93063dc4"
    assert list(headers) == sorted(headers)


def test_a_watching_instance_beats_its_heartbeat_file(
    watching: WatchFactory, tmp_path: Path
) -> None:
    """What ``status`` shows and ``sanity`` (sanity_log_dead) judges a watcher by."""
    w = watching()
    [heart] = (tmp_path / "state").rglob("sr_watch_*_001.heart")
    long_ago = time.time() - 100
    os.utime(heart, (long_ago, long_ago))
    deadline = time.monotonic() + WAIT
    while heart.stat().st_mtime < time.time() - 30 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert heart.stat().st_mtime > time.time() - 30  # written again while idle
    w.nothing_more(0.2)


#: a Latin-1 file name, not valid UTF-8
BAD = b"bad\xff.txt"
SKIPPED = "file name is not valid UTF-8: cannot be announced"


def test_sr_watch_logs_a_name_that_is_not_utf8_and_keeps_announcing(
    watching: WatchFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    w = watching()
    (w.wdir / os.fsdecode(BAD)).write_bytes(b"latin-1 name\n")
    os.symlink(os.fsdecode(b"target\xff"), w.wdir / "link.lnk")  # a link to such a name
    (w.wdir / "after.txt").write_bytes(b"posted after\n")
    got = w.collect(1)
    assert [n.rel_path for n in got] == ["/wdir/after.txt"]
    w.nothing_more()
    assert w.thread.is_alive()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"in {w.wdir}: {BAD!r} skipped: {SKIPPED}" in line for line in lines), lines
    assert any("link target b'target\\xff' is not valid UTF-8" in line for line in lines), lines
    # and it goes on: a later file is announced too
    (w.wdir / "later.txt").write_bytes(b"later\n")
    assert [n.rel_path for n in w.collect(1)] == ["/wdir/later.txt"]
    # renamed to a valid name, it is posted as a new file (no remove of the old name)
    os.rename(w.wdir / os.fsdecode(BAD), w.wdir / "renamed.txt")
    [n] = w.collect(1)
    assert n.rel_path == "/wdir/renamed.txt" and n.header("oldname") is None
    assert n.header("sum") == f"d,{md5(b'latin-1 name' + bytes([10]))}"
    w.nothing_more()


def test_sr_watch_polling_skips_it_too(
    watching: WatchFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    w = watching(force_polling="on")
    (w.wdir / os.fsdecode(BAD)).write_bytes(b"latin-1 name\n")
    (w.wdir / "polled.txt").write_bytes(b"polled\n")
    assert [n.rel_path for n in w.collect(1)] == ["/wdir/polled.txt"]
    w.nothing_more()
    assert w.thread.is_alive()
    assert any(SKIPPED in r.getMessage() for r in caplog.records), caplog.text
