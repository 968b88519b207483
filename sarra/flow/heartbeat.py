"""The heartbeat file of a running instance: its mtime says the instance is alive, its one
line says what ``status`` should show beside "running" (empty when all is well).

Contract: the file is given a fixed size (:data:`SIZE`) with its blocks reserved the first
time it is written, and every later write overwrites that region in place. A state file
system that has since filled up therefore still takes the heartbeat and its note (e.g.
"paused: retry queue full"), which is exactly when the operator needs to see it. Should even
that fail, the mtime alone is updated.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from sarra.osport import O_BINARY, O_CLOEXEC, pwrite

#: bytes reserved for the note (one line, padded with spaces)
SIZE = 512


class HeartbeatFile:
    """Writes an instance's heartbeat (``beat``); ``read_note`` reads it back for ``status``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def beat(self, note: str = "") -> None:
        """Mark the instance alive now, with ``note`` (one line, cut to fit) or none."""
        line = " ".join(note.split()).encode("utf-8", "replace")[: SIZE - 1]
        data = line.decode("utf-8", "ignore").encode("utf-8").ljust(SIZE - 1) + b"\n"
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | O_CLOEXEC | O_BINARY, 0o644)
        except OSError:
            return  # the state directory is gone or unwritable: nothing to show it on
        try:
            if sys.platform != "win32" and os.fstat(fd).st_blocks * 512 < SIZE:
                with contextlib.suppress(OSError):
                    os.posix_fallocate(fd, 0, SIZE)
            try:
                pwrite(fd, data, 0)
            except OSError:
                # no room at all: at least show the instance is alive
                os.utime(self.path if sys.platform == "win32" else fd)
        finally:
            os.close(fd)


def read_note(path: Path) -> str:
    """The note of a heartbeat file ("" when none, or when the file is missing)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(SIZE)
    except OSError:
        return ""
    return head.decode("utf-8", "replace").strip()
