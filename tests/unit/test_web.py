"""``sr web``: credentials rule, refusal to start, 401 on every path, redaction, the page and
the exposition format (the flow end to end is tests/integration/test_web.py)."""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sarra.cli import pump
from sarra.cli.web import (
    REFUSED,
    Credentials,
    WebServer,
    load_credentials,
    needs_credentials,
    parse_listen,
)
from sarra.errors import ConfigError
from tests.cli_doubles import standin_runtime

SECRET_URL = "amqps://feeder:TopSecret@broker.example/"


def _sample(now: float | None = None, files: int = 3) -> dict[str, Any]:
    now = time.time() if now is None else now
    metrics = {
        "schema": 1,
        "time": now,
        "notices": {"in": 5, "out": 0},
        "files": files,
        "blocks": 0,
        "bytes": 3000 * files,
        "rejects": 1,
        "malformed": 0,
        "codes": {"0": 1, "201": files, "499": 1},
        "by_source": {"alice": {"201": files, "499": 1}},
        "retry": {"depth": 1, "oldest_age": 12.0},
        "lag": {"last": 0.5, "max": 2.0},
        "last_activity": now,
        "connection": "connected",
    }
    return {
        "schema": 1,
        "time": now,
        "configs": [
            {
                "component": "subscribe",
                "config": "feed",
                "enabled": True,
                "ok": False,
                "error": f"cannot reach {SECRET_URL}",  # a record that forgot to redact
                "instances": {
                    "expected": 2,
                    "running": 1,
                    "pids": [123],
                    "each": [
                        {
                            "number": 1,
                            "state": "running",
                            "pid": 123,
                            "extra": False,
                            "metrics": metrics,
                        },
                        {"number": 2, "state": "stopped", "pid": None, "extra": False},
                    ],
                },
                "queue": {"name": "q_feeder.x", "backlog": 7, "consumers": 1, "extra": {}},
                "totals": {
                    "files": files,
                    "bytes": 3000 * files,
                    "notices_in": 5,
                    "rejects": 1,
                    "retry_depth": 1,
                    "retry_oldest_age": 12.0,
                    "lag_last": 0.5,
                    "lag_max": 2.0,
                    "by_source": {"alice": {"201": files, "499": 1}},
                },
                "reassembly": [{"path": "big/file.bin", "blocks": 8, "present": 3, "updated": now}],
            }
        ],
    }


