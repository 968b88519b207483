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

The routing is ``sarra.flow.reportrouting``, the consuming loop ``sarra.flow.reportqueue``.
Everything a delivery causes is broker-confirmed before the delivery is acked.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from sarra.broker.base import Broker, Delivery
from sarra.components.common import (
    SingleQueueVerbs,
    broker_url,
    connected,
    credential_store,
    declare_consumer_queue,
    metrics_writer,
    queue_spec,
    session_for,
)
from sarra.config.settings import Settings
from sarra.flow.metrics import FlowMetrics
from sarra.flow.reportqueue import ReportConsumer
from sarra.flow.reportrouting import (
    ReportRouter,
    RoutePublisher,
    parse_routes,
    router_bindings,
)
from sarra.flow.republish import PumpIdentity, declared_users

log = logging.getLogger(__name__)


class ReportRouterComponent(SingleQueueVerbs):
    """sr_report: route reports from consumers to sources, across pumps."""

    name = "report"
    one_shot = False

    def broker_session(self, cfg: Settings) -> Broker:
        # what sr_report publishes over MQTT is always v03 (RoutePublisher): post_format,
        # which it does not read, is not required there
        return session_for(broker_url(cfg), cfg, f"sr_report {cfg.name}", publishes=False)

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
        publisher = RoutePublisher(
            router,
            session,
            lambda r: session_for(
                r.url, cfg, f"sr_report {cfg.name} -> {r.cluster}", publishes=False
            ),
        )
        counters = FlowMetrics()

        def handle(batch: list[Delivery]) -> None:
            counters.notices_in += len(batch)
            counters.last_activity = time.time()
            publisher.handle(batch)

        def document() -> dict[str, Any]:
            c = dataclasses.replace(router.counts)  # a copy: the flow thread goes on counting
            counters.notices_out = c.forwarded + c.delivered + c.relayed
            counters.rejects = c.forged + c.unknown_cluster + c.no_source + c.loops + c.ignored
            connection = "connected" if session.connected else "disconnected"
            return counters.snapshot(connection=connection, reports=dataclasses.asdict(c))

        consumer = ReportConsumer(
            session,
            queue_spec(cfg, self.queue_name(cfg), bindings),
            ("xreport", *(x for x, _ in bindings)),
            cfg.prefetch,
            handle,
            stop,
            on_lost=publisher.close,
        )
        try:
            with metrics_writer(cfg, instance, document):
                consumer.run()
        finally:
            publisher.close()
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
