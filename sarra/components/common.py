"""Pieces every component resolves the same way from its typed settings."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

from sarra.broker.admin import ensure_exchanges
from sarra.broker.base import Broker, BrokerUrl, QueueSpec
from sarra.broker.session import BrokerSession
from sarra.components.base import InstanceStatus
from sarra.config import paths
from sarra.config.credentials import CredentialStore, to_broker_url
from sarra.config.loader import resolve_queue_name
from sarra.config.masks import destination_relpath, expand_directory, match
from sarra.config.settings import Settings
from sarra.errors import BrokerError, BrokerNotFound, ConfigError
from sarra.flow.events import log_event
from sarra.flow.heartbeat import HeartbeatFile
from sarra.flow.metrics import MetricsWriter, metrics_name
from sarra.flow.posting import PostSettings
from sarra.flow.retryqueue import RetryQueue
from sarra.notice import Notice

if TYPE_CHECKING:
    # the download machinery (transports, parts, local files: ~30 ms of imports) is loaded
    # by the components that download, not by sr_post, which only needs this module's rest
    from sarra.flow.download import DownloadSettings
    from sarra.localfs.groupsync import GroupSync

log = logging.getLogger(__name__)

T = TypeVar("T")


def credential_store() -> CredentialStore:
    """The user's credentials (empty when there is no credentials file)."""
    path = paths.credentials_path()
    if Path(path).exists():
        return CredentialStore.load(path)
    return CredentialStore()


def report_exchange(s: Settings, user: str) -> str:
    """Where a consumer's reports go (spec 8.2): ``report_exchange`` when set explicitly,
    else ``xreport`` for the pump's admin or feeder account, else ``xs_<user>``."""
    if s.is_set("report_exchange") and s.report_exchange:
        return s.report_exchange
    for text in (s.admin, s.feeder):
        if text and urlsplit(text).username == user:
            return "xreport"
    return s.report_exchange or f"xs_{user}"


def broker_url(s: Settings, option: str = "broker") -> BrokerUrl:
    """The broker URL of ``option`` (``broker`` or ``post_broker``) with its password from the
    credentials file."""
    text = s.post_broker if option == "post_broker" else s.broker
    if not text:
        raise ConfigError(f"{option} is not set", option=option)
    return to_broker_url(text, credential_store())


def _publishes_on(url: BrokerUrl, s: Settings) -> bool:
    """Whether a component of ``s`` may publish on ``url``: posts (``post_broker``, or the input
    broker when there is none) or reports (a consumer's input broker with ``report_back``)."""
    same = (url.protocol, url.host, url.port, url.user)
    if s.broker and s.post_broker:
        try:
            post = to_broker_url(s.post_broker, credential_store())
            if (post.protocol, post.host, post.port, post.user) != same:
                return bool(s.report_back)  # the input broker only gets reports
        except ConfigError:
            return True
    return True


def session_for(url: BrokerUrl, s: Settings, name: str, *, publishes: bool = True) -> Broker:
    """A session to ``url``: AMQP with the configured heartbeat (0: the default 60 s), or
    MQTT (:mod:`sarra.broker.mqtt`, v03 only: ``post_format v03`` is required when the
    component publishes there, posts or reports; ``publishes=False`` for a component that
    only reads, such as sr_log)."""
    if url.protocol == "mqtt":
        if publishes and s.post_format != "v03" and _publishes_on(url, s):
            raise ConfigError(
                f"{url} is an MQTT broker, which carries v03 messages only: set "
                "post_format v03 (and post_topic_prefix v03, topic_prefix v03), or "
                "report_back off on an input broker",
                option="post_format",
            )
        from sarra.broker.mqtt import MqttSession  # paho and its socket layer: MQTT only

        # shared subscriptions only where instances share a queue (see sarra.broker.mqtt)
        return MqttSession(
            url, keepalive=int(s.broker_heartbeat) or 60, name=name, shared=s.instances > 1
        )
    return BrokerSession(url, heartbeat=int(s.broker_heartbeat) or 60, name=name)


@lru_cache(maxsize=1)
def current_umask() -> int:
    """The process umask (read once, at start-up, before any thread writes files)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@lru_cache(maxsize=1)
def fqdn() -> str:
    """This host's name as reports carry it (computed once: getfqdn may be slow)."""
    return socket.getfqdn()


def download_settings(s: Settings) -> DownloadSettings:
    """How a downloader (subscribe, sarra) fetches and places files.

    An ``inflight`` age (a number) makes no sense when writing: the temporary suffix ``.tmp``
    is used instead; ``inflight NONE`` writes final names directly. ``chmod 0`` and
    ``chmod_dir 0`` leave modes to the umask (as the option table says).
    """
    from sarra.flow.download import DownloadSettings

    umask = current_umask()
    inflight = s.inflight if isinstance(s.inflight, str) and s.inflight else ".tmp"
    return DownloadSettings(
        inflight=None if inflight.upper() == "NONE" else inflight,
        events=frozenset(s.events.replace(",", "|").split("|")),
        base_url_accept=tuple(re.compile(p) for p in s.base_url_accept),
        preserve_time=s.preserve_time,
        preserve_mode=s.preserve_mode,
        chmod=s.chmod or 0o666 & ~umask,
        chmod_dir=s.chmod_dir or 0o777 & ~umask,
        timeout=s.timeout,
        credentials=credential_store().find,
        tls_verify=s.tls_rigour != "lax",
        overwrite=s.overwrite,
        delete_source=s.delete,
        discard=s.discard,
        part_expiry=s.part_expiry,
        base_url_private=s.base_url_private,
        file_size_max=s.file_size_max,
    )


