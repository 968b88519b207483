"""sr_log: show a user the reports about their own data (who got which file, when, how).

Reads only ``xr_<broker user>`` (spec 8.7 (4); the broker's permissions refuse any other
``xr_`` exchange, and this component refuses to be configured for one). Reports whose
``source`` is not the user are skipped as well, in case an exchange is misrouted.

``sr_log foreground [config]`` prints one line per report as it arrives, and a summary when
stopped. With ``log_summary on`` it reads what is queued, stops once the queue has been idle
for ``SUMMARY_IDLE`` seconds, and prints the summary (per code, per consumer, per file).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from sarra.broker.base import Broker, Delivery
from sarra.components.common import (
    SingleQueueVerbs,
    broker_url,
    connected,
    declare_consumer_queue,
    metrics_writer,
    queue_spec,
    session_for,
)
from sarra.config.settings import Settings
from sarra.errors import ConfigError
from sarra.flow.metrics import FlowMetrics
from sarra.flow.reportlog import ReportLog
from sarra.flow.reportqueue import ReportConsumer

#: seconds without a delivery after which a summary run ends
SUMMARY_IDLE = 2.0
#: the option table's default exchange for sr_log, replaced by xr_<broker user>
DEFAULT_EXCHANGE = "xr_${BROKER_USER}"


def log_exchange(cfg: Settings, user: str) -> str:
    """``xr_<user>``; any other configured exchange is refused.

    Raises:
        ConfigError: the configuration names another exchange.
    """
    own = f"xr_{user}"
    configured = cfg.exchange
    if configured in (None, DEFAULT_EXCHANGE, own):
        return own
    raise ConfigError(
        f"sr_log reads only the reports about your own data ({own}), not {configured}",
        option="exchange",
    )


class LogComponent(SingleQueueVerbs):
    """sr_log: the reader of ``xr_<self>``."""

    name = "log"
    one_shot = False

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out

    def _session(self, cfg: Settings) -> tuple[Broker, str]:
        url = broker_url(cfg)
        # sr_log only reads: an mqtt:// broker needs no post_format v03
        return session_for(url, cfg, f"sr_log {cfg.name}", publishes=False), url.user

    def broker_session(self, cfg: Settings) -> Broker:
        return self._session(cfg)[0]

    def _bindings(self, cfg: Settings, user: str) -> tuple[tuple[str, str], ...]:
        exchange = log_exchange(cfg, user)
        # the loader gives every config a default binding (v02.report.#): only bindings the
        # configuration asks for (subtopic, topic_prefix) replace the two below
        asked = cfg.is_set("subtopic") or cfg.is_set("topic_prefix")
        keys = [b.routing_key for b in getattr(cfg, "bindings", ()) or ()] if asked else []
        # xr_<user> holds reports only: sr3's v03 reports (topic v03.<dirs>) are read too
        return tuple((exchange, k) for k in dict.fromkeys(keys or ["v02.report.#", "v03.#"]))

    def run(self, cfg: Settings, instance: int, stop: threading.Event) -> int:
        out = self.out or sys.stdout
        session, user = self._session(cfg)
        bindings = self._bindings(cfg, user)
        shown = ReportLog(user, out, live=not cfg.log_summary)
        counters = FlowMetrics()

        def handle(batch: list[Delivery]) -> None:
            counters.notices_in += len(batch)
            counters.last_activity = time.time()
            shown.handle(batch)

        def document() -> dict[str, Any]:
            summary = shown.summary
            counters.codes = dict(summary.by_code)  # a copy: the flow thread goes on counting
            counters.failures = sum(n for code, n in counters.codes.items() if code >= 400)
            counters.rejects = summary.skipped
            connection = "connected" if session.connected else "disconnected"
            return counters.snapshot(connection=connection)

        with metrics_writer(cfg, instance, document):
            ReportConsumer(
                session,
                queue_spec(cfg, self.queue_name(cfg), bindings),
                tuple(x for x, _ in bindings),
                cfg.prefetch,
                handle,
                stop,
                poll_every=0.2,
                idle_after=SUMMARY_IDLE if cfg.log_summary else None,
            ).run()
        print(shown.summary.render(), file=out, flush=True)
        return 0

    def declare(self, cfg: Settings) -> None:
        session, user = self._session(cfg)
        bindings = self._bindings(cfg, user)
        exchanges = [x for x, _ in bindings]
        with connected(session):
            spec = declare_consumer_queue(session, cfg, self.queue_name(cfg), bindings, exchanges)
        print(f"declared queue {spec.name} bound to {bindings[0][0]}")
