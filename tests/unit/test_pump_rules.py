"""Pump rules without a broker: anti-spoofing, clusters, baseUrl policy, report routing,
sr_log's summary and its refusal of other users' reports."""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

import pytest

from sarra.broker.base import BrokerUrl, Delivery
from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.codec import v02
from sarra.components.log import log_exchange
from sarra.errors import ConfigError, PolicyRefused
from sarra.flow.baseurl import is_internal
from sarra.flow.events import EVENT_ATTR
from sarra.flow.reportlog import Delivered, Summary
from sarra.flow.reportrouting import ReportRouter, Route, RoutePublisher, router_bindings
from sarra.flow.republish import PumpIdentity, Republisher, RepublishSettings
from sarra.flow.work import WorkItem
from sarra.notice import Checksum, Notice, PartSpec, Report, WireMessage

PUMP = PumpIdentity("pumpa", frozenset({"alias"}), frozenset({"pumpb"}), frozenset({"al", "alice"}))


def notice(exchange: str = "xs_alice", base: str = "http://example.org", **headers: str) -> Notice:
    return v02.make_notice(
        exchange=exchange,
        topic_prefix="v02.post",
        pubtime="20260101T000000.000",
        base_url=base,
        path="d/f.txt",
        checksum=Checksum("d", "6f5902ac237024bdd0c176cb93063dc4"),
        parts=PartSpec("1", 12, 1, 0, 0),
        headers=headers,
    )


class _NoDownload:
    """Stands in for the Downloader: records what select saw."""

    def __init__(self) -> None:
        self.selected: list[Notice] = []

    def select(self, item: WorkItem) -> bool:
        self.selected.append(item.notice)
        return True


def republisher(
    resolver: Any = lambda host: ["93.184.216.34"], **kw: Any
) -> tuple[Republisher, _NoDownload]:
    d = _NoDownload()
    settings = RepublishSettings("xpublic", "http://pump/", "/srv", **kw)
    return Republisher(d, PUMP, settings, resolver=resolver), d  # type: ignore[arg-type]


def test_the_owner_of_an_exchange_is_the_longest_declared_user() -> None:
    assert PUMP.owner_of("xs_alice") == "alice"
    assert PUMP.owner_of("xs_alice_public") == "alice"
    assert PUMP.owner_of("xs_al") == "al"
    assert PUMP.owner_of("xs_al_x") == "al"
    assert PUMP.owner_of("xs_alicex") is None
    assert PUMP.owner_of("xpublic") is None


def test_a_pump_takes_notices_for_itself_its_aliases_its_gateways_or_all() -> None:
    for ok in ("pumpa", "alias", "pumpb", "ALL", "x,pumpa", None):
        assert PUMP.accepts(ok)
    assert not PUMP.accepts("elsewhere")


def test_a_forged_source_is_overwritten_from_the_exchange_and_from_cluster_replaced() -> None:
    r, d = republisher()
    item = WorkItem(notice(source="bob", from_cluster="faraway"))
    assert r.select(item)
    got = d.selected[0]
    assert got.header("source") == "alice"
    assert got.header("from_cluster") == "pumpa"
    assert got.header("to_clusters") == "pumpa"
    assert r.counts.forged == 1


def test_a_notice_on_an_exchange_no_declared_user_owns_is_not_forwarded() -> None:
    r, d = republisher()
    item = WorkItem(notice(exchange="xs_mallory"))
    assert not r.select(item)
    assert item.code == 0 and d.selected == []
    assert r.counts.forged == 1


def test_a_notice_from_another_pump_keeps_its_source_and_a_loop_is_dropped() -> None:
    r, d = republisher()
    assert r.select(WorkItem(notice(exchange="xpublic", source="zed", from_cluster="pumpz")))
    assert d.selected[0].header("source") == "zed"
    loop = WorkItem(notice(exchange="xpublic", from_cluster="alias"))
    assert not r.select(loop)
    assert r.counts.loops == 1


def test_a_notice_for_another_cluster_is_not_taken() -> None:
    r, _ = republisher()
    item = WorkItem(notice(exchange="xpublic", to_clusters="elsewhere"))
    assert not r.select(item)
    assert r.counts.not_for_us == 1


