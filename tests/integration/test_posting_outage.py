"""sr_post and sr_watch through broker outages, on a throwaway node of their own (stopped and
started here: never the session's shared node).

Counts are taken on a durable queue bound before the outage, so what the broker confirmed
survives ``stop_app``/``start_app`` and every announced file can be checked by path.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarra.broker.base import Delivery, QueueSpec
from sarra.broker.session import BrokerSession
from sarra.codec import v02
from sarra.components.watch import WatchComponent
from sarra.config.settings import load_settings
from sarra.notice import Notice
from tests.integration.flowkit import Site, make_files, unique, wait_for
from tests.servers.rabbitmq import RabbitNode, start_rabbitmq

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    """A node of this module's own: its app is stopped and started by the tests."""
    try:
        n = start_rabbitmq()
    except RuntimeError as e:
        pytest.fail(f"the outage tests need a real node: {e}", pytrace=False)
    try:
        yield n
    finally:
        n.stop()
        shutil.rmtree(n.base_dir, ignore_errors=True)


@pytest.fixture
def site(tmp_path: Path, node: RabbitNode) -> Site:
    return Site(tmp_path / "site", node.port).setup()


class Tap:
    """A durable queue bound to ``exchange``: survives the outage, counted and drained after."""

    def __init__(self, node: RabbitNode, exchange: str, key: str = "#") -> None:
        self.url = node.broker_url()
        self.queue = f"q_guest.outage.{secrets.token_hex(4)}"
        s = self._session()
        try:
            s.declare_exchange(exchange)
            s.declare_queue(QueueSpec(self.queue, ((exchange, key),), durable=True))
        finally:
            s.close()

    def _session(self) -> BrokerSession:
        s = BrokerSession(self.url, name="outage-tap")
        s.connect()
        return s

    def count(self) -> int:
        s = self._session()
        try:
            return s.queue_counts(self.queue)[0]
        finally:
            s.close()

    def drain(self, expected: int, timeout: float = 30.0) -> list[str]:
        """The paths of every notice queued (at least ``expected``), then the queue is
        deleted; a short quiet wait after ``expected`` shows any duplicates too."""
        paths: list[str] = []
        s = self._session()

        def on(d: Delivery) -> None:
            m = d.message
            notice = v02.decode(m.exchange, m.routing_key, m.body, m.headers)
            assert isinstance(notice, Notice)
            paths.append(notice.path)
            s.ack(d)

        try:
            s.consume(self.queue, 1000, on)
            deadline = time.monotonic() + timeout
            while len(paths) < expected and time.monotonic() < deadline:
                s.poll(0.2)
            s.poll(0.5)
            s.cancel(self.queue)
            s.delete_queue(self.queue)
        finally:
            s.close()
        return paths


def _sr_post(site: Site, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "sr_post"), "-pb", site.broker, *args],
        env={**os.environ, **site.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _tree(root: Path, count: int, size: int = 100) -> list[str]:
    """``count`` files under ``root``; their announced paths (relative to root's parent)."""
    names = [f"d{i // 100:02d}/f{i:05d}.txt" for i in range(count)]
    make_files(root, names, size)
    return [f"{root.name}/{n}" for n in names]


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"sr_post did not end in {timeout}s:\n{err}") from None
    return err


