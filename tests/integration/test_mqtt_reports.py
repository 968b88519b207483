"""Reports over MQTT against the suite's Mosquitto: a subscriber (``post_format v03``) reports
on xs_<user>; sr_report routes them (xs_<user> -> xreport -> xr_<source>) in v03; sr_log
shows them to the source. Every hop is an ``mqtt://`` broker."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from sarra.components.log import LogComponent
from sarra.config.loader import resolve_queue_name
from tests.integration.flowkit import make_files, md5_tree, post, unique, wait_for
from tests.integration.test_mqtt_flow import MqttTap, _site
from tests.pump.pumpkit import Home, running
from tests.servers.mosquitto import Mosquitto

pytestmark = pytest.mark.servers


def test_reports_cross_sr_report_and_reach_sr_log_over_mqtt(
    rabbitmq: Any,
    mosquitto: Mosquitto,
    nginx: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tag = unique("mqr")
    site = _site(tmp_path, rabbitmq, mosquitto)  # for sr_post (credentials.conf)
    home = Home(tmp_path / "home")
    for k, v in home.env.items():
        monkeypatch.setenv(k, v)
    home.credentials(mosquitto.credentials_line)
    user = mosquitto.user
    src = nginx.root / tag
    names = ["a.txt", "with space.txt", "d/e#f.bin"]
    make_files(src, names, size=1500)
    dest = tmp_path / "dest"
    mq = mosquitto.url()
    home.write(
        "subscribe",
        "sub",
        f"broker {mq}\nexchange xs_{tag}\ntopic_prefix v03\nsubtopic {tag}.#\n"
        f"post_format v03\ncluster here{tag}\ndirectory {dest}\nmirror on\nstrip 1\naccept .*\n",
    )
    home.write(
        "report",
        "router",
        f"broker {mq}\ncluster here{tag}\ndeclare subscriber {user}\n",
    )
    home.write("log", "mine", f"broker {mq}\n")
    xreport = MqttTap(mosquitto, "xreport")
    try:
        out = io.StringIO()
        log_stop = threading.Event()
        log_cfg = home.load("log", "mine")
        # sr_log runs live (one line per report) beside the flow
        shown = threading.Thread(
            target=lambda: LogComponent(out=out).run(log_cfg, 0, log_stop), daemon=True
        )
        shown.start()
        try:
            with running(home, "report", "router"), running(home, "subscribe", "sub"):
                for component, name in (
                    ("report", "router"),
                    ("subscribe", "sub"),
                    ("log", "mine"),
                ):
                    mosquitto.wait_subscribed(resolve_queue_name(home.load(component, name)))
                rc = post(
                    site, nginx.base_url, nginx.root, [src],
                    ("post_broker", mq), ("post_exchange", f"xs_{tag}"),
                    ("post_format", "v03"), ("post_topic_prefix", "v03"),
                )  # fmt: skip
                assert rc == 0
                wait_for(lambda: md5_tree(dest) == md5_tree(src), 60, "every file over MQTT")
                wait_for(
                    lambda: all(f"{tag}/{n}" in out.getvalue() for n in names),
                    60,
                    "every report shown by sr_log",
                )
                xreport.poll(1.0)
        finally:
            log_stop.set()
            shown.join(30)
    finally:
        xreport.close()
    # one live line per report (the summary printed at the end is indented)
    lines = [ln for ln in out.getvalue().splitlines() if f"{tag}/" in ln and ln[:1] != " "]
    assert len(lines) == len(names) and all("201" in ln for ln in lines), out.getvalue()
    # sr_report forwarded each report to xreport in v03 (sr3's report table)
    bodies = [json.loads(d.message.body) for d in xreport.got]
    assert {b["relPath"].lstrip("/") for b in bodies} == {f"{tag}/{n}" for n in names}
    assert all(b["report"]["code"] == 201 for b in bodies)
