"""Security events that components record for ``sr_police`` to report.

The file is ``<state_dir>/police/events.jsonl``: one JSON object per line, appended::

    {"time": 1764000000.123, "kind": "forged_source", "user": "alice",
     "exchange": "xs_alice", "detail": "source header said 'bob'", "component": "sarra"}

``time`` (epoch seconds) and ``kind`` are always present; ``user``, ``exchange`` and
``detail`` should be; other string fields may be added. Kinds in use:

* ``forged_source``: a notice on ``xs_<u>`` claimed another ``source`` (overwritten, 9.3);
* ``forged_report``: a report on ``xs_<u>`` claimed to come from another user;
* ``unknown_source``: a notice on an ``xs_*`` exchange no declared user owns (not forwarded);
* ``cluster_loop``: a notice from another pump claimed the local cluster (dropped).
* ``private_refused``, ``private_bad_password``: the private-data authorizer refused a pump
  user who is not a reader, or a wrong password (:mod:`sarra.police.private`).

Each record is one ``write`` on a file opened with ``O_APPEND``, so several processes may
append at once without interleaving lines. Recording never raises: a component must not
fail a notice because the audit trail cannot be written (it logs a warning instead).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sarra.config import paths

log = logging.getLogger(__name__)

FORGED_SOURCE = "forged_source"
FORGED_REPORT = "forged_report"
UNKNOWN_SOURCE = "unknown_source"
CLUSTER_LOOP = "cluster_loop"
_KIND = re.compile(r"[a-z][a-z0-9_]{0,63}")
_MAX_FIELD = 1000


def events_path(env: Mapping[str, str] | None = None) -> Path:
    """``<state_dir>/police/events.jsonl``."""
    return paths.state_dir("police", env=env) / "events.jsonl"


def record_event(
    kind: str,
    *,
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    now: float | None = None,
    **fields: str | int | None,
) -> bool:
    """Append one event (``kind`` plus ``fields``) to the events file; True if written.

    ``path`` replaces the default file (``events_path(env)``). Values are stored as text,
    each cut to 1000 characters; ``None`` values are left out.
    """
    if not _KIND.fullmatch(kind):
        log.warning("police event with a bad kind %r not recorded", kind)
        return False
    record: dict[str, Any] = {"time": round(time.time() if now is None else now, 3), "kind": kind}
    for key, value in fields.items():
        if value is not None and key not in record:
            record[key] = str(value)[:_MAX_FIELD]
    line = (json.dumps(record, ensure_ascii=True, sort_keys=True) + "\n").encode()
    target = path or events_path(env)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("cannot record police event %s in %s: %s", kind, target, exc)
        return False
    return True


def read_events(path: Path, *, since: float | None = None) -> list[dict[str, Any]]:
    """The events in ``path`` (missing file: none), oldest first; bad lines are skipped.

    ``since`` keeps only events at or after that epoch time.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    found: list[dict[str, Any]] = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
            continue
        stamp = record.get("time")
        if not isinstance(stamp, int | float):
            continue
        if since is None or stamp >= since:
            found.append(record)
    return found
