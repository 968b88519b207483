"""sr_log's default bindings read v02 and v03 reports; sr_report writes what it routes to an
MQTT broker in v03 (MQTT carries v03 only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sarra.codec import v02
from sarra.components.log import LogComponent
from sarra.config.settings import load_settings
from sarra.flow.reportrouting import _in_v03
from sarra.notice import Notice, Report


def _log_cfg(tmp_path: Path, body: str):  # type: ignore[no-untyped-def]
    (tmp_path / "cfg" / "log").mkdir(parents=True, exist_ok=True)
    (tmp_path / "cfg" / "log" / "m.conf").write_text(body)
    env = {**os.environ, "SR_CONFIG_DIR": str(tmp_path / "cfg"), "SR_STATE_DIR": str(tmp_path)}
    return load_settings("log", "m", [], env=env)


def test_sr_log_binds_v02_and_v03_reports_unless_the_config_names_its_own(tmp_path: Path) -> None:
    log = LogComponent()
    plain = _log_cfg(tmp_path, "broker mqtt://alice@h/\n")
    assert log._bindings(plain, "alice") == (("xr_alice", "v02.report.#"), ("xr_alice", "v03.#"))
    mine = _log_cfg(tmp_path, "broker amqp://alice@h/\ntopic_prefix v03\nsubtopic obs.#\n")
    assert log._bindings(mine, "alice") == (("xr_alice", "v03.obs.#"),)


def test_a_v02_report_routed_to_mqtt_goes_in_v03() -> None:
    wire = v02.encode(_report(), "xr_alice")
    assert wire.content_type != "application/json"
    out = _in_v03(wire)
    assert out.content_type == "application/json" and out.exchange == "xr_alice"
    body = json.loads(out.body)
    assert body["relPath"].lstrip("/") == "obs/a b.txt" and body["report"]["code"] == 201
    assert _in_v03(out) is out  # v03 stays as it is


def _report() -> Report:
    notice = v02.decode(
        "xs_alice",
        "v02.post.obs",
        b"20261207010000.5 http://h/ /obs/a%20b.txt",
        {"sum": "d," + "0" * 32, "parts": "1,5,1,0,0", "source": "alice"},
    )
    assert isinstance(notice, Notice)
    return v02.make_report(
        notice, code=201, message="Downloaded", host="h", user="bob", elapsed=0.1,
        source=None, from_cluster=None, to_clusters=None,
    )  # fmt: skip
