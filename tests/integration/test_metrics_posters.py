"""The posting components keep the same per-instance metrics as a subscriber: an ``sr
start``ed sr_watch daemon and an sr_post run of a configuration, on the suite's RabbitMQ,
read back through ``sr web``'s ``/metrics`` with the Prometheus parser."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sarra.cli import pump
from sarra.cli.instances import process_matches, read_pid_file
from sarra.cli.runtime import default_runtime
from sarra.cli.web import WebServer
from sarra.components.post import PostComponent
from tests.integration.flowkit import Site, make_files, site_env, unique, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def site(tmp_path: Path, rabbitmq, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    made = Site(tmp_path / "site", rabbitmq.port).setup()
    for key, value in made.env.items():
        monkeypatch.setenv(key, value)
    yield made
    for path in made.state_dir.glob("*/*/*.pid"):  # never leave daemons behind
        pid = read_pid_file(path)
        if pid is not None and process_matches(pid, [path.parent.parent.name]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _samples(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _sr(*argv: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    pump.main(argv, out=out, err=err)
    return out.getvalue() + err.getvalue()


def test_watch_and_post_metrics_count_what_they_announced(site: Site, tmp_path: Path) -> None:
    tag = unique("pm")
    root = tmp_path / "www"
    watched = root / tag / "watched"
    watched.mkdir(parents=True)
    common = (
        f"post_broker {site.broker}\npost_exchange xs_guest\npost_base_url http://files.example/\n"
        f"post_base_dir {root}\n"
    )
    (site.config_dir / "watch").mkdir()
    (site.config_dir / "watch" / "wd.conf").write_text(f"{common}path {watched}\n")
    (site.config_dir / "post").mkdir()
    (site.config_dir / "post" / "pc.conf").write_text(common)
    server = None
    try:
        said = _sr("start", "watch/wd")
        assert "watch/wd" in said, said
        server = WebServer(default_runtime(), "127.0.0.1", 0, None, every=1.0)
        server.start()
        host, port = server.address
        url = f"http://{host}:{port}/metrics"
        watch = (("component", "watch"), ("config", "wd"), ("instance", "001"))
        wait_for(
            lambda: _samples(url).get(("sarra_files_total", watch)) == 0,
            timeout=40,
            what="sr_watch's metrics file, before any file",
        )
        files = make_files(watched, ["a.txt", "b.txt", "c.txt"], size=2000)
        size = sum(p.stat().st_size for p in files)
        samples: Samples = {}

        def watched_all() -> bool:
            nonlocal samples
            samples = _samples(url)
            return samples.get(("sarra_files_total", watch)) == 3

        wait_for(watched_all, timeout=40, what="sr_watch's metrics counting 3 files")
        assert samples[("sarra_notices_published_total", watch)] == 3
        assert samples[("sarra_bytes_total", watch)] == size
        assert samples[("sarra_instance_up", watch)] == 1
        assert samples[("sarra_retry_queue_depth", watch)] == 0
        assert samples[("sarra_instance_connected", watch)] == 1

        # sr_post of a configuration: instance 0, shown while and after it runs
        posted = make_files(root / tag / "posted", ["x.bin", "y.bin"], size=5000)
        with site_env(site):
            cfg = site.load("post", "pc", [("path", str(p)) for p in posted])
            assert PostComponent().run(cfg, 0, threading.Event()) == 0
        post = (("component", "post"), ("config", "pc"), ("instance", "000"))

        def post_counted() -> bool:
            nonlocal samples
            samples = _samples(url)
            return samples.get(("sarra_files_total", post)) == 2

        wait_for(post_counted, timeout=20, what="sr_post's metrics in /metrics")
        assert samples[("sarra_notices_published_total", post)] == 2
        assert samples[("sarra_bytes_total", post)] == sum(p.stat().st_size for p in posted)
        assert samples[("sarra_instance_connected", post)] == 0  # it ended: disconnected
    finally:
        if server is not None:
            server.stop()
        _sr("stop")
