"""Per-instance metrics: plain counters the flow thread keeps, and the small JSON file an
instance publishes them in for ``sr web`` (and anyone else) to read.

Contract:

- :class:`FlowMetrics` is written by one thread only (the consuming loop's flow thread):
  plain ``int`` and ``dict`` updates, no lock, no I/O on the hot path. The lag is
  ``now - pubTime`` of each notice taken in (the timestamp parse is cached per second).
- :meth:`FlowMetrics.snapshot` (called every few seconds with the heartbeat) returns a
  JSON-able dict (:data:`SCHEMA`) and starts a new lag window: ``lag.max`` is the largest
  lag seen since the previous snapshot.
- :func:`write_metrics` replaces the file atomically (temporary file in the same directory,
  then rename): a reader sees the previous document or the new one, never a mix. It never
  raises: metrics must not stop a flow (a full disk just leaves the previous file).

The file sits next to the instance's pid file:
``<state_dir(component, config)>/sr_<component>_<config>_<NNN>.metrics.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from sarra.codec.timestamps import parse_timestamp
from sarra.errors import MessageError
from sarra.notice import Notice

log = logging.getLogger(__name__)

#: version of the metrics document
SCHEMA = 1
#: seconds between two writes by a :class:`MetricsWriter`
WRITE_EVERY = 5.0
#: distinct sources counted by name; further ones are counted under :data:`OTHER_SOURCES`
MAX_SOURCES = 100
OTHER_SOURCES = "(other)"
#: the source of a notice without a ``source`` header
NO_SOURCE = "(none)"
#: not inherited by children where the platform has the flag (POSIX)
_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)
#: outcome codes counted as files placed (their bytes counted too)
TRANSFERRED = frozenset({201, 205})


def metrics_name(component: str, config: str, instance: int) -> str:
    """File name of an instance's metrics (``instance`` at least 3 digits, as pid files)."""
    return f"sr_{component}_{config}_{instance:03d}.metrics.json"


class FlowMetrics:
    """Counters of one instance's flow. Call the update methods from one thread."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.started = clock()
        self.notices_in = 0
        self.notices_out = 0
        self.files = 0
        self.bytes = 0
        self.rejects = 0
        self.blocks = 0
        self.malformed = 0
        #: outcomes with a code of 400 or more
        self.failures = 0
        #: outcome code -> count
        self.codes: dict[int, int] = {}
        #: source -> outcome code -> count
        self.by_source: dict[str, dict[int, int]] = {}
        self.last_activity: float | None = None
        self.lag_last: float | None = None
        self._lag_max: float | None = None

    # -- updates (flow thread) ------------------------------------------------------------

    def received(self, notice: Notice) -> None:
        """A notice was taken in: count it, and measure its lag."""
        now = self._clock()
        self.notices_in += 1
        self.last_activity = now
        try:
            lag = now - parse_timestamp(notice.pubtime)
        except MessageError:
            return
        self.lag_last = lag
        if self._lag_max is None or lag > self._lag_max:
            self._lag_max = lag

    def malformed_in(self) -> None:
        """A message that is not a notice was taken in (reported 417)."""
        self.malformed += 1
        self.last_activity = self._clock()

    def settled(
        self, notice: Notice, code: int, size: int, *, block: bool = False, whole: bool = True
    ) -> None:
        """An outcome: ``code`` 0 is a rejection (masks); 201/205 a file or a block
        (``block``) placed of ``size`` bytes, ``whole`` when it made a file complete; every
        code but 0 is also counted by the notice's source."""
        self.last_activity = self._clock()
        self.codes[code] = self.codes.get(code, 0) + 1
        if code == 0:
            self.rejects += 1
            return
        if code >= 400:
            self.failures += 1
        elif code in TRANSFERRED:
            self.bytes += size
            self.blocks += block
            self.files += whole
        source = notice.headers.get("source") or NO_SOURCE
        counts = self.by_source.get(source)
        if counts is None:
            if len(self.by_source) >= MAX_SOURCES:
                source = OTHER_SOURCES
                counts = self.by_source.setdefault(source, {})
            else:
                counts = self.by_source[source] = {}
        counts[code] = counts.get(code, 0) + 1

    def published(self, count: int) -> None:
        """``count`` notices were published (and confirmed) downstream."""
        self.notices_out += count

    # -- the document ---------------------------------------------------------------------

    def snapshot(self, **state: Any) -> dict[str, Any]:
        """The metrics document; ``state`` adds the gauges the caller knows (retry queue,
        connection, reassembly...). Starts a new lag window."""
        now = self._clock()
        lag_max, self._lag_max = self._lag_max, None
        return {
            "schema": SCHEMA,
            "pid": os.getpid(),
            "time": now,
            "started": self.started,
            "notices": {"in": self.notices_in, "out": self.notices_out},
            "malformed": self.malformed,
            "files": self.files,
            "blocks": self.blocks,
            "bytes": self.bytes,
            "rejects": self.rejects,
            "failures": self.failures,
            "codes": {str(k): v for k, v in sorted(self.codes.items())},
            "by_source": {
                src: {str(k): v for k, v in sorted(c.items())}
                for src, c in sorted(self.by_source.items())
            },
            "last_activity": self.last_activity,
            "lag": {"last": self.lag_last, "max": lag_max},
            **state,
        }


