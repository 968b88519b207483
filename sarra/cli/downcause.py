"""Why an instance is down (or not connected): what ``sr status`` and ``sr web`` show.

Two sources, in this order:

- the **exit note** an instance leaves when it ends (:func:`write_exit_note`, called by
  :func:`sarra.cli.main.instance_main`): ``<stem>.exit.json`` next to its pid file, holding
  ``time``, ``pid``, ``status`` (the exit status) and ``reason``, a sentence naming the cause:
  ``configuration error: ...``, ``the broker refused access (bad credentials or
  permissions): ...``, ``cannot connect to the broker: ...``, ``crashed: <Type>: ...``,
  ``stopped on request``. A new start removes the previous note.
- the instance's **log**: its last ``ERROR``/``CRITICAL`` line (``WARNING`` too for an
  instance that runs but is not connected, e.g. ``broker connection failed (...)``), read
  from the last :data:`TAIL_BYTES` of the file, text or ``log_format json``.

A process killed outright (SIGKILL, power loss) leaves no note: its stale pid file says so
(``gone without a clean exit``) with the log's last complaint. Every reason is redacted
(:func:`sarra.cli.logs.redact`) and cut to :data:`MAX_REASON` characters.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from sarra.cli.instances import Instance, State
from sarra.cli.logs import redact
from sarra.errors import AccessRefused, BrokerError, ConfigError

#: how much of the end of a log is read for its last complaint
TAIL_BYTES = 64 * 1024
MAX_REASON = 400
_LEVELS_DOWN = ("ERROR", "CRITICAL")
_LEVELS_DISCONNECTED = ("WARNING", "ERROR", "CRITICAL")


def exit_note_path(inst: Instance) -> Path:
    return inst.state_dir / f"{inst.stem}.exit.json"


def reason_of(exc: BaseException) -> str:
    """A sentence naming the cause of an instance's end by ``exc``."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ConfigError):
        why = f"configuration error: {text}"
    elif isinstance(exc, AccessRefused):
        why = f"the broker refused access (bad credentials or permissions): {text}"
    elif isinstance(exc, BrokerError):
        why = f"cannot connect to the broker: {text}"
    else:
        why = f"crashed: {type(exc).__name__}: {text}"
    return _clip(why)


def _clip(text: str) -> str:
    text = redact(" ".join(text.split()))
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def write_exit_note(inst: Instance, status: int, reason: str) -> None:
    """Leave the exit note (atomically); never raises: the exit must go on."""
    doc = {"time": time.time(), "pid": os.getpid(), "status": status, "reason": _clip(reason)}
    path = exit_note_path(inst)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def clear_exit_note(inst: Instance) -> None:
    with contextlib.suppress(OSError):
        exit_note_path(inst).unlink()


def read_exit_note(inst: Instance) -> dict[str, Any] | None:
    try:
        doc = json.loads(exit_note_path(inst).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("reason"), str):
        return None
    return doc


def last_complaint(log: Path, levels: tuple[str, ...] = _LEVELS_DOWN) -> str | None:
    """The message of the last log line at one of ``levels`` (text or JSON lines), with its
    time as the line gives it; None if there is none in the log's tail."""
    try:
        with log.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_BYTES))
            tail = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("level") in levels:
                return _clip(f"{rec.get('time', '')} {rec.get('message', '')}".strip())
            continue
        for level in levels:
            marker = f" [{level}] "
            if marker in line:
                stamp, _, rest = line.partition(marker)
                # rest: "<context> <logger>: <message>"
                _, sep, message = rest.partition(": ")
                return _clip(f"{stamp[:19]} {message if sep else rest}")
    return None


def why_down(inst: Instance, state: State, connection: str | None = None) -> str | None:
    """Why ``inst`` is not running (or, running, not ``connected``); None when it is fine
    or nothing tells."""
    if state is State.RUNNING:
        if connection in (None, "connected"):
            return None
        complaint = last_complaint(inst.log_path, _LEVELS_DISCONNECTED)
        return f"not connected: {complaint}" if complaint else "not connected to its broker yet"
    note = read_exit_note(inst)
    if state is State.STALE:
        if note is not None:
            return f"{note['reason']} (exit status {note.get('status')})"
        complaint = last_complaint(inst.log_path)
        gone = "process gone without a clean exit (killed or crashed)"
        return f"{gone}; last error: {complaint}" if complaint else gone
    if note is not None:
        status = note.get("status")
        return note["reason"] if not status else f"{note['reason']} (exit status {status})"
    return None
