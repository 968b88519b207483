"""Report routing (spec 8.7), free of the consuming loop: what sr_report does with each report.

:class:`ReportRouter` decides, without I/O, what to publish where for one consumed message
(see :mod:`sarra.components.report_router` for the rules); :class:`RoutePublisher` publishes
those decisions to our broker or to the peer pumps' brokers, declaring each exchange once per
connection where the broker allows it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sarra.broker.base import Broker, BrokerUrl, Delivery
from sarra.codec import v02, v03
from sarra.config.credentials import CredentialStore, to_broker_url
from sarra.errors import AccessRefused, ConfigError, MessageError
from sarra.flow.events import log_event
from sarra.flow.republish import PumpIdentity
from sarra.notice import Report, WireMessage
from sarra.security_events import record_event

log = logging.getLogger(__name__)

#: seconds during which a report seen before is taken for a loop
LOOP_WINDOW = 600.0
_LOOP_MAX = 100_000


@dataclass(slots=True)
class RouterCounts:
    forwarded: int = 0  # xs_U -> xreport
    delivered: int = 0  # xreport -> xr_<source>
    relayed: int = 0  # xreport -> another pump
    forged: int = 0
    unknown_cluster: int = 0
    no_source: int = 0
    loops: int = 0
    ignored: int = 0


@dataclass(frozen=True, slots=True)
class Route:
    """Reports of ``cluster`` are published to ``xs_<url.user>`` on ``url``."""

    cluster: str
    url: BrokerUrl

    @property
    def exchange(self) -> str:
        return f"xs_{self.url.user}"


def parse_routes(words: Iterable[str], store: CredentialStore) -> dict[str, Route]:
    """``cluster_route NAME BROKER`` words (pairs) -> routes by cluster name.

    Raises:
        ConfigError: an odd number of words or a bad broker URL.
    """
    items = list(words)
    if len(items) % 2:
        raise ConfigError("cluster_route needs NAME BROKER pairs", option="cluster_route")
    routes: dict[str, Route] = {}
    for name, url in zip(items[::2], items[1::2], strict=True):
        routes[name] = Route(name, to_broker_url(url, store))
    return routes


@dataclass
class ReportRouter:
    """The routing decisions, free of I/O: ``handle`` says what to publish where."""

    pump: PumpIdentity
    peers: frozenset[str]
    routes: dict[str, Route]
    own: BrokerUrl
    counts: RouterCounts = field(default_factory=RouterCounts)
    _seen: OrderedDict[bytes, float] = field(default_factory=OrderedDict)

    def handle(
        self, msg: WireMessage, now: float | None = None
    ) -> list[tuple[Route | None, WireMessage]]:
        """What to publish for one consumed message: (route or None for our broker, message)."""
        try:
            decoded = v02.decode(
                msg.exchange, msg.routing_key, msg.body, msg.headers, msg.content_type
            )
        except MessageError as e:
            log.info("dropping an undecodable message from %s: %s", msg.exchange, e)
            self.counts.ignored += 1
            return []
        if not isinstance(decoded, Report):
            self.counts.ignored += 1  # a post on the bare v02.post key: not ours to route
            return []
        if msg.exchange == "xreport":
            return self._route(decoded, time.time() if now is None else now)
        return self._admit(msg.exchange, decoded)

    def _admit(self, exchange: str, report: Report) -> list[tuple[Route | None, WireMessage]]:
        owner = self.pump.owner_of(exchange)
        if owner is None:
            log.warning("dropping a report from %s: no declared user owns it", exchange)
            self.counts.forged += 1
            return []
        if owner not in self.peers and report.user != owner:
            log.warning(
                "dropping a forged report on %s: body user %r is not %r (file %s)",
                exchange,
                report.user,
                owner,
                report.notice.path,
            )
            self.counts.forged += 1
            _record("forged_report", exchange, report.user)
            return []
        self.counts.forwarded += 1
        return [(None, _wire(report, "xreport"))]

    def _route(self, report: Report, now: float) -> list[tuple[Route | None, WireMessage]]:
        notice = report.notice
        wire = _wire(report, "xreport")
        if self._seen_before(wire.body + repr(sorted(wire.headers.items())).encode(), now):
            self.counts.loops += 1
            log.info("dropping a report seen before (a routing loop?): %s", notice.path)
            return []
        cluster = notice.header("from_cluster")
        if cluster is None or self.pump.is_local(cluster):
            source = notice.header("source")
            if not source:
                self.counts.no_source += 1
                log.info("dropping a report without a source: %s", notice.path)
                return []
            self.counts.delivered += 1
            _log_report(report, f"to xr_{source}")
            return [(None, _wire(report, f"xr_{source}"))]
        route = self.routes.get(cluster)
        if route is None:
            self.counts.unknown_cluster += 1
            log.info("dropping a report for unknown cluster %s: %s", cluster, notice.path)
            return []
        if (route.url.host, route.url.port, route.url.vhost) == (
            self.own.host,
            self.own.port,
            self.own.vhost,
        ):
            self.counts.loops += 1
            log.warning("cluster_route %s points at our own broker: report dropped", cluster)
            return []
        self.counts.relayed += 1
        _log_report(report, f"relayed to cluster {cluster} ({route.exchange})")
        return [(route, _wire(report, route.exchange))]

    def _seen_before(self, body: bytes, now: float) -> bool:
        key = hashlib.sha256(body).digest()
        while self._seen and (
            len(self._seen) > _LOOP_MAX or next(iter(self._seen.values())) < now - LOOP_WINDOW
        ):
            self._seen.popitem(last=False)
        if key in self._seen:
            return True
        self._seen[key] = now
        return False


def _log_report(report: Report, where: str) -> None:
    """The ``report`` event of one routed report: its file, code, source and consumer."""
    notice = report.notice
    detail = f"{where}; {report.message} by {report.user or '-'}"
    log_event(
        log, logging.INFO, "report", notice.path, report.code, notice.header("source"), detail
    )


def _record(kind: str, exchange: str, claimed: str | None) -> None:
    """Tell sr_police about a dropped report (recording logs, never raises, on failure)."""
    record_event(kind, exchange=exchange, claimed=claimed)


def router_bindings(users: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """v02 reports by topic; v03 reports (sr3's form: topic ``v03.<dirs>``, like a post) by
    ``v03.#``, so that v03 posts on ``xs_U`` also reach the router, which acks and ignores
    them (docs/interop.md)."""
    out: list[tuple[str, str]] = []
    for u in sorted(set(users)):
        out += [(f"xs_{u}", "v02.report.#"), (f"xs_{u}", "v02.post"), (f"xs_{u}", "v03.#")]
    out += [("xreport", "v02.report.#"), ("xreport", "v03.#")]
    return tuple(out)


class RoutePublisher:
    """Publishes a batch's routing decisions: to ``own`` (route None) or, per route, to a
    session opened by ``open_route`` on first use and kept until :meth:`close`."""

    def __init__(
        self, router: ReportRouter, own: Broker, open_route: Callable[[Route], Broker]
    ) -> None:
        self.router = router
        self.own = own
        self.open_route = open_route
        self.remote: dict[str, Broker] = {}
        self.declared: set[tuple[str, str]] = set()

    def handle(self, batch: list[Delivery]) -> None:
        """Route every delivery of ``batch`` and publish the outcome, confirmed, per target."""
        outgoing: dict[str | None, tuple[Route | None, list[WireMessage]]] = {}
        for d in batch:
            for target, m in self.router.handle(d.message):
                k = None if target is None else target.cluster
                outgoing.setdefault(k, (target, []))[1].append(m)
        for target, messages in outgoing.values():
            self.publish(target, messages)

    def publish(self, target: Route | None, messages: list[WireMessage]) -> None:
        s = self.own if target is None else self.remote.get(target.cluster)
        if s is None:
            assert target is not None
            s = self.remote[target.cluster] = self.open_route(target)
        if not s.connected:
            s.connect()
        key = "" if target is None else target.cluster
        for m in messages:
            if (key, m.exchange) not in self.declared:
                try:
                    s.declare_exchange(m.exchange)
                except AccessRefused:
                    log.debug("may not declare %s; assuming it exists", m.exchange)
                self.declared.add((key, m.exchange))
        if s.url.protocol == "mqtt":
            # MQTT carries v03 only: a v02 report (one a v02 component put there) goes in v03
            messages = [_in_v03(m) for m in messages]
        s.publish(messages)

    def close(self) -> None:
        """Close the peer sessions (reopened on next use) and forget what was declared."""
        for s in self.remote.values():
            s.close()
        self.declared.clear()


def _in_v03(m: WireMessage) -> WireMessage:
    """``m`` (a routed report) itself when it is v03, else written again in v03."""
    if m.content_type == v03.CONTENT_TYPE:
        return m
    report = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
    assert isinstance(report, Report)  # _wire made it from one
    return v02.encode(report, m.exchange, post_format="v03")


def _wire(report: Report, exchange: str) -> WireMessage:
    """A routed report, in the format it came in (v03 stays v03 for sr3's tools)."""
    return v02.encode(report, exchange, post_format=v02.report_format(report))
