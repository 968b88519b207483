"""A per-instance journal of in-flight files, so a killed instance leaves no leftovers.

Each instance notes every in-flight file it creates and finishes (one JSON line each,
flushed to the kernel, which survives SIGKILL). At start, the instance with the same number
removes the in-flight files its predecessor created but never finished, then starts a fresh
journal. The file names carry a writer token, so nothing else can be removed by mistake;
removal goes through :class:`~sarra.localfs.confined.SafeRoot` and is confined like any write.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


class InflightJournal:
    """Records (root, in-flight path) pairs as they are created and finished."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._open: set[tuple[str, str]] = set()
        self._file: int | None = None

    def recover(self, remove: Callable[[str, str], bool]) -> list[tuple[str, str]]:
        """Remove what a previous run left in flight; returns the pairs it handled.

        ``remove(root, rel)`` deletes one leftover (returning whether it existed). The
        journal is then emptied.
        """
        pending: dict[tuple[str, str], None] = {}
        try:
            text = self.path.read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            text = ""
        for line in text.splitlines():
            try:
                created, root, rel = json.loads(line)
            except (ValueError, TypeError):
                continue  # a torn last line
            key = (str(root), str(rel))
            if created:
                pending[key] = None
            else:
                pending.pop(key, None)
        handled = list(pending)
        for root, rel in handled:
            try:
                if remove(root, rel):
                    log.info("removed leftover in-flight file %s/%s", root, rel)
            except Exception as e:  # a leftover we cannot remove must not stop the instance
                log.warning("cannot remove leftover in-flight file %s/%s: %s", root, rel, e)
        self._reset()
        return handled

    def note(self, root: str, rel: str, created: bool) -> None:
        """Record that ``rel`` under ``root`` was created (True) or finished (False)."""
        line = (json.dumps([created, root, rel], ensure_ascii=False) + "\n").encode(
            "utf-8", "surrogateescape"
        )
        with self._lock:
            if created:
                self._open.add((root, rel))
            else:
                self._open.discard((root, rel))
            if self._file is None:
                self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self._file, line)
            if not self._open and os.fstat(self._file).st_size > 1 << 20:
                os.ftruncate(self._file, 0)  # nothing in flight: the history is useless

    def _reset(self) -> None:
        with self._lock:
            if self._file is not None:
                os.close(self._file)
                self._file = None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(b"")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                os.close(self._file)
                self._file = None