def seconds_to_ms(value: float | None) -> int | None:
    """AMQP milliseconds of a duration; None for unset or non-positive (no limit)."""
    if value is None or value <= 0:
        return None
    return int(value * 1000)


def queue_spec(s: Settings, queue_name: str, bindings: tuple[tuple[str, str], ...]) -> QueueSpec:
    return QueueSpec(
        name=queue_name,
        bindings=bindings,
        bind=s.bind_queue,
        durable=s.durable,
        expire_ms=seconds_to_ms(s.expire),
        message_ttl_ms=seconds_to_ms(s.message_ttl),
        queue_type=s.queue_type,
        single_active=s.single_active_consumer,
    )


def instance_state_dir(s: Settings) -> Path:
    d = Path(paths.state_dir(s.component, s.name or "default"))
    os.makedirs(d, exist_ok=True)
    return d


def metrics_writer(
    s: Settings, instance: int, document: Callable[[], dict[str, Any]]
) -> MetricsWriter:
    """The writer of an instance's metrics file (:mod:`sarra.flow.metrics`), next to its pid
    file, for the components without a consuming loop."""
    name = metrics_name(s.component, s.name or "default", instance)
    return MetricsWriter(instance_state_dir(s) / name, document)


def heartbeat_for(s: Settings, instance: int) -> HeartbeatFile:
    """The heartbeat file of an instance, where ``status`` looks (cli.instances)."""
    name = f"sr_{s.component}_{s.name}_{instance:03d}.heart"
    return HeartbeatFile(instance_state_dir(s) / name)


@contextmanager
def connected(session: Broker) -> Iterator[Broker]:
    """``session`` connected for the block of a one-shot verb (declare, cleanup, status), and
    closed after it however the block ends (also when connecting fails)."""
    try:
        session.connect()
        yield session
    finally:
        session.close()


def declare_consumer_queue(
    session: Broker,
    s: Settings,
    queue_name: str,
    bindings: tuple[tuple[str, str], ...],
    exchanges: Iterable[str],
) -> QueueSpec:
    """``declare`` of a consumer on a connected session: the exchanges it reads from (when the
    broker lets this user declare them), then its queue bound to them. Returns the queue."""
    ensure_exchanges(session, exchanges)
    spec = queue_spec(s, queue_name, bindings)
    session.declare_queue(spec)
    return spec


def declare_post_exchange(cfg: Settings, program: str) -> None:
    """``declare`` of a poster (sr_post, sr_watch): the exchange it posts to, on post_broker."""
    url = broker_url(cfg, "post_broker")
    exchange = PostSettings.from_config(cfg, url.user, url.host).exchange
    with connected(session_for(url, cfg, program)) as session:
        session.declare_exchange(exchange)


def delete_queues(session: Broker, names: Iterable[str]) -> None:
    """``cleanup``: delete the queues ``names`` on the broker, saying so for each."""
    with connected(session):
        for name in names:
            session.delete_queue(name)
            print(f"deleted queue {name}")


def clear_instance_state(s: Settings) -> None:
    """``cleanup``: delete the configuration's local state files (caches, retry queues...)."""
    for f in instance_state_dir(s).glob("*"):
        if f.is_file():
            f.unlink()


def remove_queue_and_state(session: Broker, name: str, s: Settings) -> None:
    """``cleanup``: delete the configuration's queue on the broker and its local state files."""
    delete_queues(session, [name])
    clear_instance_state(s)


class SessionPool:
    """Connected sessions kept for ``status`` across calls, one per broker and user (``sr
    web`` asks every configuration's queue every few seconds: one connection per broker,
    not one per configuration and sample). Used by one thread at a time
    (:func:`reusing_sessions`); :meth:`close` ends them all."""

    def __init__(self) -> None:
        self._sessions: dict[tuple[str, str, int, str, str], Broker] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def sessions(self) -> list[Broker]:
        return list(self._sessions.values())

    def queue_counts(self, session: Broker, name: str) -> tuple[int, int]:
        """``name``'s counts on the pooled session to ``session``'s broker and user, which
        ``session`` (new, unconnected) becomes if there is none, or it was lost."""
        url = session.url
        key = (url.protocol, url.host, url.port, url.user, url.vhost)
        pooled = self._sessions.get(key)
        if pooled is None or not pooled.connected:
            if pooled is not None:
                pooled.close()
            self._sessions.pop(key, None)
            session.connect()  # BrokerError: nothing pooled, reported by the caller
            pooled = self._sessions[key] = session
        try:
            return pooled.queue_counts(name)
        except BrokerNotFound:
            raise  # the channel is closed, the connection kept: reused next time
        except BrokerError:
            pooled.close()
            self._sessions.pop(key, None)
            raise

    def close(self) -> None:
        for session in self._sessions.values():
            with contextlib.suppress(Exception):
                session.close()
        self._sessions.clear()


