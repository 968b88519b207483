"""The consuming loop shared by subscribe-like components.

Data path (one thread owns the broker session; transfers run in a bounded pool)::

    deliveries -> decode (malformed: 417) -> select (masks, confinement, policy, plugins,
    duplicates) -> work in the pool (download, link, remove...) -> settle: publish reports
    with confirms, then ack; retryable failures go to the disk retry queue (fsync'd) first.

The ack rule (spec 1.4): a delivery is acked only once its outcome is durable. If the
broker connection is lost, outcomes not yet acked are abandoned (their deliveries are stale)
and the broker redelivers them; processing is idempotent (an unchanged file is a 304).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sarra.broker.admin import ensure_exchanges
from sarra.broker.base import Broker, Delivery, QueueSpec
from sarra.broker.session import backoff_delays
from sarra.codec import v02, v03
from sarra.codec.salvage import reformat, report_for_undecodable, v03_salvage_fields
from sarra.errors import (
    AccessRefused,
    BrokerError,
    BrokerNotFound,
    Interrupted,
    MalformedMessage,
    MessageError,
    SarraError,
)
from sarra.flow import retryreturn
from sarra.flow.failpolicy import FailurePolicy
from sarra.flow.metrics import FlowMetrics
from sarra.flow.ratelimit import TokenBucket
from sarra.flow.retryqueue import RetryItem, RetryQueue
from sarra.flow.work import PartState, WorkItem
from sarra.notice import Notice, Pulse, Report, WireMessage
from sarra.osport import Wakeup

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReportSettings:
    """Where and as whom reports are published (spec 8)."""

    enabled: bool
    exchange: str
    host: str
    user: str
    source: str | None
    cluster: str | None
    to_clusters: str | None
    #: declare ``exchange`` at start (when the broker allows; off with declare_exchange off)
    declare: bool = True
    #: ``post_format``: reports go out in v03 (sr3's ``report`` table) when posts do
    post_format: str = "v02"


#: how often, at most, the loss of reports to a missing report exchange is logged (seconds)
REPORT_LOSS_LOG_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class LoopSettings:
    queue: QueueSpec
    prefetch: int
    threads: int
    attempts: int
    retry_ttl: float
    declare_queue: bool = True
    #: exchanges to declare (when allowed) before binding: see components.common
    exchanges: tuple[str, ...] = ()
    #: drop or queue a failed notice, per failure class (``on_failure``)
    failure_policy: FailurePolicy = field(default_factory=FailurePolicy)


#: an ``expire`` under this (ms) is warned about at start: it does not ride out a long outage
SHORT_EXPIRY_MS = 3_600_000

#: how long a stopping loop lets running transfers end by themselves before aborting them
#: (well within the 10 s that ``stop`` waits before SIGKILL)
STOP_GRACE = 2.0

#: how long, at most, a stopping loop spends handing its retry entries back to the broker
#: (the rest stays on disk; ``stop`` sends SIGKILL 10 s after SIGTERM)
HAND_BACK_TIME = 4.0

#: how often a paused loop checks whether its state directory is writable again (seconds)
PROBE_EVERY = 5.0

#: longest time a settled item waits for its batch to be committed (seconds)
BATCH_WAIT = 0.05

Selector = Callable[[WorkItem], bool]
"""Runs in the flow thread: returns True to send the item to the pool, False when the item
was settled already (rejected, duplicate, unchanged, hostile...)."""

Worker = Callable[[WorkItem], None]
"""Runs in a pool thread: performs the transfer and settles the item (code/message), or
raises; an exception is turned into an outcome by the loop."""

InlineWorker = Callable[[WorkItem], bool]
"""Runs in the flow thread right after a True ``select``: performs the work there and settles
the item, returning True, or returns False (the item as it was, never raising) to send it to
the pool. For work too small to be worth a hand-off to a pool thread and back."""


class ConsumingLoop:
    """Consume notices, process them in a pool, report and ack with no loss."""

    def __init__(
        self,
        session: Broker,
        settings: LoopSettings,
        reports: ReportSettings,
        select: Selector,
        work: Worker,
        retry_queue: RetryQueue,
        *,
        stop: threading.Event,
        on_settled: Callable[[WorkItem], None] | None = None,
        before_settle: Callable[[], None] | None = None,
        commit_batch: Callable[[list[WorkItem]], None] | None = None,
        after_settle: Callable[[list[WorkItem]], None] | None = None,
        housekeeping: Callable[[], None] | None = None,
        post_session: Broker | None = None,
        heartbeat: Callable[[str], None] | None = None,
        abort: Callable[[], None] | None = None,
        message_limiter: TokenBucket | None = None,
        on_report: Callable[[WorkItem], bool] | None = None,
        on_post: Callable[[WorkItem], bool] | None = None,
        metrics: FlowMetrics | None = None,
        inline: InlineWorker | None = None,
        commit_async: bool = False,
    ) -> None:
        self.session = session
        #: work done in the flow thread when it says so (see :data:`InlineWorker`)
        self.inline = inline
        #: the instance's counters (flow thread only), published with the heartbeat
        self.metrics = metrics if metrics is not None else FlowMetrics()
        #: ``message_rate_max``: each delivery takes a token on arrival and is handled once
        #: its turn comes (None: unlimited); the flow thread never sleeps for it
        self.message_limiter = message_limiter
        #: deliveries waiting for their turn under ``message_limiter``: (due, delivery), in
        #: arrival order; unacked, so redelivered if the connection is lost or on stop
        self._deferred: deque[tuple[float, Delivery]] = deque()
        self.settings = settings
        self.reports = reports
        self.select = select
        self.work = work
        self.retry_queue = retry_queue
        self.stop = stop
        self.on_settled = on_settled
        self.before_settle = before_settle
        #: called at each flush with the items settled since the last one, before their
        #: outcomes are reported (it may change them); items stay pending while it raises
        self.commit_batch = commit_batch
        #: ``commit_async``: each flush hands ``commit_batch`` (for the items settled since
        #: the last one) and ``before_settle`` to a thread of their own, one flush at a time,
        #: and this thread goes on consuming and working meanwhile (a barrier waiting for a
        #: disk no longer stops the flow); what the flush covers is reported and acked here
        #: once that thread returned (see :meth:`_flush_async`)
        self._committer: ThreadPoolExecutor | None = None
        if commit_batch is not None and commit_async:
            self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        #: the flush under way in the committer thread, or None
        self._commit: _Commit | None = None
        self._pending_items: list[WorkItem] = []
        self._pending_since = 0.0
        #: called at each flush, once the outcomes of ``items`` are durable, published,
        #: reported and acked (e.g. remove a source, discard a local copy); it must not raise
        self.after_settle = after_settle
        self._settle_items: list[WorkItem] = []
        self._batch_size = max(2, min(settings.prefetch // 2, 64))
        #: where ``WorkItem.outgoing`` is published (None: the consuming session)
        self.post_session = post_session
        self.housekeeping = housekeeping
        self.heartbeat = heartbeat
        #: on stop, after STOP_GRACE: make transfers blocked on the network fail (they are
        #: abandoned unacked, see errors.Interrupted)
        self.abort = abort
        #: plugins' on_report: False suppresses the report of an outcome (flow thread)
        self.on_report = on_report
        #: plugins' on_post: False suppresses a settled item's outgoing notices (flow thread)
        self.on_post = on_post
        self.reports_suppressed = 0
        self.posts_suppressed = 0
        self._done: queue.SimpleQueue[WorkItem] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, settings.threads), thread_name_prefix="transfer"
        )
        self._in_pool = 0
        self._retrying: set[str] = set()
        #: retry entries due at the last housekeeping, admitted as the pool has room
        self._due: deque[RetryItem] = deque()
        self._settle_reports: list[WireMessage] = []
        self._settle_posts: list[WireMessage] = []
        self._settle_acks: list[Delivery] = []
        self._settle_retries: list[WorkItem] = []
        self.counts: dict[int, int] = {}
        self._consuming = False
        #: deliveries of the current connection not yet acked, in delivery-tag order; tags
        #: start again at 1 on each connection, so it never holds two generations
        self._outstanding: dict[int, Delivery] = {}
        self._outstanding_generation = 0
        self._wakeup = Wakeup()
        #: the flow thread is (about to be) waiting in select: workers must wake it
        self._sleeping = False
        self.last_activity = time.time()
        self._reports_lost = 0
        #: settled items whose after_settle step (delete, discard) raised: counted, logged
        self.after_settle_failed = 0
        self._reports_lost_logged = -REPORT_LOSS_LOG_EVERY
        #: delays after connection losses in a row, each soon after connecting
        self._loss_delays = backoff_delays(0.5, 30.0)
        self._connected_at = 0.0
        #: why consuming is paused (an outcome could not be made durable), or None
        self._paused: str | None = None
        self._paused_at = 0.0
        self._next_probe = 0.0
        #: deliveries held unacked while paused
        self._held = 0
        self._internal_errors = 0
        #: when the queue was last known to exist (consuming); losses of it detected
        self._queue_known_at: float | None = None
        self.queue_losses = 0
        #: reports that could not be built (e.g. a notice header too long to emit)
        self.reports_unbuildable = 0
        #: malformed messages whose body names nothing a 417 report could be about
        self.malformed_unreported = 0

    # -- connection ----------------------------------------------------------------------------

    def _connect(self) -> None:
        """Connect (with backoff); the first time, declare the queue and start consuming.

        The session re-declares and re-consumes by itself on later connects.
        """
        delays = backoff_delays(0.5, 30.0)
        while not self.stop.is_set():
            try:
                self.session.connect()
                if not self._consuming:
                    self._warn_short_expiry()
                    exchanges = list(self.settings.exchanges)
                    if self.reports.enabled and self.reports.declare:
                        exchanges.append(self.reports.exchange)
                    ensure_exchanges(self.session, exchanges)
                    if self.settings.declare_queue:
                        self.session.declare_queue(self.settings.queue)
                    if not self.settings.queue.bind:
                        log.info(
                            "bind_queue off: queue %s is not bound by sarra; its bindings "
                            "are left to the broker administrator",
                            self.settings.queue.name,
                        )
                    self.session.consume(
                        self.settings.queue.name, self.settings.prefetch, self._on_delivery
                    )
                    self._consuming = True
                log.info("consuming from %s queue %s", self.session.url, self.settings.queue.name)
                self._connected_at = time.monotonic()
                self._check_queue_continuity()
                return
            except AccessRefused:
                raise
            except BrokerError as e:
                delay = next(delays)
                log.warning("broker connection failed (%s); retrying in %.1fs", e, delay)
                self.session.close()
                self.stop.wait(delay)

    def _warn_short_expiry(self) -> None:
        expire = self.settings.queue.expire_ms
        if expire is not None and expire < SHORT_EXPIRY_MS:
            log.warning(
                "expire is %.0f s: if this configuration is stopped, or the broker "
                "unreachable, for longer than that, the queue and the notices in it are "
                "deleted by the broker; set expire longer than your longest outage",
                expire / 1000,
            )

    @property
    def _seen_path(self) -> Path:
        """Its mtime is the last time this configuration's queue was known to exist."""
        return self.retry_queue.path.parent / f"queue_seen_{self.settings.queue.name}"

    def _check_queue_continuity(self) -> None:
        """Say loudly when the queue had to be created although it existed before (it
        expired during an outage, or was deleted): what was published meanwhile is lost."""
        name = self.settings.queue.name
        if name in self.session.take_created_queues():
            try:
                last_seen: float | None = self._seen_path.stat().st_mtime
            except OSError:
                last_seen = None
            if last_seen is None and self._queue_known_at is None:
                log.info("queue %s created (first use)", name)
            else:
                since = max(t for t in (last_seen, self._queue_known_at) if t is not None)
                expire = self.settings.queue.expire_ms
                self.queue_losses += 1
                log.error(
                    "QUEUE LOST: %s did not exist on the broker any more (it expired after "
                    "%s unused, or was deleted) and was created afresh; it was last known "
                    "to exist at %s, %.0f s ago: notices published since it vanished were "
                    "never queued and are lost. Set expire longer than your longest outage "
                    "(see man sr_config, expire).",
                    name,
                    "expire" if expire is None else f"{expire / 1000:.0f} s",
                    time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(since)),
                    time.time() - since,
                )
        self._queue_seen()

    def _queue_seen(self) -> None:
        """Record that the queue exists now (in memory, and on disk for the next run)."""
        self._queue_known_at = time.time()
        try:
            self._seen_path.touch()
        except OSError as e:  # only the loss diagnosis after a restart depends on it
            log.debug("cannot mark %s: %s", self._seen_path, e)

    def _back_off_if_repeating(self) -> None:
        """Wait before reconnecting when the connection keeps failing soon after it is made
        (a persistent error, not a broker restart): 0.5 s doubling to 30 s."""
        if time.monotonic() - self._connected_at > 10.0:
            self._loss_delays = backoff_delays(0.5, 30.0)
            return
        delay = next(self._loss_delays)
        log.warning("the same failure keeps coming back; reconnecting in %.1fs", delay)
        self.stop.wait(delay)

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        """Process until ``stop`` is set; then finish in-flight work, settle and return."""
        self._connect()
        next_hk = time.monotonic() + 5
        clean = False
        try:
            while not self.stop.is_set():
                try:
                    if not self.session.connected:
                        # found closed without an error (the protocol allows it): what the
                        # old connection delivered is redelivered, as after a loss
                        self._abandon_unacked()
                        self._connect()
                        continue
                    self._wait_and_poll()
                    if self._deferred:
                        self._release_deferred()
                    self._collect()
                    if self._flush_due():
                        self._flush_settled()
                    if self._due and self._paused is None:
                        self._feed_retries()
                    now = time.monotonic()
                    if self._paused is not None and now >= self._next_probe:
                        self._next_probe = now + PROBE_EVERY
                        self._try_resume()
                    if now >= next_hk:
                        next_hk = now + 5
                        self._periodic()
                except AccessRefused:
                    raise
                except BrokerError as e:
                    log.warning("broker connection lost: %s", e)
                    self._abandon_unacked()
                    self.session.close()
                    self._back_off_if_repeating()
                except Exception:
                    # a bug in settling or in a callback must not stop the instance, nor ack
                    # work that is not done: drop the connection, the broker redelivers
                    self._internal_errors += 1
                    log.exception(
                        "internal error in the flow (%d so far); reconnecting, "
                        "unacked notices will be redelivered",
                        self._internal_errors,
                    )
                    self._abandon_unacked()
                    self.session.close()
                    self._back_off_if_repeating()
            self._drain()
            clean = True
        finally:
            self._pool.shutdown(wait=True, cancel_futures=False)
            if self._committer is not None:
                self._committer.shutdown(wait=True, cancel_futures=False)
            if clean:
                self._return_retries()
            self.session.close()
            if self.post_session is not None:
                self.post_session.close()
            self._wakeup.close()

    def _periodic(self) -> None:
        """Retries from disk and the components' callbacks, every few seconds; a failure in
        one is logged and never stops the others nor the flow."""
        steps: list[tuple[str, Callable[[], None] | None]] = [
            ("retry queue", None if self._paused is not None else self._run_retries),
            ("housekeeping", self.housekeeping),
            ("heartbeat", self._beat),
            ("queue mark", self._queue_seen if self.session.connected else None),
        ]
        for what, step in steps:
            if step is None:
                continue
            try:
                step()
            except BrokerError:
                raise
            except Exception:
                self._internal_errors += 1
                log.exception("%s failed; carrying on", what)

    def _beat(self) -> None:
        """Tell the heartbeat what ``status`` should show (the reason of a pause)."""
        if self.heartbeat is not None:
            self.heartbeat("" if self._paused is None else f"paused: {self._paused}")

    # -- pausing while outcomes cannot be made durable ----------------------------------

    def _pause(self, reason: str) -> None:
        """An outcome could not be written to disk (e.g. the state file system is full):
        its delivery is held unacked, and so is every later one that needs the disk, until
        :meth:`_try_resume` succeeds; the broker then redelivers them. Held deliveries fill
        the prefetch window, which stops consumption; the consumer stays attached so the
        queue does not expire meanwhile."""
        self._held += 1
        if self._paused is not None:
            return
        self._paused = reason
        self._paused_at = time.monotonic()
        self._next_probe = self._paused_at + PROBE_EVERY
        log.error(
            "PAUSED: cannot make outcomes durable (%s); consuming stopped and nothing is "
            "acked until %s is writable again (checked every %.0f s)",
            reason,
            self.retry_queue.path.parent,
            PROBE_EVERY,
        )

    def _try_resume(self) -> None:
        """Resume once the state directory takes a synced write again and no transfer is in
        flight: the connection is dropped so the broker redelivers every held notice, then
        consuming starts afresh."""
        if self._in_pool > 0:
            return
        problem = self.retry_queue.probe()
        if problem is not None:
            waited = time.monotonic() - self._paused_at
            log.warning(
                "still paused after %.0f s, %d notices held: %s", waited, self._held, problem
            )
            return
        log.warning(
            "resuming after %.0f s paused (%s): %d held notices will be redelivered",
            time.monotonic() - self._paused_at,
            self._paused,
            self._held,
        )
        self._paused = None
        self._held = 0
        self._abandon_unacked()
        self.session.close()

    def metrics_snapshot(self) -> dict[str, object]:
        """The instance's metrics document (:mod:`sarra.flow.metrics`): the counters, and
        the gauges read now: retry queue depth and oldest entry's age, transfers in flight,
        connection state, pause reason. Call it from the flow thread."""
        now = time.time()
        oldest = self.retry_queue.oldest()
        age = None if oldest is None else now - oldest
        return self.metrics.snapshot(
            retry={"depth": len(self.retry_queue), "oldest_age": age},
            in_flight=self._in_pool,
            connection="connected" if self.session.connected else "disconnected",
            paused=self._paused,
            queue=self.settings.queue.name,
            reports_lost=self._reports_lost,
            internal_errors=self._internal_errors,
        )

    @property
    def paused(self) -> str | None:
        """Why consuming is paused (outcomes cannot be made durable), or None."""
        return self._paused

    def _wait_and_poll(self) -> None:
        """Dispatch deliveries; sleep until the broker sends something or a transfer ends.

        Workers wake the flow thread through a pipe, so finished transfers are settled (and
        acked, which reopens the prefetch window) at once, without busy polling.
        """
        if self.session.poll(0) or not self._done.empty() or self._commit_finished():
            return
        fd = self.session.fileno()
        timeout = 0.5
        if self._deferred:  # wake for the next delivery held by message_rate_max
            timeout = max(0.0, min(timeout, self._deferred[0][0] - time.monotonic()))
        if fd is None:  # TLS: short polls while transfers or a commit run (nothing wakes it)
            busy = self._in_pool > 0 or self._commit is not None
            self.session.poll(min(timeout, 0.002) if busy else timeout)
            return
        if self._pending_items and self._commit is None:  # wake in time to commit the batch
            # (a commit under way wakes this thread when it returns: its batch waits for it)
            timeout = max(0.0, min(timeout, self._pending_since + BATCH_WAIT - time.monotonic()))
        wake = self._wakeup.fileno()
        # announced before the last look at the hand-back queue: a worker that hands an
        # item back after that look sees the flag and wakes the select (see _finished)
        self._sleeping = True
        try:
            if not self._done.empty() or self._commit_finished():
                return
            readable, _, _ = select.select([fd, wake], [], [], timeout)
        finally:
            self._sleeping = False
        if wake in readable:
            self._wakeup.drain()
        if fd in readable:
            self.session.poll(0)

    def _finished(self, item: WorkItem) -> None:
        """In a pool thread: hand the item back, and wake the flow thread if it sleeps in
        ``select`` (a busy flow thread collects it at its next turn without a wake-up)."""
        self._done.put(item)
        if self._sleeping:
            self._wakeup.wake()

    def _drain(self, timeout: float = 30.0) -> None:
        """Settle what finishes before stopping: transfers are abandoned between chunks
        (``stop`` is their interrupt), and those still blocked after :data:`STOP_GRACE` are
        aborted; abandoned ones stay unacked for redelivery and leave no in-flight file."""
        with contextlib.suppress(BrokerError):  # the broker redelivers what is not acked
            self.session.cancel(self.settings.queue.name)
        if self._deferred:
            log.info(
                "stopping: %d notices held by message_rate_max are left for redelivery",
                len(self._deferred),
            )
            self._deferred.clear()
        deadline = time.monotonic() + timeout
        abort_at = time.monotonic() + STOP_GRACE
        while self._in_pool > 0 and time.monotonic() < deadline:
            if self.abort is not None and time.monotonic() >= abort_at:
                abort, self.abort = self.abort, None
                log.info("stopping: aborting %d transfers still running", self._in_pool)
                abort()
            try:
                self.session.poll(0.05)
            except BrokerError:
                break
            self._collect()
        self._collect()
        try:
            self._flush_settled(wait=True)
        except BrokerError as e:
            log.warning("could not settle on stop (%s): the broker will redeliver", e)

    # -- intake ----------------------------------------------------------------------------

    def _on_delivery(self, delivery: Delivery) -> None:
        if self.message_limiter is not None:
            delay = self.message_limiter.reserve(1)
            if delay > 0 or self._deferred:
                self._deferred.append((time.monotonic() + delay, delivery))
                return
        self._handle_delivery(delivery)
        if self.inline is not None and len(self._pending_items) >= self._batch_size:
            # work done in this thread piles up between two polls: commit and ack half a
            # prefetch window at a time, so the broker sends more while the rest is worked
            # on (outside _handle_delivery: a failure here is the loop's, as in run)
            self._flush_settled()

    def _release_deferred(self) -> None:
        """Handle the deliveries held by ``message_rate_max`` whose turn has come."""
        now = time.monotonic()
        while self._deferred and self._deferred[0][0] <= now:
            self._handle_delivery(self._deferred.popleft()[1])

    def _handle_delivery(self, delivery: Delivery) -> None:
        try:
            self._intake(delivery)
        except BrokerError:
            raise
        except Exception:
            # a bug must not stop the flow, nor loop on a poison message: log, ack
            log.exception(
                "internal error on a delivery (key %s); acking it", delivery.message.routing_key
            )
            self._count(500)
            self._settle_acks.append(delivery)

    def _intake(self, delivery: Delivery) -> None:
        self.last_activity = time.time()
        if delivery.generation != self._outstanding_generation:
            # the first delivery of a new connection: the old one's are stale (redelivered)
            self._outstanding.clear()
            self._outstanding_generation = delivery.generation
        self._outstanding[delivery.delivery_tag] = delivery
        msg = delivery.message
        if retryreturn.is_returned(msg):
            self._restore_returned(delivery)
            return
        try:
            decoded = v02.decode(
                msg.exchange, msg.routing_key, msg.body, msg.headers, msg.content_type
            )
        except MessageError as e:
            log.error("rejected malformed message (key %s): %s", msg.routing_key, e)
            self.metrics.malformed_in()
            self._count(417)
            self._report_malformed(msg, str(e))
            self._settle_acks.append(delivery)
            return
        if isinstance(decoded, Pulse):
            if decoded.text:
                log.info("pulse: %s", decoded.text)
            self._settle_acks.append(delivery)
            return
        if isinstance(decoded, Report):
            # a misrouted report on a post binding (spec 3.1, Q3): never act on it
            log.debug("ignoring a report received on a post binding")
            self._settle_acks.append(delivery)
            return
        self.metrics.received(decoded)
        self._admit(WorkItem(notice=decoded, delivery=delivery))

    def _admit(self, item: WorkItem) -> None:
        try:
            go = self.select(item)
        except Interrupted:
            # stopping while select waited (e.g. for the shared duplicate store): no outcome,
            # the broker gives the notice to another instance
            item.abandoned = True
            go = False
        except SarraError as e:
            item.settle(e.report_code, str(e))
            go = False
        except Exception as e:  # a plugin bug must not stop the flow nor lose the notice
            log.exception("selecting %s failed", item.notice.path)
            item.settle(500, f"internal error: {type(e).__name__}: {e}")
            item.requeue = self.requeue_after(e)
            go = False
        if not go:
            self._settled(item)
            return
        if self.inline is not None and self.inline(item):
            # done here; committed, reported and acked with its batch like pool work
            self._settled(item)
            return
        self._in_pool += 1
        future = self._pool.submit(self._work_guarded, item)
        future.add_done_callback(lambda _f: self._finished(item))

    def _work_guarded(self, item: WorkItem) -> None:
        attempts = max(1, self.settings.attempts)
        for attempt in range(1, attempts + 1):
            try:
                item.error = None
                self.work(item)
                return
            except Interrupted:
                # stopping: no outcome; the broker redelivers (a retry entry stays on disk)
                item.abandoned = True
                return
            except SarraError as e:
                item.error = e
                if e.retryable and self.stop.is_set():
                    # e.g. its connection aborted by the stop before any byte arrived: no
                    # outcome, the broker redelivers it (a retry entry stays on disk)
                    item.abandoned = True
                    return
                if not self.settings.failure_policy.retry_now(e) or attempt == attempts:
                    item.settle(e.report_code, str(e))
                    # e.g. a 404 is not retried at once, but later from disk (on_failure
                    # not_found queue): on a pump a file may be announced before every web
                    # server sees it
                    item.requeue = self.requeue_after(e)
                    return
                log.info("%s: attempt %d failed (%s); retrying", item.notice.path, attempt, e)
                if self.stop.wait(min(0.2 * 2**attempt, 2.0)):
                    # stopping between attempts: no outcome, the broker redelivers
                    item.abandoned = True
                    return
            except Exception as e:
                # a bug (ours or a plugin's) or an unexpected OSError: never an ack of lost
                # work; the notice is retried later from disk like any retryable failure
                if isinstance(e, OSError):  # the environment, not a bug: no traceback
                    log.error("processing %s failed: %s", item.notice.path, e)
                else:
                    log.exception("processing %s failed", item.notice.path)
                item.error = e
                item.settle(500, f"internal error: {type(e).__name__}: {e}")
                item.requeue = self.requeue_after(e)
                return

    def requeue_after(self, error: BaseException) -> bool:
        """THE decision for a failed notice: True to keep it in the retry queue, False to
        report and ack it (drop). The ``on_failure`` policy for ``error``'s class (else its
        ``retryable``), and never without a retry queue (``retry_ttl`` 0)."""
        return self.settings.retry_ttl > 0 and self.settings.failure_policy.queue(error)

    def _collect(self) -> None:
        while True:
            try:
                item = self._done.get_nowait()
            except queue.Empty:
                return
            self._in_pool -= 1
            self._settled(item)

    # -- settling ------------------------------------------------------------------------------

    def _flush_due(self) -> bool:
        """Whether to flush now: at once without a batch committer; with one, when the pool
        is idle, the batch is large enough, or its oldest item waited BATCH_WAIT."""
        if not self._pending_items:
            return True
        if self._in_pool == 0 or len(self._pending_items) >= self._batch_size:
            return True
        return time.monotonic() - self._pending_since >= BATCH_WAIT

    def _settled(self, item: WorkItem) -> None:
        """An item's processing ended: with a batch committer, its outcome waits for the
        batch commit at the next flush (which may still change it); else it is queued now."""
        if self.commit_batch is not None:
            if not self._pending_items:
                self._pending_since = time.monotonic()
            self._pending_items.append(item)
        else:
            self._outcome(item)

    def _outcome(self, item: WorkItem) -> None:
        """Queue an outcome's report and ack (or retry bookkeeping) for the next flush."""
        if item.abandoned:
            if item.retry is not None:
                self._retrying.discard(item.retry.id)
            return
        code = item.code if item.code is not None else 500
        self.last_activity = time.time()
        if item.requeue and item.retry is None:
            try:
                self._to_retry_queue(item)
            except Exception as e:  # not durable: hold the delivery unacked, stop consuming
                log.error("%s: cannot queue for retry (%s); holding it", item.notice.path, e)
                self._pause(f"retry queue: {e}")
                return
        self._count(code)
        self.metrics.settled(
            item.notice,
            code,
            item.size,
            block=item.part is not None,
            whole=item.part is None or item.part is PartState.COMPLETE,
        )
        if code != 0 and (self.reports.enabled or getattr(item.error, "report_always", False)):
            self._queue_report(item, code)  # e.g. a quota refusal: its source must hear of it
        if item.outgoing and self.on_post is not None and not self.on_post(item):
            log.info("%s: not posted (an on_post plugin suppressed it)", item.notice.path)
            self.posts_suppressed += 1
            item.outgoing.clear()
        self._settle_posts.extend(item.outgoing)
        if self.on_settled is not None:
            try:
                self.on_settled(item)
            except Exception:
                log.exception("on_settled failed")
        if item.delivery is not None:
            self._settle_acks.append(item.delivery)
        elif item.retry is not None:
            self._settle_retries.append(item)
        if self.after_settle is not None:
            self._settle_items.append(item)

    def _to_retry_queue(self, item: WorkItem) -> None:
        # a notice that came as v03 with fields v02 cannot carry is kept in v03
        wire = v02.encode(
            item.notice,
            item.notice.exchange,
            header_value_max=1 << 20,
            post_format="v03" if item.notice.v03_fields else "v02",
        )
        now = time.time()
        entry = RetryItem.from_wire(wire, now=now, error=item.message)
        self.retry_queue.put(self.retry_queue.failed(entry, item.message, now))
        item.message += " (queued for retry)"

    def _flush_settled(self, *, wait: bool = False) -> None:
        """Make outcomes durable, publish pending reports (confirmed), then ack and settle
        retry entries. With a committer thread (``commit_async``) see :meth:`_flush_async`;
        ``wait``: finish everything now (on stop)."""
        if self._committer is not None:
            self._flush_async(wait)
            return
        if self._pending_items:
            assert self.commit_batch is not None
            try:
                # e.g. one data barrier (fsyncs) for the batch, then the renames: an item whose
                # file could not be placed gets its real outcome before anything is reported
                self.commit_batch(self._pending_items)
            except SarraError as e:
                log.error("cannot commit placed files (%s); acks wait", e)
                return
            pending, self._pending_items = self._pending_items, []
            for item in pending:
                if item.error is not None and not item.abandoned:
                    # e.g. its file could not be placed at the commit: the same decision
                    item.requeue = self.requeue_after(item.error)
                self._outcome(item)
        if not self._anything_settled():
            return
        if self.before_settle is not None:
            try:
                self.before_settle()  # e.g. fsync the directories of files just placed
            except SarraError as e:
                log.error("cannot make placed files durable (%s); acks wait", e)
                return
        self._send_settled()

    def _anything_settled(self) -> bool:
        return bool(
            self._settle_reports or self._settle_acks or self._settle_retries or self._settle_posts
        )

    def _send_settled(self) -> None:
        """Publish the settled outcomes' re-announcements and reports, then ack and settle
        their retry entries, then ``after_settle``: once they are durable."""
        if self._settle_posts:  # re-announcements first: they are the work's outcome
            target = self.post_session or self.session
            if not target.connected:
                target.connect()
            target.publish(self._settle_posts)
            self.metrics.published(len(self._settle_posts))
            self._settle_posts = []
        if self._settle_reports:
            try:
                self.session.publish(self._settle_reports)
            except BrokerNotFound as e:
                # the report exchange does not exist (and could not be declared): the reports
                # cannot go anywhere, and holding the acks would stall the flow for good
                self._lose_reports(len(self._settle_reports), e)
            self._settle_reports = []
        acks, self._settle_acks = self._settle_acks, []
        self._ack(acks)
        retries, self._settle_retries = self._settle_retries, []
        for item in retries:
            assert item.retry is not None
            self._retrying.discard(item.retry.id)
            try:
                if item.requeue:
                    self.retry_queue.failed(item.retry, item.message, time.time())
                else:
                    self.retry_queue.done(item.retry)
            except SarraError as e:  # the entry stays on disk as it was: tried again later
                self._pause(f"retry queue: {e}")
        settled, self._settle_items = self._settle_items, []
        if self.after_settle is not None and settled:
            try:
                self.after_settle(settled)
            except Exception:  # the outcomes are settled and acked; nothing is lost
                self.after_settle_failed += len(settled)
                log.exception(
                    "after_settle (delete/discard) failed for %d settled item(s), %d so far",
                    len(settled),
                    self.after_settle_failed,
                )

    # -- the committer thread (commit_async) ------------------------------------------------

    def _flush_async(self, wait: bool) -> None:
        """One flush at a time in the committer thread: when the one under way returned,
        its outcomes are reported and acked here (:meth:`_finish_commit`); then everything
        settled since it started goes to the next one (:meth:`_start_commit`). ``wait``:
        wait for it, and for the next one too (on stop).

        Ordering as without the thread: an ack only after its flush's ``commit_batch`` and
        ``before_settle`` returned, so after the data barrier, the renames and the directory
        fsyncs; an outcome settled while a flush is under way waits for the next one (the
        directory fsyncs of that flush may have run before it was placed).
        """
        while True:
            c = self._commit
            if c is not None:
                if not (wait or c.future.done()):
                    return
                if not self._finish_commit(c):
                    return  # not committed: tried again at the next flush
            if not (self._pending_items or self._anything_settled()):
                return
            self._start_commit()
            if not wait:
                return

    def _commit_finished(self) -> bool:
        return self._commit is not None and self._commit.future.done()

    def _take_settled(self) -> _Settled:
        """The outcomes settled so far, leaving none behind."""
        taken = _Settled(
            self._settle_reports, self._settle_posts, self._settle_acks,
            self._settle_retries, self._settle_items,
        )  # fmt: skip
        self._settle_reports, self._settle_posts, self._settle_acks = [], [], []
        self._settle_retries, self._settle_items = [], []
        return taken

    def _put_back_settled(self, older: _Settled) -> None:
        """``older`` goes before the outcomes settled since."""
        self._settle_reports[:0] = older.reports
        self._settle_posts[:0] = older.posts
        self._settle_acks[:0] = older.acks
        self._settle_retries[:0] = older.retries
        self._settle_items[:0] = older.items

    def _start_commit(self) -> None:
        assert self._committer is not None and self.commit_batch is not None
        items, self._pending_items = self._pending_items, []
        commit_batch, before_settle = self.commit_batch, self.before_settle

        def durable() -> None:  # the committer thread
            if items:
                commit_batch(items)
            if before_settle is not None:
                before_settle()

        future = self._committer.submit(durable)
        self._commit = _Commit(future, items, self._take_settled())
        future.add_done_callback(lambda _f: self._wake_if_sleeping())

    def _wake_if_sleeping(self) -> None:
        if self._sleeping:
            self._wakeup.wake()

    def _finish_commit(self, c: _Commit) -> bool:
        """Report and ack what the flush ``c`` made durable; False when it failed (its
        items and outcomes then wait for the next flush, in their order)."""
        self._commit = None
        try:
            c.future.result()
        except Exception as e:  # nothing of it is acked: all of it waits for the next flush
            self._pending_items[:0] = c.items
            self._put_back_settled(c.covered)
            if not isinstance(e, SarraError):
                raise  # a bug: the loop logs it and reconnects, as for any flush
            log.error("cannot commit placed files (%s); acks wait", e)
            return False
        since = self._take_settled()  # settled meanwhile: not covered, for the next flush
        self._put_back_settled(c.covered)
        try:
            for item in c.items:
                if item.error is not None and not item.abandoned:
                    # e.g. its file could not be placed at the commit: the same decision
                    item.requeue = self.requeue_after(item.error)
                self._outcome(item)
            if self._anything_settled():
                self._send_settled()
        finally:
            left = self._take_settled()  # what a failure left (a lost connection drops it)
            self._put_back_settled(since)
            self._put_back_settled(left)
        return True

    def _lose_reports(self, count: int, error: BrokerNotFound) -> None:
        self._reports_lost += count
        now = time.monotonic()
        if now - self._reports_lost_logged >= REPORT_LOSS_LOG_EVERY:
            log.error(
                "report exchange %s is missing: %d reports dropped so far (%s); "
                "declare it (sr_police declare) or set report_exchange / report_back off",
                self.reports.exchange,
                self._reports_lost,
                error,
            )
            self._reports_lost_logged = now

    def _ack(self, acks: list[Delivery]) -> None:
        """Ack settled deliveries: one ``multiple`` ack for the settled prefix (in tag order),
        single acks for the others so a slow transfer never holds the prefetch window."""
        settled = {d.delivery_tag for d in acks if d.generation == self.session.generation}
        last: Delivery | None = None
        while self._outstanding:
            tag = next(iter(self._outstanding))
            if tag not in settled:
                break
            last = self._outstanding.pop(tag)
            settled.discard(tag)
        if last is not None:
            self.session.ack(last, multiple=True)
        for d in acks:
            if d.delivery_tag in settled:
                self._outstanding.pop(d.delivery_tag, None)
                self.session.ack(d)

    def _abandon_unacked(self) -> None:
        """After a connection loss: outcomes not yet acked will be redelivered."""
        self._outstanding.clear()
        self._deferred.clear()  # their delivery tags died with the connection
        self._settle_reports = []
        self._settle_posts = []
        # redelivered: handled again then (no source deleted, no copy discarded meanwhile)
        self._settle_items = [i for i in self._settle_items if i.delivery is None]
        if self._commit is not None:  # the flush under way: the same for what it covers
            covered = self._commit.covered
            covered.reports, covered.posts = [], []
            covered.items = [i for i in covered.items if i.delivery is None]
            self._settle_acks.extend(covered.acks)  # counted and dropped below
            covered.acks = []
        if self.post_session is not None:
            self.post_session.close()
        dropped = len(self._settle_acks)
        self._settle_acks = []
        if dropped:
            log.info(
                "%d outcomes not acked before the connection was lost; "
                "the broker will redeliver them",
                dropped,
            )

    def _count(self, code: int) -> None:
        self.counts[code] = self.counts.get(code, 0) + 1

    # -- reports -------------------------------------------------------------------------------

    def _queue_report(self, item: WorkItem, code: int) -> None:
        """Queue the report of an outcome; one that cannot be built is a logged, counted
        loss of that report only (the outcome itself stands). An ``on_report`` plugin may
        suppress it."""
        if self.on_report is not None and not self.on_report(item):
            self.reports_suppressed += 1
            return
        try:
            self._settle_reports.append(self._report(item, code))
        except Exception as e:
            self.reports_unbuildable += 1
            log.error(
                "cannot build the %d report about %s (%d so far): %s",
                code,
                item.notice.path,
                self.reports_unbuildable,
                e,
            )

    def _report(self, item: WorkItem, code: int) -> WireMessage:
        r = self.reports
        notice = item.notice
        if item.computed is not None and notice.checksum.letter == "z":
            notice = v02.derive(notice, checksum=item.computed)
        report = v02.make_report(
            notice,
            code=code,
            message=item.message or _DEFAULT_MESSAGES.get(code, ""),
            host=r.host,
            user=r.user,
            elapsed=time.monotonic() - item.received,
            source=r.source or r.user,
            from_cluster=r.cluster,
            to_clusters=r.to_clusters,
        )
        return v02.encode(report, r.exchange, post_format=r.post_format)

    def report(self, notice: Notice, code: int, message: str) -> None:
        """Queue a report about ``notice`` that belongs to no delivery (e.g. housekeeping
        giving up on a multi-part file); it is published, confirmed, at the next flush.
        Call it from the loop's thread (the housekeeping callback runs there)."""
        if not self.reports.enabled:
            return
        item = WorkItem(notice)
        item.settle(code, message)
        self._queue_report(item, code)

    def _report_malformed(self, msg: WireMessage, reason: str) -> None:
        """Report a 417 about a message that could not be decoded, when its body allows
        (v02: three body fields and a valid sum; v03: a JSON object with the three fields and
        an identity); otherwise the drop is logged and counted, and nothing is reported."""
        if not self.reports.enabled:
            return
        r = self.reports
        try:
            text = msg.body.decode("utf-8")
            if v03.looks_like_v03(text, msg.content_type):
                pubtime, base_url, rel, headers = v03_salvage_fields(text)
            else:
                fields = text.split("\n", 1)[0].rstrip("\r").split(" ")
                if len(fields) != 3 or not all(fields):
                    raise MalformedMessage("the body does not have three fields")
                pubtime, base_url, rel = fields
                headers = dict(msg.headers)
            wire = report_for_undecodable(
                pubtime,
                base_url,
                rel,
                msg.routing_key,
                headers,
                code=417,
                message=f"invalid message: {reason}"[:200],
                host=r.host,
                user=r.user,
                exchange=r.exchange,
            )
            wire = reformat(wire, r.post_format)
        except (MessageError, UnicodeDecodeError) as e:
            self.malformed_unreported += 1
            log.info("no 417 report for that message (%d so far): %s", self.malformed_unreported, e)
            return
        self._settle_reports.append(wire)

    # -- retries from disk -----------------------------------------------------------------

    def _return_retries(self) -> None:
        """At a clean stop: hand the disk retry entries back to the broker (see
        :mod:`sarra.flow.retryreturn`); those it refuses stay on disk, said in the log."""
        if not len(self.retry_queue):
            return
        name = self.settings.queue.name
        why_not = None
        if self.session.url.protocol == "mqtt":
            why_not = "MQTT has no default exchange"
        elif not self.session.connected:  # no reconnecting now: the stop must end
            why_not = "not connected to the broker at the stop"
        if why_not is not None:
            retryreturn.log_hand_back(name, 0, len(self.retry_queue), why_not)
            return
        try:
            returned, reason = retryreturn.hand_back(
                self.retry_queue,
                self.session,
                name,
                others_only=True,
                deadline=time.monotonic() + HAND_BACK_TIME,
            )
        except Exception as e:  # a bug: the entries stay on disk, the stop goes on
            log.exception("handing the retry entries back failed")
            returned, reason = 0, f"internal error: {e}"
        retryreturn.log_hand_back(name, returned, len(self.retry_queue), reason)

    def _restore_returned(self, delivery: Delivery) -> None:
        """A retry entry handed back by a stopping node: into this node's disk retry queue as
        it was (attempts, first failure, due time), then acked; held unacked (paused) when
        the disk does not take it."""
        try:
            entry = retryreturn.from_returned(delivery.message)
        except ValueError as e:
            log.error("rejected a malformed returned retry entry: %s", e)
            self._count(417)
            self._settle_acks.append(delivery)
            return
        try:
            self.retry_queue.put(entry)
        except Exception as e:  # not durable: hold the delivery unacked, stop consuming
            log.error("cannot restore a returned retry entry (%s); holding it", e)
            self._pause(f"retry queue: {e}")
            return
        log.info("restored retry entry %s", retryreturn.describe(entry))
        self._settle_acks.append(delivery)

    def _run_retries(self) -> None:
        """Every few seconds: give up on expired entries (reported 499), and list the due
        ones; :meth:`_feed_retries` admits them as fast as the pool takes them."""
        now = time.time()
        for entry in self.retry_queue.expired(now):
            log.error(
                "giving up on %s after %d attempts: %s",
                entry.routing_key,
                entry.attempts,
                entry.last_error,
            )
            notice = self._retry_notice(entry)
            self.retry_queue.done(entry)
            if notice is not None:
                self.report(
                    notice, 499, f"gave up after {entry.attempts} attempts: {entry.last_error}"
                )
        self._due = deque(e for e in self.retry_queue.due(now) if e.id not in self._retrying)
        self._feed_retries()

    def _feed_retries(self) -> None:
        """Admit due retry entries while the pool has room (two per transfer thread), so a
        backlog drains at the speed of the transfers, not of the housekeeping period."""
        capacity = self.settings.threads * 2 - self._in_pool
        while capacity > 0 and self._due:
            entry = self._due.popleft()
            if entry.id in self._retrying or entry not in self.retry_queue:
                continue  # already running, or settled since it was listed
            notice = self._retry_notice(entry)
            if notice is None:
                self.retry_queue.done(entry)
                continue
            self._retrying.add(entry.id)
            capacity -= 1
            self._admit(WorkItem(notice=notice, retry=entry))

    @staticmethod
    def _retry_notice(entry: RetryItem) -> Notice | None:
        """The notice of a retry entry, or None (logged) when it cannot be read back."""
        wire = entry.to_wire()
        try:
            notice = v02.decode(
                wire.exchange, wire.routing_key, wire.body, wire.headers, wire.content_type
            )
        except MessageError as e:
            log.error("dropping unreadable retry entry: %s", e)
            return None
        return notice if isinstance(notice, Notice) else None


_DEFAULT_MESSAGES = {
    201: "Downloaded",
    205: "checksum computed on download",
    304: "not modified",
    417: "invalid message",
    499: "transfer failed",
    500: "local operation failed",
    503: "not allowed",
    507: "quota exceeded",
}


@dataclass(slots=True)
class _Settled:
    """Outcomes settled and not yet sent: what a flush covers (``commit_async``)."""

    reports: list[WireMessage]
    posts: list[WireMessage]
    acks: list[Delivery]
    retries: list[WorkItem]
    items: list[WorkItem]


@dataclass(slots=True)
class _Commit:
    """A flush under way in the committer thread: its future, the batch it commits and the
    outcomes it makes durable."""

    future: Future[None]
    items: list[WorkItem]
    covered: _Settled
