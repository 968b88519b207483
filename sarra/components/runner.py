"""The consumer runner: everything a consuming component does the same way, in one place.

A consuming component (subscribe, sarra, sender, winnow) is a *declaration* on
:class:`ConsumerComponent`: its name, its bindings and queue name when they differ from the
default, the outputs it declares, and :meth:`ConsumerComponent.build`, which turns one
instance's :class:`Instance` into a :class:`Flow` (its ``select``/``work`` steps and what they
need). The runner owns the rest:

- the broker session (made by ``session_factory``, so tests can run a component on the
  in-memory broker), the queue, its bindings and the exchanges to declare;
- ``declare``/``cleanup``/``status``;
- the disk retry queue, the heartbeat file, the plugins' ``on_start``/``on_stop``/
  ``on_heartbeat`` (and ``on_report``/``on_post``, called by the loop);
- the :class:`~sarra.flow.engine.ConsumingLoop` (ack rule, reports, retries, stop);
- closing what the flow opened, in reverse order, and the stop summary.

Ordering contract: ``build`` runs before the loop connects; ``Flow.close`` callbacks run after
the loop has stopped (nothing in flight) and the plugins' ``on_stop``, in the order given, then
the retry queue's; each runs even when the loop or an earlier one raised.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sarra.broker.base import Broker, BrokerUrl
from sarra.broker.mqtt import MqttSession
from sarra.components.base import InstanceStatus
from sarra.components.common import (
    broker_url,
    connected,
    declare_consumer_queue,
    fqdn,
    heartbeat_for,
    instance_state_dir,
    queue_spec,
    queue_status,
    remove_queue_and_state,
    report_exchange,
    retry_queue_for,
    session_for,
)
from sarra.config.loader import resolve_queue_name
from sarra.config.settings import Settings
from sarra.flow.engine import (
    ConsumingLoop,
    InlineWorker,
    LoopSettings,
    ReportSettings,
    Selector,
    Worker,
)
from sarra.flow.events import log_event, log_failure
from sarra.flow.failpolicy import FailurePolicy
from sarra.flow.hooks import HeartbeatTicker, Plugins
from sarra.flow.metrics import FlowMetrics, metrics_name, open_reassemblies, write_metrics
from sarra.flow.ratelimit import TokenBucket, byte_limiter, byte_rate, message_limiter
from sarra.flow.retryqueue import RetryQueue
from sarra.flow.work import WorkItem
from sarra.notice import Notice

if TYPE_CHECKING:
    from sarra.flow.bandwidth import Bandwidth

log = logging.getLogger(__name__)

Bindings = tuple[tuple[str, str], ...]
SessionFactory = Callable[[BrokerUrl, Settings, str], Broker]
Reporter = Callable[[Notice, int, str], None]


def default_bindings(s: Settings) -> Bindings:
    """(exchange, routing key pattern) of every subtopic; ``exchange`` (default ``xpublic``)
    with ``<topic_prefix>.#`` when there is none."""
    found = tuple((b.exchange, b.routing_key) for b in s.bindings)
    return found or ((s.exchange or "xpublic", f"{s.topic_prefix}.#"),)


def log_outcome(item: WorkItem) -> None:
    """The default ``on_settled``: one ``downloaded`` line per file or block placed, one
    ``failed`` line per failure (:mod:`sarra.flow.events`)."""
    notice = item.notice
    if item.code in (201, 205):
        where = item.local_path or notice.path
        detail = f"{item.message} {where} ({item.size} bytes)"
        log_event(
            log,
            logging.INFO,
            "downloaded",
            notice.path,
            item.code,
            notice.header("source"),
            detail,
            size=item.size,
        )
    else:
        log_failure(log, item)


@dataclass
class Instance:
    """One running instance, as the runner has prepared it for :meth:`ConsumerComponent.build`."""

    settings: Settings
    number: int
    stop: threading.Event
    session: Broker
    user: str  # the broker user (reports, queue names)
    state_dir: Path
    plugins: Plugins
    session_factory: SessionFactory
    #: filled by the runner once the loop exists: a report about no delivery (housekeeping)
    report: Reporter = field(default=lambda notice, code, message: None)
    #: the instance's byte rate limit (``kbytes_ps``, ``byte_rate_max``), shared by every
    #: transfer of the flow, downloads and sends alike; None when unlimited
    limiter: TokenBucket | None = None
    #: the pump-wide caps (``bandwidth``, ``bandwidth_shared``), None when there are none;
    #: its limiters include ``limiter``
    bandwidth: Bandwidth | None = None

    def post_session(self, label: str = "post") -> Broker:
        """A second session to ``post_broker``, for flows that publish elsewhere."""
        s = self.settings
        return self.session_factory(
            broker_url(s, "post_broker"), s, f"sr_{s.component} {s.name} ({label})"
        )


