"""sr_post: announce files and directory trees as v02 notices (one-shot)."""

from __future__ import annotations

import logging
import sys
import threading
import time

from sarra.broker.admin import ensure_exchanges
from sarra.codec.fields import shown
from sarra.components.base import InstanceStatus
from sarra.components.common import (
    broker_url,
    declare_post_exchange,
    instance_state_dir,
    metrics_writer,
    session_for,
)
from sarra.config.settings import Settings
from sarra.errors import ConfigError
from sarra.flow.growing import growth_follower
from sarra.flow.metrics import FlowMetrics, poster_snapshot
from sarra.flow.posting import (
    NoticeBuilder,
    PostSettings,
    Publisher,
    make_publisher,
    outage_max,
    post_files,
    post_paths,
)

log = logging.getLogger(__name__)


#: notices per confirmed batch unless ``batch`` is given
DEFAULT_BATCH = 500
#: unposted paths named one by one in the summary; the rest are counted
UNPOSTED_SHOWN = 20


def post_batch(cfg: Settings) -> int:
    """Notices per confirmed batch: ``batch`` when given, else :data:`DEFAULT_BATCH` (the
    table's default too; only sr_post reads ``batch``)."""
    if cfg.is_set("batch"):
        return max(1, cfg.batch)
    return DEFAULT_BATCH


def complain(text: str) -> None:
    print(f"sr_post: {text}", file=sys.stderr)


class PostComponent:
    """sr_post: one pass over the given paths, then exit (0 if every file was posted).

    A broker outage is waited out (``post_outage_max``, see
    :class:`~sarra.flow.posting.Publisher`); a file counts as posted once the broker
    confirmed all its notices. The run ends with a summary line; when something was not
    posted (unreadable, a name that is not valid UTF-8, or the broker stayed away too long)
    the exit status is 1 and the
    first :data:`UNPOSTED_SHOWN` such paths are named on standard error.
    """

    name = "post"
    one_shot = True

    def __init__(self) -> None:
        #: the publisher of the run under way (its counters feed the progress line), or None
        self.publisher: Publisher | None = None

    def run(self, cfg: Settings, instance: int, stop: threading.Event) -> int:
        paths = post_paths(cfg)
        if not paths:
            raise ConfigError("nothing to post: give paths (or -path)", option="path")
        url = broker_url(cfg, "post_broker")
        settings = PostSettings.from_config(cfg, url.user, url.host)
        builder = NoticeBuilder(settings)
        follower = growth_follower(cfg, builder)  # refuses a growing without a fixed blocksize
        session = session_for(url, cfg, "sr_post")
        ttl = cfg.suppress_duplicates
        nodupe = None
        if ttl > 0:
            from sarra.flow.nodupe import DuplicateCache

            nodupe = DuplicateCache(
                instance_state_dir(cfg) / "recent_posts.cache",
                ttl=ttl,
                basis=cfg.cache_basis,
            )
        declare = cfg.declare_exchange is not False
        plugins = None  # none configured: pluggy and the hook machinery are not loaded
        if cfg.plugins:
            from sarra.flow.hooks import Plugins

            plugins = Plugins.from_config(cfg.plugins)
        publisher = make_publisher(
            cfg,
            session,
            builder,
            batch=post_batch(cfg),
            nodupe=nodupe,
            outage_max=outage_max(cfg),
            # declared at every (re)connect: the broker may come back without it
            on_connect=(lambda s: ensure_exchanges(s, [settings.exchange])) if declare else None,
            stop=stop,
            plugins=plugins,
        )
        self.publisher = publisher
        # the clock starts on an open connection, as the broker's ceiling in bench/ times it
        publisher.connect_ahead()
        started = time.monotonic()
        plugins_started = False
        counters = FlowMetrics()
        writer = None
        if cfg.name:  # a configuration's run: its metrics file, next to its instances'
            writer = metrics_writer(
                cfg, instance, lambda: poster_snapshot(counters, publisher, session.connected)
            ).start()
        try:
            if plugins is not None:
                plugins.on_start(cfg)
                plugins_started = True
            unposted, why = post_files(
                builder,
                publisher,
                paths,
                stop,
                complain,
                follower=follower,
                idle=cfg.growing_idle,
            )
            counters.failures = len(unposted)
        finally:
            try:
                session.close()
            finally:
                if writer is not None:
                    writer.stop()  # after the close: the last document says disconnected
            if nodupe is not None:
                nodupe.close()
            if plugins is not None and plugins_started:
                plugins.on_stop(cfg)
        elapsed = time.monotonic() - started
        log.info(
            "posted %d file(s) (%d notices) to %s in %.3fs (%.0f/s); %d not posted",
            publisher.items_posted,
            publisher.published,
            settings.exchange if cfg.outlet == "post" else f"standard output ({cfg.outlet})",
            elapsed,
            publisher.published / elapsed if elapsed > 0 else 0.0,
            len(unposted),
        )
        if publisher.suppressed:
            log.info(
                "%d unchanged notices not posted again (suppress_duplicates)", publisher.suppressed
            )
        if unposted:
            self._report_unposted(unposted, why)
        return 1 if unposted else 0

    @staticmethod
    def _report_unposted(unposted: list[str], why: str) -> None:
        reason = f" ({why})" if why else ""
        print(f"sr_post: {len(unposted)} file(s) not posted{reason}:", file=sys.stderr)
        for path in unposted[:UNPOSTED_SHOWN]:
            print(f"sr_post:   {shown(path)}", file=sys.stderr)
        if len(unposted) > UNPOSTED_SHOWN:
            print(f"sr_post:   ... and {len(unposted) - UNPOSTED_SHOWN} more", file=sys.stderr)

    def declare(self, cfg: Settings) -> None:
        declare_post_exchange(cfg, "sr_post")

    def cleanup(self, cfg: Settings) -> None:
        """sr_post keeps no queue or state."""

    def status(self, cfg: Settings) -> InstanceStatus:
        return InstanceStatus()
