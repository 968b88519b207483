"""Pieces every component resolves the same way from its configuration."""

from __future__ import annotations

import logging
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sarra.broker.base import BrokerUrl, QueueSpec
from sarra.broker.session import BrokerSession
from sarra.components.base import InstanceStatus
from sarra.config import paths
from sarra.config.credentials import CredentialStore, to_broker_url
from sarra.errors import BrokerError, ConfigError
from sarra.flow.heartbeat import HeartbeatFile
from sarra.flow.retryqueue import RetryQueue

log = logging.getLogger(__name__)


def credential_store(cfg: Any) -> CredentialStore:
    """The credentials of this configuration (empty when there is no credentials file)."""
    store = getattr(cfg, "credentials", None)
    if isinstance(store, CredentialStore):
        return store
    path = paths.credentials_path()
    if Path(path).exists():
        return CredentialStore.load(path)
    return CredentialStore()


def report_exchange(cfg: Any, user: str) -> str:
    """Where a consumer's reports go (spec 8.2): ``report_exchange`` when set explicitly,
    else ``xreport`` for the pump's admin or feeder account, else ``xs_<user>``."""
    explicit = set(getattr(cfg, "explicit", ()) or ())
    if "report_exchange" in explicit and cfg.get("report_exchange"):
        return str(cfg.get("report_exchange"))
    for option in ("admin", "feeder"):
        text = cfg.get(option)
        if text and urlsplit(str(text)).username == user:
            return "xreport"
    return str(cfg.get("report_exchange") or f"xs_{user}")


def broker_url(cfg: Any, option: str = "broker") -> BrokerUrl:
    """The broker URL of ``option`` with its password from the credentials file."""
    text = cfg.get(option)
    if not text:
        raise ConfigError(f"{option} is not set", option=option)
    return to_broker_url(str(text), credential_store(cfg))


def session_for(url: BrokerUrl, cfg: Any, name: str) -> BrokerSession:
    heartbeat = cfg.get("broker_heartbeat")
    return BrokerSession(url, heartbeat=int(heartbeat) if heartbeat else 60, name=name)


@lru_cache(maxsize=1)
def fqdn() -> str:
    """This host's name as reports carry it (computed once: getfqdn may be slow)."""
    return socket.getfqdn()


def seconds_to_ms(value: Any) -> int | None:
    if value is None or value == "" or float(value) <= 0:
        return None
    return int(float(value) * 1000)


def queue_spec(cfg: Any, queue_name: str, bindings: tuple[tuple[str, str], ...]) -> QueueSpec:
    return QueueSpec(
        name=queue_name,
        bindings=bindings,
        durable=bool(_get(cfg, "durable", True)),
        expire_ms=seconds_to_ms(cfg.get("expire")),
        message_ttl_ms=seconds_to_ms(cfg.get("message_ttl")),
    )


def _get(cfg: Any, name: str, default: Any) -> Any:
    value = cfg.get(name)
    return default if value is None else value


def instance_state_dir(cfg: Any) -> Path:
    d = Path(paths.state_dir(cfg.component, cfg.name or "default"))
    os.makedirs(d, exist_ok=True)
    return d


def heartbeat_for(cfg: Any, instance: int) -> HeartbeatFile:
    """The heartbeat file of an instance, where ``status`` looks (cli.instances)."""
    name = f"sr_{cfg.component}_{cfg.name}_{instance:03d}.heart"
    return HeartbeatFile(instance_state_dir(cfg) / name)


def remove_queue_and_state(session: BrokerSession, name: str, cfg: Any) -> None:
    """``cleanup``: delete the configuration's queue on the broker and its local state files."""
    try:
        session.connect()
        session.delete_queue(name)
        print(f"deleted queue {name}")
    finally:
        session.close()
    for f in instance_state_dir(cfg).glob("*"):
        if f.is_file():
            f.unlink()


def queue_status(session: BrokerSession, name: str) -> InstanceStatus:
    """``status``: the queue's backlog and consumers (an unreachable broker is reported)."""
    try:
        session.connect()
        messages, consumers = session.queue_counts(name)
    except BrokerError as e:
        return InstanceStatus(queue=name, extra={"error": str(e)})
    finally:
        session.close()
    return InstanceStatus(queue=name, backlog=messages, consumers=consumers)


def retry_queue_for(cfg: Any, instance: int) -> RetryQueue:
    """The instance's disk retry queue, timed by ``retry_ttl`` (default ``expire``, else an
    hour), ``retry_delay`` and ``retry_delay_max``; its ``ttl`` is the retry_ttl in force."""
    ttl = cfg.get("retry_ttl")
    if ttl is None:
        ttl = cfg.get("expire") or 3600.0
    delay, delay_max = cfg.get("retry_delay"), cfg.get("retry_delay_max")
    return RetryQueue(
        instance_state_dir(cfg) / f"retry_{instance:03d}.jsonl",
        ttl=float(ttl),
        base_delay=30.0 if delay is None else float(delay),
        max_delay=3600.0 if delay_max is None else float(delay_max),
    )
