"""sr_winnow: pass each distinct file once from several redundant feeds.

Consume from ``exchange``, drop what the duplicate cache has seen (key: checksum and path,
:mod:`sarra.flow.nodupe`; ttl ``suppress_duplicates``, default 1200 s, mandatory), and post the
rest to ``post_exchange`` (required) unchanged but for the exchange: unknown headers, pubTime,
baseUrl and relPath are kept. Nothing is downloaded.

**No loss, no duplicate across a kill.** The forwarded posts are published (confirmed) and
recorded in the cache (appended and fsync'd) *before* the input deliveries are acked (the
``before_settle`` hook of the loop). A kill between the broker accepting a post and the cache
being written would let the redelivered input through a second time, so the winnow also
keeps a *journal queue* on the post broker (``q_<post user>.sr_winnow.<config>.journalNN``,
durable, bound to the post exchange, message ttl = the cache ttl): every post the broker
accepted is in it, atomically with the publish. At start the journal is drained into the cache
(then acked), so whatever a killed predecessor published is known before any input is read.
Duplicates cannot slip through either way; the journal only grows by what is forwarded within
one ttl and is read only at start.

**Sharding** (several instances): one instance per shard, as sr2. With ``instances > 1`` or
``exchange_split on``, instance N (1-based; foreground is shard 0) reads ``<exchange>NN``
(NN = N-1, ``%02d``) with its own queue, cache and journal; upstream posters must spread the
notices with ``post_exchange_split <instances>`` (sr2 rule, spec 1.3: by checksum, so all copies
of one file land on one shard whatever their baseUrl). A shared cache under ``flock`` was not
chosen: it serializes every instance on one file, and the lock says nothing about the window
between publishing and recording, which the journal closes per shard.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from sarra.broker.admin import ensure_exchanges
from sarra.broker.base import Delivery, QueueSpec
from sarra.broker.session import BrokerSession
from sarra.codec import v02
from sarra.components.base import InstanceStatus
from sarra.components.common import (
    broker_url,
    fqdn,
    heartbeat_for,
    instance_state_dir,
    queue_spec,
    report_exchange,
    session_for,
)
from sarra.errors import BrokerError, ConfigError, MessageError
from sarra.flow.engine import ConsumingLoop, LoopSettings, ReportSettings
from sarra.flow.nodupe import DuplicateCache, _digest, derive_key
from sarra.flow.retryqueue import RetryQueue
from sarra.flow.work import WorkItem
from sarra.notice import Notice, WireMessage

log = logging.getLogger(__name__)

DEFAULT_TTL = 1200.0


class WinnowCache(DuplicateCache):
    """A duplicate cache that can be asked without recording, and made durable on demand."""

    def digest(self, notice: Notice) -> int:
        return _digest(derive_key(notice), self.value_of(notice.path))

    def seen(self, notice: Notice, now: float | None = None) -> bool:
        """True if ``notice`` was recorded within ttl; records nothing."""
        now = time.time() if now is None else now
        previous = self._seen.get(self.digest(notice))
        return previous is not None and now - previous[0] < self.ttl

    def record(self, notice: Notice) -> None:
        """Remember ``notice`` now (appended to the file, not yet fsync'd)."""
        self.check(notice)

    def sync(self) -> None:
        """fsync what was recorded so far."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())


def _opt(cfg: Any, name: str, default: Any) -> Any:
    value = cfg.get(name)
    return default if value is None else value


def shard_of(cfg: Any, instance: int) -> int | None:
    """The shard an instance serves (None: not sharded)."""
    if int(_opt(cfg, "instances", 1)) > 1 or cfg.get("exchange_split") is True:
        return max(instance, 1) - 1
    return None


def input_bindings(cfg: Any, shard: int | None) -> tuple[tuple[str, str], ...]:
    """(exchange, key) bindings; the exchange is required (there is no sensible default)."""
    result = [(b.exchange, b.routing_key) for b in getattr(cfg, "bindings", ()) or ()]
    if not result:
        exchange = cfg.get("exchange")
        if not exchange:
            raise ConfigError(
                "sr_winnow needs an exchange to read (e.g. xwinnow)", option="exchange"
            )
        result.append((str(exchange), f"{cfg.get('topic_prefix') or 'v02.post'}.#"))
    if shard is not None:
        result = [(f"{x}{shard:02d}", k) for x, k in result]
    return tuple(result)


class Winnower:
    """select + before_settle of the winnow loop (all in the flow thread)."""

    def __init__(
        self,
        cache: WinnowCache,
        post_session: BrokerSession,
        post_exchange: str,
        split: int = 0,
        header_value_max: int = 1 << 16,
    ) -> None:
        self.cache = cache
        self.post_session = post_session
        self.post_exchange = post_exchange
        self.split = split
        self.header_value_max = header_value_max
        self._pending: dict[int, Notice] = {}
        self._outbox: list[WireMessage] = []

    def target_exchange(self, notice: Notice) -> str:
        return v02.split_exchange(self.post_exchange, notice.checksum, self.split)

    def select(self, item: WorkItem) -> bool:
        notice = item.notice
        digest = self.cache.digest(notice)
        if digest in self._pending or self.cache.seen(notice):
            item.settle(304, "not modified (duplicate)")
            return False
        forwarded = v02.derive(notice, exchange=self.target_exchange(notice))
        self._outbox.append(v02.to_wire(forwarded, header_value_max=self.header_value_max))
        self._pending[digest] = notice
        item.settle(201, "Published")
        return False

    @staticmethod
    def work(item: WorkItem) -> None:  # select settles everything
        raise AssertionError("winnow has no transfer work")

    def housekeeping(self) -> None:
        """Expire old cache entries (the loop calls this every few seconds)."""
        self.cache.expire()

    def before_settle(self) -> None:
        """Publish (confirmed), then record durably; raising keeps the acks waiting."""
        if self._outbox:
            if not self.post_session.connected:
                self.post_session.connect()
            self.post_session.publish(self._outbox)
            self._outbox = []
            for notice in self._pending.values():
                self.cache.record(notice)
            self._pending.clear()
        self.cache.sync()


def replay_journal(session: BrokerSession, spec: QueueSpec, cache: WinnowCache) -> int:
    """Declare the journal queue and record every post it holds in ``cache``; each batch is
    fsync'd before it is acked. Returns how many posts were read."""
    batch: list[Delivery] = []
    session.declare_queue(spec)
    session.consume(spec.name, 1000, batch.append)
    total = idle = 0
    while idle < 3:
        session.poll(0.2)
        if batch:
            for d in batch:
                m = d.message
                try:
                    notice = v02.decode(
                        m.exchange, m.routing_key, m.body, m.headers, m.content_type
                    )
                except MessageError:
                    continue
                if isinstance(notice, Notice):
                    cache.record(notice)
            cache.sync()
            session.ack(batch[-1], multiple=True)
            total += len(batch)
            batch.clear()
            idle = 0
            continue
        ready, _consumers = session.queue_counts(spec.name)
        idle = idle + 1 if ready == 0 else 0
    session.cancel(spec.name)
    return total


def journal_name(cfg: Any, post_user: str, shard: int) -> str:
    return f"q_{post_user}.sr_winnow.{cfg.name}.journal{shard:02d}"


class WinnowComponent:
    """sr_winnow: the declaration (defaults live in the option table)."""

    name = "winnow"
    one_shot = False

    def _queue_name(self, cfg: Any, shard: int | None) -> str:
        from sarra.config import resolve_queue_name

        name = str(resolve_queue_name(cfg))
        return name if shard is None else f"{name}_{shard:02d}"

    def _session(self, cfg: Any) -> tuple[BrokerSession, str]:
        url = broker_url(cfg)
        return session_for(url, cfg, f"sr_winnow {cfg.name}"), url.user

    @staticmethod
    def _post_exchange(cfg: Any) -> str:
        exchange = cfg.get("post_exchange")
        if not exchange:
            raise ConfigError("sr_winnow needs a post_exchange", option="post_exchange")
        return str(exchange)

    @staticmethod
    def _ttl(cfg: Any) -> float:
        ttl = float(_opt(cfg, "suppress_duplicates", DEFAULT_TTL))
        if ttl <= 0:
            raise ConfigError(
                "sr_winnow cannot run with duplicate suppression off (suppress_duplicates)",
                option="suppress_duplicates",
            )
        return ttl

    def run(self, cfg: Any, instance: int, stop: threading.Event) -> int:
        ttl = self._ttl(cfg)
        post_exchange = self._post_exchange(cfg)
        shard = shard_of(cfg, instance)
        tag = 0 if shard is None else shard
        session, user = self._session(cfg)
        post_url = broker_url(cfg, "post_broker" if cfg.get("post_broker") else "broker")
        post_session = session_for(post_url, cfg, f"sr_winnow {cfg.name} (post)")
        split = int(_opt(cfg, "post_exchange_split", 0) or 0)
        targets = (
            tuple(f"{post_exchange}{i:02d}" for i in range(split))
            if split > 1
            else (post_exchange,)
        )
        state = instance_state_dir(cfg)
        cache = WinnowCache(
            state / f"recent_files_{tag:03d}.cache",
            ttl=ttl,
            basis=str(cfg.get("cache_basis") or "path"),
        )
        post_session.connect_with_backoff()
        if cfg.get("declare_exchange") is not False:
            ensure_exchanges(post_session, targets)
        journal = QueueSpec(
            journal_name(cfg, post_url.user, tag),
            tuple((x, "#") for x in targets),
            durable=True,
            message_ttl_ms=int(ttl * 1000),
        )
        replayed = replay_journal(post_session, journal, cache)
        log.info("journal: %d forwarded posts known from earlier runs", replayed)
        winnower = Winnower(cache, post_session, post_exchange, split)
        reports = ReportSettings(
            enabled=bool(_opt(cfg, "report_back", True)),
            exchange=report_exchange(cfg, user),
            host=fqdn(),
            user=user,
            source=cfg.get("source"),
            cluster=cfg.get("cluster") or session.url.host,
            to_clusters=cfg.get("to_clusters") or session.url.host,
            declare=cfg.get("declare_exchange") is not False,
        )
        bindings = input_bindings(cfg, shard)
        loop_settings = LoopSettings(
            queue=queue_spec(cfg, self._queue_name(cfg, shard), bindings),
            exchanges=() if cfg.get("declare_exchange") is False else tuple(x for x, _ in bindings),
            prefetch=int(_opt(cfg, "prefetch", 25)),
            threads=1,
            attempts=1,
            retry_ttl=0.0,
            declare_queue=bool(_opt(cfg, "declare_queue", True)),
        )
        retry_queue = RetryQueue(state / f"retry_{tag:03d}.jsonl", ttl=3600.0)
        heartbeat_file = heartbeat_for(cfg, instance)
        loop = ConsumingLoop(
            session,
            loop_settings,
            reports,
            winnower.select,
            winnower.work,
            retry_queue,
            stop=stop,
            before_settle=winnower.before_settle,
            housekeeping=winnower.housekeeping,
            heartbeat=heartbeat_file.beat,
            post_session=post_session,
        )
        started = time.monotonic()
        try:
            loop.run()
        finally:
            cache.close()
            retry_queue.close()
            log.info(
                "stopped after %.1fs; outcomes: %s",
                time.monotonic() - started,
                ", ".join(f"{k}: {v}" for k, v in sorted(loop.counts.items())) or "none",
            )
        return 0

    def declare(self, cfg: Any) -> None:
        self._ttl(cfg)
        self._post_exchange(cfg)
        session, _user = self._session(cfg)
        try:
            session.connect()
            for shard in self._shards(cfg):
                bindings = input_bindings(cfg, shard)
                spec = queue_spec(cfg, self._queue_name(cfg, shard), bindings)
                if cfg.get("declare_exchange") is not False:
                    ensure_exchanges(session, tuple(x for x, _ in bindings))
                session.declare_queue(spec)
                print(
                    f"declared queue {spec.name} bound to "
                    + ", ".join(f"{x}:{k}" for x, k in spec.bindings)
                )
        finally:
            session.close()

    def _shards(self, cfg: Any) -> list[int | None]:
        count = int(_opt(cfg, "instances", 1))
        if shard_of(cfg, 1) is None:
            return [None]
        return list(range(max(count, 1)))

    def cleanup(self, cfg: Any) -> None:
        session, _user = self._session(cfg)
        try:
            session.connect()
            for shard in self._shards(cfg):
                name = self._queue_name(cfg, shard)
                session.delete_queue(name)
                print(f"deleted queue {name}")
        finally:
            session.close()
        post_url = broker_url(cfg, "post_broker" if cfg.get("post_broker") else "broker")
        post_session = session_for(post_url, cfg, f"sr_winnow {cfg.name} (cleanup)")
        try:
            post_session.connect()
            for shard in self._shards(cfg):
                name = journal_name(cfg, post_url.user, 0 if shard is None else shard)
                post_session.delete_queue(name)
                print(f"deleted queue {name}")
        finally:
            post_session.close()
        for f in instance_state_dir(cfg).glob("*"):
            if f.is_file():
                f.unlink()

    def status(self, cfg: Any) -> InstanceStatus:
        session, _user = self._session(cfg)
        names = [self._queue_name(cfg, s) for s in self._shards(cfg)]
        backlog = consumers = 0
        try:
            session.connect()
            for name in names:
                m, c = session.queue_counts(name)
                backlog += m
                consumers += c
        except BrokerError as e:
            return InstanceStatus(queue=",".join(names), extra={"error": str(e)})
        finally:
            session.close()
        return InstanceStatus(queue=",".join(names), backlog=backlog, consumers=consumers)
