"""The consuming loop of the report readers (sr_report's router, sr_log).

:class:`~sarra.flow.engine.ConsumingLoop` works on notices (a report reaching it is ignored);
the report readers consume reports, so they share this smaller loop instead. It connects,
declares the exchanges and the queue and starts consuming (the session re-establishes the
consumer by itself on later connects), then polls. Each batch of deliveries is handed to the
reader's ``handle``; once ``handle`` has returned (whatever it published is confirmed by
then) the batch is acked.

A broker error abandons the batch unacked (the broker redelivers it), closes the session,
calls ``on_lost`` and reconnects after a jittered, exponentially growing delay
(:func:`~sarra.broker.session.backoff_delays`) that setting ``stop`` cuts short. A refused
login or permission (:class:`~sarra.errors.AccessRefused`) is raised: retrying cannot help.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sarra.broker.admin import ensure_exchanges
from sarra.broker.base import Broker, Delivery, QueueSpec
from sarra.broker.session import backoff_delays
from sarra.errors import AccessRefused, BrokerError

log = logging.getLogger(__name__)


@dataclass
class ReportConsumer:
    """Consume ``queue`` until ``stop`` is set (or it stays idle ``idle_after`` seconds)."""

    session: Broker
    queue: QueueSpec
    #: declared (when the broker allows) before the queue is declared and bound
    exchanges: tuple[str, ...]
    prefetch: int
    #: called with every batch of deliveries before they are acked
    handle: Callable[[list[Delivery]], None]
    stop: threading.Event
    #: longest wait for deliveries in one poll (seconds)
    poll_every: float = 0.5
    #: called after a broker error, once the session is closed (drop other sessions...)
    on_lost: Callable[[], None] | None = None
    #: return once connected and this many seconds pass without a delivery (None: never)
    idle_after: float | None = None
    #: backoff of the reconnects: first bound and cap (seconds)
    initial_delay: float = 0.5
    max_delay: float = 30.0

    def run(self) -> None:
        """Consume until stopped (or idle); the session is closed however this returns."""
        pending: list[Delivery] = []
        consuming = False
        delays = backoff_delays(self.initial_delay, self.max_delay)
        last = time.monotonic()
        try:
            while not self.stop.is_set():
                try:
                    if not self.session.connected:
                        self.session.connect()
                        if not consuming:
                            ensure_exchanges(self.session, self.exchanges)
                            self.session.declare_queue(self.queue)
                            self.session.consume(self.queue.name, self.prefetch, pending.append)
                            consuming = True
                        log.info("reading reports from queue %s", self.queue.name)
                        delays = backoff_delays(self.initial_delay, self.max_delay)
                        last = time.monotonic()
                    self.session.poll(self.poll_every)
                    if pending:
                        batch, pending[:] = list(pending), []
                        self.handle(batch)
                        for d in batch:
                            self.session.ack(d)
                        last = time.monotonic()
                    elif self.idle_after is not None and time.monotonic() - last > self.idle_after:
                        return
                except AccessRefused:
                    raise
                except BrokerError as e:
                    delay = next(delays)
                    log.warning(
                        "broker trouble (%s); unacked reports will be redelivered; "
                        "reconnecting in %.1fs",
                        e,
                        delay,
                    )
                    pending.clear()
                    self.session.close()
                    if self.on_lost is not None:
                        self.on_lost()
                    self.stop.wait(delay)
        finally:
            self.session.close()
