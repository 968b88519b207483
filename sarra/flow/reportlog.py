"""What sr_log shows of the reports it reads: one line per report, and a summary."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from sarra.broker.base import Delivery
from sarra.codec import v02
from sarra.errors import MessageError
from sarra.notice import Report

log = logging.getLogger(__name__)


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


@dataclass
class ReportLog:
    """Shows ``user``'s reports on ``out`` (one line each when ``live``) and sums them up;
    reports about anyone else's data are skipped and counted."""

    user: str
    out: TextIO
    live: bool = True
    summary: Summary = field(default_factory=Summary)

    def handle(self, batch: list[Delivery]) -> None:
        for d in batch:
            self.show(d)

    def show(self, d: Delivery) -> None:
        m = d.message
        try:
            decoded = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        except MessageError as e:
            log.info("skipping an undecodable report: %s", e)
            return
        if not isinstance(decoded, Report):
            return
        if decoded.notice.header("source") != self.user:
            self.summary.skipped += 1
            return
        entry = Delivered.of(decoded)
        self.summary.add(entry)
        if self.live:
            print(entry.line(), file=self.out, flush=True)