@dataclass
class Flow:
    """What a component runs in one instance. Only ``select`` and ``work`` are required."""

    select: Selector
    work: Worker
    #: small work done in the flow thread instead of the pool (see engine.InlineWorker)
    inline: InlineWorker | None = None
    before_settle: Callable[[], None] | None = None
    commit_batch: Callable[[list[WorkItem]], None] | None = None
    #: ``commit_batch`` and ``before_settle`` run in a thread of their own, beside the flow
    #: thread (engine ``commit_async``)
    commit_async: bool = False
    #: after each flush, with the items whose outcomes were made durable, reported and acked
    after_settle: Callable[[list[WorkItem]], None] | None = None
    housekeeping: Callable[[], None] | None = None
    abort: Callable[[], None] | None = None
    on_settled: Callable[[WorkItem], None] | None = log_outcome
    #: where ``WorkItem.outgoing`` is published (None: the consuming session)
    post_session: Broker | None = None
    #: the cluster reports name as this pump's (None: ``cluster``, else the broker's host);
    #: also the reports' ``to_clusters`` unless that option is set
    cluster: str | None = None
    #: overrides of the loop's tuning (None: from the settings)
    threads: int | None = None
    attempts: int | None = None
    #: the retry queue (None: the instance's default one, timed by the retry options)
    retry_queue: RetryQueue | None = None
    #: seconds a failed notice is retried from disk; None: the retry queue's ttl (0 with
    #: ``retry off``)
    retry_ttl: float | None = None
    #: run after the loop stops, in this order
    close: list[Callable[[], None]] = field(default_factory=list)
    #: more words for the stop summary line
    summary: Callable[[], str] | None = None