def test_loopback_and_link_local_base_urls_are_refused_unless_trusted_or_listed() -> None:
    assert is_internal("127.0.0.1") and is_internal("::1") and is_internal("169.254.1.1")
    assert is_internal("fe80::1") and is_internal("0.0.0.0") and not is_internal("8.8.8.8")
    table = {"intranet": ["10.0.0.1", "127.0.0.2"], "self": ["127.0.0.1"]}
    r, _ = republisher(lambda h: table.get(h, []), trusted_hosts=frozenset({"self"}))
    with pytest.raises(PolicyRefused):
        r.select(WorkItem(notice(base="http://intranet/")))
    with pytest.raises(PolicyRefused):
        r.select(WorkItem(notice(base="http://169.254.169.254/")))
    assert r.select(WorkItem(notice(base="http://self:8080/")))
    listed, _ = republisher(
        lambda h: table.get(h, []), base_url_accept=(re.compile(r"http://intranet"),)
    )
    assert listed.select(WorkItem(notice(base="http://intranet/")))


def _report(user: str, **headers: str) -> WireMessage:
    r = v02.make_report(
        notice(**headers),
        code=201,
        message="Downloaded",
        host="h",
        user=user,
        elapsed=0.1,
        source=None,
        from_cluster=None,
        to_clusters=None,
    )
    return v02.report_to_wire(r, "xs_" + user)


def _router() -> ReportRouter:
    own = BrokerUrl("pumpa.example", 5672, "feeder", "x")
    peer = BrokerUrl("pumpz.example", 5672, "link", "x")
    users = frozenset({"alice", "sub", "link"})
    return ReportRouter(
        PumpIdentity("pumpa", users=users),
        frozenset({"link"}),
        {"pumpz": Route("pumpz", peer)},
        own,
    )


def _on(exchange: str, m: WireMessage) -> WireMessage:
    return WireMessage(exchange, m.routing_key, m.body, m.headers)


def test_a_users_own_report_goes_to_xreport_and_a_forged_one_is_dropped() -> None:
    router = _router()
    good = router.handle(_on("xs_sub", _report("sub", source="alice", from_cluster="pumpa")))
    assert [(t, m.exchange) for t, m in good] == [(None, "xreport")]
    assert router.handle(_on("xs_sub", _report("alice", source="alice"))) == []
    assert router.counts.forged == 1
    relayed = router.handle(_on("xs_link", _report("someone", source="x", from_cluster="pumpa")))
    assert [m.exchange for _, m in relayed] == ["xreport"]


def test_xreport_reports_go_to_the_source_locally_or_towards_their_cluster() -> None:
    router = _router()
    local = router.handle(_on("xreport", _report("sub", source="alice", from_cluster="pumpa")))
    assert [(t, m.exchange) for t, m in local] == [(None, "xr_alice")]
    remote = router.handle(_on("xreport", _report("sub", source="bob", from_cluster="pumpz")))
    assert [(t.cluster if t else None, m.exchange) for t, m in remote] == [("pumpz", "xs_link")]
    assert router.handle(_on("xreport", _report("sub", source="bob", from_cluster="nowhere"))) == []
    assert router.counts.unknown_cluster == 1
    again = router.handle(_on("xreport", _report("sub", source="bob", from_cluster="pumpz")))
    assert again == [] and router.counts.loops == 1


def test_each_routed_report_is_one_report_event_line(caplog: pytest.LogCaptureFixture) -> None:
    router = _router()
    with caplog.at_level(logging.INFO, logger="sarra.flow.reportrouting"):
        router.handle(_on("xreport", _report("sub", source="alice", from_cluster="pumpa")))
        router.handle(_on("xreport", _report("sub", source="bob", from_cluster="pumpz")))
    local, remote = (r for r in caplog.records if hasattr(r, EVENT_ATTR))
    path = notice().path
    assert getattr(local, EVENT_ATTR) == {
        "event": "report",
        "relPath": path,
        "code": 201,
        "source": "alice",
    }
    assert local.getMessage() == (
        f"report code=201 relPath={path} source=alice: to xr_alice; Downloaded by sub"
    )
    assert getattr(remote, EVENT_ATTR)["source"] == "bob"
    assert "relayed to cluster pumpz (xs_link)" in remote.getMessage()


