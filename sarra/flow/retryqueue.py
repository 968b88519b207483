"""A durable on-disk queue of messages to retry, one file per instance.

Format: an append-only log of JSON lines, one record per change: ``{"op": "put", ...item}``
adds or replaces an item (by ``id``), ``{"op": "done", "id": ...}`` removes it. Replaying the
log gives the pending set. Each change is one ``write`` of one line followed by ``fsync``,
so it is durable when the call returns.

Why a log rather than a file per item: one fsync per change instead of two (file and
directory), one inode per instance instead of one per pending message, and compaction is a
single atomic rename. The cost, tombstones, is bounded by compaction: when dead records
outnumber live ones the file is rewritten with only the live items (temp file, fsync,
rename, fsync of the directory).

A crash mid-write leaves a torn last line (no newline): it is ignored on load and cut off
before anything new is appended. Unparseable lines elsewhere are skipped with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import threading
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sarra import osport
from sarra.closing import Closing
from sarra.errors import LocalError, translated_os_errors
from sarra.notice import WireMessage, frozen_headers
from sarra.osport import O_BINARY, O_CLOEXEC, WINDOWS, fsync_dir

log = logging.getLogger(__name__)

_COMPACT_MIN_DEAD = 64


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@dataclass(frozen=True, slots=True)
class RetryItem:
    """One message waiting for another attempt, as received from the broker.

    ``body`` is the wire body as text (invalid UTF-8 kept via surrogateescape). Times are
    epoch seconds. ``attempts`` counts the failed attempts so far.
    """

    exchange: str
    routing_key: str
    body: str
    headers: dict[str, str]
    content_type: str = "text/plain"
    attempts: int = 0
    first_seen: float = 0.0
    next_at: float = 0.0
    last_error: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def from_wire(cls, msg: WireMessage, *, now: float, error: str = "") -> RetryItem:
        """A new item (no attempts yet, due now) for a received message."""
        return cls(
            exchange=msg.exchange,
            routing_key=msg.routing_key,
            body=msg.body.decode("utf-8", "surrogateescape"),
            headers=dict(msg.headers),
            content_type=msg.content_type,
            first_seen=now,
            next_at=now,
            last_error=error,
        )

    def to_wire(self) -> WireMessage:
        """The message as it was received."""
        return WireMessage(
            exchange=self.exchange,
            routing_key=self.routing_key,
            body=self.body.encode("utf-8", "surrogateescape"),
            headers=frozen_headers(self.headers),
            content_type=self.content_type,
        )

    @classmethod
    def _from_record(cls, rec: Mapping[str, Any]) -> RetryItem:
        headers = rec["headers"]
        if not isinstance(headers, dict):
            raise ValueError("headers is not an object")
        return cls(
            exchange=str(rec["exchange"]),
            routing_key=str(rec["routing_key"]),
            body=str(rec["body"]),
            headers={str(k): str(v) for k, v in headers.items()},
            content_type=str(rec["content_type"]),
            attempts=int(rec["attempts"]),
            first_seen=float(rec["first_seen"]),
            next_at=float(rec["next_at"]),
            last_error=str(rec["last_error"]),
            id=str(rec["id"]),
        )


def _line(record: Mapping[str, Any]) -> bytes:
    # ensure_ascii keeps lone surrogates (from undecodable bodies) representable
    return (json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n").encode()


def _put_record(item: RetryItem) -> dict[str, Any]:
    return {"op": "put", **asdict(item)}


class RetryQueue(Closing):
    """Durable retry queue in the file ``path`` (one per instance; created if missing).

    ``ttl``: seconds after ``first_seen`` beyond which an item is expired (report 499, drop).
    Backoff after ``n`` failed attempts: ``min(max_delay, base_delay * 2**(n-1))`` times a
    random factor in [0.5, 1] (jitter, so instances do not retry in lockstep). Thread-safe.
    """

    def __init__(
        self,
        path: Path,
        *,
        ttl: float,
        base_delay: float = 30.0,
        max_delay: float = 3600.0,
        rng: random.Random | None = None,
    ) -> None:
        self.path = Path(path)
        self.ttl = ttl
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._items: dict[str, RetryItem] = {}
        self._records = 0
        self._fd = -1
        with translated_os_errors(f"open retry queue {self.path}"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._load()
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | O_CLOEXEC | O_BINARY, 0o600
            )
        if self._records > len(self._items):
            self.compact()

    # public API ---------------------------------------------------------------------------

    def backoff(self, attempts: int) -> float:
        """Delay before the next try after ``attempts`` failed attempts (with jitter)."""
        exp = min(max(attempts, 1) - 1, 62)
        delay = min(self.max_delay, self.base_delay * (2.0**exp))
        return delay * self._rng.uniform(0.5, 1.0)

    def put(self, item: RetryItem) -> None:
        """Add or replace (by id) ``item``; durable when this returns."""
        with self._lock:
            self._append(_line(_put_record(item)))
            self._items[item.id] = item
            self._maybe_compact()

    def failed(self, item: RetryItem, error: str, now: float) -> RetryItem:
        """Record one more failed attempt of ``item`` and schedule it; returns the new item."""
        attempts = item.attempts + 1
        updated = replace(
            item, attempts=attempts, last_error=error, next_at=now + self.backoff(attempts)
        )
        self.put(updated)
        return updated

    def due(self, now: float) -> list[RetryItem]:
        """Unexpired items whose next attempt time has come, earliest first."""
        with self._lock:
            ready = [
                it for it in self._items.values() if it.next_at <= now and not self._old(it, now)
            ]
        return sorted(ready, key=lambda it: (it.next_at, it.first_seen))

    def expired(self, now: float) -> list[RetryItem]:
        """Items older than ``ttl``; the caller reports them (499) and calls :meth:`done`."""
        with self._lock:
            old = [it for it in self._items.values() if self._old(it, now)]
        return sorted(old, key=lambda it: it.first_seen)

    def done(self, item: RetryItem) -> None:
        """Remove ``item`` durably (absent is fine)."""
        with self._lock:
            if item.id not in self._items:
                return
            self._append(_line({"op": "done", "id": item.id}))
            del self._items[item.id]
            self._maybe_compact()

    def probe(self, size: int = 64 * 1024) -> str | None:
        """Whether the queue's directory takes a synced write of ``size`` bytes now (the
        room a few entries need): None if so, else why not. Leaves nothing behind."""
        probe = self.path.with_name(f".{self.path.name}.{os.getpid()}.probe")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | O_CLOEXEC | O_BINARY, 0o600)
            try:
                _write_all(fd, b"\0" * size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            return f"{self.path.parent}: {exc.strerror or exc}"
        finally:
            with contextlib.suppress(OSError):
                os.unlink(probe)
        return None

    def items(self) -> list[RetryItem]:
        """A snapshot of the pending items (e.g. to hand them back to the broker)."""
        with self._lock:
            return list(self._items.values())

    def next_due(self) -> float | None:
        """Earliest ``next_at`` among pending items, or None when empty."""
        with self._lock:
            return min((it.next_at for it in self._items.values()), default=None)

    def oldest(self) -> float | None:
        """``first_seen`` of the oldest pending item, or None when empty."""
        with self._lock:
            return min((it.first_seen for it in self._items.values()), default=None)

    def compact(self) -> None:
        """Rewrite the file with only the pending items (atomic, durable)."""
        with self._lock:
            self._compact()

    def close(self) -> None:
        """Close the file; pending items stay on disk."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: object) -> bool:
        return isinstance(item, RetryItem) and item.id in self._items

    # internals ----------------------------------------------------------------------------

    def _old(self, item: RetryItem, now: float) -> bool:
        return now - item.first_seen > self.ttl

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        if end < len(data):
            log.warning("%s: ignoring a torn last line (%d bytes)", self.path, len(data) - end)
            # cut it off so the next append starts on a line of its own
            with open(self.path, "r+b") as fh:
                fh.truncate(end)
                os.fsync(fh.fileno())
        for lineno, raw in enumerate(data[:end].splitlines(), 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                if rec["op"] == "put":
                    item = RetryItem._from_record(rec)
                    self._items[item.id] = item
                elif rec["op"] == "done":
                    self._items.pop(str(rec["id"]), None)
                else:
                    raise ValueError(f"unknown op {rec['op']!r}")
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s:%d: skipping unreadable record: %s", self.path, lineno, exc)
                continue
            self._records += 1

    def _append(self, line: bytes) -> None:
        if self._fd < 0:
            raise LocalError(f"retry queue {self.path} is closed")
        with translated_os_errors(f"write retry queue {self.path}"):
            _write_all(self._fd, line)
            os.fsync(self._fd)
        self._records += 1

    def _maybe_compact(self) -> None:
        dead = self._records - len(self._items)
        if dead >= _COMPACT_MIN_DEAD and dead > len(self._items):
            self._compact()

    def _compact(self) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.compact")
        data = b"".join(_line(_put_record(it)) for it in self._items.values())
        reopen = self._fd >= 0
        with translated_os_errors(f"compact retry queue {self.path}"):
            try:
                fd = os.open(
                    tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | O_CLOEXEC | O_BINARY, 0o600
                )
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if WINDOWS and reopen:  # Windows never replaces a file that is open
                    os.close(self._fd)
                    self._fd = -1
                osport.replace(tmp, self.path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            finally:
                if reopen and self._fd < 0:  # (Windows) the old or the new file, as it stands
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | O_CLOEXEC | O_BINARY)
            fsync_dir(self.path.parent)
            if reopen and not WINDOWS:
                os.close(self._fd)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | O_CLOEXEC | O_BINARY)
        self._records = len(self._items)
