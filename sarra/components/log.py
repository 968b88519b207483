"""sr_log: show a user the reports about their own data (who got which file, when, how).

Reads only ``xr_<broker user>`` (spec 8.7 (4); the broker's permissions refuse any other
``xr_`` exchange, and this component refuses to be configured for one). Reports whose
``source`` is not the user are skipped as well, in case an exchange is misrouted.

``sr_log foreground [config]`` prints one line per report as it arrives, and a summary when
stopped. With ``log_summary on`` it reads what is queued, stops once the queue has been idle
for ``SUMMARY_IDLE`` seconds, and prints the summary (per code, per consumer, per file).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from sarra.broker.base import Delivery
from sarra.broker.session import BrokerSession
from sarra.codec import v02
from sarra.components.common import (
    SingleQueueVerbs,
    broker_url,
    connected,
    declare_consumer_queue,
    queue_spec,
    session_for,
)
from sarra.config.settings import Settings
from sarra.errors import ConfigError, MessageError
from sarra.flow.reportqueue import ReportConsumer
from sarra.notice import Report

log = logging.getLogger(__name__)

#: seconds without a delivery after which a summary run ends
SUMMARY_IDLE = 2.0
#: the option table's default exchange for sr_log, replaced by xr_<broker user>
DEFAULT_EXCHANGE = "xr_${BROKER_USER}"


@dataclass(frozen=True, slots=True)
class Delivered:
    """One report as a line of sr_log: a consumer's outcome for one file."""

    when: str  # when sr_log received the report (UTC), close to when the consumer acted
    posted: str  # pubTime of the post the report is about
    path: str
    code: int
    consumer: str  # user@host
    message: str
    elapsed: float

    @classmethod
    def of(cls, report: Report) -> Delivered:
        return cls(
            when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            posted=report.notice.pubtime,
            path=report.notice.path,
            code=report.code,
            consumer=f"{report.user}@{report.host}",
            message=report.message,
            elapsed=report.elapsed,
        )

    def line(self) -> str:
        return (
            f"{self.when} {self.code} {self.consumer} {self.path} "
            f"({self.elapsed:.3f}s) {self.message}"
        ).rstrip()


@dataclass(slots=True)
class Summary:
    """Counts per code and per consumer, and who got each file."""

    by_code: Counter[int] = field(default_factory=Counter)
    by_consumer: Counter[str] = field(default_factory=Counter)
    files: dict[str, list[Delivered]] = field(default_factory=dict)
    skipped: int = 0

    def add(self, d: Delivered) -> None:
        self.by_code[d.code] += 1
        self.by_consumer[d.consumer] += 1
        self.files.setdefault(d.path, []).append(d)

    def render(self) -> str:
        lines = [f"reports: {sum(self.by_code.values())}"]
        lines.append(
            "per code: " + (", ".join(f"{c}: {n}" for c, n in sorted(self.by_code.items())) or "-")
        )
        lines.append("per consumer:")
        lines += [f"  {who}: {n}" for who, n in sorted(self.by_consumer.items())]
        lines.append("per file:")
        for path in sorted(self.files):
            who = ", ".join(f"{d.consumer} {d.code}" for d in self.files[path])
            lines.append(f"  {path}: {who}")
        if self.skipped:
            lines.append(f"skipped (not about your data): {self.skipped}")
        return "\n".join(lines)


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

    def _session(self, cfg: Settings) -> tuple[BrokerSession, str]:
        url = broker_url(cfg)
        return session_for(url, cfg, f"sr_log {cfg.name}"), url.user

    def broker_session(self, cfg: Settings) -> BrokerSession:
        return self._session(cfg)[0]

    def _bindings(self, cfg: Settings, user: str) -> tuple[tuple[str, str], ...]:
        exchange = log_exchange(cfg, user)
        keys = [b.routing_key for b in getattr(cfg, "bindings", ()) or ()]
        return tuple((exchange, k) for k in dict.fromkeys(keys or ["v02.report.#"]))

    def run(self, cfg: Settings, instance: int, stop: threading.Event) -> int:
        out = self.out or sys.stdout
        session, user = self._session(cfg)
        bindings = self._bindings(cfg, user)
        live = not cfg.log_summary
        summary = Summary()

        def handle(batch: list[Delivery]) -> None:
            for d in batch:
                self._show(d, user, summary, out, live=live)

        ReportConsumer(
            session,
            queue_spec(cfg, self.queue_name(cfg), bindings),
            tuple(x for x, _ in bindings),
            cfg.prefetch,
            handle,
            stop,
            poll_every=0.2,
            idle_after=None if live else SUMMARY_IDLE,
        ).run()
        print(summary.render(), file=out, flush=True)
        return 0

    def _show(self, d: Delivery, user: str, summary: Summary, out: TextIO, *, live: bool) -> None:
        m = d.message
        try:
            decoded = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        except MessageError as e:
            log.info("skipping an undecodable report: %s", e)
            return
        if not isinstance(decoded, Report):
            return
        if decoded.notice.header("source") != user:
            summary.skipped += 1
            return
        entry = Delivered.of(decoded)
        summary.add(entry)
        if live:
            print(entry.line(), file=out, flush=True)

    def declare(self, cfg: Settings) -> None:
        session, user = self._session(cfg)
        bindings = self._bindings(cfg, user)
        exchanges = [x for x, _ in bindings]
        with connected(session):
            spec = declare_consumer_queue(session, cfg, self.queue_name(cfg), bindings, exchanges)
        print(f"declared queue {spec.name} bound to {bindings[0][0]}")
