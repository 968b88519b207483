"""sr_sender: consume notices about local files and push the files to a remote SFTP server.

Wiring only (config -> settings -> loop); the per-notice logic is :mod:`sarra.flow.send`.
Defaults that differ from a subscriber: ``mirror`` on, ``accept_unmatch`` off (option table),
``inflight .tmp`` always (sr2 writes the final name directly when it posts; we never do, unless
``inflight NONE`` is given explicitly), reports ``201 Delivered`` and, after the retries,
``499`` (spec 8.6: we do not emit sr2's 497).
"""

from __future__ import annotations

import logging
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
from sarra.components.subscribe import bindings_of
from sarra.config.credentials import parse_url
from sarra.config.masks import destination_relpath, expand_directory, match
from sarra.errors import ConfigError
from sarra.flow.engine import ConsumingLoop, LoopSettings, ReportSettings
from sarra.flow.hooks import Plugins
from sarra.flow.send import Announce, RemoteTarget, Sender, SendSettings
from sarra.flow.work import WorkItem
from sarra.notice import Notice

log = logging.getLogger(__name__)

SCHEMES = ("sftp",)  # file: would work through FileTransport but is not tested yet


class _RemoteResolver:
    """Masks and path options: the remote target of a notice, or None when rejected."""

    def __init__(self, cfg: Any) -> None:
        self.masks = tuple(getattr(cfg, "masks", ()) or ())
        self.accept_unmatch = bool(cfg.get("accept_unmatch"))
        self.default = getattr(cfg, "default_mask", None)
        self.directory = str(cfg.get("directory") or "")
        self.log_reject = bool(cfg.get("log_reject"))

    def __call__(self, notice: Notice) -> RemoteTarget | None:
        mask = match(self.masks, notice.url, self.accept_unmatch, self.default)
        if mask is None:
            if self.log_reject:
                log.info("rejected by masks: %s", notice.url)
            return None
        rel = destination_relpath(mask, notice.path, rename_header=notice.header("rename"))
        directory = mask.directory or self.directory
        if "${" in directory:
            directory = expand_directory(directory, source=notice.header("source"))
        return RemoteTarget(directory=directory, rel=rel)


def _opt(cfg: Any, name: str, default: Any) -> Any:
    value = cfg.get(name)
    return default if value is None else value


def send_settings(cfg: Any) -> SendSettings:
    """Resolve the sender options (ConfigError when ``destination`` is missing or unusable)."""
    destination = cfg.get("destination")
    if not destination:
        raise ConfigError("sr_sender needs a destination (sftp://user@host/)", option="destination")
    scheme = str(destination).split(":", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"destination scheme {scheme!r} is not supported (use {', '.join(SCHEMES)})",
            option="destination",
        )
    if cfg.get("notify_only") is True:
        raise ConfigError("a sender always sends: notify_only is not allowed", option="notify_only")
    inflight = cfg.get("inflight")
    if isinstance(inflight, (int, float)) or inflight in (None, ""):
        inflight = ".tmp"  # an age makes no sense for pushing: keep the temporary name
    store = credential_store(cfg)
    return SendSettings(
        destination=str(destination),
        inflight=None if str(inflight).upper() == "NONE" else str(inflight),
        base_dir=cfg.get("base_dir") or None,
        timeout=float(_opt(cfg, "timeout", 300.0)),
        credentials=store.find,
        transport_options={"state_dir": str(instance_state_dir(cfg))},
        announce=_announce(cfg, str(destination)),
    )


def _announce(cfg: Any, destination: str) -> Announce | None:
    if not cfg.get("post_broker"):
        return None
    url = parse_url(str(cfg.get("post_broker")))  # the password is not needed here
    exchange = cfg.get("post_exchange") or f"xs_{url.user}"
    suffix = cfg.get("post_exchange_suffix")
    if suffix and not cfg.get("post_exchange"):
        exchange = f"{exchange}_{suffix}"
    return Announce(
        exchange=str(exchange),
        base_url=str(cfg.get("post_base_url") or destination),
        base_dir=cfg.get("post_base_dir") or None,
        exchange_split=int(_opt(cfg, "post_exchange_split", 0) or 0),
        to_clusters=str(cfg.get("to_clusters") or url.host),
        header_value_max=int(_opt(cfg, "header_value_max", 252)),
        persistent=bool(_opt(cfg, "persistent", True)),
    )