def _get(url: str, auth: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers={"Authorization": auth} if auth else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[WebServer]:
    samples = iter([_sample(time.time() - 5, files=1), _sample()])
    server = WebServer(
        standin_runtime(), "127.0.0.1", 0, None, every=3600, collect_once=lambda: next(samples)
    )
    server.start()
    server.sampler.sample()  # a second sample: one point of rates
    try:
        yield server
    finally:
        server.stop()


def test_only_the_two_loopback_addresses_serve_without_credentials() -> None:
    assert not needs_credentials("127.0.0.1")
    assert not needs_credentials("::1")
    for host in ("127.0.0.2", "0.0.0.0", "::", "192.0.2.1", "localhost", "example.org"):
        assert needs_credentials(host), host
    assert parse_listen("127.0.0.1:8093") == ("127.0.0.1", 8093)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("127.0.0.1", ":80", "h:port", "h:70000"):
        with pytest.raises(ConfigError):
            parse_listen(bad)


def test_the_credentials_file_must_be_private_and_hold_credentials(tmp_path: Path) -> None:
    path = tmp_path / "web-auth"
    with pytest.raises(ConfigError, match="umask 077"):
        load_credentials(path)  # missing: says how to make one
    path.write_text("token abc\nbasic ops:pa ss:w\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_credentials(path)
    path.chmod(0o600)
    creds = load_credentials(path)
    assert creds == Credentials("abc", ("ops", "pa ss:w"))
    assert creds.allows("Bearer abc")
    assert not creds.allows("Bearer abd")
    assert creds.allows("Basic " + base64.b64encode(b"ops:pa ss:w").decode())
    assert not creds.allows("Basic " + base64.b64encode(b"ops:wrong").decode())
    assert not creds.allows("Basic !!!")
    assert not creds.allows(None)
    path.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no credentials"):
        load_credentials(path)
    path.write_text("password x\n")
    with pytest.raises(ConfigError, match=":1:"):
        load_credentials(path)


def test_sr_web_refuses_a_non_loopback_address_without_a_private_credentials_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = standin_runtime()
    monkeypatch.setenv("SR_CONFIG_DIR", str(tmp_path / "config"))
    out, err = io.StringIO(), io.StringIO()
    rc = pump.main(["web", "--listen", "127.0.0.2:0"], runtime=rt, out=out, err=err)
    assert rc == 2
    said = err.getvalue()
    assert "127.0.0.2 needs credentials" in said and "token" in said and "mode 600" in said
    auth = tmp_path / "auth"
    auth.write_text("token t\n")
    auth.chmod(0o640)
    err = io.StringIO()
    rc = pump.main(["web", "--listen", "127.0.0.2:0", "--auth", str(auth)], runtime=rt, err=err)
    assert rc == 2 and "chmod 600" in err.getvalue()
    err = io.StringIO()
    assert pump.main(["web", "--listen", "nowhere"], runtime=rt, err=err) == 2
    assert "HOST:PORT" in err.getvalue()


def test_every_path_answers_401_without_credentials_on_a_non_loopback_address() -> None:
    server = WebServer(
        standin_runtime(),
        "127.0.0.2",
        0,
        Credentials("tok3n", ("ops", "pw")),
        every=3600,
        collect_once=_sample,
    )
    server.start()
    try:
        host, port = server.address
        assert host == "127.0.0.2"
        base = f"http://{host}:{port}"
        basic = "Basic " + base64.b64encode(b"ops:pw").decode()
        for path in ("/", "/status.json", "/metrics", "/nothing"):
            status, body, headers = _get(base + path)
            assert status == 401, path
            assert b"feed" not in body
            assert headers["WWW-Authenticate"].startswith("Basic")
            assert _get(base + path, "Bearer wrong")[0] == 401
            assert _get(base + path, "Basic " + base64.b64encode(b"ops:no").decode())[0] == 401
        for path in ("/", "/status.json", "/metrics"):
            assert _get(base + path, "Bearer tok3n")[0] == 200, path
            assert _get(base + path, basic)[0] == 200, path
        assert _get(base + "/nothing", "Bearer tok3n")[0] == 404
    finally:
        server.stop()


def test_nothing_served_shows_a_password(served: WebServer) -> None:
    host, port = served.address
    for path in ("/", "/status.json", "/metrics"):
        status, body, _ = _get(f"http://{host}:{port}{path}")
        assert status == 200
        assert b"TopSecret" not in body, path
    status, body, _ = _get(f"http://{host}:{port}/status.json")
    assert b"feeder:***@broker.example" in body


def test_status_json_and_metrics_carry_the_sample(served: WebServer) -> None:
    host, port = served.address
    doc = json.loads(_get(f"http://{host}:{port}/status.json")[1])
    (record,) = doc["configs"]
    assert record["component"] == "subscribe" and record["totals"]["files"] == 3
    (point,) = doc["history"]  # two samples 5 s apart: one point of rates
    assert point[1]["subscribe/feed"]["files"] == pytest.approx(2 / 5, rel=0.05)
    text = _get(f"http://{host}:{port}/metrics")[1].decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    one = (("component", "subscribe"), ("config", "feed"), ("instance", "001"))
    two = (("component", "subscribe"), ("config", "feed"), ("instance", "002"))
    assert samples[("sarra_files_total", one)] == 3
    assert samples[("sarra_bytes_total", one)] == 9000
    assert samples[("sarra_rejects_total", one)] == 1
    assert samples[("sarra_instance_up", one)] == 1
    assert samples[("sarra_instance_up", two)] == 0
    assert samples[("sarra_retry_queue_depth", one)] == 1
    assert samples[("sarra_lag_max_seconds", one)] == 2.0
    failed = tuple(sorted((*one, ("code", "499"), ("source", "alice"))))
    assert samples[("sarra_outcomes_total", failed)] == 1
    cfg = (("component", "subscribe"), ("config", "feed"))
    assert samples[("sarra_queue_backlog", cfg)] == 7
    assert samples[("sarra_reassembly_files", cfg)] == 1


def test_the_page_shows_configs_instances_failures_reassembly_and_charts(
    served: WebServer,
) -> None:
    host, port = served.address
    status, body, headers = _get(f"http://{host}:{port}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert 'http-equiv="refresh"' in page
    assert "subscribe/feed" in page
    assert "1/2" in page  # instances running / expected
    assert "7 ready, 1 consumers" in page
    assert '<td class="bad">499</td><td>alice</td>' in page
    assert "big/file.bin" in page and "3/8 blocks" in page
    assert page.count("<svg") == 4 and "<polyline" not in page  # one point: no line yet


def test_the_police_audit_is_on_the_page_in_status_json_and_metrics() -> None:
    report = {
        "time": time.time(),
        "broker": "http://broker.example:15672/",
        "status": "error",
        "counts": {"instance_dead": 1, "queue_backlog": 1},
        "findings": [
            {
                "check": "queue_backlog",
                "severity": "warning",
                "subject": "q_bob.x",
                "detail": "12000 messages",
                "fix": None,
                "needs_force": False,
            },
            {
                "check": "instance_dead",
                "severity": "error",
                "subject": "subscribe/feed/002",
                "detail": f"pid 99 is gone ({SECRET_URL})",
                "fix": "remove pid",
                "needs_force": False,
            },
        ],
        "fixed": [],
    }
    server = WebServer(
        standin_runtime(),
        "127.0.0.1",
        0,
        None,
        every=3600,
        collect_once=_sample,
        audit_every=3600,
        audit_once=lambda: report,
    )
    server.start()
    try:
        deadline = time.monotonic() + 10
        while server.auditor is not None and server.auditor.latest is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        host, port = server.address
        page = _get(f"http://{host}:{port}/")[1].decode()
        # worst first, the fix sr_police would make, no password
        errors = page.index("instance_dead")
        assert errors < page.index("queue_backlog")
        assert '<td class="bad">error</td><td>instance_dead</td><td>subscribe/feed/002</td>' in page
        assert "<td>remove pid</td>" in page and "TopSecret" not in page
        doc = json.loads(_get(f"http://{host}:{port}/status.json")[1])
        assert doc["audit"]["counts"] == {"instance_dead": 1, "queue_backlog": 1}
        text = _get(f"http://{host}:{port}/metrics")[1].decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("sarra_police_status", ())] == 2
        dead = ("sarra_police_findings", (("check", "instance_dead"), ("severity", "error")))
        assert samples[dead] == 1
    finally:
        server.stop()


def test_an_audit_that_cannot_run_says_why_and_off_means_off() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("no admin.conf")

    server = WebServer(
        standin_runtime(),
        "127.0.0.1",
        0,
        None,
        every=3600,
        collect_once=_sample,
        audit_every=3600,
        audit_once=broken,
    )
    assert server.auditor is not None
    server.auditor.audit()
    assert server.audit_report()["status"] == "error"
    assert server.audit_report()["error"] == "no admin.conf"
    page = server.respond("/")[2].decode()
    assert "error: no admin.conf" in page
    metrics = server.respond("/metrics")[2].decode()
    assert "sarra_police_status 3.0" in metrics
    server.httpd.server_close()
    off = WebServer(standin_runtime(), "127.0.0.1", 0, None, every=3600, collect_once=_sample)
    assert off.auditor is None and off.audit_report()["status"] == "off"
    assert "sarra_police" not in off.respond("/metrics")[2].decode()
    off.httpd.server_close()


def _flow(
    config: str, exchanges: list[str], by_source: dict[str, dict[str, int]]
) -> dict[str, Any]:
    metrics = {
        "schema": 1,
        "time": time.time(),
        "notices": {"in": 9, "out": 0},
        "files": 7,
        "blocks": 0,
        "bytes": 700,
        "rejects": 0,
        "by_source": by_source,
        "connection": "connected",
    }
    return {
        "component": "sarra",
        "config": config,
        "enabled": True,
        "ok": True,
        "error": None,
        "names": {"users": ["feeder"], "exchanges": exchanges, "source": None},
        "instances": {
            "expected": 1,
            "running": 1,
            "pids": [77],
            "each": [
                {"number": 1, "state": "running", "pid": 77, "extra": False, "metrics": metrics}
            ],
        },
        "queue": {"name": f"q_feeder.{config}", "backlog": 3, "consumers": 1, "extra": {}},
        "totals": {"files": 7, "bytes": 700, "by_source": by_source},
        "reassembly": [],
    }


def test_each_source_sees_only_its_own_flows_and_the_operator_sees_all(tmp_path: Path) -> None:
    auth = tmp_path / "web-auth"
    auth.write_text("token 0perator\nsource alice al1ce-tok\nsource bob b0b-tok\n")
    auth.chmod(0o600)
    creds = load_credentials(auth)
    sample = {
        "schema": 1,
        "time": time.time(),
        "configs": [
            _flow("from_alice", ["xs_alice"], {"alice": {"201": 7}}),
            _flow("from_bob", ["xs_bob", "xs_bob_radar"], {"bob": {"201": 7}}),
            _flow(
                "shared", ["xs_alice", "xs_bob"], {"alice": {"201": 3, "499": 1}, "bob": {"201": 4}}
            ),
        ],
    }
    server = WebServer(
        standin_runtime(),
        "127.0.0.1",
        0,
        creds,
        every=3600,
        collect_once=lambda: sample,
        audit_every=3600,
        audit_once=lambda: {"status": "ok", "findings": [], "time": 1.0},
    )
    server.start()
    try:
        host, port = server.address
        base = f"http://{host}:{port}"

        def configs(auth_header: str) -> dict[str, Any]:
            status, body, _ = _get(base + "/status.json", auth_header)
            assert status == 200
            return {r["config"]: r for r in json.loads(body)["configs"]}

        everything = configs("Bearer 0perator")
        assert sorted(everything) == ["from_alice", "from_bob", "shared"]
        alice = configs("Bearer al1ce-tok")
        assert sorted(alice) == ["from_alice", "shared"]
        assert alice["from_alice"]["totals"]["files"] == 7
        assert alice["shared"]["totals"] == {"by_source": {"alice": {"201": 3, "499": 1}}}
        assert alice["shared"]["queue"] is None and alice["shared"]["shared"] is True
        browser = "Basic " + base64.b64encode(b"bob:b0b-tok").decode()
        bob = configs(browser)
        assert sorted(bob) == ["from_bob", "shared"]
        assert bob["shared"]["totals"] == {"by_source": {"bob": {"201": 4}}}
        for path in ("/", "/status.json", "/metrics"):
            status, body, _ = _get(base + path, "Bearer al1ce-tok")
            assert status == 200
            assert b"bob" not in body and b"q_feeder.shared" not in body, path
        status, body, _ = _get(base + "/status.json", "Bearer al1ce-tok")
        assert json.loads(body)["audit"]["status"] == "hidden"
        text = _get(base + "/metrics", "Bearer al1ce-tok")[1].decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        shared = (("component", "sarra"), ("config", "shared"), ("instance", "001"))
        assert (
            samples[
                (
                    "sarra_outcomes_total",
                    tuple(sorted((*shared, ("code", "499"), ("source", "alice")))),
                )
            ]
            == 1
        )
        assert ("sarra_files_total", shared) not in samples  # not alice's to know
        mine = (("component", "sarra"), ("config", "from_alice"), ("instance", "001"))
        assert samples[("sarra_files_total", mine)] == 7
        assert "bob" in _get(base + "/", "Bearer 0perator")[1].decode()
        assert _get(base + "/", "Bearer wrong")[0] == 401
        assert _get(base + "/", "Basic " + base64.b64encode(b"alice:b0b-tok").decode())[0] == 401
    finally:
        server.stop()


def test_source_lines_are_checked(tmp_path: Path) -> None:
    auth = tmp_path / "web-auth"
    auth.write_text("source alice same\nsource bob same\n")
    auth.chmod(0o600)
    with pytest.raises(ConfigError, match="each token must be different"):
        load_credentials(auth)
    auth.write_text("source alice\n")
    with pytest.raises(ConfigError, match="source <name> <secret>"):
        load_credentials(auth)
    auth.write_text("source alice a-tok\n")
    creds = load_credentials(auth)
    assert creds.identify("Bearer a-tok") == "alice"
    assert creds.identify("Bearer other") == REFUSED and not creds.allows(None)