class _Poster(Protocol):
    """What :func:`poster_snapshot` reads of a :class:`sarra.flow.posting.Publisher`."""

    published: int
    items_posted: int
    bytes_posted: int
    rejected: int
    suppressed: int

    @property
    def waiting(self) -> int: ...

    def outage_seconds(self, now: float | None = None) -> float: ...


def poster_snapshot(metrics: FlowMetrics, publisher: _Poster, connected: bool) -> dict[str, Any]:
    """The metrics document of a posting component (sr_post, sr_watch, sr_poll): notices out
    (confirmed by the broker), files and bytes announced, notices the masks rejected, notices
    waiting for the broker as the retry depth. Called from the writer's thread: it only reads
    the publisher's integers."""
    if publisher.published != metrics.notices_out:
        metrics.last_activity = time.time()
    metrics.notices_out = publisher.published
    metrics.files = publisher.items_posted
    metrics.bytes = publisher.bytes_posted
    metrics.rejects = publisher.rejected
    return metrics.snapshot(
        retry={"depth": publisher.waiting, "oldest_age": None},
        connection="connected" if connected else "disconnected",
        suppressed=publisher.suppressed,
        outage_seconds=publisher.outage_seconds(),
    )


class MetricsWriter:
    """Rewrites an instance's metrics file every :data:`WRITE_EVERY` seconds from
    ``document()`` in a thread of its own, for the components without a consuming loop
    (post, watch, poll, report, log): ``state`` is ``starting`` at :meth:`start`, ``running``
    in between, ``stopped`` at :meth:`stop`. A ``document`` that raises is logged and the
    previous file stays: metrics never stop a component."""

    def __init__(
        self, path: Path, document: Callable[[], dict[str, Any]], every: float | None = None
    ) -> None:
        self.path = path
        self.document = document
        self.every = WRITE_EVERY if every is None else every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write(self, state: str) -> bool:
        try:
            doc = dict(self.document())
        except Exception:
            log.exception("metrics of %s not written", self.path.name)
            return False
        doc["state"] = state
        return write_metrics(self.path, doc)

    def start(self) -> MetricsWriter:
        self.write("starting")

        def run() -> None:
            while not self._stop.wait(self.every):
                self.write("running")

        self._thread = threading.Thread(target=run, name="metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.write("stopped")

    def __enter__(self) -> MetricsWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def open_reassemblies(state_dir: Path) -> list[dict[str, Any]]:
    """Files being assembled from blocks under ``state_dir`` (the part trackers' open
    records): path, blocks present and expected, last update. Unreadable records are
    skipped (a tracker may be rewriting one)."""
    found: list[dict[str, Any]] = []
    parts = state_dir / "parts"
    try:
        roots = list(parts.iterdir())
    except OSError:
        return found
    for root in roots:
        try:
            names = sorted((root / "open").iterdir())
        except OSError:
            continue
        for path in names:
            if path.suffix != ".json":
                continue
            try:
                rec = json.loads(path.read_bytes())
                present = bytes.fromhex(rec["present"])
                found.append(
                    {
                        "path": str(rec["final_rel"]),
                        "blocks": int(rec["block_count"]),
                        "present": sum(bin(b).count("1") for b in present),
                        "updated": float(rec.get("updated") or 0.0),
                    }
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return found


def write_metrics(path: Path, document: Mapping[str, Any]) -> bool:
    """Replace ``path`` with ``document`` atomically; False (and nothing changed) on error."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        data = json.dumps(document, separators=(",", ":")).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except (OSError, TypeError, ValueError):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
    return True


def read_metrics(path: Path) -> dict[str, Any] | None:
    """The metrics document in ``path``, or None when missing or unreadable."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None
