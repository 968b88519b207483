"""Duplicate suppression: remember what was seen within a time to live (facts doc 3.2).

An entry is the pair (key, value). The **key** says *what* the notice carries:

* ``d``/``s`` sums: the sum itself (``d,<hex>``, hex lower-cased);
* ``n``/``0``/``z``/``a`` sums (which do not identify the data): ``<path>,<mtime or pubTime>``;
* ``L``: the link target; ``R``/``m``/``r``: the path;
* partitioned notices add ``<block size>,<block number>``, so the blocks of one file are
  not duplicates of each other (count and remainder are left out, as sr2 does).

The **value** says *where*, according to ``basis``: ``path`` (the logical path), ``name``
(its basename) or ``data`` (the literal ``data``: same content anywhere is a duplicate).

A notice is a duplicate when its entry was seen less than ``ttl`` seconds ago; a hit refreshes
the entry's time (a sliding window, as sr3 does). Entries are kept in memory as 128-bit xxh3
hashes of (key, value) in last-seen order, so expiry pops from the front and memory is bounded
by what arrives within one ttl.

Persistence (optional, one file per instance): an append-only file of lines
``<32 hex hash> <epoch> <url-quoted value>``. It is loaded on start (expired entries dropped),
appended on every record (flushed, not fsync'd: losing the tail after a crash only lets a
duplicate through) and rewritten compactly on :meth:`save`, on close, and when dead lines
outnumber live ones.

Crash windows (a consumer, sr_subscribe: :meth:`sarra.flow.download.Downloader.select`).
An entry is recorded when its notice is *selected*, long before its file is durable, and the
notice is acked only once the file is (the batch commit's fsync barrier). So an entry may
name a file that was never placed: the instance was killed (or stopped) mid-download, or
lost its broker connection. Every such notice is still unacked, and the broker gives it
again marked *redelivered*; a redelivered notice is therefore never suppressed, only
recorded (:meth:`note`): it is processed, and a file that was in fact placed before the
crash costs a comparison (304), not a download. The other copies of that file (same key,
other messages) that the entry suppressed while it was pending were acked, but they do not
matter: the redelivered original brings the file. Hence:

* killed after selecting, before the file is durable: the entry is on disk, the notice
  comes back redelivered and is downloaded (no loss);
* killed after the file is durable, before the ack: the notice comes back redelivered and
  finds the file unchanged (304, no second download);
* killed after the ack: the entry suppresses later copies, as in normal operation;
* the OS crashes: the cache's unsynced tail may be lost, which only lets a duplicate through.

Posters (sr_post, sr_watch, sr_poll) have no redelivery: their entries are recorded with
``persist=False`` when a notice is queued and written (:meth:`persist`) only once the broker
confirmed it. Killed in between (say during a broker outage), the entries die with the
process and the next run posts those files; a graceful stop forgets them as well.

Nothing is added to the normal path (no fsync per entry): a notice that is not redelivered
is checked as before. A notice taken from the retry queue is never checked (it was selected
once already). Suppression is kept in normal operation; after a crash or a reconnection the
notices in flight then (at most ``prefetch`` per instance) are compared again.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import IO
from urllib.parse import quote, unquote

import xxhash

from sarra.closing import Closing
from sarra.errors import ConfigError, translated_os_errors
from sarra.notice import Notice

log = logging.getLogger(__name__)

BASES = ("path", "name", "data")
_COMPACT_MIN_DEAD = 1024


def derive_key(notice: Notice) -> str:
    """What ``notice`` carries, independent of where (see the module docstring)."""
    sum_ = notice.checksum
    letter = sum_.letter
    if letter in ("d", "s"):
        key = f"{letter},{sum_.value.lower()}"
    elif letter == "L":
        key = f"L,{notice.header('link', '')}"
    elif letter in ("R", "m", "r"):
        key = f"{letter},{notice.path}"
    else:
        when = notice.header("mtime") or notice.pubtime
        key = f"{notice.path},{when}"
    parts = notice.parts
    if parts is not None and not parts.whole:
        key = f"{key},{parts.block_size},{parts.block_number}"
    growth = notice.header("growing")
    if growth is not None:
        # a growing file's final notice may repeat a block already announced: it is news
        # (it gives the final size), so the growth (and its ",final") is part of the key
        key = f"{key},{growth}"
    return key


class DuplicateCache(Closing):
    """Remembers notices for ``ttl`` seconds; ``path`` None keeps it in memory only.

    ``ttl <= 0`` disables suppression (nothing is a duplicate, nothing is recorded).
    Not thread-safe: use one per instance (or guard it).
    """

    def __init__(self, path: Path | None, ttl: float, basis: str = "path") -> None:
        if basis not in BASES:
            raise ConfigError(f"unknown duplicate suppression basis {basis!r}", option="basis")
        self.path = None if path is None else Path(path)
        self.ttl = ttl
        self.basis = basis
        # hash -> (last seen, value); insertion order is last-seen order (moved on refresh)
        self._seen: OrderedDict[int, tuple[float, str]] = OrderedDict()
        self._by_value: dict[str, set[int]] = {}
        self._lines = 0
        #: entries recorded with ``persist=False``, written only by :meth:`persist`
        self._unsaved: set[int] = set()
        self._fh: IO[str] | None = None
        if self.path is not None:
            with translated_os_errors(f"open duplicate cache {self.path}"):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._load(time.time())
            self.save()

    # public API ---------------------------------------------------------------------------

    def value_of(self, path: str) -> str:
        """The value recorded for the logical ``path`` under this basis."""
        if self.basis == "name":
            return path.rsplit("/", 1)[-1]
        if self.basis == "data":
            return "data"
        return path.lstrip("/")

    def check(self, notice: Notice, now: float | None = None, *, persist: bool = True) -> bool:
        """True if ``notice`` was seen within ttl (a duplicate); otherwise record it.

        Either way the entry's time becomes ``now``. With ``persist`` off the entry is kept
        in memory only until :meth:`persist` (a poster calls it once the broker confirmed
        the notice: an entry on disk for a notice never posted would suppress it forever).
        """
        if self.ttl <= 0:
            return False
        now = time.time() if now is None else now
        self.expire(now)
        value = self.value_of(notice.path)
        digest = _digest(derive_key(notice), value)
        previous = self._seen.get(digest)
        duplicate = previous is not None and now - previous[0] < self.ttl
        self._add(digest, now, value)
        self._seen.move_to_end(digest)
        if persist:
            self._unsaved.discard(digest)
            self._append(digest, now, value)
        else:
            self._unsaved.add(digest)
        return duplicate

    def persist(self) -> None:
        """Write the entries recorded with ``persist=False`` (flushed, not fsync'd)."""
        unsaved, self._unsaved = self._unsaved, set()
        for digest in unsaved:
            entry = self._seen.get(digest)
            if entry is not None:
                self._append(digest, *entry)

    def note(self, notice: Notice, now: float | None = None) -> None:
        """Record ``notice`` without suppressing it: a notice the broker redelivers (see the
        module docstring's crash windows), so later copies are suppressed again."""
        self.check(notice, now)

    def forget(self, path: str) -> int:
        """Drop every entry recorded for the logical ``path`` (e.g. after a delete).

        With basis ``data`` nothing is dropped: there the value does not name a file.
        Returns how many entries were dropped.
        """
        if self.basis == "data":
            return 0
        digests = self._by_value.pop(self.value_of(path), set())
        for digest in digests:
            self._seen.pop(digest, None)
            self._unsaved.discard(digest)
        if digests:
            self._maybe_compact()
        return len(digests)

    def expire(self, now: float | None = None) -> int:
        """Drop entries older than ttl; returns how many were dropped."""
        now = time.time() if now is None else now
        dropped = 0
        while self._seen:
            digest, (seen, value) = next(iter(self._seen.items()))
            if now - seen < self.ttl:
                break  # last-seen order: everything after this is newer
            del self._seen[digest]
            self._unindex(digest, value)
            dropped += 1
        if dropped:
            self._maybe_compact()
        return dropped

    def save(self) -> None:
        """Rewrite the file with the live entries only (atomic); no-op without a file."""
        if self.path is None:
            return
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        with translated_os_errors(f"save duplicate cache {self.path}"):
            try:
                written = 0
                with open(tmp, "w", encoding="utf-8") as out:
                    for digest, (seen, value) in self._seen.items():
                        if digest not in self._unsaved:
                            out.write(_format(digest, seen, value))
                            written += 1
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            if self._fh is not None:
                self._fh.close()
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            self._lines = written

    def close(self) -> None:
        """Save and close the file."""
        if self._fh is not None:
            self.save()
            self._fh.close()
            self._fh = None

    def __len__(self) -> int:
        return len(self._seen)

    # internals ----------------------------------------------------------------------------

    def _add(self, digest: int, seen: float, value: str) -> None:
        self._seen[digest] = (seen, value)
        self._by_value.setdefault(value, set()).add(digest)

    def _unindex(self, digest: int, value: str) -> None:
        bucket = self._by_value.get(value)
        if bucket is not None:
            bucket.discard(digest)
            if not bucket:
                del self._by_value[value]

    def _append(self, digest: int, seen: float, value: str) -> None:
        if self._fh is None:
            return
        with translated_os_errors(f"write duplicate cache {self.path}"):
            self._fh.write(_format(digest, seen, value))
            self._fh.flush()
        self._lines += 1
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        dead = self._lines - len(self._seen)
        if self._fh is not None and dead >= _COMPACT_MIN_DEAD and dead > len(self._seen):
            self.save()

    def _load(self, now: float) -> None:
        assert self.path is not None
        try:
            fh = open(self.path, encoding="utf-8", errors="replace")  # noqa: SIM115
        except FileNotFoundError:
            return
        entries: dict[int, tuple[float, str]] = {}
        with fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # torn last line
                fields = line.rstrip("\n").split(" ")
                try:
                    if len(fields) != 3:
                        raise ValueError(f"{len(fields)} fields")
                    digest = int(fields[0], 16)
                    seen = float(fields[1])
                except ValueError as exc:
                    log.warning("%s: skipping bad line %r: %s", self.path, line[:80], exc)
                    continue
                if now - seen < self.ttl:
                    entries.pop(digest, None)  # later lines are newer sightings
                    entries[digest] = (seen, unquote(fields[2]))
        for digest, (seen, value) in sorted(entries.items(), key=lambda kv: kv[1][0]):
            self._add(digest, seen, value)


def _digest(key: str, value: str) -> int:
    return int(xxhash.xxh3_128_intdigest(f"{key}\0{value}".encode("utf-8", "surrogatepass")))


def _format(digest: int, seen: float, value: str) -> str:
    return f"{digest:032x} {seen:.6f} {quote(value, safe='/', errors='surrogatepass')}\n"
