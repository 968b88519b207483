"""sr_poll: list remote directories (http(s) index pages, sftp, ftp(s)) and announce new or
changed files, so that subscribers fetch them from the origin.

The loop, the memory of what was announced and the lock that lets one instance poll at a
time are :mod:`sarra.flow.poll`; this module resolves a configuration into them, with the
``on_line`` and ``on_html_page`` plugins (:mod:`sarra.flow.hooks`).
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from urllib.parse import urlsplit

from sarra.broker.admin import cleanup_queue, declare_and_bind, ensure_exchanges
from sarra.broker.base import BrokerUrl, QueueSpec
from sarra.broker.election import Election, election_spec
from sarra.components.base import InstanceStatus
from sarra.components.common import (
    broker_url,
    credential_store,
    declare_post_exchange,
    heartbeat_for,
    instance_state_dir,
    metrics_writer,
    session_for,
)
from sarra.config.settings import Settings
from sarra.errors import ConfigError
from sarra.flow.hooks import Plugins
from sarra.flow.metrics import FlowMetrics, poster_snapshot
from sarra.flow.nodupe import DuplicateCache
from sarra.flow.poll import Poller, check_sum, poll_targets, public_url
from sarra.flow.posting import NoticeBuilder, PostSettings, make_publisher, outage_max
from sarra.transfer import Transport, open_transport


def resolved(cfg: Settings) -> Settings:
    """``cfg`` checked for what a poll needs, with ``post_base_url`` defaulting to the
    destination (without its password), as in sr2."""
    if not cfg.destination:
        raise ConfigError("sr_poll needs destination (sr3 pollUrl)", option="destination")
    poll_targets(cfg)
    check_sum(cfg)
    if cfg.plugins.get("on_html_page") and urlsplit(cfg.destination).scheme not in (
        "http",
        "https",
    ):
        raise ConfigError(
            "on_html_page reads http(s) index pages: the destination is not http(s) "
            "(use on_line to rewrite or reject the entries of an SFTP or FTP listing)",
            option="on_html_page",
        )
    if not cfg.post_base_url:
        cfg = dataclasses.replace(cfg, post_base_url=public_url(cfg.destination))
    return cfg


def election_queue(cfg: Settings, url: BrokerUrl) -> QueueSpec:
    """The queue where the pollers of ``cfg`` on every host elect the one that polls."""
    return election_spec(f"q_{url.user}.sr_poll.{cfg.name}.election", cfg.queue_type)


class PollComponent:
    """sr_poll: a long-running poster fed by remote listings."""

    name = "poll"
    one_shot = False

    def run(self, cfg: Settings, instance: int, stop: threading.Event) -> int:
        cfg = resolved(cfg)
        url = broker_url(cfg, "post_broker")
        settings = PostSettings.from_config(cfg, url.user, url.host)
        # the accept/reject lines select listed names (see sarra.flow.poll), not URLs
        builder = NoticeBuilder(dataclasses.replace(settings, masks=(), accept_unmatch=True))
        session = session_for(url, cfg, "sr_poll")
        state = instance_state_dir(cfg)
        nodupe = None
        if cfg.suppress_duplicates > 0:
            nodupe = DuplicateCache(
                state / f"recent_posts_{instance:03d}.cache",
                cfg.suppress_duplicates,
                basis=cfg.cache_basis,
            )
        declare = cfg.declare_exchange is not False
        publisher = make_publisher(
            cfg,
            session,
            builder,
            nodupe=nodupe,
            outage_max=outage_max(cfg),
            on_connect=(lambda s: ensure_exchanges(s, [settings.exchange])) if declare else None,
            stop=stop,
        )
        credentials = credential_store()
        destination = cfg.destination or ""

        def transport() -> Transport:
            return open_transport(
                destination,
                credentials=credentials.find(destination),
                timeout=cfg.timeout,
                tls_verify=cfg.tls_rigour != "lax",
                options={"state_dir": str(state)},
            )

        beat = heartbeat_for(cfg, instance).beat
        plugins = Plugins.from_config(cfg.plugins)
        election = None
        if cfg.single_active_consumer:
            election = Election(
                lambda: session_for(url, cfg, "sr_poll election"), election_queue(cfg, url)
            ).start()
        poller = Poller(
            cfg,
            settings,
            publisher,
            transport,
            Path(state),
            stop,
            heartbeat=beat,
            plugins=plugins,
            election=election,
        )
        counters = FlowMetrics()
        try:
            with metrics_writer(
                cfg, instance, lambda: poster_snapshot(counters, publisher, session.connected)
            ):
                return poller.run()
        finally:
            if election is not None:
                election.close()  # after the last hand-over: the next poller takes over now
            session.close()
            if nodupe is not None:
                nodupe.close()

    def declare(self, cfg: Settings) -> None:
        cfg = resolved(cfg)
        declare_post_exchange(cfg, "sr_poll")
        if cfg.single_active_consumer:
            url = broker_url(cfg, "post_broker")
            session = session_for(url, cfg, "sr_poll")
            try:
                session.connect()
                declare_and_bind(session, election_queue(cfg, url))
            finally:
                session.close()

    def cleanup(self, cfg: Settings) -> None:
        """Forget what was announced (the next poll announces everything listed again),
        here and, with single_active_consumer, in the election queue's token."""
        if cfg.single_active_consumer:
            url = broker_url(cfg, "post_broker")
            session = session_for(url, cfg, "sr_poll")
            try:
                session.connect()
                cleanup_queue(session, election_queue(cfg, url).name)
            finally:
                session.close()
        state = instance_state_dir(cfg)
        (state / "poll_seen.json").unlink(missing_ok=True)
        for cache in Path(state).glob("recent_posts_*.cache"):
            cache.unlink(missing_ok=True)

    def status(self, cfg: Settings) -> InstanceStatus:
        return InstanceStatus()
