"""``sr web`` over a real pump: instance processes started by ``sr start`` on the suite's
RabbitMQ, files served by its nginx; /metrics parsed with prometheus_client's parser must
count what was sent, /status.json and the page must show each flow, and no password."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sarra.cli import pump
from sarra.cli.instances import process_matches, read_pid_file
from sarra.cli.runtime import default_runtime
from sarra.cli.web import Credentials, WebServer
from tests.integration.flowkit import Site, make_files, post, unique, wait_for

PASSWORD = "Sup3rSecretPw"
#: where the screenshot of the page is kept (CI keeps the folder as a test artifact)
ARTIFACTS = Path(os.environ.get("SARRA_TEST_ARTIFACTS", "build/test-artifacts"))


def chromium(tmp_path: Path, *args: str) -> str:
    """Run Debian's headless Chromium (installed by scripts/bootstrap) once; its stdout."""
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    argv = [
        exe,
        "--headless",
        "--no-sandbox",  # the suite runs as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",  # the machine's network is closed
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        return bytes(resp.read())


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def pump_site(tmp_path: Path, rabbitmq, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    site = Site(tmp_path / "site", rabbitmq.port).setup()
    for key, value in site.env.items():
        monkeypatch.setenv(key, value)
    yield site
    for path in site.state_dir.glob("*/*/*.pid"):  # never leave daemons behind
        pid = read_pid_file(path)
        if pid is not None and process_matches(pid, [path.parent.parent.name]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _sr(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = pump.main(argv, out=out, err=err)
    return rc, out.getvalue() + err.getvalue()


def test_sr_web_shows_a_running_pump_and_its_metrics_match_what_was_sent(  # type: ignore[no-untyped-def]
    pump_site: Site, nginx, rabbitmq, tmp_path: Path
) -> None:
    site = pump_site
    # the pump's roles, so that the page's police audit reaches the management API
    (site.config_dir / "admin.conf").write_text(
        f"admin amqp://guest@127.0.0.1:{site.broker_port}/\nmgmt_port {rabbitmq.mgmt_port}\n"
    )
    tag = unique("web")
    good, bad = f"{tag}ok", f"{tag}ko"
    site.write_subscribe(
        "good",
        f"exchange xs_guest\nsubtopic {good}.#\ndirectory {tmp_path / 'dest'}\nmirror on\n"
        "expire 10m\nreject .*skip.*\naccept .*\n",
    )
    site.write_subscribe(
        "failing",
        f"exchange xs_guest\nsubtopic {bad}.#\ndirectory {tmp_path / 'dest2'}\nmirror on\n"
        "expire 10m\naccept .*\n",
    )
    # a third flow whose broker refuses it: its URL carries a password the page must hide
    (site.config_dir / "subscribe" / "locked.conf").write_text(
        f"broker amqp://nobody:{PASSWORD}@127.0.0.1:{site.broker_port}/\nexpire 10m\n"
    )
    files = make_files(nginx.root / good, ["a.txt", "b.txt", "c.txt", "skip.txt"], size=4000)
    sent = sum(p.stat().st_size for p in files[:3])
    elsewhere = tmp_path / "elsewhere"  # announced under nginx's URL, not there: 404
    missing = make_files(elsewhere / bad, ["x.txt", "y.txt"])
    server = None
    try:
        _rc, said = _sr("start")
        assert "subscribe/good" in said, said
        for _ in range(200):  # until both flows consume
            _rc, said = _sr("status", "--json")
            records = {r["config"]: r for r in json.loads(said)["configs"]}
            if all((records[c]["queue"] or {}).get("consumers") for c in ("good", "failing")):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(said)
        assert post(site, nginx.base_url, nginx.root, [nginx.root / good]) == 0
        assert post(site, nginx.base_url, elsewhere, missing) == 0

        server = WebServer(default_runtime(), "127.0.0.1", 0, None, every=1.0, audit_every=2.0)
        server.start()
        host, port = server.address
        base = f"http://{host}:{port}"
        ours = (("component", "subscribe"), ("config", "good"), ("instance", "001"))
        theirs = (("component", "subscribe"), ("config", "failing"), ("instance", "001"))
        failed = tuple(sorted((*theirs, ("code", "499"), ("source", "(none)"))))
        metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

        def counted() -> bool:  # instances publish every 5 s, the server samples every 1 s
            nonlocal metrics
            metrics = _samples(_get(base + "/metrics").decode())
            return (
                metrics.get(("sarra_files_total", ours)) == 3
                and metrics.get(("sarra_outcomes_total", failed)) == 2
            )

        wait_for(counted, timeout=40, what="/metrics counting the flows")
        assert metrics[("sarra_notices_received_total", ours)] == 4
        assert metrics[("sarra_bytes_total", ours)] == sent
        assert metrics[("sarra_rejects_total", ours)] == 1
        assert metrics[("sarra_notices_received_total", theirs)] == 2
        assert metrics[("sarra_files_total", theirs)] == 0
        assert metrics[("sarra_retry_queue_depth", theirs)] == 2
        assert metrics[("sarra_instance_up", ours)] == 1
        assert metrics[("sarra_instance_connected", ours)] == 1
        assert 0 <= metrics[("sarra_lag_seconds", ours)] < 60

        def audited() -> bool:  # the audit that ran after the locked instance died
            nonlocal metrics
            metrics = _samples(_get(base + "/metrics").decode())
            dead = ("sarra_police_findings", (("check", "instance_dead"), ("severity", "error")))
            return metrics.get(dead, 0) >= 1

        wait_for(audited, timeout=40, what="the police audit finding the dead instance")
        # the queues are counted over one kept connection per broker and user (guest's: good
        # and failing; locked's broker refuses nobody, so nothing of it is kept)
        (kept,) = server.sessions.sessions()
        assert kept.connected and kept.url.user == "guest"
        server.sampler.sample()
        server.sampler.sample()
        assert server.sessions.sessions() == [kept] and kept.connected
        assert metrics[("sarra_police_status", ())] == 2
        doc = json.loads(_get(base + "/status.json"))
        audit = doc["audit"]
        assert audit["status"] == "error", audit
        assert audit["broker"] == f"http://127.0.0.1:{rabbitmq.mgmt_port}/"
        dead = [f for f in audit["findings"] if f["check"] == "instance_dead"]
        assert [f["subject"] for f in dead] == ["subscribe/locked/001"], audit
        by_config = {r["config"]: r for r in doc["configs"]}
        assert sorted(by_config) == ["failing", "good", "locked"]
        assert by_config["good"]["totals"]["files"] == 3
        assert by_config["failing"]["totals"]["by_source"] == {"(none)": {"499": 2}}
        assert by_config["good"]["queue"]["consumers"] == 1
        assert by_config["good"]["instances"]["running"] == 1
        # why the locked flow is down: the note its instance left as the broker refused it
        (locked,) = by_config["locked"]["instances"]["each"]
        assert locked["state"] == "stale pid", locked
        assert locked["why"].startswith(
            "the broker refused access (bad credentials or permissions): "
        ), locked
        assert locked["why"].endswith("(exit status 1)")
        assert by_config["good"]["instances"]["each"][0]["why"] is None
        _rc, said = _sr("status")
        (line,) = [x for x in said.splitlines() if x.startswith("subscribe/locked ") and "001" in x]
        assert "the broker refused access (bad credentials or permissions)" in line, said

        page = _get(base + "/").decode()
        for label in ("subscribe/good", "subscribe/failing", "subscribe/locked"):
            assert label in page
        assert '<td class="bad">499</td><td>(none)</td><td class="num">2</td>' in page
        assert '<span class="why bad">001: the broker refused access' in page
        dead_row = '<td class="bad">error</td><td>instance_dead</td><td>subscribe/locked/001</td>'
        assert dead_row in page
        for body in (page, json.dumps(doc), _get(base + "/metrics").decode()):
            assert PASSWORD not in body
            assert ":guest@" not in body

        # a multi-user pump: each source's token sees its own flows only; the operator's all
        server.credentials = Credentials(
            token="op-tok", sources=(("alice", "alice-tok"), ("guest", "guest-tok"))
        )

        def seen(token: str) -> dict[str, Any]:
            req = urllib.request.Request(
                base + "/status.json", headers={"Authorization": f"Bearer {token}"}
            )
            with urllib.request.urlopen(req, timeout=10) as resp:
                return {r["config"]: r for r in json.loads(resp.read())["configs"]}

        assert sorted(seen("op-tok")) == ["failing", "good", "locked"]
        as_guest = seen("guest-tok")  # good and failing read xs_guest; locked is nobody's
        assert sorted(as_guest) == ["failing", "good"]
        assert as_guest["good"]["totals"]["files"] == 3
        assert seen("alice-tok") == {}  # alice has no flow here, and no notice went through
        req = urllib.request.Request(
            base + "/metrics", headers={"Authorization": "Bearer alice-tok"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            alice_metrics = _samples(resp.read().decode())
        assert not [k for k in alice_metrics if k[0] == "sarra_files_total"]
        with contextlib.suppress(urllib.error.HTTPError), urllib.request.urlopen(base + "/"):
            raise AssertionError("served without a token")
        server.credentials = None

        # the page as a browser renders it, and a screenshot of it
        time.sleep(3)  # a few more samples: the charts have lines
        dom = chromium(tmp_path, "--dump-dom", base + "/")
        for label in ("subscribe/good", "subscribe/failing", "subscribe/locked"):
            assert label in dom
        assert "<polyline" in dom and "files/s" in dom
        assert "Police audit" in dom and "instance_dead" in dom
        assert PASSWORD not in dom
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "sr-web.png"
        shot.unlink(missing_ok=True)
        chromium(tmp_path, f"--screenshot={shot.resolve()}", "--window-size=1500,900", base + "/")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 10_000
    finally:
        if server is not None:
            server.stop()
        _sr("stop")