class ConsumerComponent:
    """Base of every consuming component; subclasses declare, the runner runs."""

    name = ""
    one_shot = False

    def __init__(self, session_factory: SessionFactory = session_for) -> None:
        self.session_factory = session_factory
        #: counters for the next :meth:`run` to keep (e.g. read by a progress line); None:
        #: the run makes its own. Taken (reset to None) by the run.
        self.metrics: FlowMetrics | None = None

    # -- the declaration (override what differs) ------------------------------------------

    def bindings(self, s: Settings, instance: int | None = None) -> Bindings:
        """The queue's bindings (``instance``: for components that shard by instance)."""
        return default_bindings(s)

    def queue_name(self, s: Settings, instance: int | None = None) -> str:
        return resolve_queue_name(s)

    def exchanges(self, s: Settings, bindings: Bindings) -> tuple[str, ...]:
        """Exchanges to declare before binding (none with ``declare_exchange off``)."""
        return tuple(dict.fromkeys(x for x, _ in bindings)) if s.declare_exchange else ()

    def declare_outputs(self, s: Settings, session: Broker) -> None:
        """Declare what the flow publishes to (post exchanges); ``session`` is connected."""

    def check(self, s: Settings) -> None:
        """Refuse settings the component cannot run with (ConfigError), before connecting."""

    def build(self, run: Instance) -> Flow:
        raise NotImplementedError

    # -- the Component protocol ------------------------------------------------------------

    def _session(self, s: Settings, label: str = "") -> tuple[Broker, str]:
        url = broker_url(s)
        name = f"sr_{s.component} {s.name}" + (f" ({label})" if label else "")
        return self.session_factory(url, s, name), url.user

    def run(self, s: Settings, instance: int, stop: threading.Event) -> int:
        self.check(s)
        session, user = self._session(s)
        if isinstance(session, MqttSession):
            session.instance = instance  # a persistent MQTT session per instance
        run = Instance(
            settings=s,
            number=instance,
            stop=stop,
            session=session,
            user=user,
            state_dir=instance_state_dir(s),
            plugins=Plugins.from_config(s.plugins),
            session_factory=self.session_factory,
            limiter=byte_limiter(
                byte_rate(s.kbytes_ps, s.byte_rate_max), stop, s.bandwidth_wait_max
            ),
        )
        if run.limiter is not None:
            log.info("transfers capped at %d bytes/s", run.limiter.rate)
        if s.bandwidth or s.bandwidth_shared:  # else open_bandwidth has nothing to open
            # imported here: it (and its Redis store, sarra.flow.sharedstore) serves the
            # pump-wide caps only, not worth every instance's start-up
            from sarra.flow.bandwidth import open_bandwidth

            run.bandwidth = open_bandwidth(s, s.component, run.limiter, stop)
        if run.bandwidth is not None:
            log.info("pump-wide bandwidth caps in %s", run.bandwidth.store)
        flow = self.build(run)
        if run.bandwidth is not None:
            flow.close.append(run.bandwidth.close)
        retry_queue = flow.retry_queue or retry_queue_for(s, instance)
        flow.close.append(retry_queue.close)
        retry_ttl = flow.retry_ttl
        if retry_ttl is None:
            retry_ttl = retry_queue.ttl if s.retry else 0.0
        bindings = self.bindings(s, instance)
        metrics, self.metrics = self.metrics or FlowMetrics(), None
        host = flow.cluster or session.url.host
        plugins = run.plugins
        beat = heartbeat_for(s, instance).beat
        ticker = HeartbeatTicker(plugins, s, s.heartbeat)
        metrics_path = run.state_dir / metrics_name(s.component, s.name or "default", instance)

        def publish_metrics(state: str) -> None:
            doc = loop.metrics_snapshot()
            opened = open_reassemblies(run.state_dir)
            doc["reassembly"] = {
                "files": len(opened),
                "blocks_present": sum(r["present"] for r in opened),
                "blocks_expected": sum(r["blocks"] for r in opened),
            }
            doc["state"] = state
            write_metrics(metrics_path, doc)

        def heartbeat(note: str) -> None:
            beat(note)
            ticker.tick()
            publish_metrics("running")

        loop = ConsumingLoop(
            session,
            LoopSettings(
                queue=queue_spec(s, self.queue_name(s, instance), bindings),
                exchanges=self.exchanges(s, bindings),
                prefetch=s.prefetch,
                threads=flow.threads or s.transfer_threads,
                attempts=flow.attempts or s.attempts,
                retry_ttl=retry_ttl,
                declare_queue=s.declare_queue,
                failure_policy=FailurePolicy.from_lines(s.on_failure),
            ),
            ReportSettings(
                enabled=s.report_back,
                exchange=report_exchange(s, user),
                host=fqdn(),
                user=user,
                source=s.source,
                cluster=s.cluster or host,
                to_clusters=s.to_clusters or host,
                declare=s.declare_exchange,
                post_format=s.post_format,
            ),
            flow.select,
            flow.work,
            retry_queue,
            stop=stop,
            on_settled=flow.on_settled,
            before_settle=flow.before_settle,
            commit_batch=flow.commit_batch,
            commit_async=flow.commit_async,
            after_settle=flow.after_settle,
            housekeeping=flow.housekeeping,
            heartbeat=heartbeat,
            abort=flow.abort,
            post_session=flow.post_session,
            message_limiter=message_limiter(s.message_rate_max, stop),
            on_report=None if plugins.empty else lambda item: plugins.on_report(item),
            on_post=None if plugins.empty else lambda item: plugins.on_post(item),
            metrics=metrics,
            inline=flow.inline,
        )
        run.report = loop.report
        run.plugins.on_start(s)
        started = time.monotonic()
        publish_metrics("starting")
        try:
            loop.run()
        finally:
            publish_metrics("stopped")
            try:
                run.plugins.on_stop(s)
            finally:
                for close in flow.close:
                    try:
                        close()
                    except Exception:  # the others must still close; nothing is in flight
                        log.exception("while closing %s", getattr(close, "__qualname__", close))
            outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(loop.counts.items())) or "none"
            more = f"; {flow.summary()}" if flow.summary is not None else ""
            log.info(
                "stopped after %.1fs; outcomes: %s%s", time.monotonic() - started, outcomes, more
            )
        return 0

    def declare(self, s: Settings) -> None:
        self.check(s)
        session, _user = self._session(s)
        with connected(session):
            bindings = self.bindings(s)
            exchanges = self.exchanges(s, bindings)
            spec = declare_consumer_queue(session, s, self.queue_name(s), bindings, exchanges)
            keys = ", ".join(f"{x}:{k}" for x, k in spec.bindings)
            if isinstance(session, MqttSession):
                print(
                    f"MQTT broker: no session is made by declare; each instance's session "
                    f"{spec.name}_NN subscribes to {keys} at its first run (docs/mqtt.md)"
                )
            elif spec.bind:
                print(f"declared queue {spec.name} bound to {keys}")
            else:
                print(f"declared queue {spec.name}, not bound (bind_queue off; asked for: {keys})")
            self.declare_outputs(s, session)

    def retry_target(self, s: Settings, instance: int | None = None) -> tuple[Broker, str]:
        """Where ``retry-return`` hands retry entries back: a new session, and the queue."""
        session, _user = self._session(s)
        return session, self.queue_name(s, instance)

    def cleanup(self, s: Settings) -> None:
        session, _user = self._session(s)
        remove_queue_and_state(session, self.queue_name(s), s)

    def status(self, s: Settings) -> InstanceStatus:
        session, _user = self._session(s)
        return queue_status(session, self.queue_name(s))
