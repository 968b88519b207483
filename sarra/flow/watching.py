"""sr_watch's event coalescing: file system events in, posting actions out (pure logic).

Raw events (from watchdog or from comparing polling snapshots) are folded per path into one
pending entry. An entry becomes an :class:`Action` once it has been quiet for a whole
coalescing ``interval`` (no event, and for a write its size and mtime as at its last event:
Windows may report writes through a handle still open late or not at all) and, for writes,
once the file is old enough (``min_age``, the numeric ``inflight``) and not named as in
flight (an ``inflight`` suffix, prefix or ``dir/``). So a file
written continuously is announced once, after the writer stops.

Folding rules (``fresh`` = the path appeared since the last announcement, so receivers never
heard of it):

* create/modify → a pending write (create if fresh, modify otherwise);
* delete of a fresh write → nothing at all; otherwise a pending remove;
* move of a fresh file (or from an in-flight name) → a fresh write at the new name;
  move of a known file → a rename (spec 7.3), chained through several moves in one interval;
* move of a directory → one rename per file inside it, then a remove of the old directory
  carrying ``newname`` (spec 7.3);
* a new directory → a fresh write for every file already in it (moved in from outside);
* mkdir/rmdir → only when ``events`` names them (spec 7.4).

Nothing here touches the broker; the only I/O is ``lstat`` (injectable) and walking a renamed
directory. Clocks are parameters so tests drive them.
"""

from __future__ import annotations

import os
import stat as statmod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

#: the ``events`` default of sr2
DEFAULT_EVENTS = frozenset({"create", "delete", "link", "modify"})

EventKind = Literal["created", "modified", "deleted", "moved"]
ActionKind = Literal["file", "link", "remove", "rename", "mkdir", "rmdir"]
StatFn = Callable[[str], os.stat_result]


@dataclass(frozen=True, slots=True)
class FsEvent:
    """One raw event: ``path`` (absolute); ``dest`` for moves."""

    kind: EventKind
    path: str
    is_dir: bool = False
    dest: str | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """What to announce: ``file`` (or its link notice), ``link``, ``remove`` (with ``newname``
    after a directory move), ``rename`` (``path`` is the new name, ``oldname`` the old one),
    ``mkdir``, ``rmdir``."""

    kind: ActionKind
    path: str
    oldname: str | None = None
    newname: str | None = None


def parse_events(text: str | None) -> frozenset[str]:
    """The ``events`` option: names separated by ``|`` or ``,`` (unknown names are kept)."""
    if not text:
        return DEFAULT_EVENTS
    words = text.replace(",", "|").split("|")
    return frozenset(w.strip().lower() for w in words if w.strip())


class InflightNames:
    """Names that mean "still being written" (``inflight``: ``.tmp`` suffix, ``tmp/`` dir,
    any other text a prefix, e.g. ``.`` for hidden files)."""

    def __init__(self, pattern: str | None) -> None:
        self.pattern = pattern or None

    def matches(self, path: str) -> bool:
        p = self.pattern
        if p is None:
            return False
        if p.endswith("/"):
            return p.rstrip("/") in path.split(os.sep)[:-1]
        name = os.path.basename(path)
        if p.startswith(".") and len(p) > 1:
            return name.endswith(p)
        return name.startswith(p)


@dataclass(slots=True)
class _Pending:
    kind: Literal["write", "remove", "rename", "dirmove", "mkdir", "rmdir"]
    since: float  # monotonic time of the last event
    fresh: bool = False
    oldname: str | None = None
    #: a write's (size, mtime_ns) at its last event: a file that changed without an event
    #: (Windows reports writes through a handle still open late, or not at all) is not quiet
    seen: tuple[int, int] | None = None


