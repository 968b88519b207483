"""sr_post: announce files and directory trees as v02 notices (one-shot)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from sarra.broker.admin import ensure_exchanges
from sarra.components.base import InstanceStatus
from sarra.components.common import broker_url, instance_state_dir, session_for
from sarra.components.poster import NoticeBuilder, PostSettings, Publisher
from sarra.errors import ConfigError, LocalError, MessageError
from sarra.flow.nodupe import DuplicateCache

log = logging.getLogger(__name__)


def post_paths(cfg: Any) -> list[str]:
    """Paths given with ``path``/``-path`` options and on the command line, in order."""
    result: dict[str, None] = {}  # ordered, duplicates dropped in O(1)
    for source in (cfg.get("path"), getattr(cfg, "paths", None)):
        if not source:
            continue
        for p in [source] if isinstance(source, str) else source:
            result.setdefault(str(p), None)
    return list(result)


class PostComponent:
    """sr_post: one pass over the given paths, then exit (0 if every path was posted)."""

    name = "post"
    one_shot = True

    def run(self, cfg: Any, instance: int, stop: threading.Event) -> int:
        paths = post_paths(cfg)
        if not paths:
            raise ConfigError("nothing to post: give paths (or -path)", option="path")
        url = broker_url(cfg, "post_broker")
        settings = PostSettings.from_config(cfg, url.user, url.host)
        builder = NoticeBuilder(settings)
        session = session_for(url, cfg, "sr_post")
        session.connect()
        if cfg.get("declare_exchange") is not False:
            ensure_exchanges(session, [settings.exchange])
        ttl = float(cfg.get("suppress_duplicates") or 0)
        nodupe = (
            DuplicateCache(
                instance_state_dir(cfg) / "recent_posts.cache",
                ttl=ttl,
                basis=str(cfg.get("cache_basis") or "path"),
            )
            if ttl > 0
            else None
        )
        publisher = Publisher(session, builder, nodupe=nodupe)
        failures = 0
        started = time.monotonic()
        try:
            for path in paths:
                if stop.is_set():
                    break
                failures += self._post_one(builder, publisher, path, stop)
            publisher.flush()
        finally:
            session.close()
            if nodupe is not None:
                nodupe.close()
        elapsed = time.monotonic() - started
        log.info(
            "posted %d notices to %s in %.2fs (%.0f/s)%s",
            publisher.published,
            settings.exchange,
            elapsed,
            publisher.published / elapsed if elapsed > 0 else 0.0,
            f"; {failures} path(s) failed" if failures else "",
        )
        if publisher.suppressed:
            log.info(
                "%d unchanged notices not posted again (suppress_duplicates)", publisher.suppressed
            )
        return 1 if failures else 0

    def _post_one(
        self, builder: NoticeBuilder, publisher: Publisher, path: str, stop: threading.Event
    ) -> int:
        failures = 0
        abs_path = os.path.abspath(path)
        if os.path.isdir(abs_path) and not os.path.islink(abs_path):
            try:
                files = list(builder.tree(abs_path))
            except LocalError as e:
                print(f"sr_post: {e}", file=sys.stderr)
                return 1
            for f in files:
                if stop.is_set():
                    break
                failures += self._post_file(builder, publisher, f)
            return failures
        return self._post_file(builder, publisher, abs_path)

    @staticmethod
    def _post_file(builder: NoticeBuilder, publisher: Publisher, path: str) -> int:
        try:
            publisher.add(builder.file_notices(path))
        except (LocalError, MessageError) as e:
            print(f"sr_post: {e}", file=sys.stderr)
            log.debug("not posted: %s", path)
            return 1
        return 0

    def declare(self, cfg: Any) -> None:
        url = broker_url(cfg, "post_broker")
        settings = PostSettings.from_config(cfg, url.user, url.host)
        session = session_for(url, cfg, "sr_post")
        try:
            session.connect()
            session.declare_exchange(settings.exchange)
        finally:
            session.close()

    def cleanup(self, cfg: Any) -> None:
        """sr_post keeps no queue or state."""

    def status(self, cfg: Any) -> InstanceStatus:
        return InstanceStatus()
