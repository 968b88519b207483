"""The winnow's flow: forward each distinct notice once (see sarra.components.winnow for the
guarantees and the journal queue that closes the window between publishing and recording)."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from sarra.broker.admin import ensure_exchanges
from sarra.broker.base import Broker, Delivery, QueueSpec
from sarra.broker.session import connect_unless_stopped
from sarra.codec import v02
from sarra.config.settings import Settings
from sarra.errors import ConfigError, MessageError
from sarra.flow.hooks import Plugins
from sarra.flow.nodupe import DuplicateCache, _digest, derive_key
from sarra.flow.sharedstore import Claim, SharedStore
from sarra.flow.work import WorkItem
from sarra.notice import Notice, WireMessage

log = logging.getLogger(__name__)


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


class Winnower:
    """select + before_settle of the winnow loop (all in the flow thread)."""

    def __init__(
        self,
        cache: WinnowCache,
        post_session: Broker,
        post_exchange: str,
        split: int = 0,
        header_value_max: int = 1 << 16,
        plugins: Plugins | None = None,
        post_format: str = "v02",
        store: SharedStore | None = None,
    ) -> None:
        self.cache = cache
        #: the entries shared with the winnows of other nodes (``nodupe_driver redis``)
        self.store = store
        self.post_format = post_format
        #: ``on_message`` plugins, asked before the duplicate check (as sr2's winnow did)
        self.plugins = plugins or Plugins()
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
        if not self.plugins.empty and not self.plugins.on_message(item):
            item.settle(0, "dropped by an on_message plugin")
            return False
        digest = self.cache.digest(notice)
        if digest in self._pending or self.cache.seen(notice):
            item.settle(304, "not modified (duplicate)")
            return False
        # may wait (another node holds it, Redis is down); raises Interrupted on stop
        if self.store is not None and self.store.claim(digest, self._forward) is Claim.DUPLICATE:
            item.settle(304, "not modified (duplicate, shared store)")
            return False
        forwarded = v02.derive(notice, exchange=self.target_exchange(notice))
        self._outbox.append(
            v02.encode(
                forwarded,
                forwarded.exchange,
                header_value_max=self.header_value_max,
                post_format=self.post_format,
            )
        )
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
        self._forward()
        self.cache.sync()

    def close(self) -> None:
        """Stopping: give up the shared claims of notices not yet published, so other nodes
        take them at once rather than after the claims expire (their deliveries go back
        unacked). The cache is closed by its own close."""
        if self.store is not None and self._outbox and self._pending:
            released = self.store.release(self._pending)
            log.info("released %d shared claims of notices not forwarded", released)

    def _forward(self) -> None:
        """Publish the outbox (confirmed), then mark its notices done in the shared store
        (if any) and record them in the cache. The acks come later (the loop's settle)."""
        if self._outbox:
            if not self.post_session.connected:
                self.post_session.connect()
            self.post_session.publish(self._outbox)
            self._outbox = []
        if self._pending:
            if self.store is not None:
                self.store.commit(self._pending)
            for notice in self._pending.values():
                self.cache.record(notice)
            self._pending.clear()


def replay_journal(
    session: Broker, spec: QueueSpec, cache: WinnowCache, store: SharedStore | None = None
) -> int:
    """Declare the journal queue and record every post it holds in ``cache`` (and mark it
    done in ``store``: a predecessor killed between publishing and committing left a claim
    that would otherwise expire and let another node forward the file again); each batch is
    fsync'd before it is acked. Returns how many posts were read."""
    batch: list[Delivery] = []
    session.declare_queue(spec)
    session.consume(spec.name, 1000, batch.append)
    total = idle = 0
    while idle < 3:
        session.poll(0.2)
        if batch:
            done: list[int] = []
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
                    done.append(cache.digest(notice))
            if store is not None:
                store.commit(done)
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


def shard_of(s: Settings, instance: int) -> int | None:
    """The shard an instance serves (None: not sharded)."""
    if s.instances > 1 or s.exchange_split:
        return max(instance, 1) - 1
    return None


def input_bindings(s: Settings, shard: int | None) -> tuple[tuple[str, str], ...]:
    """(exchange, key) bindings; the exchange is required (there is no sensible default)."""
    result = [(b.exchange, b.routing_key) for b in s.bindings]
    if not result:
        if not s.exchange:
            raise ConfigError(
                "sr_winnow needs an exchange to read (e.g. xwinnow)", option="exchange"
            )
        result.append((s.exchange, f"{s.topic_prefix}.#"))
    if shard is not None:
        result = [(f"{x}{shard:02d}", k) for x, k in result]
    return tuple(result)


def journal_name(s: Settings, post_user: str, shard: int) -> str:
    return f"q_{post_user}.sr_winnow.{s.name}.journal{shard:02d}"


def post_exchange(s: Settings) -> str:
    if not s.post_exchange:
        raise ConfigError("sr_winnow needs a post_exchange", option="post_exchange")
    return s.post_exchange


def winnow_ttl(s: Settings) -> float:
    if s.suppress_duplicates <= 0:
        raise ConfigError(
            "sr_winnow cannot run with duplicate suppression off (suppress_duplicates)",
            option="suppress_duplicates",
        )
    return s.suppress_duplicates


def start_winnower(
    s: Settings,
    post_session: Broker,
    post_user: str,
    shard: int,
    cache_path: Path,
    stop: threading.Event,
    plugins: Plugins | None = None,
    store: SharedStore | None = None,
) -> Winnower:
    """The winnower of one shard: its cache, then (once the post broker answers) the post
    exchanges declared and the journal replayed into the cache, so that whatever a killed
    predecessor forwarded is known before any input is read. Stopped before the post broker
    answered, the cache is left as it is on disk: the loop, seeing the stop, reads nothing."""
    ttl, exchange = winnow_ttl(s), post_exchange(s)
    split = s.post_exchange_split
    targets = tuple(f"{exchange}{i:02d}" for i in range(split)) if split > 1 else (exchange,)
    cache = WinnowCache(cache_path, ttl=ttl, basis=s.cache_basis)
    try:
        if connect_unless_stopped(post_session, stop):
            if s.declare_exchange:
                ensure_exchanges(post_session, targets)
            journal = QueueSpec(
                journal_name(s, post_user, shard),
                tuple((x, "#") for x in targets),
                durable=True,
                message_ttl_ms=int(ttl * 1000),
            )
            replayed = replay_journal(post_session, journal, cache, store)
            log.info("journal: %d forwarded posts known from earlier runs", replayed)
    except BaseException:
        cache.close()
        raise
    return Winnower(
        cache,
        post_session,
        exchange,
        split,
        plugins=plugins,
        post_format=s.post_format,
        store=store,
    )
