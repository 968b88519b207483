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
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sarra.broker.admin import ensure_exchanges
from sarra.broker.session import BrokerSession
from sarra.components.base import InstanceStatus
from sarra.components.common import (
    broker_url,
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
from sarra.components.subscribe import SubscribeComponent
from sarra.config.masks import destination_relpath, expand_directory, match
from sarra.errors import BrokerError, ConfigError
from sarra.flow.download import Destination, Downloader
from sarra.flow.engine import ConsumingLoop, LoopSettings, ReportSettings
from sarra.flow.hooks import Plugins
from sarra.flow.journal import InflightJournal
from sarra.flow.republish import PumpIdentity, Republisher, RepublishSettings
from sarra.flow.work import WorkItem
from sarra.notice import Notice

log = logging.getLogger(__name__)

HOLD_ENV = "SARRA_TEST_HOLD_BEFORE_ANNOUNCE"

#: roles of ``declare`` lines that name users (``declare exchange X`` does not)
USER_ROLES = frozenset({"source", "subscriber", "subscribe", "feeder", "admin", "user"})


def declared_users(cfg: Any) -> frozenset[str]:
    """Every user the pump declares, any role, plus its admin and feeder accounts."""
    users: set[str] = set()
    for role, names in dict(getattr(cfg, "declared", {}) or {}).items():
        if role in USER_ROLES:
            users.update(names)
    for option in ("admin", "feeder"):
        text = cfg.get(option)
        if text:
            user = urlsplit(str(text)).username
            if user:
                users.add(user)
    return frozenset(users)


def sarra_bindings(cfg: Any) -> tuple[tuple[str, str], ...]:
    """(exchange, key) pairs: explicit exchange/subtopic lines, else every declared source's
    ``xs_<u>`` with ``read_sources on``, else ``exchange`` (default ``xpublic``)."""
    explicit = set(getattr(cfg, "explicit", ()) or ())
    prefix = str(cfg.get("topic_prefix") or "v02.post")
    sources = tuple(dict(getattr(cfg, "declared", {}) or {}).get("source", ()))
    if cfg.get("read_sources") and not ({"exchange", "subtopic"} & explicit):
        if not sources:
            raise ConfigError("read_sources is on but no source is declared", option="read_sources")
        return tuple((f"xs_{u}", f"{prefix}.#") for u in dict.fromkeys(sources))
    bindings = tuple((b.exchange, b.routing_key) for b in getattr(cfg, "bindings", ()) or ())
    return bindings or ((str(cfg.get("exchange") or "xpublic"), f"{prefix}.#"),)


class _Resolver:
    """Masks and path options (sarra mirrors by default): destination of a notice."""

    def __init__(self, cfg: Any, directory: str) -> None:
        self.masks = tuple(getattr(cfg, "masks", ()) or ())
        self.accept_unmatch = bool(cfg.get("accept_unmatch"))
        self.default = getattr(cfg, "default_mask", None)
        self.directory = directory
        self.log_reject = bool(cfg.get("log_reject"))

    def __call__(self, notice: Notice) -> Destination | None:
        mask = match(self.masks, notice.url, self.accept_unmatch, self.default)
        if mask is None:
            if self.log_reject:
                log.info("rejected by masks: %s", notice.url)
            return None
        rel = destination_relpath(mask, notice.path)
        directory = mask.directory or self.directory
        if "${" in directory:
            directory = expand_directory(directory, source=notice.header("source"))
        return Destination(root=directory, rel=rel)


def _bool(cfg: Any, name: str, default: bool) -> bool:
    value = cfg.get(name)
    return default if value is None else bool(value)


class SarraComponent:
    """sr_sarra: the declaration (defaults live in the option table)."""

    name = "sarra"
    one_shot = False

    # -- wiring --------------------------------------------------------------------------------

    def _session(self, cfg: Any) -> tuple[BrokerSession, str]:
        url = broker_url(cfg)
        return session_for(url, cfg, f"sr_sarra {cfg.name}"), url.user

    def _queue_name(self, cfg: Any) -> str:
        from sarra.config import resolve_queue_name

        return str(resolve_queue_name(cfg))

    def pump_identity(self, cfg: Any) -> PumpIdentity:
        host = broker_url(cfg).host
        return PumpIdentity(
            cluster=str(cfg.get("cluster") or host),
            aliases=frozenset(cfg.get("cluster_aliases") or ()),
            gateway_for=frozenset(cfg.get("gateway_for") or ()),
            users=declared_users(cfg),
        )

    def republish_settings(self, cfg: Any) -> RepublishSettings:
        base_url = cfg.get("post_base_url")
        if not base_url:
            raise ConfigError("sr_sarra needs post_base_url", option="post_base_url")
        base_dir = cfg.get("post_base_dir")
        if not base_dir:
            directory = str(cfg.get("directory") or "")
            if not directory or "${" in directory:
                raise ConfigError(
                    "sr_sarra needs post_base_dir (the root of the tree post_base_url serves)",
                    option="post_base_dir",
                )
            base_dir = directory
        post = broker_url(cfg, "post_broker") if cfg.get("post_broker") else broker_url(cfg)
        trusted = {
            broker_url(cfg).host.lower(),
            post.host.lower(),
            (urlsplit(str(base_url)).hostname or "").lower(),
        }
        ttl = cfg.get("message_ttl")
        return RepublishSettings(
            post_exchange=str(cfg.get("post_exchange") or "xpublic"),
            post_base_url=str(base_url),
            post_base_dir=os.path.abspath(str(base_dir)),
            exchange_split=int(cfg.get("post_exchange_split") or 0),
            header_value_max=int(cfg.get("header_value_max") or 252),
            persistent=_bool(cfg, "persistent", True),
            message_ttl_ms=int(float(ttl) * 1000) if ttl else None,
            source_from_exchange=_bool(cfg, "source_from_exchange", True),
            trusted_hosts=frozenset(h for h in trusted if h),
            base_url_accept=tuple(re.compile(p) for p in (cfg.get("base_url_accept") or ())),
            extra_headers=tuple(dict(getattr(cfg, "headers_add", {}) or {}).items()),
            drop_headers=tuple(getattr(cfg, "headers_del", ()) or ()),
        )

    # -- Component protocol --------------------------------------------------------------------

    def run(self, cfg: Any, instance: int, stop: threading.Event) -> int:
        session, user = self._session(cfg)
        pump = self.pump_identity(cfg)
        settings = self.republish_settings(cfg)
        state = instance_state_dir(cfg)
        retry_queue = retry_queue_for(cfg, instance)
        plugins = Plugins.from_config(getattr(cfg, "plugins", {}))
        journal = InflightJournal(state / f"inflight_{instance:03d}.journal")
        directory = str(cfg.get("directory") or settings.post_base_dir)
        downloader = Downloader(
            # the Republisher applies the pump's own baseUrl host policy (sources are often
            # on private networks; its own hosts are trusted), so not the subscriber's
            replace(SubscribeComponent()._download_settings(cfg), base_url_private=True),
            _Resolver(cfg, directory),
            plugins,
            None,
            journal,
            parts_state=state,
            inplace=bool(cfg.get("inplace")),  # off by default on a pump: segments kept
            batch_commit=True,
            interrupt=stop,
        )
        downloader.recover_leftovers()
        republisher = Republisher(downloader, pump, settings)
        post_session: BrokerSession | None = None
        if cfg.get("post_broker") and cfg.get("post_broker") != cfg.get("broker"):
            post_session = session_for(broker_url(cfg, "post_broker"), cfg, f"sr_sarra {cfg.name}")
        self._declare_post_exchange(cfg, post_session or session, settings)
        reports = ReportSettings(
            enabled=_bool(cfg, "report_back", False),
            exchange=report_exchange(cfg, user),
            host=fqdn(),
            user=user,
            source=cfg.get("source"),
            cluster=pump.cluster,
            to_clusters=cfg.get("to_clusters") or pump.cluster,
            declare=cfg.get("declare_exchange") is not False,
        )
        bindings = sarra_bindings(cfg)
        loop_settings = LoopSettings(
            queue=queue_spec(cfg, self._queue_name(cfg), bindings),
            exchanges=() if cfg.get("declare_exchange") is False else tuple(x for x, _ in bindings),
            prefetch=int(cfg.get("prefetch") or 25),
            threads=int(cfg.get("transfer_threads") or 4),
            attempts=int(cfg.get("attempts") or 3),
            retry_ttl=retry_queue.ttl,
            declare_queue=_bool(cfg, "declare_queue", True),
        )
        hold = os.environ.get(HOLD_ENV)

        def before_settle() -> None:
            republisher.sync()
            if hold:  # test-only: see the module docstring
                Path(hold).touch()
                while not stop.wait(0.1):
                    pass

        heartbeat_file = heartbeat_for(cfg, instance)

        def on_settled(item: WorkItem) -> None:
            if item.code in (201, 205):
                log.info("%s %s %s (%d bytes)", item.code, item.message, item.local_path, item.size)
            elif item.code and item.code >= 400:
                log.error("%s %s: %s", item.code, item.notice.path, item.message)

        loop = ConsumingLoop(
            session,
            loop_settings,
            reports,
            republisher.select,
            republisher.work,
            retry_queue,
            stop=stop,
            on_settled=on_settled,
            before_settle=before_settle,
            commit_batch=downloader.commit_batch,
            heartbeat=heartbeat_file.beat,
            abort=downloader.abort,
            post_session=post_session,
            housekeeping=lambda: downloader.housekeeping(loop.report),
        )
        plugins.on_start(cfg)
        started = time.monotonic()
        try:
            loop.run()
        finally:
            plugins.on_stop(cfg)
            downloader.close()
            journal.close()
            retry_queue.close()
            c = republisher.counts
            log.info(
                "stopped after %.1fs; outcomes: %s; announced %d, re-announced %d, "
                "forged %d, loops %d, not for this cluster %d",
                time.monotonic() - started,
                ", ".join(f"{k}: {v}" for k, v in sorted(loop.counts.items())) or "none",
                c.announced,
                c.reannounced,
                c.forged,
                c.loops,
                c.not_for_us,
            )
        return 0

    def _declare_post_exchange(
        self, cfg: Any, session: BrokerSession, settings: RepublishSettings
    ) -> None:
        if cfg.get("declare_exchange") is False:
            return
        names = [settings.post_exchange]
        if settings.exchange_split > 1:
            names = [f"{settings.post_exchange}{i:02d}" for i in range(settings.exchange_split)]
        try:
            session.connect()
            ensure_exchanges(session, names)
        except BrokerError as e:  # the loop reconnects; publishing will say if it is missing
            log.warning("could not declare %s: %s", ", ".join(names), e)

    def declare(self, cfg: Any) -> None:
        session, _user = self._session(cfg)
        try:
            session.connect()
            bindings = sarra_bindings(cfg)
            spec = queue_spec(cfg, self._queue_name(cfg), bindings)
            ensure_exchanges(session, [x for x, _ in bindings])
            session.declare_queue(spec)
            print(
                f"declared queue {spec.name} bound to "
                + ", ".join(f"{x}:{k}" for x, k in spec.bindings)
            )
        finally:
            session.close()
        settings = self.republish_settings(cfg)
        post = session
        if cfg.get("post_broker"):
            post = session_for(broker_url(cfg, "post_broker"), cfg, f"sr_sarra {cfg.name}")
        try:
            self._declare_post_exchange(cfg, post, settings)
        finally:
            post.close()

    def cleanup(self, cfg: Any) -> None:
        session, _user = self._session(cfg)
        name = self._queue_name(cfg)
        remove_queue_and_state(session, name, cfg)

    def status(self, cfg: Any) -> InstanceStatus:
        session, _user = self._session(cfg)
        name = self._queue_name(cfg)
        return queue_status(session, name)