class Coalescer:
    """Folds events per path and releases actions once they are quiet and complete."""

    def __init__(
        self,
        *,
        interval: float,
        events: frozenset[str] = DEFAULT_EVENTS,
        min_age: float | None = None,
        inflight: InflightNames | None = None,
        lstat: StatFn = os.lstat,
    ) -> None:
        self.interval = interval
        self.events = events
        self.min_age = min_age
        self.inflight = inflight or InflightNames(None)
        self._lstat = lstat
        self._pending: OrderedDict[str, _Pending] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    def pending_paths(self) -> list[str]:
        return list(self._pending)

    def pending_writes(self) -> list[str]:
        """Paths written to and not yet released (files still being written, or settling)."""
        return [p for p, e in self._pending.items() if e.kind == "write"]

    # -- folding -------------------------------------------------------------------------------

    def add(self, event: FsEvent, now: float) -> None:
        """Fold one event observed at monotonic time ``now``."""
        if event.kind == "moved" and event.dest is not None:
            self._moved(event.path, event.dest, event.is_dir, now)
        elif self.inflight.matches(event.path):
            return
        elif event.is_dir:
            self._dir_event(event, now)
        elif event.kind == "deleted":
            self._deleted(event.path, now)
        else:
            self._written(event.path, now, created=event.kind == "created")

    def add_all(self, events: Iterable[FsEvent], now: float) -> None:
        for event in events:
            self.add(event, now)

    def _put(self, path: str, entry: _Pending) -> None:
        # a new kind of change goes to the back, so actions keep the order of events
        self._pending.pop(path, None)
        self._pending[path] = entry
        if entry.kind == "write" and entry.seen is None:
            entry.seen = self._signature(path)

    def _written(self, path: str, now: float, *, created: bool) -> None:
        entry = self._pending.get(path)
        if entry is None:
            self._put(path, _Pending("write", now, fresh=created))
        elif entry.kind == "remove":
            self._put(path, _Pending("write", now, fresh=False))
        elif entry.kind in ("write", "rename"):
            entry.since = now
            entry.seen = self._signature(path)
        else:
            self._put(path, _Pending("write", now, fresh=created))

    def _signature(self, path: str) -> tuple[int, int] | None:
        try:
            st = self._lstat(path)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def _deleted(self, path: str, now: float) -> None:
        entry = self._pending.get(path)
        if entry is not None and entry.kind == "write" and entry.fresh:
            del self._pending[path]  # never announced: nothing to take back
            return
        if entry is not None and entry.kind == "rename" and entry.oldname is not None:
            # the old name was known to receivers; the new one never announced
            del self._pending[path]
            self._put(entry.oldname, _Pending("remove", now))
            return
        self._put(path, _Pending("remove", now))

    def _dir_event(self, event: FsEvent, now: float) -> None:
        path = event.path
        entry = self._pending.get(path)
        if event.kind == "created":
            if "mkdir" in self.events:
                self._put(path, _Pending("mkdir", now, fresh=True))
            # a directory moved in (or filled before its watch was added) brings files that
            # may have no events of their own; duplicates merge with their events by path
            for inner in sorted(walk_files(path)):
                if not self.inflight.matches(inner):
                    self._written(inner, now, created=True)
        elif event.kind == "deleted":
            if entry is not None and entry.kind == "mkdir":
                del self._pending[path]
            elif "rmdir" in self.events:
                self._put(path, _Pending("rmdir", now))
        # a directory's own "modified" says only that its entries changed: they have events

    def _moved(self, src: str, dest: str, is_dir: bool, now: float) -> None:
        if is_dir:
            self._moved_dir(src, dest, now)
            return
        entry = self._pending.pop(src, None)
        src_hidden = self.inflight.matches(src)
        dest_hidden = self.inflight.matches(dest)
        if dest_hidden:
            if not src_hidden and not (entry is not None and entry.fresh):
                self._put(src, _Pending("remove", now))
            return
        if src_hidden or (entry is not None and entry.fresh):
            self._put(dest, _Pending("write", now, fresh=True))
            return
        oldname = src
        if entry is not None and entry.kind == "rename" and entry.oldname is not None:
            oldname = entry.oldname  # a -> b -> c within one interval is a -> c
        if oldname == dest:
            self._put(dest, _Pending("write", now))
            return
        self._put(dest, _Pending("rename", now, oldname=oldname))

    def _moved_dir(self, src: str, dest: str, now: float) -> None:
        prefix = src.rstrip(os.sep) + os.sep
        # pending changes inside the moved directory follow it
        for path in [p for p in self._pending if p.startswith(prefix)]:
            entry = self._pending.pop(path)
            moved = dest.rstrip(os.sep) + os.sep + path[len(prefix) :]
            if entry.kind == "write" and entry.fresh:
                self._put(moved, entry)
            # other kinds are covered by the per-file renames of the directory move
        self._put(dest, _Pending("dirmove", now, oldname=src))

    # -- releasing -----------------------------------------------------------------------------

    def ready(self, now: float, wall: float, *, flush: bool = False) -> list[Action]:
        """Actions for the entries quiet for ``interval`` (monotonic ``now``); files younger
        than ``min_age`` at wall-clock time ``wall`` stay pending. ``flush`` ignores the
        interval (still honouring ``min_age``)."""
        actions: list[Action] = []
        for path, entry in list(self._pending.items()):
            if not flush and now - entry.since < self.interval:
                continue
            done, produced = self._release(path, entry, now, wall)
            if done:
                del self._pending[path]
                actions.extend(produced)
        return actions

    def _release(
        self, path: str, entry: _Pending, now: float, wall: float
    ) -> tuple[bool, list[Action]]:
        ev = self.events
        if entry.kind == "remove":
            return True, [Action("remove", path)] if "delete" in ev else []
        if entry.kind in ("mkdir", "rmdir"):
            return True, [Action(entry.kind, path)]
        if entry.kind == "dirmove":
            return True, self._dir_renames(path, entry.oldname or path)
        try:
            st = self._lstat(path)
        except OSError:
            # gone since the event: its delete event follows (or already removed it)
            if entry.kind == "rename" and entry.oldname and "delete" in ev:
                return True, [Action("remove", entry.oldname)]
            return True, []
        is_link = statmod.S_ISLNK(st.st_mode)
        if not is_link and not statmod.S_ISREG(st.st_mode):
            return True, []
        if entry.kind == "rename":
            if "create" in ev or "modify" in ev:
                return True, [Action("rename", path, oldname=entry.oldname)]
            return True, []
        if is_link:
            return True, [Action("link", path)] if "link" in ev else []
        if self.min_age is not None and wall - st.st_mtime < self.min_age:
            return False, []
        if entry.kind == "write" and (st.st_size, st.st_mtime_ns) != entry.seen:
            # changed since its last event, with no event of its own: still being written
            # as far as anyone can tell, so it must be quiet for a whole interval from now
            entry.seen = (st.st_size, st.st_mtime_ns)
            entry.since = now
            return False, []
        wanted = "create" if entry.fresh else "modify"
        return True, [Action("file", path)] if wanted in ev else []

    def _dir_renames(self, new_dir: str, old_dir: str) -> list[Action]:
        actions: list[Action] = []
        if "create" in self.events or "modify" in self.events:
            for path in sorted(walk_files(new_dir)):
                if path in self._pending:
                    continue  # a fresh file: announced by its own entry
                rel = os.path.relpath(path, new_dir)
                actions.append(Action("rename", path, oldname=os.path.join(old_dir, rel)))
            actions.append(Action("remove", old_dir, newname=new_dir))
        return actions


