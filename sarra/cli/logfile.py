"""The rotating file handlers of daemon instances (see :func:`sarra.cli.logs.setup_file_logging`).

A module of their own so that a console run (``sr_post``, ``foreground``) does not import
:mod:`logging.handlers`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path
from typing import Any


class ModeFileHandler(TimedRotatingFileHandler):
    """Gives the current log file, and each one started by a rollover, the ``chmod_log``
    mode (the spawner created the first file 600 for the instance's stdout)."""

    def __init__(self, path: Path, *, file_mode: int, **kw: Any) -> None:
        self._file_mode = file_mode
        super().__init__(path, **kw)

    def _open(self) -> Any:
        stream = super()._open()
        with contextlib.suppress(PermissionError):  # a file another user created
            os.chmod(self.baseFilename, self._file_mode)
        return stream


class StdioFollowingHandler(ModeFileHandler):
    """Moves file descriptors 1 and 2 onto the new file after each rollover."""

    def doRollover(self) -> None:
        if sys.platform == "win32":  # fds 1 and 2 hold the file: Windows refuses to rename it
            from sarra.cli.logs import _stdio_onto

            _stdio_onto(os.devnull)
        super().doRollover()
        if self.stream is not None:
            fd = self.stream.fileno()
            os.dup2(fd, 1)
            os.dup2(fd, 2)
