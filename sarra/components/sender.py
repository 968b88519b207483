"""sr_sender: consume notices about local files and push the files to a remote SFTP, FTP or
FTPS server.

Wiring only (config -> settings -> loop); the per-notice logic is :mod:`sarra.flow.send`.
Defaults that differ from a subscriber: ``mirror`` on, ``accept_unmatch`` off (option table),
``inflight .tmp`` always (sr2 writes the final name directly when it posts; we never do, unless
``inflight NONE`` is given explicitly), reports ``201 Delivered`` and, after the retries,
``499`` (spec 8.6: we do not emit sr2's 497).
"""

from __future__ import annotations

import logging

from sarra.broker.admin import ensure_exchanges
from sarra.components.common import MaskResolver, credential_store, instance_state_dir
from sarra.components.runner import ConsumerComponent, Flow, Instance
from sarra.config.credentials import parse_url
from sarra.config.settings import Settings
from sarra.errors import ConfigError, HostilePath
from sarra.flow.events import log_event, log_failure
from sarra.flow.send import (
    Announce,
    RemoteTarget,
    Sender,
    SendSettings,
    confine_directory,
    remote_root,
)
from sarra.flow.work import WorkItem

log = logging.getLogger(__name__)

SCHEMES = ("sftp", "ftp", "ftps")  # file: would work through FileTransport but is not tested yet


def send_settings(s: Settings) -> SendSettings:
    """Resolve the sender options (ConfigError when ``destination`` is missing or unusable)."""
    destination = s.destination
    if not destination:
        raise ConfigError("sr_sender needs a destination (sftp://user@host/)", option="destination")
    scheme = destination.split(":", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"destination scheme {scheme!r} is not supported (use {', '.join(SCHEMES)})",
            option="destination",
        )
    if s.notify_only:
        raise ConfigError("a sender always sends: notify_only is not allowed", option="notify_only")
    try:
        root = remote_root(destination)
        # a static directory outside the destination's path is a configuration error; one
        # that ${...} expands is checked per notice (417)
        for directory in {s.directory or "", *(m.directory or "" for m in s.masks)}:
            if "${" not in directory:
                confine_directory(root, directory)
    except HostilePath as e:
        raise ConfigError(f"destination {destination}: {e}", option="destination") from e
    # an age makes no sense for pushing: keep the temporary name
    inflight = s.inflight if isinstance(s.inflight, str) and s.inflight else ".tmp"
    return SendSettings(
        destination=destination,
        inflight=None if inflight.upper() == "NONE" else inflight,
        base_dir=s.base_dir or None,
        timeout=s.timeout,
        credentials=credential_store().find,
        tls_verify=s.tls_rigour != "lax",
        transport_options={"state_dir": str(instance_state_dir(s))},
        announce=_announce(s, destination, root),
        remote_root=root,
    )


def _announce(s: Settings, destination: str, root: str | None) -> Announce | None:
    if not s.post_broker:
        return None
    url = parse_url(s.post_broker)  # the password is not needed here
    exchange = s.post_exchange or f"xs_{url.user}"
    if s.post_exchange_suffix and not s.post_exchange:
        exchange = f"{exchange}_{s.post_exchange_suffix}"
    return Announce(
        exchange=exchange,
        base_url=s.post_base_url or _public(destination),
        # announced under the destination URL, paths are relative to its own path
        base_dir=s.post_base_dir or (None if s.post_base_url else root),
        exchange_split=s.post_exchange_split,
        to_clusters=s.to_clusters or url.host,
        header_value_max=s.header_value_max,
        persistent=s.persistent,
        post_format=s.post_format,
    )


def _public(url: str) -> str:
    """``url`` as announced: without the password a destination may carry (the loader warns
    about it; it must not reach every reader of the post exchange)."""
    parsed = parse_url(url)
    return url if parsed.password is None else parsed.without_password()


def _log_sent(item: WorkItem) -> None:
    notice = item.notice
    source = notice.header("source")
    if item.code == 201:
        detail = f"{item.message} ({item.size} bytes)"
        log_event(log, logging.INFO, "sent", notice.path, 201, source, detail, size=item.size)
    else:
        log_failure(log, item)


class SenderComponent(ConsumerComponent):
    """sr_sender: the declaration (defaults live in the option table)."""

    name = "sender"

    def check(self, s: Settings) -> None:
        send_settings(s)

    def build(self, run: Instance) -> Flow:
        s = run.settings
        settings = send_settings(s)
        post_session = None
        if settings.announce is not None:
            post_session = run.post_session()
            post_session.connect()
            if s.declare_exchange:
                ensure_exchanges(post_session, (settings.announce.exchange,))
        sender = Sender(
            settings,
            MaskResolver(s, RemoteTarget, rename_header=True),
            run.plugins,
            limiter=run.limiter,
            bandwidth=run.bandwidth,
        )
        return Flow(
            sender.select,
            sender.work,
            on_settled=_log_sent,
            post_session=post_session,
            close=[sender.close],
        )
