"""sr2's ``file_rxpipe`` (sr3 ``work.rxpipe``): write the path of each file placed, one per
line, to the named pipe ``file_rxpipe_name`` (sr3: ``rxpipe_name``), for a program that
reads the pipe (``tail -f PIPE``) instead of being a plugin.

The pipe is opened when the instance starts (creating it with ``mkfifo`` if it does not
exist, which blocks until a reader opens it, as in sr2) and closed when it stops.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from typing import IO, Any

from sarra.errors import ConfigError

_pipe: dict[str, IO[str]] = {}
_lock = threading.Lock()


def on_start(config: Any) -> None:
    name = config.file_rxpipe_name
    if not name:
        raise ConfigError("file_rxpipe needs the path of the named pipe", option="file_rxpipe_name")
    path = os.path.expanduser(str(name))
    if sys.platform == "win32":
        raise ConfigError(
            "file_rxpipe needs a POSIX named pipe (mkfifo), which Windows does not have",
            option="file_rxpipe_name",
        )
    if not os.path.exists(path):
        os.mkfifo(path, 0o600)
    elif not stat.S_ISFIFO(os.stat(path).st_mode):
        raise ConfigError(f"{path} exists and is not a named pipe", option="file_rxpipe_name")
    _pipe["out"] = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed in on_stop)


def on_file(work: Any) -> None:
    with _lock:
        out = _pipe["out"]
        out.write(f"{work.local_path}\n")
        out.flush()


def on_stop(config: Any) -> None:
    out = _pipe.pop("out", None)
    if out is not None:
        out.close()
