"""The watching loop of sr_watch: events or snapshots in, notices out.

Events come from watchdog's native observer (inotify on Linux) or, with ``force_polling`` or
when the observer cannot start, from comparing tree snapshots every ``sleep`` seconds. The
observer thread only enqueues events; the run thread folds them
(:class:`sarra.flow.watching.Coalescer`), builds notices and owns the broker session, so
nothing is published from another thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from sarra.broker.admin import ensure_exchanges
from sarra.broker.base import Broker
from sarra.codec import v02
from sarra.codec.fields import shown
from sarra.config.settings import Settings
from sarra.errors import LocalError, MessageError
from sarra.flow.growing import growth_follower
from sarra.flow.hooks import Plugins
from sarra.flow.nodupe import DuplicateCache
from sarra.flow.posting import NoticeBuilder, make_publisher, outage_max
from sarra.flow.watching import (
    Action,
    Coalescer,
    FsEvent,
    InflightNames,
    Snapshot,
    diff_snapshots,
    parse_events,
    snapshot,
)
from sarra.integrity.sums import name_sum
from sarra.notice import Notice

log = logging.getLogger(__name__)

#: coalescing interval and polling period when ``sleep`` is unset or not positive
DEFAULT_SLEEP = 3.0
#: longest the run loop blocks, so ``stop`` is noticed promptly
MAX_WAIT = 0.25
#: unposted changes named one by one in the log when stopping; the rest are counted
UNPOSTED_SHOWN = 20
#: seconds between two writes of the heartbeat file (``status``; ``sanity_log_dead``)
BEAT_EVERY = 5.0


def watch_sleep(cfg: Settings) -> float:
    return cfg.sleep if cfg.sleep > 0 else DEFAULT_SLEEP


def inflight_rule(cfg: Settings) -> tuple[float | None, InflightNames]:
    """``inflight`` for watching: (minimum age in seconds or None, in-flight names)."""
    value = cfg.inflight
    if value is None or value == "":
        return None, InflightNames(None)
    if isinstance(value, int | float):
        return (float(value) if value > 0 else None), InflightNames(None)
    text = str(value).strip()
    if text.upper() == "NONE":
        return None, InflightNames(None)
    try:
        seconds = float(text)
    except ValueError:
        return None, InflightNames(text)
    return (seconds if seconds > 0 else None), InflightNames(None)


class _Handler(FileSystemEventHandler):
    """Runs in the observer thread: translates events and queues them, nothing else."""

    def __init__(self, out: queue.Queue[FsEvent], files: frozenset[str], dirs: tuple[str, ...]):
        self.out = out
        self.files = files  # file roots: only their own events count
        self.dirs = dirs

    def _wanted(self, path: str) -> bool:
        return path in self.files or any(
            path.startswith(d.rstrip(os.sep) + os.sep) for d in self.dirs
        )

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        src = os.fsdecode(event.src_path)
        if kind == "closed":
            kind = "modified"  # closed after writing: the file changed
        if kind == "moved":
            if event.is_synthetic:
                return  # contents of a moved directory: expanded from the directory move
            dest = os.fsdecode(event.dest_path)
            src_in, dest_in = self._wanted(src), self._wanted(dest)
            if src_in and dest_in:
                self.out.put(FsEvent("moved", src, event.is_directory, dest))
            elif src_in:
                self.out.put(FsEvent("deleted", src, event.is_directory))
            elif dest_in:
                self.out.put(FsEvent("created", dest, event.is_directory))
            return
        if kind in ("created", "modified", "deleted") and self._wanted(src):
            self.out.put(FsEvent(kind, src, event.is_directory))  # type: ignore[arg-type]


class Watcher:
    """One running instance: roots, coalescer, builder, publisher and optional cache."""

    def __init__(
        self,
        cfg: Settings,
        roots: list[str],
        session: Broker,
        builder: NoticeBuilder,
        cache: DuplicateCache | None,
        stop: threading.Event,
        heartbeat: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.plugins = Plugins.from_config(cfg.plugins)
        self.roots = roots
        self.stop = stop
        self.heartbeat = heartbeat  # called every BEAT_EVERY seconds while watching
        self.sleep = watch_sleep(cfg)
        self.events = parse_events(cfg.events)
        self.follow = cfg.follow_symlinks
        self.polling = cfg.force_polling
        self.post_on_start = cfg.post_on_start
        min_age, names = inflight_rule(cfg)
        self.inflight = names
        self.coalescer = Coalescer(
            interval=self.sleep, events=self.events, min_age=min_age, inflight=names
        )
        self.builder = builder
        #: growing on: files being written are announced block by block (sarra.flow.growing)
        self.follower = growth_follower(cfg, builder)
        self.session = session
        exchange = self.builder.settings.exchange
        declare = cfg.declare_exchange
        self.publisher = make_publisher(
            cfg,
            self.session,
            self.builder,
            outage_max=outage_max(cfg),
            # declared at every (re)connect: the broker may come back without it
            on_connect=(lambda s: ensure_exchanges(s, [exchange])) if declare else None,
            backlog=self._backlog_text,
            plugins=self.plugins,
        )
        # actions released by the coalescer and not yet handed to the publisher: only
        # non-empty while the broker is unreachable (see _pump)
        self.backlog: deque[Action] = deque()
        self.queue: queue.Queue[FsEvent] = queue.Queue()
        self.cache = cache
        self.publisher.confirm_cache = cache
        self.observer: Any = None
        self._snap: Snapshot = {}

    # -- event sources -------------------------------------------------------------------------

    def start_observer(self) -> bool:
        """Start watchdog's native observer; False when it cannot (then poll)."""
        dirs = tuple(r for r in self.roots if os.path.isdir(r))
        files = frozenset(r for r in self.roots if r not in dirs)
        handler = _Handler(self.queue, files, dirs)
        observer = Observer()
        try:
            for d in dirs:
                observer.schedule(handler, d, recursive=True)
            for parent in sorted({os.path.dirname(f) for f in files}):
                observer.schedule(handler, parent, recursive=False)
            observer.start()
        except (OSError, RuntimeError) as e:
            log.warning("file system events unavailable (%s); polling every %gs", e, self.sleep)
            with contextlib.suppress(RuntimeError):
                observer.stop()
            return False
        self.observer = observer
        return True

    def stop_observer(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=5)
            self.observer = None

    def scan(self) -> None:
        """Polling: compare the tree with the previous snapshot and fold the differences."""
        new = snapshot(self.roots, self.follow)
        self.coalescer.add_all(diff_snapshots(self._snap, new), time.monotonic())
        self._snap = new

    # -- announcing ----------------------------------------------------------------------------

    def notices_for(self, action: Action) -> list[Notice]:
        b = self.builder
        if self.follower is not None:
            if action.kind == "file":
                return self.follower.finish(action.path)
            self.follower.forget(action.oldname or action.path)
        if action.kind == "file":
            return b.file_notices(action.path)
        if action.kind == "link":
            return [b.link_notice(action.path)]
        if action.kind == "rename":
            return b.rename_notices(action.oldname or action.path, action.path)
        if action.kind == "remove":
            extra = [("newname", b.logical_path(action.newname))] if action.newname else []
            return [b.remove_notice(action.path, extra)]
        return [self.dir_notice(action.path, "m" if action.kind == "mkdir" else "r")]

    def dir_notice(self, abs_path: str, letter: str) -> Notice:
        """mkdir/rmdir (spec 7.4): like a remove notice, with sum ``m``/``r``."""
        removal = self.builder.remove_notice(abs_path)
        s = self.builder.settings
        headers = {k: v for k, v in removal.headers.items() if k != "sum"}
        return v02.make_notice(
            exchange=s.exchange,
            topic_prefix=s.topic_prefix,
            pubtime=removal.pubtime,
            base_url=s.base_url,
            path=self.builder.logical_path(abs_path),
            checksum=name_sum(letter, abs_path),
            parts=None,
            headers=headers,
            topic_override=s.topic_override,
        )

    def announce(self, actions: Iterable[Action]) -> int:
        """Post ``actions`` (after any still waiting); returns the notices handed over.

        Never waits for the broker: when it is unreachable, what is not confirmed stays
        with the publisher and the actions not yet built stay in ``backlog``.
        """
        self.backlog.extend(actions)
        return self._pump()

    def _pump(self) -> int:
        count = 0
        while self.backlog and not self.publisher.in_outage:
            action = self.backlog.popleft()
            try:
                notices = self.notices_for(action)
            except (LocalError, MessageError) as e:
                log.error("not posting %s %s: %s", action.kind, shown(action.path), e)
                continue
            notices = self._not_duplicates(notices)
            try:
                self.publisher.add(notices, item=action.path, wait=False)
            except MessageError as e:
                log.error("not posting %s: %s", shown(action.path), e)
                continue
            count += len(notices)
            log.debug("%s %s: %d notice(s)", action.kind, action.path, len(notices))
        if not self.publisher.in_outage:
            self.publisher.try_flush()
        return count

    def grow(self) -> int:
        """growing on: announce the blocks completed since the last call of every file still
        being written; returns the notices handed over. A file that cannot be read or shrank
        is left to its ordinary announcement once it settles."""
        if self.follower is None:
            return 0
        count = 0
        for path in self.coalescer.pending_writes():
            try:
                notices = self._not_duplicates(self.follower.poll(path))
                if notices:
                    self.publisher.add(notices, wait=False)
            except (LocalError, MessageError) as e:
                log.warning("not following %s as it grows: %s", shown(path), e)
                self.follower.forget(path)
                continue
            count += len(notices)
        if count:
            self.publisher.try_flush()
        return count

    def _backlog_text(self) -> str:
        return (
            f"{len(self.backlog) + len(self.coalescer)} change(s) not yet announced "
            "(kept until the broker is back)"
        )

    @property
    def held(self) -> bool:
        """The broker is unreachable or something still waits for it: new changes keep
        folding in the coalescer (one entry per path, so memory is bounded by the number
        of paths changed) instead of being released."""
        return self.publisher.in_outage or bool(self.backlog)

    def retry(self, now: float) -> None:
        """During an outage: try again when the backoff allows, then post what waited."""
        if not self.publisher.in_outage or (self.publisher.due(now) and self.publisher.try_flush()):
            self._pump()

    def _not_duplicates(self, notices: list[Notice]) -> list[Notice]:
        if self.cache is None:
            return notices
        kept: list[Notice] = []
        for n in notices:
            if n.checksum.letter == "R":
                # removals always go out; a later re-creation is news again
                self.cache.forget(n.path)
                kept.append(n)
            elif not self.cache.check(n, persist=False):  # persisted once confirmed
                kept.append(n)
            else:
                log.debug("duplicate suppressed: %s", n.path)
        return kept

    def initial_actions(self) -> list[Action]:
        """post_on_start: every file and link already under the roots."""
        actions: list[Action] = []
        for root in self.roots:
            if os.path.isdir(root):
                try:
                    paths = list(self.builder.tree(root))
                except LocalError as e:
                    log.error("cannot post existing files: %s", e)
                    continue
            elif os.path.lexists(root):
                paths = [root]
            else:
                continue
            for path in paths:
                if self.inflight.matches(path):
                    continue
                kind = "link" if os.path.islink(path) and not self.follow else "file"
                if kind == "link" and "link" not in self.events:
                    continue
                actions.append(Action(kind, path))  # type: ignore[arg-type]
        return actions

    # -- main loop -----------------------------------------------------------------------------

    def run(self) -> int:
        """Watch until ``stop``; 0 once everything seen was posted, 1 if notices were left
        unposted (the broker unreachable at stop, or for longer than post_outage_max).

        The broker is reached only to publish, so a broker down at start, or going away
        later, is waited out (see :class:`~sarra.flow.posting.Publisher`).
        """
        gave_up = False
        started = False
        try:
            self.plugins.on_start(self.cfg)
            started = True
            if not self.polling and not self.start_observer():
                self.polling = True
            if self.polling:
                self._snap = snapshot(self.roots, self.follow)
            log.info(
                "watching %s (%s, every %gs) posting to %s",
                ", ".join(self.roots),
                "polling" if self.polling else "events",
                self.sleep,
                self.builder.settings.exchange,
            )
            if self.post_on_start:
                self.announce(self.initial_actions())
            gave_up = not self._loop()
        finally:
            self.stop_observer()
            try:
                left = self._finish(gave_up)
            finally:
                self.session.close()
                if self.cache is not None:
                    self.cache.close()
                if started:
                    self.plugins.on_stop(self.cfg)
        log.info("published %d notices", self.publisher.published)
        return 1 if left else 0

    def _finish(self, gave_up: bool) -> int:
        """Last attempt to post what waits (unless giving up); name what is left unposted
        and let the duplicate cache forget it, so the next start posts it. Returns how many
        changes were left."""
        # one more attempt when stopping during an outage: the broker may be back already
        if not gave_up and (not self.publisher.in_outage or self.publisher.try_flush()):
            self._pump()
        left = self.publisher.pending_items() + [a.path for a in self.backlog]
        if not left and not gave_up:
            return 0
        if self.cache is not None:
            for path in self.publisher.pending_paths():
                self.cache.forget(path)
        unsettled = len(self.coalescer)
        log.error(
            "%d change(s) not posted (broker unreachable: %s)%s: %s%s",
            len(left) + unsettled,
            self.publisher.last_error,
            f", {unsettled} of them still settling" if unsettled else "",
            ", ".join(left[:UNPOSTED_SHOWN]),
            f" ... and {len(left) - UNPOSTED_SHOWN} more" if len(left) > UNPOSTED_SHOWN else "",
        )
        return len(left) + unsettled

    def _loop(self) -> bool:
        """Fold events and announce until ``stop`` (True), or until the broker has been
        unreachable longer than post_outage_max (False)."""
        next_scan = time.monotonic() + self.sleep
        check_every = max(0.05, min(self.sleep / 4, 1.0))
        next_check = time.monotonic() + check_every
        next_beat = 0.0
        while not self.stop.is_set():
            now = time.monotonic()
            if self.heartbeat is not None and now >= next_beat:
                self.heartbeat()
                next_beat = now + BEAT_EVERY
            wait = max(0.0, min(next_check - now, MAX_WAIT))
            try:
                first = self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
                self._drain(first)
            except queue.Empty:
                pass
            now = time.monotonic()
            if self.polling and now >= next_scan:
                self.scan()
                next_scan = now + self.sleep
            if self.held:
                self.retry(now)
                if self.publisher.exhausted(now):
                    log.error(
                        "giving up: broker unreachable for %.0fs (post_outage_max)",
                        self.publisher.outage_seconds(now),
                    )
                    return False
            elif now >= next_check:
                self.grow()
                self.announce(self.coalescer.ready(now, time.time()))
                next_check = now + check_every
        # stopping: take what has arrived, announce what is already complete
        with contextlib.suppress(queue.Empty):
            self._drain(self.queue.get_nowait())
        if not self.held:
            self.announce(self.coalescer.ready(time.monotonic(), time.time()))
        if len(self.coalescer):
            log.info("%d change(s) still settling at stop: not posted", len(self.coalescer))
        return True

    def _drain(self, first: FsEvent) -> None:
        now = time.monotonic()
        self.coalescer.add(first, now)
        while True:
            try:
                self.coalescer.add(self.queue.get_nowait(), now)
            except queue.Empty:
                return