_pooling = threading.local()


@contextmanager
def reusing_sessions(pool: SessionPool) -> Iterator[SessionPool]:
    """Within the block, in this thread, ``status`` counts queues on ``pool``'s sessions."""
    previous = getattr(_pooling, "pool", None)
    _pooling.pool = pool
    try:
        yield pool
    finally:
        _pooling.pool = previous


def queue_status(session: Broker, name: str) -> InstanceStatus:
    """``status``: the queue's backlog and consumers (an unreachable broker is reported)."""
    pool: SessionPool | None = getattr(_pooling, "pool", None)
    try:
        if pool is not None and session.url.protocol != "mqtt":  # MQTT has no queues to count
            messages, consumers = pool.queue_counts(session, name)
        else:
            with connected(session):
                messages, consumers = session.queue_counts(name)
    except BrokerError as e:
        return InstanceStatus(queue=name, extra={"error": str(e)})
    return InstanceStatus(queue=name, backlog=messages, consumers=consumers)


class SingleQueueVerbs:
    """``cleanup`` and ``status`` of a component that consumes from one queue, named by its
    ``queue_name`` option (or that option's default).

    A subclass says how it reaches its broker for these verbs (:meth:`broker_session`); the
    queue is deleted or counted there, and ``cleanup`` also clears the local state files.
    """

    def broker_session(self, cfg: Settings) -> Broker:
        """A new, unconnected session to the broker holding the queue."""
        raise NotImplementedError(f"{type(self).__name__} must define broker_session()")

    def queue_name(self, cfg: Settings) -> str:
        """The configuration's queue."""
        return str(resolve_queue_name(cfg))

    def cleanup(self, cfg: Settings) -> None:
        remove_queue_and_state(self.broker_session(cfg), self.queue_name(cfg), cfg)

    def status(self, cfg: Settings) -> InstanceStatus:
        return queue_status(self.broker_session(cfg), self.queue_name(cfg))


def retry_queue_for(s: Settings, instance: int) -> RetryQueue:
    """The instance's disk retry queue, timed by ``retry_ttl`` (default ``expire``, else an
    hour), ``retry_delay`` and ``retry_delay_max``; its ``ttl`` is the retry_ttl in force."""
    ttl = s.retry_ttl if s.retry_ttl is not None else (s.expire or 3600.0)
    return RetryQueue(
        instance_state_dir(s) / f"retry_{instance:03d}.jsonl",
        ttl=ttl,
        base_delay=s.retry_delay,
        max_delay=s.retry_delay_max,
    )


class MaskResolver(Generic[T]):
    """accept/reject masks and the path options: where a notice's file goes, or None when
    the masks reject it. One resolver for every component; ``make(directory, rel)`` builds
    the component's target (a local :class:`~sarra.flow.download.Destination`, a remote
    :class:`~sarra.flow.send.RemoteTarget`).

    ``rename_header``: the notice's ``rename`` header replaces its path before the path options
    apply (the sender; downloaders apply it themselves once the file is placed, see flow.download).
    """

    def __init__(
        self,
        s: Settings,
        make: Callable[[str, str], T],
        *,
        directory: str | None = None,
        rename_header: bool = False,
    ) -> None:
        self.masks = s.masks
        self.accept_unmatch = s.accept_unmatch
        self.default = s.default_mask
        self.directory = directory if directory is not None else (s.directory or "")
        self.log_reject = s.log_reject
        self.make = make
        self.rename_header = rename_header

    def __call__(self, notice: Notice) -> T | None:
        mask = match(self.masks, notice.url, self.accept_unmatch, self.default)
        if mask is None:
            if self.log_reject:
                source = notice.header("source")
                detail = f"rejected by masks: {notice.url}"
                log_event(log, logging.INFO, "rejected", notice.path, None, source, detail)
            return None
        renamed = notice.header("rename") if self.rename_header else None
        rel = destination_relpath(mask, notice.path, rename_header=renamed)
        directory = mask.directory or self.directory
        if "${" in directory:
            directory = expand_directory(directory, source=notice.header("source"))
        return self.make(directory, rel)


def group_sync_for(s: Settings, state_dir: Path) -> GroupSync | None:
    """The file-system barrier of a downloading configuration's batches, shared by its
    instances (``sync_barrier filesystem``, the default, where the platform has ``syncfs``;
    :mod:`sarra.localfs.groupsync`), or None: each batch's own fsyncs alone
    (``sync_barrier files``, or no ``syncfs``)."""
    # imported here: only the downloading components need it (and its ctypes)
    from sarra.localfs import groupsync

    if s.sync_barrier != "filesystem" or not groupsync.available():
        return None
    return groupsync.GroupSync(state_dir)
