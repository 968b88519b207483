"""sr_sarra: subscribe, acquire and re-advertise (the pump's feeder component).

A source-facing sarra reads the sources' ``xs_<u>`` exchanges (``exchange xs_alice`` +
``subtopic #`` lines, or ``read_sources on`` for every ``declare source``), polices each
notice (spec 9.3), downloads it into the pump's tree (``directory``, mirrored by default;
``${YYYYMMDD}``/``${SOURCE}`` expanded per notice) and re-announces it on ``post_exchange``
(default ``xpublic``) with the pump's ``post_base_url``/``post_base_dir``. A sarra on a
downstream pump reads the upstream pump's ``xpublic`` the same way (source kept).

Test hook: when the environment variable ``SARRA_TEST_HOLD_BEFORE_ANNOUNCE`` names a file,
the instance creates that file once placed files are durable and then waits (without
announcing or acking) until it is stopped. It exists only so that tests can SIGKILL an
instance between placing files and re-announcing them; it does nothing when unset.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from sarra.broker.admin import ensure_exchanges
from sarra.broker.base import Broker
from sarra.components.common import (
    MaskResolver,
    broker_url,
    download_settings,
    group_sync_for,
)
from sarra.components.runner import Bindings, ConsumerComponent, Flow, Instance, default_bindings
from sarra.config import paths
from sarra.config.quota import quota_table
from sarra.config.settings import Settings
from sarra.errors import BrokerError, ConfigError
from sarra.flow.download import Destination, Downloader
from sarra.flow.journal import InflightJournal
from sarra.flow.nodupe import DuplicateCache
from sarra.flow.quota import QuotaGuard, open_ledger
from sarra.flow.republish import PumpIdentity, Republisher, RepublishSettings, declared_users

log = logging.getLogger(__name__)

HOLD_ENV = "SARRA_TEST_HOLD_BEFORE_ANNOUNCE"


def sarra_bindings(s: Settings) -> Bindings:
    """(exchange, key) pairs: explicit exchange/subtopic lines, else every declared source's
    ``xs_<u>`` with ``read_sources on``, else ``exchange`` (default ``xpublic``)."""
    sources = s.declared.get("source", ())
    if s.read_sources and not ({"exchange", "subtopic"} & s.explicit):
        if not sources:
            raise ConfigError("read_sources is on but no source is declared", option="read_sources")
        return tuple((f"xs_{u}", f"{s.topic_prefix}.#") for u in dict.fromkeys(sources))
    return default_bindings(s)


def quota_guard(s: Settings) -> QuotaGuard | None:
    """The ``quota`` lines (admin.conf) over the pump-wide ledger (the node's files, or the
    Redis of ``quota_redis_serverurl``); None without any."""
    quotas = quota_table(s.quota)
    if not quotas:
        return None
    ledger = open_ledger(s.quota_redis_serverurl, s.quota_redis_keybase, paths.state_dir())
    return QuotaGuard(quotas, ledger)


def pump_identity(s: Settings) -> PumpIdentity:
    return PumpIdentity(
        cluster=s.cluster or broker_url(s).host,
        aliases=frozenset(s.cluster_aliases),
        gateway_for=frozenset(s.gateway_for),
        users=declared_users(s),
    )


def republish_settings(s: Settings) -> RepublishSettings:
    """The re-announcing rules; the input and post brokers' hosts are trusted."""
    post = broker_url(s, "post_broker") if s.post_broker else broker_url(s)
    return RepublishSettings.from_config(s, (broker_url(s).host, post.host))


class SarraComponent(ConsumerComponent):
    """sr_sarra: the declaration (defaults live in the option table)."""

    name = "sarra"

    def check(self, s: Settings) -> None:
        republish_settings(s)

    def bindings(self, s: Settings, instance: int | None = None) -> Bindings:
        return sarra_bindings(s)

    def _post_session(self, s: Settings, session: Broker) -> Broker | None:
        """A session to ``post_broker`` when it is not the input broker (else None)."""
        if s.post_broker and s.post_broker != s.broker:
            return self.session_factory(broker_url(s, "post_broker"), s, f"sr_sarra {s.name}")
        return None

    def _declare_post_exchange(self, s: Settings, session: Broker) -> None:
        if not s.declare_exchange:
            return
        settings = republish_settings(s)
        names = [settings.post_exchange]
        if settings.exchange_split > 1:
            names = [f"{settings.post_exchange}{i:02d}" for i in range(settings.exchange_split)]
        try:
            session.connect()
            ensure_exchanges(session, names)
        except BrokerError as e:  # the loop reconnects; publishing will say if it is missing
            log.warning("could not declare %s: %s", ", ".join(names), e)

    def declare_outputs(self, s: Settings, session: Broker) -> None:
        post = self._post_session(s, session)
        try:
            self._declare_post_exchange(s, post or session)
        finally:
            if post is not None:
                post.close()

    def build(self, run: Instance) -> Flow:
        s, n = run.settings, run.number
        pump = pump_identity(s)
        settings = republish_settings(s)
        journal = InflightJournal(run.state_dir / f"inflight_{n:03d}.journal")
        nodupe = (
            DuplicateCache(
                run.state_dir / f"recent_files_{n:03d}.cache",
                ttl=s.suppress_duplicates,
                basis=s.cache_basis,
            )
            if s.suppress_duplicates > 0
            else None
        )
        guard = quota_guard(s)
        downloader = Downloader(
            # the Republisher applies the pump's own baseUrl host policy (sources are often
            # on private networks; its own hosts are trusted), so not the subscriber's
            # discard does not apply: the copies are what the pump re-announces
            replace(download_settings(s), base_url_private=True, discard=False),
            MaskResolver(s, Destination, directory=s.directory or settings.post_base_dir),
            run.plugins,
            nodupe,  # a redelivered notice is never suppressed: it is re-announced
            journal,
            parts_state=Path(s.parts_dir) if s.parts_dir else run.state_dir,
            inplace=s.inplace,  # off by default on a pump: segments kept
            batch_commit=True,
            commit_thread=True,
            # one syncfs per barrier, shared by the instances (sync_barrier filesystem)
            group_sync=group_sync_for(s, run.state_dir),
            interrupt=run.stop,
            limiter=run.limiter,
            quota=guard,
            bandwidth=run.bandwidth,
        )
        downloader.recover_leftovers()
        republisher = Republisher(downloader, pump, settings)
        post_session = self._post_session(s, run.session)
        self._declare_post_exchange(s, post_session or run.session)
        hold = os.environ.get(HOLD_ENV)

        def before_settle() -> None:
            republisher.sync()
            if hold:  # test-only: see the module docstring
                Path(hold).touch()
                while not run.stop.wait(0.1):
                    pass

        def housekeeping() -> None:
            if nodupe is not None:
                nodupe.expire()
            downloader.housekeeping(run.report)

        return Flow(
            republisher.select,
            republisher.work,
            # small whole files on a near origin: fetched, staged and announced in the flow
            # thread (no hand-off to the pool); committed, published and acked by batch
            inline=republisher.work_inline,
            before_settle=before_settle,
            commit_batch=downloader.commit_batch,
            commit_async=True,  # the barrier beside the flow thread (see Downloader)
            after_settle=lambda items: downloader.after_settle(items, run.report),
            housekeeping=housekeeping,
            abort=downloader.abort,
            post_session=post_session,
            cluster=pump.cluster,
            close=[
                downloader.close,
                journal.close,
                *([] if nodupe is None else [nodupe.close]),
                *([] if guard is None else [guard.close]),
            ],
            summary=republisher.counts.summary,
        )
