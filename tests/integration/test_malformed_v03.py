"""Malformed v03 messages never stop a consumer: each becomes a 417 report (when its body still
names what it was about) or a logged drop, and the good message behind them arrives; against a
real RabbitMQ and a real Mosquitto, with nginx serving the good file."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from sarra.broker.base import BrokerUrl
from sarra.broker.mqtt import MqttSession
from sarra.codec import v02
from sarra.codec.timestamps import now_timestamp
from sarra.config.loader import resolve_queue_name
from sarra.notice import Report, WireMessage
from tests.integration.flowkit import (
    ReportTap,
    Site,
    make_files,
    publish_raw,
    running_subscriber,
    unique,
    wait_for,
)
from tests.integration.test_mqtt_flow import MqttTap, _site
from tests.servers.mosquitto import Mosquitto

pytestmark = pytest.mark.servers


def _v03(tag: str, obj: object, raw: str | None = None) -> WireMessage:
    body = raw if raw is not None else json.dumps(obj, ensure_ascii=False)
    return WireMessage(
        exchange="xs_guest",
        routing_key=f"v03.{tag}",
        body=body.encode("utf-8"),
        headers={},  # type: ignore[arg-type]
        content_type="application/json",
    )


def _bodies(tag: str, base: str, data: bytes) -> tuple[list[Any], dict[str, Any]]:
    """(malformed bodies, the good one); a str item is sent as is (not JSON)."""
    ts = now_timestamp()
    ts = ts[:8] + "T" + ts[8:]
    ident = {"method": "md5", "value": base64.b64encode(hashlib.md5(data).digest()).decode()}

    def msg(rel: str, **kw: Any) -> dict[str, Any]:
        return {"pubTime": ts, "baseUrl": base, "relPath": f"{tag}/{rel}", "identity": ident,
                "size": len(data), "source": "bob", **kw}  # fmt: skip

    bad: list[Any] = [
        '{"pubTime": "2026',  # not JSON: nothing to report about
        "[1, 2, 3]",  # JSON, not an object: dropped, logged
        {k: v for k, v in msg("norel.txt").items() if k != "relPath"},  # no relPath: dropped
        msg("badsum.txt", identity={"method": "nosuch", "value": "x"}),  # sum unusable: dropped
        msg("size.txt", size="many"),  # wrong type -> 417
        msg("blocks.txt", blocks=[1, 2]),  # wrong type -> 417
        msg("fileop.txt", fileOp="rm -rf"),  # wrong type -> 417
        msg("../../../../escape.txt"),  # hostile relPath -> 417 (refused before any I/O)
    ]
    return bad, msg("good.txt")


REPORTED = {"size.txt", "blocks.txt", "fileop.txt", "escape.txt"}


def test_malformed_v03_over_rabbitmq_gets_417_and_the_subscriber_goes_on(  # type: ignore[no-untyped-def]
    rabbitmq, nginx, tmp_path, caplog
) -> None:
    site = Site(tmp_path / "site", rabbitmq.port).setup()
    tag = unique("bad3")
    (good,) = make_files(nginx.root / tag, ["good.txt"])
    data = good.read_bytes()
    bad, ok = _bodies(tag, nginx.base_url, data)
    outer = tmp_path / "outer"
    dest = outer / "a" / "b" / "dest"
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\ntopic_prefix v03\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\n"
        "strip 1\nexpire 10m\naccept .*\n",
    )
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    caplog.set_level(logging.INFO)
    try:
        with running_subscriber(site, name):
            publish_raw(
                site.broker_url(),
                [_v03(tag, b, b if isinstance(b, str) else None) for b in [*bad, ok]],
            )
            wait_for(lambda: (dest / "good.txt").exists(), what="the good file")
            wait_for(
                lambda: len([r for r in tap.reports if r.code == 417]) >= len(REPORTED),
                what=f"the 417s {tap.reports} {tap.undecodable}",
            )
            wait_for(lambda: any(r.code == 201 for r in tap.about("good.txt")), what="201")
    finally:
        tap.stop()
    assert (dest / "good.txt").read_bytes() == data
    got = {r.notice.path.rsplit("/", 1)[-1]: r for r in tap.reports if r.code == 417}
    assert set(got) == REPORTED
    for r in got.values():
        # the source the bad message named is kept, so that sr_report can route it back
        assert r.notice.header("source") == "bob"
        assert r.notice.checksum.letter == "d"
    for name in ("size.txt", "blocks.txt", "fileop.txt"):
        assert got[name].message.startswith("invalid message: v03"), got[name].message
    assert tap.undecodable == []
    assert sorted(p.name for p in outer.rglob("*") if p.is_file()) == ["good.txt"]
    drops = [rec.getMessage() for rec in caplog.records if "no 417 report" in rec.getMessage()]
    assert len(drops) == 4, drops  # not JSON, not an object, no relPath, unusable identity


def test_malformed_v03_over_mosquitto_gets_417_in_v03_and_the_subscriber_goes_on(
    rabbitmq: Any, mosquitto: Mosquitto, nginx: Any, tmp_path: Path
) -> None:
    site = _site(tmp_path, rabbitmq, mosquitto)
    tag = unique("bad3m")
    (good,) = make_files(nginx.root / tag, ["good.txt"])
    data = good.read_bytes()
    bad, ok = _bodies(tag, nginx.base_url, data)
    dest = tmp_path / "dest"
    exchange = f"xs_{tag}"
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"broker {mosquitto.url()}\nexchange {exchange}\ntopic_prefix v03\nsubtopic {tag}.#\n"
        f"post_format v03\nreport_exchange xr_{tag}\ndirectory {dest}\nmirror on\nstrip 1\n"
        "accept .*\n",
    )
    tap = MqttTap(mosquitto, f"xr_{tag}")
    url = BrokerUrl(
        "127.0.0.1", mosquitto.port, mosquitto.user, mosquitto.password, protocol="mqtt"
    )
    try:
        with running_subscriber(site, name):
            mosquitto.wait_subscribed(resolve_queue_name(site.load("subscribe", name)))
            pub = MqttSession(url, name="raw")
            pub.connect()
            try:
                wires = [_v03(tag, b, b if isinstance(b, str) else None) for b in [*bad, ok]]
                pub.publish([WireMessage(exchange, w.routing_key, w.body, w.headers,
                                         w.content_type) for w in wires])  # fmt: skip
            finally:
                pub.close()
            wait_for(lambda: (dest / "good.txt").exists(), 60, "the good file over MQTT")

            def reports() -> list[Report]:
                tap.poll(0.2)
                out = []
                for d in tap.got:
                    m = d.message
                    r = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
                    assert isinstance(r, Report)
                    out.append(r)
                return out

            wait_for(lambda: len(reports()) >= len(REPORTED) + 1, 60, "the reports over MQTT")
            time.sleep(0.5)
            got = reports()
    finally:
        tap.close()
    assert (dest / "good.txt").read_bytes() == data
    # every report over MQTT is v03 (sr3's report table)
    assert all("report" in json.loads(d.message.body) for d in tap.got)
    codes = {r.notice.path.rsplit("/", 1)[-1]: r.code for r in got}
    assert codes == {**dict.fromkeys(REPORTED, 417), "good.txt": 201}
    assert all(r.notice.header("source") == "bob" for r in got)
