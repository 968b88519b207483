"""sr_watch: announce what appears, changes, is linked, removed or renamed under directory trees.

The watching loop (observer or polling, coalescing, announcing, outages) is
:class:`sarra.flow.watcher.Watcher`; this module resolves a configuration into it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sarra.components.base import InstanceStatus
from sarra.components.common import (
    broker_url,
    declare_post_exchange,
    heartbeat_for,
    instance_state_dir,
    metrics_writer,
    session_for,
)
from sarra.config.settings import Settings
from sarra.errors import ConfigError
from sarra.flow.metrics import FlowMetrics, poster_snapshot
from sarra.flow.nodupe import DuplicateCache
from sarra.flow.posting import NoticeBuilder, PostSettings, post_paths
from sarra.flow.watcher import Watcher


class WatchComponent:
    """sr_watch: a long-running poster driven by file system events or polling."""

    name = "watch"
    one_shot = False

    def run(self, cfg: Settings, instance: int, stop: threading.Event) -> int:
        roots = [os.path.abspath(p) for p in post_paths(cfg)]
        if not roots:
            raise ConfigError("nothing to watch: give paths (or -path)", option="path")
        url = broker_url(cfg, "post_broker")
        cache = None
        if cfg.suppress_duplicates > 0:
            cache = DuplicateCache(
                instance_state_dir(cfg) / f"recent_files_{instance:03d}.cache",
                cfg.suppress_duplicates,
                basis=cfg.cache_basis,
            )
        builder = NoticeBuilder(PostSettings.from_config(cfg, url.user, url.host))
        session = session_for(url, cfg, "sr_watch")
        try:
            beat = heartbeat_for(cfg, instance).beat
            watcher = Watcher(cfg, roots, session, builder, cache, stop, heartbeat=beat)
        except BaseException:
            if cache is not None:
                cache.close()
            raise
        counters = FlowMetrics()
        with metrics_writer(
            cfg, instance, lambda: poster_snapshot(counters, watcher.publisher, session.connected)
        ):
            return watcher.run()  # closes the session and the cache

    def declare(self, cfg: Settings) -> None:
        declare_post_exchange(cfg, "sr_watch")

    def cleanup(self, cfg: Settings) -> None:
        """Forget the duplicate caches of every instance (sr_watch has no queue)."""
        state = instance_state_dir(cfg)
        for cache in Path(state).glob("recent_files_*.cache"):
            cache.unlink(missing_ok=True)

    def status(self, cfg: Settings) -> InstanceStatus:
        return InstanceStatus()