def test_sr_post_waits_for_a_broker_down_at_start(node, site, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("down")
    expected = _tree(tmp_path / tag, 20)
    tap = Tap(node, "xs_guest", f"v02.post.{tag}.#")
    node.stop_app()
    try:
        proc = _sr_post(
            site, "-pbu", "http://h", "-pbd", str(tmp_path), "-post_outage_max", "60",
            str(tmp_path / tag),
        )  # fmt: skip
        time.sleep(3)
        assert proc.poll() is None, "sr_post gave up instead of waiting for the broker"
    finally:
        node.start_app()
    err = _finish(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "posted 20 file(s)" in err and "0 not posted" in err
    assert sorted(set(tap.drain(20))) == sorted(expected)


def test_sr_post_rides_out_an_outage_in_the_middle_of_a_tree(node, site, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("mid")
    count = 3000
    expected = _tree(tmp_path / tag, count)
    tap = Tap(node, "xs_guest", f"v02.post.{tag}.#")
    # one notice per confirmed batch: the outage lands between confirmed and unconfirmed files
    proc = _sr_post(
        site, "-pbu", "http://h", "-pbd", str(tmp_path), "-batch", "1", "-post_outage_max",
        "60", str(tmp_path / tag),
    )  # fmt: skip
    try:
        wait_for(lambda: tap.count() >= 100, timeout=30, what="the first notices")
        node.stop_app()
        stopped = time.monotonic()
        assert proc.poll() is None, "sr_post finished before the outage: make the tree larger"
        time.sleep(max(0.0, 9.0 - (time.monotonic() - stopped)))  # longer than the old 7.5 s
        assert proc.poll() is None, "sr_post gave up during the outage"
    finally:
        node.start_app()
    err = _finish(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "retrying" in err and "reachable again" in err
    paths = tap.drain(count)
    assert sorted(set(paths)) == sorted(expected)  # every file, at least once
    assert len(paths) - count <= 3  # a batch of one in flight at the stop may come twice


def test_sr_post_past_its_outage_bound_names_what_was_not_posted(node, site, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("bound")
    expected = _tree(tmp_path / tag, 30)
    node.stop_app()
    try:
        proc = _sr_post(
            site, "-pbu", "http://h", "-pbd", str(tmp_path), "-post_outage_max", "2",
            str(tmp_path / tag),
        )  # fmt: skip
        err = _finish(proc, timeout=30)
    finally:
        node.start_app()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert "posted 0 file(s)" in err and "30 not posted" in err
    assert "30 file(s) not posted" in err and "post_outage_max" in err
    named = [p for p in expected if str(tmp_path / p) in err]
    assert len(named) == 20  # bounded: the first 20 by name ...
    assert "... and 10 more" in err  # ... and a count of the rest


def test_sr_watch_announces_what_changed_during_a_20s_outage_and_keeps_watching(  # type: ignore[no-untyped-def]
    node, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("SR_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SR_STATE_DIR", str(tmp_path / "state"))
    caplog.set_level(logging.INFO)
    wdir = tmp_path / "wdir"
    wdir.mkdir()
    suffix = secrets.token_hex(4)
    exchange = f"xs_guest_{suffix}"
    tap = Tap(node, exchange)
    cfg = load_settings(
        "watch",
        None,
        [
            ("post_broker", node.url()),
            ("post_exchange_suffix", suffix),
            ("post_base_url", "sftp://user@host"),
            ("post_base_dir", str(tmp_path)),
            ("path", str(wdir)),
            ("sleep", "0.5"),
        ],
    )
    stop = threading.Event()
    status: list[int] = []
    thread = threading.Thread(
        target=lambda: status.append(WatchComponent().run(cfg, 1, stop)), daemon=True
    )
    thread.start()
    try:
        (wdir / "before.txt").write_text("before\n")
        wait_for(lambda: tap.count() >= 1, timeout=20, what="the notice before the outage")
        node.stop_app()
        stopped = time.monotonic()
        try:
            (wdir / "during1.txt").write_text("one\n")
            (wdir / "during2.txt").write_text("two\n")
            time.sleep(10)
            (wdir / "during3.txt").write_text("three\n")
            time.sleep(max(0.0, 20.0 - (time.monotonic() - stopped)))
            assert thread.is_alive(), "sr_watch died during the outage"
        finally:
            node.start_app()
        wait_for(lambda: tap.count() >= 4, timeout=30, what="the changes made during the outage")
        time.sleep(1)  # a notice republished after the outage may still be on its way
        queued = tap.count()  # 4, or more with such duplicates
        (wdir / "after.txt").write_text("after\n")
        wait_for(lambda: tap.count() > queued, timeout=20, what="a change made after the outage")
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive() and status == [0]
    paths = tap.drain(5)
    names = ["before", "during1", "during2", "during3", "after"]
    assert sorted(set(paths)) == sorted(f"wdir/{n}.txt" for n in names)
    assert "notice(s) waiting" in caplog.text and "reachable again" in caplog.text


def test_sr_post_with_caching_killed_while_the_broker_is_down_posts_everything_on_the_next_run(  # type: ignore[no-untyped-def]
    node, site, tmp_path
):
    """``-caching``: an sr_post SIGKILLed while its notices wait for the broker never posted
    them; the next run must post them rather than find them "unchanged since last posted"
    (a cache entry counts only once the broker confirmed the notice)."""
    tag = unique("cachekill")
    expected = _tree(tmp_path / tag, 20)
    tap = Tap(node, "xs_guest", f"v02.post.{tag}.#")
    args = ("-pbu", "http://h", "-pbd", str(tmp_path), "-caching", "1h")
    node.stop_app()
    try:
        proc = _sr_post(site, *args, "-post_outage_max", "120", str(tmp_path / tag))
        time.sleep(4)
        assert proc.poll() is None, "sr_post gave up instead of waiting for the broker"
        proc.kill()  # SIGKILL: no stop, no cleanup
        proc.communicate(timeout=10)
    finally:
        node.start_app()
    again = _sr_post(site, *args, str(tmp_path / tag))
    err = _finish(again)
    assert again.returncode == 0, err
    assert sorted(set(tap.drain(20, timeout=10))) == sorted(expected), err[-2000:]
