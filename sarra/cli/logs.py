"""Logging of instances: file naming, rotation, format, secret masking.

A daemon instance logs to ``<log_dir>/sr_<component>_<config>_<NNN>.log``, rotated at
midnight keeping ``logrotate`` old files. Its stdout and stderr follow the current file across
rotations, so tracebacks and stray prints land next to the log lines. The foreground instance
logs to the console. Every line carries time, level and ``component/config/instance``, and any
``scheme://user:password@`` in a line is masked.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import TextIO

from sarra.flow.events import EVENT_ATTR

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")

LOG_FORMAT = "%(asctime)s [%(levelname)s] %(sr_context)s %(name)s: %(message)s"
#: on a stderr that is systemd's journal, which stamps every line itself
JOURNAL_FORMAT = "[%(levelname)s] %(sr_context)s %(name)s: %(message)s"


def instance_tag(instance: int) -> str:
    """Instance number as used in file names: at least 3 digits (``007``, ``123``, ``1000``)."""
    return f"{instance:03d}"


def log_path(log_dir: Path, component: str, config: str, instance: int) -> Path:
    """Path of the log file of one instance."""
    return log_dir / f"sr_{component}_{config}_{instance_tag(instance)}.log"


def redact(text: str) -> str:
    """Mask passwords embedded in URLs (``amqp://u:secret@h`` -> ``amqp://u:***@h``)."""
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


class RedactingFormatter(logging.Formatter):
    """Formats with :data:`LOG_FORMAT` and masks URL passwords in the whole line."""

    def __init__(self, context: str, fmt: str = LOG_FORMAT) -> None:
        super().__init__(fmt)
        self._context = context

    def format(self, record: logging.LogRecord) -> str:
        record.sr_context = self._context
        return redact(super().format(record))


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line (``log_format json``): ``time`` (UTC, ISO 8601 with
    milliseconds), ``level``, ``context`` (``component/config/instance``), ``logger``,
    ``message`` and, after an exception, ``exception``; for a per-file event
    (:mod:`sarra.flow.events`) also ``event``, ``relPath``, ``code``, ``source`` and ``bytes``
    where known; URL passwords masked in every value."""

    def __init__(self, context: str) -> None:
        super().__init__()
        self._context = context

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, object] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "context": self._context,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        event = getattr(record, EVENT_ATTR, None)
        if isinstance(event, dict):  # a per-file event: its fields as keys of their own
            for key, value in event.items():
                line.setdefault(key, redact(value) if isinstance(value, str) else value)
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


def _stdio_onto(path: str | os.PathLike[str], mode: int = 0o600) -> None:
    """Point file descriptors 1 and 2 at ``path``, appending (``sys.stdout``/``sys.stderr``
    are flushed first, and made if the process had none)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0), mode)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)
    if sys.stdout is None:  # (a Windows process started without standard handles)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    if sys.stderr is None:
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)


def stdio_into_log(path: Path, mode: int = 0o600) -> None:
    """Send this process's stdout and stderr (prints, tracebacks, start-up errors) to its log
    ``path``: what the POSIX spawner does for a daemon instance, done by a Windows instance
    itself (it is started detached, with no output of its own, as Wine's Windows Python cannot
    start with a file as its standard output)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _stdio_onto(path, mode)


def _level(loglevel: str) -> int:
    value = logging.getLevelName(loglevel.upper())
    return value if isinstance(value, int) else logging.INFO


def setup_file_logging(
    path: Path,
    *,
    context: str,
    loglevel: str = "info",
    backups: int = 5,
    mode: int = 0o600,
    follow_stdio: bool = True,
    json_lines: bool = False,
) -> logging.Handler:
    """Route the root logger into ``path`` with midnight rotation; returns the handler.

    Args:
        path: the instance's log file; given ``mode`` (``chmod_log``), as is each new file
            after a rotation.
        context: ``component/config/instance`` shown on every line.
        loglevel: a logging level name (``debug``, ``info``, ``warning``...).
        backups: rotated files kept (the ``logrotate`` option).
        follow_stdio: also point fds 1 and 2 at the current file after each rotation.
        json_lines: one JSON object per line (:class:`JsonLineFormatter`, ``log_format json``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, mode))
    # logging.handlers (and pickle, queue...) only for daemons: sr_post logs to the console
    from sarra.cli.logfile import ModeFileHandler, StdioFollowingHandler

    cls = StdioFollowingHandler if follow_stdio else ModeFileHandler
    handler = cls(
        path, file_mode=mode, when="midnight", backupCount=max(backups, 0), encoding="utf-8"
    )
    _install(handler, context, loglevel)
    if json_lines:
        handler.setFormatter(JsonLineFormatter(context))
    return handler


def setup_console_logging(
    *, context: str, loglevel: str = "info", json_lines: bool = False
) -> logging.Handler:
    """Route the root logger to stderr (foreground instance); returns the handler. Lines carry
    no time stamp when stderr is systemd's journal (:func:`stderr_is_journal`)."""
    handler = logging.StreamHandler(sys.stderr)
    _install(handler, context, loglevel, JOURNAL_FORMAT if stderr_is_journal() else LOG_FORMAT)
    if json_lines:
        handler.setFormatter(JsonLineFormatter(context))
    return handler


def stderr_is_journal(environ: dict[str, str] | None = None) -> bool:
    """True when stderr is the stream systemd connected to its journal: ``JOURNAL_STREAM``
    (``device:inode``) names the file stderr is (systemd.exec(5))."""
    stream = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    try:
        info = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return bool(stream) and stream == f"{info.st_dev}:{info.st_ino}"


def _install(handler: logging.Handler, context: str, loglevel: str, fmt: str = LOG_FORMAT) -> None:
    handler.setFormatter(RedactingFormatter(context, fmt))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(_level(loglevel))


class RedactingStream(io.TextIOBase):
    """A text stream that masks URL passwords before writing to ``target``.

    Installed as ``sys.stdout``/``sys.stderr`` of a daemon instance, so prints and tracebacks
    in its log are masked like log lines.
    """

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self._target = target

    def write(self, text: str) -> int:
        self._target.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    def writable(self) -> bool:
        return True


def remove_handler(handler: logging.Handler) -> None:
    """Detach and close a handler made by the setup functions."""
    logging.getLogger().removeHandler(handler)
    handler.close()
