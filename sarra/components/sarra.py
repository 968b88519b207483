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
import re
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from sarra.broker.admin import ensure_exchanges
from sarra.broker.base import Broker
from sarra.components.common import MaskResolver, broker_url
from sarra.components.runner import Bindings, ConsumerComponent, Flow, Instance, default_bindings
from sarra.components.subscribe import download_settings
from sarra.config.settings import Settings
from sarra.errors import BrokerError, ConfigError
from sarra.flow.download import Destination, Downloader
from sarra.flow.journal import InflightJournal
from sarra.flow.republish import PumpIdentity, Republisher, RepublishSettings

log = logging.getLogger(__name__)

HOLD_ENV = "SARRA_TEST_HOLD_BEFORE_ANNOUNCE"

#: roles of ``declare`` lines that name users (``declare exchange X`` does not)
USER_ROLES = frozenset({"source", "subscriber", "subscribe", "feeder", "admin", "user"})


def declared_users(s: Settings) -> frozenset[str]:
    """Every user the pump declares, any role, plus its admin and feeder accounts."""
    users: set[str] = set()
    for role, names in s.declared.items():
        if role in USER_ROLES:
            users.update(names)
    for text in (s.admin, s.feeder):
        user = urlsplit(text).username if text else None
        if user:
            users.add(user)
    return frozenset(users)


def sarra_bindings(s: Settings) -> Bindings:
    """(exchange, key) pairs: explicit exchange/subtopic lines, else every declared source's
    ``xs_<u>`` with ``read_sources on``, else ``exchange`` (default ``xpublic``)."""
    sources = s.declared.get("source", ())
    if s.read_sources and not ({"exchange", "subtopic"} & s.explicit):
        if not sources:
            raise ConfigError("read_sources is on but no source is declared", option="read_sources")
        return tuple((f"xs_{u}", f"{s.topic_prefix}.#") for u in dict.fromkeys(sources))
    return default_bindings(s)


def pump_identity(s: Settings) -> PumpIdentity:
    return PumpIdentity(
        cluster=s.cluster or broker_url(s).host,
        aliases=frozenset(s.cluster_aliases),
        gateway_for=frozenset(s.gateway_for),
        users=declared_users(s),
    )


def republish_settings(s: Settings) -> RepublishSettings:
    if not s.post_base_url:
        raise ConfigError("sr_sarra needs post_base_url", option="post_base_url")
    base_dir = s.post_base_dir
    if not base_dir:
        if not s.directory or "${" in s.directory:
            raise ConfigError(
                "sr_sarra needs post_base_dir (the root of the tree post_base_url serves)",
                option="post_base_dir",
            )
        base_dir = s.directory
    post = broker_url(s, "post_broker") if s.post_broker else broker_url(s)
    trusted = {
        broker_url(s).host.lower(),
        post.host.lower(),
        (urlsplit(s.post_base_url).hostname or "").lower(),
    }
    return RepublishSettings(
        post_exchange=s.post_exchange or "xpublic",
        post_base_url=s.post_base_url,
        post_base_dir=os.path.abspath(base_dir),
        exchange_split=s.post_exchange_split,
        header_value_max=s.header_value_max,
        persistent=s.persistent,
        message_ttl_ms=int(s.message_ttl * 1000) if s.message_ttl else None,
        source_from_exchange=s.source_from_exchange,
        trusted_hosts=frozenset(h for h in trusted if h),
        base_url_accept=tuple(re.compile(p) for p in s.base_url_accept),
        extra_headers=tuple(s.headers_add.items()),
        drop_headers=s.headers_del,
    )


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
        downloader = Downloader(
            # the Republisher applies the pump's own baseUrl host policy (sources are often
            # on private networks; its own hosts are trusted), so not the subscriber's
            replace(download_settings(s), base_url_private=True),
            MaskResolver(s, Destination, directory=s.directory or settings.post_base_dir),
            run.plugins,
            None,
            journal,
            parts_state=run.state_dir,
            inplace=s.inplace,  # off by default on a pump: segments kept
            batch_commit=True,
            interrupt=run.stop,
            limiter=run.limiter,
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

        def summary() -> str:
            c = republisher.counts
            return (
                f"announced {c.announced}, re-announced {c.reannounced}, forged {c.forged}, "
                f"loops {c.loops}, not for this cluster {c.not_for_us}"
            )

        return Flow(
            republisher.select,
            republisher.work,
            before_settle=before_settle,
            commit_batch=downloader.commit_batch,
            housekeeping=lambda: downloader.housekeeping(run.report),
            abort=downloader.abort,
            post_session=post_session,
            cluster=pump.cluster,
            close=[downloader.close, journal.close],
            summary=summary,
        )
