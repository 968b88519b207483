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

**Several nodes** (``nodupe_driver redis``): winnows on different hosts consuming one queue
share their entries in Redis (:mod:`sarra.flow.sharedstore`): a notice is *claimed* there
atomically before it is forwarded and marked done once the post is confirmed, so each file is
forwarded by one node; a claim left by a node that died expires and the file is forwarded by
another. While Redis is unreachable the winnow waits and acks nothing.
"""

from __future__ import annotations

from sarra.components.base import InstanceStatus
from sarra.components.common import (
    broker_url,
    clear_instance_state,
    connected,
    declare_consumer_queue,
    delete_queues,
)
from sarra.components.runner import Bindings, ConsumerComponent, Flow, Instance
from sarra.config.loader import resolve_queue_name
from sarra.config.settings import Settings
from sarra.errors import BrokerError, ConfigError
from sarra.flow.retryqueue import RetryQueue
from sarra.flow.sharedstore import open_store
from sarra.flow.winnow import (
    input_bindings,
    journal_name,
    post_exchange,
    shard_of,
    start_winnower,
    winnow_ttl,
)


class WinnowComponent(ConsumerComponent):
    """sr_winnow: the declaration (defaults live in the option table). Instance N serves
    shard N-1 when sharded, so bindings and queue names depend on the instance."""

    name = "winnow"

    def _shard(self, s: Settings, instance: int | None) -> int | None:
        return None if instance is None else shard_of(s, instance)

    def bindings(self, s: Settings, instance: int | None = None) -> Bindings:
        return input_bindings(s, self._shard(s, instance))

    def queue_name(self, s: Settings, instance: int | None = None) -> str:
        shard = self._shard(s, instance)
        name = resolve_queue_name(s)
        return name if shard is None else f"{name}_{shard:02d}"

    def _instances(self, s: Settings) -> list[int]:
        """One instance number per shard (0: the unsharded foreground instance)."""
        return [0] if shard_of(s, 1) is None else list(range(1, max(s.instances, 1) + 1))

    def check(self, s: Settings) -> None:
        winnow_ttl(s)
        post_exchange(s)
        for option in ("broker", "post_broker"):
            text = s.post_broker if option == "post_broker" else s.broker
            if text and text.lower().startswith("mqtt"):
                raise ConfigError(
                    "sr_winnow runs on AMQP brokers only: its journal queue needs queue "
                    "counts, which MQTT does not give (docs/mqtt.md)",
                    option=option,
                )

    def build(self, run: Instance) -> Flow:
        s = run.settings
        shard = shard_of(s, run.number)
        tag = 0 if shard is None else shard
        post_url = broker_url(s, "post_broker" if s.post_broker else "broker")
        post_session = self.session_factory(post_url, s, f"sr_winnow {s.name} (post)")
        store = open_store(s, self.name, run.stop)
        winnower = start_winnower(
            s,
            post_session,
            post_url.user,
            tag,
            run.state_dir / f"recent_files_{tag:03d}.cache",
            run.stop,
            run.plugins,
            store,
        )
        return Flow(
            winnower.select,
            winnower.work,
            before_settle=winnower.before_settle,
            housekeeping=winnower.housekeeping,
            on_settled=None,
            post_session=post_session,
            threads=1,
            attempts=1,
            retry_queue=RetryQueue(run.state_dir / f"retry_{tag:03d}.jsonl", ttl=3600.0),
            retry_ttl=0.0,
            close=[winnower.close, winnower.cache.close] + ([] if store is None else [store.close]),
        )

    def declare(self, s: Settings) -> None:
        self.check(s)
        session, _user = self._session(s)
        with connected(session):
            for n in self._instances(s):
                bindings = self.bindings(s, n)
                exchanges = self.exchanges(s, bindings)
                spec = declare_consumer_queue(
                    session, s, self.queue_name(s, n), bindings, exchanges
                )
                print(
                    f"declared queue {spec.name} bound to "
                    + ", ".join(f"{x}:{k}" for x, k in spec.bindings)
                )

    def cleanup(self, s: Settings) -> None:
        session, _user = self._session(s)
        delete_queues(session, [self.queue_name(s, n) for n in self._instances(s)])
        post_url = broker_url(s, "post_broker" if s.post_broker else "broker")
        post_session = self.session_factory(post_url, s, f"sr_winnow {s.name} (cleanup)")
        journals = []
        for n in self._instances(s):
            shard = shard_of(s, n) if n else None
            journals.append(journal_name(s, post_url.user, 0 if shard is None else shard))
        delete_queues(post_session, journals)
        clear_instance_state(s)

    def status(self, s: Settings) -> InstanceStatus:
        session, _user = self._session(s)
        names = [self.queue_name(s, n) for n in self._instances(s)]
        backlog = consumers = 0
        try:
            with connected(session):
                for name in names:
                    m, c = session.queue_counts(name)
                    backlog += m
                    consumers += c
        except BrokerError as e:
            return InstanceStatus(queue=",".join(names), extra={"error": str(e)})
        return InstanceStatus(queue=",".join(names), backlog=backlog, consumers=consumers)
