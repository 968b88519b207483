"""A ConsumingLoop on the in-memory broker, as the engine's unit tests build it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from sarra.broker.base import QueueSpec
from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.flow.engine import ConsumingLoop, LoopSettings, ReportSettings, Selector, Worker
from sarra.flow.retryqueue import RetryQueue


def memory_loop(
    session: MemorySession,
    tmp_path: Path,
    work: Worker,
    *,
    select: Selector = lambda _item: True,
    reports: bool = False,
    threads: int = 2,
    **hooks: Any,
) -> tuple[ConsumingLoop, threading.Event]:
    """A loop consuming queue ``q`` bound to ``xin`` (prefetch 20, ``threads``, one attempt,
    no retry queue), reporting to ``xr`` when ``reports``; ``hooks`` go to the loop as they
    are (commit_batch, inline, before_settle...). Returns it and its stop event."""
    stop = threading.Event()
    loop = ConsumingLoop(
        session,
        LoopSettings(
            queue=QueueSpec("q", (("xin", "#"),)),
            prefetch=20,
            threads=threads,
            attempts=1,
            retry_ttl=0.0,
            exchanges=("xin",),
        ),
        ReportSettings(reports, "xr", "host", "user", None, None, None),
        select,
        work,
        RetryQueue(tmp_path / "retry.jsonl", ttl=0.0),
        stop=stop,
        **hooks,
    )
    return loop, stop


def publisher(broker: MemoryBroker, *exchanges: str) -> MemorySession:
    """A connected session that has declared ``xin`` (and ``exchanges``), returned once the
    loop's queue ``q`` exists."""
    pub = broker.session("publisher")
    pub.connect()
    for name in ("xin", *exchanges):
        pub.declare_exchange(name)
    deadline = time.monotonic() + 20
    while "q" not in broker.queues:
        assert time.monotonic() < deadline, "the loop never declared its queue"
        time.sleep(0.01)
    return pub
