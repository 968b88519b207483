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
from sarra.errors import ConfigError
from sarra.flow.events import log_event
from sarra.flow.send import Announce, RemoteTarget, Sender, SendSettings
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
    path = parse_url(destination).path
    if path not in ("", "/"):
        # sr2 and sr3 do not use it either; say so rather than ignore it silently
        log.warning(
            "destination %s: its path %s is not used: files go under `directory` (%s)",
            destination,
            path,
            s.directory or "the login directory",
        )
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
        announce=_announce(s, destination),
    )


def _announce(s: Settings, destination: str) -> Announce | None:
    if not s.post_broker:
        return None
    url = parse_url(s.post_broker)  # the password is not needed here
    exchange = s.post_exchange or f"xs_{url.user}"
    if s.post_exchange_suffix and not s.post_exchange:
        exchange = f"{exchange}_{s.post_exchange_suffix}"
    return Announce(
        exchange=exchange,
        base_url=s.post_base_url or destination,
        base_dir=s.post_base_dir or None,
        exchange_split=s.post_exchange_split,
        to_clusters=s.to_clusters or url.host,
        header_value_max=s.header_value_max,
        persistent=s.persistent,
        post_format=s.post_format,
    )


def _log_sent(item: WorkItem) -> None:
    notice = item.notice
    source = notice.header("source")
    if item.code == 201:
        detail = f"{item.message} ({item.size} bytes)"
        log_event(log, logging.INFO, "sent", notice.path, 201, source, detail, size=item.size)
    elif item.code and item.code >= 400:
        log_event(log, logging.ERROR, "failed", notice.path, item.code, source, item.message)


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
        )
        return Flow(
            sender.select,
            sender.work,
            on_settled=_log_sent,
            post_session=post_session,
            close=[sender.close],
        )