def test_v03_reports_are_admitted_and_routed_in_v03() -> None:
    router = _router()
    wire = _report("sub", source="alice", from_cluster="pumpa")
    r = v02.decode("xs_sub", wire.routing_key, wire.body, wire.headers)
    assert isinstance(r, Report)
    v3 = v02.encode(r, "xs_sub", post_format="v03")
    assert v3.routing_key.startswith("v03.") and v3.content_type == "application/json"
    (admitted,) = router.handle(v3)
    assert admitted[0] is None and admitted[1].exchange == "xreport"
    assert admitted[1].content_type == "application/json"
    (local,) = router.handle(_on_v03("xreport", admitted[1]))
    assert local[1].exchange == "xr_alice" and local[1].content_type == "application/json"
    back = v02.decode("xr_alice", local[1].routing_key, local[1].body, None)
    assert isinstance(back, Report) and (back.code, back.user) == (201, "sub")
    # a v03 post on the same binding is ignored, and a forged v03 report dropped
    post_ = v02.encode(r.notice, "xs_sub", post_format="v03")
    assert router.handle(post_) == [] and router.counts.ignored == 1
    assert router.handle(_on_v03("xs_alice", v3)) == [] and router.counts.forged == 1
    assert ("xs_sub", "v03.#") in router_bindings({"sub"})
    assert ("xreport", "v03.#") in router_bindings({"sub"})


def _on_v03(exchange: str, m: WireMessage) -> WireMessage:
    return WireMessage(exchange, m.routing_key, m.body, m.headers, m.content_type)


def test_sr_log_reads_only_the_users_own_report_exchange() -> None:
    class Cfg:
        def __init__(self, exchange: str | None) -> None:
            self.exchange = exchange

        def get(self, name: str) -> str | None:
            return self.exchange

    assert log_exchange(Cfg(None), "alice") == "xr_alice"
    assert log_exchange(Cfg("xr_${BROKER_USER}"), "alice") == "xr_alice"
    with pytest.raises(ConfigError):
        log_exchange(Cfg("xr_bob"), "alice")
    with pytest.raises(ConfigError):
        log_exchange(Cfg("xreport"), "alice")


def _decoded_report(user: str, code: int = 201) -> Report:
    m = _report(user, source="alice")
    r = v02.decode("xr_alice", m.routing_key, m.body, m.headers)
    assert isinstance(r, Report)
    return dataclasses.replace(r, code=code)


def test_the_sr_log_summary_counts_per_code_and_consumer_and_lists_who_got_each_file() -> None:
    s = Summary()
    for user, code in (("u1", 201), ("u2", 201), ("u2", 499)):
        s.add(Delivered.of(_decoded_report(user, code)))
    text = s.render()
    assert "per code: 201: 2, 499: 1" in text
    assert "u2@h: 2" in text
    assert "d/f.txt: u1@h 201, u2@h 201, u2@h 499" in text
    assert " 201 u1@h d/f.txt " in Delivered.of(_decoded_report("u1")).line()


def test_the_route_publisher_sends_to_our_broker_or_the_peers_and_reconnects_after_close() -> None:
    ours, theirs = MemoryBroker(), MemoryBroker()
    own = MemorySession(ours, name="router")
    own.connect()
    opened: list[str] = []

    def open_route(route: Route) -> MemorySession:
        opened.append(route.cluster)
        return MemorySession(theirs, route.url, name=f"to {route.cluster}")

    publisher = RoutePublisher(_router(), own, open_route)
    tag = 0

    def delivery(m: WireMessage) -> Delivery:
        nonlocal tag
        tag += 1
        return Delivery(m, tag, own.generation)

    local = _on("xreport", _report("sub", source="alice", from_cluster="pumpa"))
    remote = _on("xreport", _report("sub", source="bob", from_cluster="pumpz"))
    publisher.handle([delivery(local), delivery(remote)])
    assert [m.exchange for m in ours.published] == ["xr_alice"]
    assert [m.exchange for m in theirs.published] == ["xs_link"]
    assert opened == ["pumpz"]
    publisher.close()  # as after a broker error: the peer session is closed, then reopened
    assert not publisher.remote["pumpz"].connected and publisher.declared == set()
    again = _on("xreport", _report("sub", source="carol", from_cluster="pumpz"))
    publisher.handle([delivery(again)])
    assert [m.exchange for m in theirs.published] == ["xs_link", "xs_link"]
    assert opened == ["pumpz"]  # the same session, reconnected
    assert publisher.declared == {("pumpz", "xs_link")}  # declared again after the close
