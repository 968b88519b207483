"""sr_report: the pump's report router (spec 8.7), replacing sr2's hand-written rr_* shovels.

Runs with the pump's feeder (or admin) account. One queue carries:

- from each declared user U's ``xs_U`` (keys ``v02.report.#`` and the bare ``v02.post``,
  where only report-shaped bodies are kept): reports whose body user is U go to ``xreport``;
  others are forged and dropped (counted, logged, recorded for sr_police). A peer pump's link
  account (``peer_accounts``) relays other pumps' users' reports: they pass as is;
- from ``xreport``: a report whose ``from_cluster`` is this cluster (or an alias, or missing)
  goes to ``xr_<source>``; any other goes to ``xs_<user>`` on the broker its ``cluster_route
  <name> <broker>`` line names (the account our sarra pulls from that pump with), where that
  pump's router continues. Unknown clusters are dropped and counted. A route to our own
  broker is never taken, and a report seen again within ``LOOP_WINDOW`` seconds (the same
  bytes came back) is dropped, so reports cannot circulate.

Everything a delivery causes is broker-confirmed before the delivery is acked.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sarra.broker.base import BrokerUrl, Delivery
from sarra.broker.session import BrokerSession
from sarra.codec import v02
from sarra.components.common import (
    SingleQueueVerbs,
    broker_url,
    connected,
    credential_store,
    declare_consumer_queue,
    queue_spec,
    session_for,
)
from sarra.components.sarra import declared_users
from sarra.config.credentials import CredentialStore, to_broker_url
from sarra.config.settings import Settings
from sarra.errors import AccessRefused, ConfigError, MessageError
from sarra.flow.reportqueue import ReportConsumer
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
            decoded = v02.decode(msg.exchange, msg.routing_key, msg.body, msg.headers)
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
        return [(None, v02.report_to_wire(report, "xreport"))]

    def _route(self, report: Report, now: float) -> list[tuple[Route | None, WireMessage]]:
        notice = report.notice
        wire = v02.report_to_wire(report, "xreport")
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
            return [(None, v02.report_to_wire(report, f"xr_{source}"))]
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
        return [(route, v02.report_to_wire(report, route.exchange))]

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


def _record(kind: str, exchange: str, claimed: str | None) -> None:
    """Tell sr_police about a dropped report (recording logs, never raises, on failure)."""
    record_event(kind, exchange=exchange, claimed=claimed)


def router_bindings(users: Iterable[str]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for u in sorted(set(users)):
        out += [(f"xs_{u}", "v02.report.#"), (f"xs_{u}", "v02.post")]
    out.append(("xreport", "v02.report.#"))
    return tuple(out)


class ReportRouterComponent(SingleQueueVerbs):
    """sr_report: route reports from consumers to sources, across pumps."""

    name = "report"
    one_shot = False

    def broker_session(self, cfg: Settings) -> BrokerSession:
        return session_for(broker_url(cfg), cfg, f"sr_report {cfg.name}")

    def router(self, cfg: Settings) -> ReportRouter:
        own = broker_url(cfg)
        users = declared_users(cfg)
        peers = frozenset(cfg.peer_accounts)
        pump = PumpIdentity(
            cluster=cfg.cluster or own.host,
            aliases=frozenset(cfg.cluster_aliases),
            users=users | peers,
        )
        routes = parse_routes(cfg.cluster_route, credential_store())
        return ReportRouter(pump, peers, routes, own)

    def run(self, cfg: Settings, instance: int, stop: threading.Event) -> int:
        router = self.router(cfg)
        session = self.broker_session(cfg)
        bindings = router_bindings(router.pump.users)
        remote: dict[str, BrokerSession] = {}
        declared: set[tuple[str, str]] = set()

        def publish(target: Route | None, messages: list[WireMessage]) -> None:
            s = session if target is None else remote.get(target.cluster)
            if s is None:
                assert target is not None
                s = session_for(target.url, cfg, f"sr_report {cfg.name} -> {target.cluster}")
                remote[target.cluster] = s
            if not s.connected:
                s.connect()
            key = "" if target is None else target.cluster
            for m in messages:
                if (key, m.exchange) not in declared:
                    try:
                        s.declare_exchange(m.exchange)
                    except AccessRefused:
                        log.debug("may not declare %s; assuming it exists", m.exchange)
                    declared.add((key, m.exchange))
            s.publish(messages)

        def handle(batch: list[Delivery]) -> None:
            outgoing: dict[str | None, tuple[Route | None, list[WireMessage]]] = {}
            for d in batch:
                for target, m in router.handle(d.message):
                    k = None if target is None else target.cluster
                    outgoing.setdefault(k, (target, []))[1].append(m)
            for target, messages in outgoing.values():
                publish(target, messages)

        def close_remotes() -> None:
            for s in remote.values():
                s.close()
            declared.clear()

        consumer = ReportConsumer(
            session,
            queue_spec(cfg, self.queue_name(cfg), bindings),
            ("xreport", *(x for x, _ in bindings)),
            cfg.prefetch,
            handle,
            stop,
            on_lost=close_remotes,
        )
        try:
            consumer.run()
        finally:
            close_remotes()
        log.info("stopped; %s", router.counts)
        return 0

    def declare(self, cfg: Settings) -> None:
        router = self.router(cfg)
        session = self.broker_session(cfg)
        bindings = router_bindings(router.pump.users)
        exchanges = ["xreport", *(x for x, _ in bindings)]
        with connected(session):
            spec = declare_consumer_queue(session, cfg, self.queue_name(cfg), bindings, exchanges)
        print(f"declared queue {spec.name} bound to {len(bindings)} exchange keys")
