"""Faults on the subscribe path: broker outages and a killed instance lose nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.integration.flowkit import (
    Site,
    make_files,
    md5_tree,
    post,
    running_subscriber,
    site_env,
    unique,
    wait_for,
)


@pytest.fixture
def site(tmp_path: Path, rabbitmq) -> Site:  # type: ignore[no-untyped-def]
    return Site(tmp_path / "site", rabbitmq.port).setup()


def _tree(root: Path, count: int, size: int) -> list[Path]:
    return make_files(root, [f"d{i % 5}/f{i:04d}.bin" for i in range(count)], size=size)


def _subscription(site: Site, tag: str, dest: Path) -> str:
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        "expire 10m\nreport_back off\nprefetch 10\naccept .*\n",
    )
    return name


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and "~sr" in p.name]


def _queue_empty(site: Site, name: str) -> bool:
    from sarra.broker.session import BrokerSession
    from sarra.config.loader import resolve_queue_name

    cfg = site.load("subscribe", name)
    s = BrokerSession(site.broker_url())
    s.connect()
    try:
        messages, _ = s.queue_counts(resolve_queue_name(cfg, env={**os.environ, **site.env}))
    finally:
        s.close()
    return messages == 0


def _count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*.bin") if "~sr" not in p.name) if root.exists() else 0


def test_connections_closed_by_the_broker_mid_flow_lose_nothing(site, rabbitmq, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("cut")
    src = nginx.root / tag
    _tree(src, 300, 20000)
    dest = tmp_path / "dest"
    name = _subscription(site, tag, dest)
    with running_subscriber(site, name):
        assert post(site, nginx.base_url, nginx.root, [src]) == 0
        wait_for(lambda: _count_files(dest) >= 30, what="the first downloads")
        rabbitmq.close_all_connections("fault test 1")
        wait_for(lambda: _count_files(dest) >= 150, timeout=60, what="downloads to resume")
        rabbitmq.close_all_connections("fault test 2")
        wait_for(lambda: _count_files(dest) >= 300, timeout=90, what="every file")
        wait_for(lambda: _queue_empty(site, name), timeout=60, what="every message acked")
    assert md5_tree(dest) == md5_tree(src)
    assert _leftovers(dest) == []


def test_a_broker_restart_mid_flow_loses_nothing(site, rabbitmq, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("restart")
    src = nginx.root / tag
    _tree(src, 200, 20000)
    dest = tmp_path / "dest"
    name = _subscription(site, tag, dest)
    with running_subscriber(site, name):
        assert post(site, nginx.base_url, nginx.root, [src]) == 0
        wait_for(lambda: _count_files(dest) >= 20, what="the first downloads")
        rabbitmq.stop_app()
        time.sleep(2)
        rabbitmq.start_app()
        wait_for(lambda: _count_files(dest) >= 200, timeout=120, what="every file")
        wait_for(lambda: _queue_empty(site, name), timeout=60, what="every message acked")
    assert md5_tree(dest) == md5_tree(src)
    assert _leftovers(dest) == []


def _foreground(site: Site, name: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **site.env}
    bindir = Path(sys.executable).parent
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [str(bindir / "sr_subscribe"), "foreground", name],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_an_instance_killed_with_sigkill_and_restarted_delivers_every_file(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path
):
    tag = unique("kill")
    src = nginx.root / tag
    _tree(src, 200, 400_000)
    dest = tmp_path / "dest"
    name = _subscription(site, tag, dest)
    with site_env(site):
        from sarra.components.subscribe import SubscribeComponent

        SubscribeComponent().declare(site.load("subscribe", name))
    log = tmp_path / "subscribe.log"
    proc = _foreground(site, name, log)
    try:
        assert post(site, nginx.base_url, nginx.root, [src]) == 0
        wait_for(lambda: _count_files(dest) >= 40, timeout=60, what="the first downloads")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        killed_at = _count_files(dest)
        assert killed_at < 200, "the kill came too late to test anything"
        proc = _foreground(site, name, log)
        wait_for(lambda: _count_files(dest) >= 200, timeout=120, what="every file")
        wait_for(lambda: _queue_empty(site, name), timeout=60, what="every message acked")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert md5_tree(dest) == md5_tree(src), log.read_text()[-2000:]
    assert _leftovers(dest) == []


class _FlakyOrigin:
    """A real HTTP server that answers 503 until told to serve, then serves its files."""

    def __init__(self, root: Path) -> None:
        from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

        origin = self
        self.failing = True
        self.requests = 0

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):  # type: ignore[no-untyped-def]
                super().__init__(*a, directory=str(root), **kw)

            def do_GET(self) -> None:
                origin.requests += 1
                if origin.failing:
                    self.send_error(503, "try later")
                    return
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_retry_queued_on_disk_survives_a_restart_and_succeeds_later(site, tmp_path):  # type: ignore[no-untyped-def]
    from tests.integration.flowkit import ReportTap

    tag = unique("retry")
    www = tmp_path / "www"
    (f,) = make_files(www / tag, ["late.bin"], size=5000)
    origin = _FlakyOrigin(www)
    dest = tmp_path / "dest"
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        "expire 10m\nattempts 1\nretry_delay 1s\nretry_delay_max 2s\naccept .*\n",
    )
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            assert post(site, origin.base_url, www, [f]) == 0
            wait_for(lambda: any(r.code == 499 for r in tap.about("late.bin")), what="499")
        # stopped: the notice is acked and lives only in the disk retry queue now
        assert _queue_empty(site, name)
        assert not (dest / "late.bin").exists()
        origin.failing = False
        with running_subscriber(site, name):
            wait_for(lambda: (dest / "late.bin").exists(), timeout=60, what="the retried file")
            wait_for(lambda: any(r.code == 201 for r in tap.about("late.bin")), what="201")
    finally:
        tap.stop()
        origin.close()
    assert (dest / "late.bin").read_bytes() == f.read_bytes()
    codes = [r.code for r in tap.about("late.bin")]
    assert codes[0] == 499 and codes[-1] == 201
    assert "queued for retry" in tap.about("late.bin")[0].message


def test_a_missing_report_exchange_drops_reports_with_one_error_and_the_files_still_flow(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path, caplog
):
    import logging

    caplog.set_level(logging.INFO)
    tag = unique("norx")
    src = nginx.root / tag
    _tree(src, 40, 1000)
    dest = tmp_path / "dest"
    name = f"sub_{tag}"
    # the input exchange exists; the report exchange does not and, with declare_exchange
    # off, is not declared: the broker refuses every report
    from sarra.broker.session import BrokerSession

    admin = BrokerSession(site.broker_url())
    admin.connect()
    admin.declare_exchange("xs_guest")
    admin.close()
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        f"expire 10m\nreport_back on\nreport_exchange xs_guest_gone_{tag}\n"
        "declare_exchange off\nprefetch 10\naccept .*\n",
    )
    with running_subscriber(site, name):
        assert post(site, nginx.base_url, nginx.root, [src]) == 0
        wait_for(lambda: _count_files(dest) >= 40, timeout=60, what="every file")
        wait_for(lambda: _queue_empty(site, name), timeout=60, what="every message acked")
    assert md5_tree(dest) == md5_tree(src)
    messages = [r.getMessage() for r in caplog.records]
    missing = [m for m in messages if f"report exchange xs_guest_gone_{tag} is missing" in m]
    assert len(missing) == 1, missing  # said once (at most once a minute), not per batch
    assert not [m for m in messages if "broker connection lost" in m]  # no reconnect storm
