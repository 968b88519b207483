"""A per-instance journal of in-flight files, so a killed instance leaves no leftovers.

Each instance notes every in-flight file it creates and finishes (one JSON line each,
flushed to the kernel, which survives SIGKILL). At start, the instance with the same number
removes the in-flight files its predecessor created but never finished, then starts a fresh
journal. The file names carry a writer token, so nothing else can be removed by mistake;
removal goes through :class:`~sarra.localfs.confined.SafeRoot` and is confined like any write.

The journal stays small however long the instance runs: past ``max_bytes`` it is emptied
when nothing is in flight, else rewritten with only the files still in flight (written to a
new file, then renamed over the journal, so a kill at any point leaves a complete journal).
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

    def __init__(self, path: Path, max_bytes: int = 1 << 20) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._open: set[tuple[str, str]] = set()
        self._file: int | None = None
        self._size = 0

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
        line = _line(created, root, rel)
        with self._lock:
            if created:
                self._open.add((root, rel))
            else:
                self._open.discard((root, rel))
            if self._file is None:
                self._file = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                self._size = os.fstat(self._file).st_size
            os.write(self._file, line)
            self._size += len(line)
            if self._size > self.max_bytes:
                self._compact()

    def _compact(self) -> None:
        """Drop the history of finished files (lock held): truncate when nothing is in
        flight, else write what is to a new journal and rename it over the old one."""
        assert self._file is not None
        if not self._open:
            os.ftruncate(self._file, 0)
            self._size = 0
            return
        data = b"".join(_line(True, root, rel) for root, rel in self._open)
        new = self.path.with_name(self.path.name + ".new")
        fd = os.open(new, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.replace(new, self.path)
        except BaseException:
            os.close(fd)
            raise
        os.close(self._file)
        self._file, self._size = fd, len(data)

    def _reset(self) -> None:
        with self._lock:
            if self._file is not None:
                os.close(self._file)
                self._file = None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(b"")
            self._size = 0

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                os.close(self._file)
                self._file = None


def _line(created: bool, root: str, rel: str) -> bytes:
    return (json.dumps([created, root, rel], ensure_ascii=False) + "\n").encode(
        "utf-8", "surrogateescape"
    )
