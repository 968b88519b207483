"""sr_subscribe: consume notices and download the files into local directories."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import Any

from sarra.broker.admin import ensure_exchanges
from sarra.broker.session import BrokerSession
from sarra.components.base import InstanceStatus
from sarra.components.common import (
    broker_url,
    credential_store,
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
from sarra.config.masks import destination_relpath, expand_directory, match
from sarra.flow.download import Destination, Downloader, DownloadSettings
from sarra.flow.engine import ConsumingLoop, LoopSettings, ReportSettings
from sarra.flow.hooks import Plugins
from sarra.flow.journal import InflightJournal
from sarra.flow.nodupe import DuplicateCache
from sarra.flow.work import WorkItem
from sarra.notice import Notice
from sarra.parts.tracker import DEFAULT_EXPIRY

log = logging.getLogger(__name__)

DEFAULT_TOPIC_PREFIX = "v02.post"


def bindings_of(cfg: Any) -> tuple[tuple[str, str], ...]:
    """(exchange, routing key pattern) for every subtopic (default ``#`` on ``xpublic``)."""
    result: list[tuple[str, str]] = []
    for b in getattr(cfg, "bindings", ()) or ():
        result.append((b.exchange, b.routing_key))
    if not result:
        exchange = cfg.get("exchange") or "xpublic"
        prefix = cfg.get("topic_prefix") or DEFAULT_TOPIC_PREFIX
        result.append((exchange, f"{prefix}.#"))
    return tuple(result)


def _float(cfg: Any, name: str, default: float) -> float:
    value = cfg.get(name)
    return default if value is None else float(value)


def _exchanges_to_declare(cfg: Any, bindings: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    if cfg.get("declare_exchange") is False:
        return ()
    return tuple(exchange for exchange, _key in bindings)


class _Resolver:
    """Masks and path options: where a notice goes, or None when rejected."""

    def __init__(self, cfg: Any) -> None:
        self.masks = tuple(getattr(cfg, "masks", ()) or ())
        self.accept_unmatch = bool(cfg.get("accept_unmatch"))
        self.default = getattr(cfg, "default_mask", None)
        self.directory = str(cfg.get("directory") or os.getcwd())
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


class SubscribeComponent:
    """sr_subscribe: the declaration (defaults live in the option table)."""

    name = "subscribe"
    one_shot = False

    # -- wiring --------------------------------------------------------------------------------

    def _queue_name(self, cfg: Any, user: str) -> str:
        from sarra.config import resolve_queue_name

        return str(resolve_queue_name(cfg))

    def _session(self, cfg: Any) -> tuple[BrokerSession, str]:
        url = broker_url(cfg)
        return session_for(url, cfg, f"sr_subscribe {cfg.name}"), url.user

    def _download_settings(self, cfg: Any) -> DownloadSettings:
        store = credential_store(cfg)
        inflight = cfg.get("inflight")
        if isinstance(inflight, (int, float)) or inflight in (None, ""):
            inflight = ".tmp"
        events = cfg.get("events") or "create|delete|link|modify|mkdir|rmdir"
        chmod = cfg.get("chmod") or 0o644
        return DownloadSettings(
            inflight=None if str(inflight).upper() == "NONE" else str(inflight),
            events=frozenset(str(events).replace(",", "|").split("|")),
            base_url_accept=tuple(re.compile(p) for p in (cfg.get("base_url_accept") or ())),
            preserve_time=bool(
                cfg.get("preserve_time") if cfg.get("preserve_time") is not None else True
            ),
            preserve_mode=bool(
                cfg.get("preserve_mode") if cfg.get("preserve_mode") is not None else True
            ),
            chmod=int(chmod),
            chmod_dir=int(cfg.get("chmod_dir") or 0o755),
            timeout=_float(cfg, "timeout", 300.0),
            credentials=store.find,
            part_expiry=_float(cfg, "part_expiry", DEFAULT_EXPIRY),
            base_url_private=bool(cfg.get("base_url_private")),
            file_size_max=int(cfg.get("file_size_max") or 0),
        )

    # -- Component protocol --------------------------------------------------------------------

    def run(self, cfg: Any, instance: int, stop: threading.Event) -> int:
        session, user = self._session(cfg)
        state = instance_state_dir(cfg)
        queue_name = self._queue_name(cfg, user)
        retry_queue = retry_queue_for(cfg, instance)
        nodupe_ttl = _float(cfg, "suppress_duplicates", 0.0)
        nodupe = (
            DuplicateCache(
                state / f"recent_files_{instance:03d}.cache",
                ttl=nodupe_ttl,
                basis=str(cfg.get("cache_basis") or "path"),
            )
            if nodupe_ttl > 0
            else None
        )
        plugins = Plugins.from_config(getattr(cfg, "plugins", {}))
        journal = InflightJournal(state / f"inflight_{instance:03d}.journal")
        inplace = cfg.get("inplace")
        downloader = Downloader(
            self._download_settings(cfg),
            _Resolver(cfg),
            plugins,
            nodupe,
            journal,
            parts_state=state,
            inplace=True if inplace is None else bool(inplace),
            batch_commit=True,
            interrupt=stop,
        )
        downloader.recover_leftovers()

        reports = ReportSettings(
            enabled=bool(cfg.get("report_back") if cfg.get("report_back") is not None else True),
            exchange=report_exchange(cfg, user),
            host=fqdn(),
            user=user,
            source=cfg.get("source"),
            cluster=cfg.get("cluster") or session.url.host,
            to_clusters=cfg.get("to_clusters") or session.url.host,
            declare=cfg.get("declare_exchange") is not False,
        )
        bindings = bindings_of(cfg)
        loop_settings = LoopSettings(
            queue=queue_spec(cfg, queue_name, bindings),
            exchanges=_exchanges_to_declare(cfg, bindings),
            prefetch=int(cfg.get("prefetch") or 25),
            threads=int(cfg.get("transfer_threads") or 4),
            attempts=int(cfg.get("attempts") or 3),
            retry_ttl=retry_queue.ttl,
            declare_queue=bool(
                cfg.get("declare_queue") if cfg.get("declare_queue") is not None else True
            ),
        )
        heartbeat_file = heartbeat_for(cfg, instance)

        def housekeeping() -> None:
            if nodupe is not None:
                nodupe.expire()
            downloader.housekeeping(loop.report)

        def on_settled(item: WorkItem) -> None:
            if item.code in (201, 205):
                log.info("%s %s %s (%d bytes)", item.code, item.message, item.local_path, item.size)
            elif item.code and item.code >= 400:
                log.error("%s %s: %s", item.code, item.notice.path, item.message)

        loop = ConsumingLoop(
            session,
            loop_settings,
            reports,
            downloader.select,
            downloader.work,
            retry_queue,
            stop=stop,
            on_settled=on_settled,
            before_settle=downloader.sync,
            commit_batch=downloader.commit_batch,
            housekeeping=housekeeping,
            heartbeat=heartbeat_file.beat,
            abort=downloader.abort,
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
            if nodupe is not None:
                nodupe.close()
            log.info(
                "stopped after %.1fs; outcomes: %s",
                time.monotonic() - started,
                ", ".join(f"{k}: {v}" for k, v in sorted(loop.counts.items())) or "none",
            )
        return 0

    def declare(self, cfg: Any) -> None:
        session, user = self._session(cfg)
        try:
            session.connect()
            bindings = bindings_of(cfg)
            spec = queue_spec(cfg, self._queue_name(cfg, user), bindings)
            ensure_exchanges(session, _exchanges_to_declare(cfg, bindings))
            session.declare_queue(spec)
            print(
                f"declared queue {spec.name} bound to "
                + ", ".join(f"{x}:{k}" for x, k in spec.bindings)
            )
        finally:
            session.close()

    def cleanup(self, cfg: Any) -> None:
        session, user = self._session(cfg)
        name = self._queue_name(cfg, user)
        remove_queue_and_state(session, name, cfg)

    def status(self, cfg: Any) -> InstanceStatus:
        session, user = self._session(cfg)
        name = self._queue_name(cfg, user)
        return queue_status(session, name)