def walk_files(top: str, follow_symlinks: bool = False) -> list[str]:
    """Every non-directory entry under ``top`` (unreadable directories are skipped)."""
    found: list[str] = []
    try:
        entries = list(os.scandir(top))
    except OSError:
        return found
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=follow_symlinks):
                found.extend(walk_files(entry.path, follow_symlinks))
            else:
                found.append(entry.path)
        except OSError:
            continue
    return found


# -- polling ---------------------------------------------------------------------------------

#: what a scan remembers per path: (is_dir, size, mtime_ns, inode)
Signature = tuple[bool, int, int, int]
Snapshot = dict[str, Signature]


def snapshot(roots: Iterable[str], follow_symlinks: bool = False) -> Snapshot:
    """The signature of every path under ``roots`` (roots themselves excluded when they are
    directories; a file root is included)."""
    snap: Snapshot = {}

    def visit(path: str, depth: int) -> None:
        try:
            st = os.stat(path) if follow_symlinks else os.lstat(path)
        except OSError:
            return
        is_dir = statmod.S_ISDIR(st.st_mode)
        if depth > 0 or not is_dir:
            snap[path] = (is_dir, st.st_size, st.st_mtime_ns, st.st_ino)
        if is_dir and depth < 256:
            try:
                names = sorted(os.listdir(path))
            except OSError:
                return
            for name in names:
                visit(os.path.join(path, name), depth + 1)

    for root in roots:
        visit(os.path.abspath(root), 0)
    return snap


def diff_snapshots(old: Mapping[str, Signature], new: Mapping[str, Signature]) -> list[FsEvent]:
    """Events turning ``old`` into ``new``: creations (parents first), modifications, then
    deletions (children first). A rename shows as a delete plus a create."""
    events: list[FsEvent] = []
    for path in sorted(new):
        sig = new[path]
        before = old.get(path)
        if before is None or before[0] != sig[0] or before[3] != sig[3]:
            if before is not None:
                events.append(FsEvent("deleted", path, is_dir=before[0]))
            events.append(FsEvent("created", path, is_dir=sig[0]))
        elif not sig[0] and before != sig:
            events.append(FsEvent("modified", path))
    for path in sorted((p for p in old if p not in new), reverse=True):
        events.append(FsEvent("deleted", path, is_dir=old[path][0]))
    return events
