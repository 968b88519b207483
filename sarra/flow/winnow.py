"""The winnow's flow: forward each distinct notice once (see sarra.components.winnow for the
guarantees and the journal queue that closes the window between publishing and recording)."""

from __future__ import annotations

import os
import time

from sarra.broker.base import Broker, Delivery, QueueSpec
from sarra.codec import v02
from sarra.errors import MessageError
from sarra.flow.nodupe import DuplicateCache, _digest, derive_key
from sarra.flow.work import WorkItem
from sarra.notice import Notice, WireMessage


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


def replay_journal(session: Broker, spec: QueueSpec, cache: WinnowCache) -> int:
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