def _exchanges(cfg: Any, bindings: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    if cfg.get("declare_exchange") is False:
        return ()
    return tuple(exchange for exchange, _key in bindings)


class SenderComponent:
    """sr_sender: the declaration (defaults live in the option table)."""

    name = "sender"
    one_shot = False

    def _queue_name(self, cfg: Any) -> str:
        from sarra.config import resolve_queue_name

        return str(resolve_queue_name(cfg))

    def _session(self, cfg: Any) -> tuple[BrokerSession, str]:
        url = broker_url(cfg)
        return session_for(url, cfg, f"sr_sender {cfg.name}"), url.user

    def run(self, cfg: Any, instance: int, stop: threading.Event) -> int:
        settings = send_settings(cfg)
        session, user = self._session(cfg)
        post_session = None
        if settings.announce is not None:
            post_session = session_for(
                broker_url(cfg, "post_broker"), cfg, f"sr_sender {cfg.name} (post)"
            )
            post_session.connect()
            if cfg.get("declare_exchange") is not False:
                ensure_exchanges(post_session, (settings.announce.exchange,))
        retry_queue = retry_queue_for(cfg, instance)
        plugins = Plugins.from_config(getattr(cfg, "plugins", {}))
        sender = Sender(settings, _RemoteResolver(cfg), plugins)
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
        bindings = bindings_of(cfg)
        loop_settings = LoopSettings(
            queue=queue_spec(cfg, self._queue_name(cfg), bindings),
            exchanges=_exchanges(cfg, bindings),
            prefetch=int(_opt(cfg, "prefetch", 25)),
            threads=int(_opt(cfg, "transfer_threads", 4)),
            attempts=int(_opt(cfg, "attempts", 3)),
            retry_ttl=retry_queue.ttl if _opt(cfg, "retry", True) else 0.0,
            declare_queue=bool(_opt(cfg, "declare_queue", True)),
        )
        heartbeat_file = heartbeat_for(cfg, instance)

        def on_settled(item: WorkItem) -> None:
            if item.code == 201:
                log.info("201 %s %s (%d bytes)", item.message, item.notice.path, item.size)
            elif item.code and item.code >= 400:
                log.error("%s %s: %s", item.code, item.notice.path, item.message)

        loop = ConsumingLoop(
            session,
            loop_settings,
            reports,
            sender.select,
            sender.work,
            retry_queue,
            stop=stop,
            on_settled=on_settled,
            heartbeat=heartbeat_file.beat,
            post_session=post_session,
        )
        plugins.on_start(cfg)
        started = time.monotonic()
        try:
            loop.run()
        finally:
            plugins.on_stop(cfg)
            sender.close()
            retry_queue.close()
            log.info(
                "stopped after %.1fs; outcomes: %s",
                time.monotonic() - started,
                ", ".join(f"{k}: {v}" for k, v in sorted(loop.counts.items())) or "none",
            )
        return 0

    def declare(self, cfg: Any) -> None:
        session, _user = self._session(cfg)
        try:
            session.connect()
            bindings = bindings_of(cfg)
            spec = queue_spec(cfg, self._queue_name(cfg), bindings)
            ensure_exchanges(session, _exchanges(cfg, bindings))
            session.declare_queue(spec)
            print(
                f"declared queue {spec.name} bound to "
                + ", ".join(f"{x}:{k}" for x, k in spec.bindings)
            )
        finally:
            session.close()

    def cleanup(self, cfg: Any) -> None:
        session, _user = self._session(cfg)
        name = self._queue_name(cfg)
        remove_queue_and_state(session, name, cfg)

    def status(self, cfg: Any) -> InstanceStatus:
        session, _user = self._session(cfg)
        name = self._queue_name(cfg)
        return queue_status(session, name)
