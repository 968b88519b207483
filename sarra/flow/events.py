"""Per-file event lines: the same fields, one line per event, in text and JSON logs.

Every per-file event a component logs goes through :func:`log_event`, which writes one
record whose message is, in the text format::

    <event> code=<code> relPath=<relPath> source=<source>[: <detail>]

(``relPath`` JSON-quoted when it holds blanks or quotes, ``code=-`` and ``source=-`` when
there is none), and attaches the fields to the record as :data:`EVENT_ATTR`, so that the
JSON lines formatter (``log_format json``, :class:`sarra.cli.logs.JsonLineFormatter`) writes
``event``, ``relPath``, ``code``, ``source`` (and ``bytes`` where known) as keys of their
own, next to ``context`` (component/config/instance), ``message`` and the rest.

Events (see docs/cli-verbs.md, "Log lines"):

==========  =======  ==========================================================
event       level    when
==========  =======  ==========================================================
downloaded  info     a file or block placed by subscribe/sarra (201, 205)
sent        info     a file delivered by sr_sender (201)
copied      debug    a notice copied by sr_shovel (201)
failed      error    any outcome code >= 400 (retried from disk or given up)
rejected    info     a notice rejected by the masks, with ``log_reject on``
report      info     a report routed by sr_report (to ``xr_<source>`` or a peer)
==========  =======  ==========================================================
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sarra.flow.work import WorkItem

#: the LogRecord attribute holding an event's fields
EVENT_ATTR = "sr_event"

#: a blank (``str.isspace``: ``\s`` of a str pattern is the same test) or a double quote
_NEEDS_QUOTES = re.compile(r'[\s"]')


def _word(value: object) -> str:
    if value is None or value == "":
        return "-"
    text = str(value)
    if _NEEDS_QUOTES.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


def log_event(
    logger: logging.Logger,
    level: int,
    event: str,
    rel_path: str,
    code: int | None,
    source: str | None,
    detail: str = "",
    *,
    size: int | None = None,
    stacklevel: int = 2,
) -> None:
    """Log one per-file event (see the module's table).

    ``stacklevel`` as for :meth:`logging.Logger.log`, counted from the caller of this function.
    """
    if not logger.isEnabledFor(level):
        return
    fields: dict[str, Any] = {
        "event": event,
        "relPath": rel_path,
        "code": code,
        "source": source or None,
    }
    if size is not None:
        fields["bytes"] = size
    text = f"{event} code={_word(code)} relPath={_word(rel_path)} source={_word(source)}"
    if detail:
        text = f"{text}: {detail}"
    logger.log(level, "%s", text, extra={EVENT_ATTR: fields}, stacklevel=stacklevel)


def log_failure(logger: logging.Logger, item: WorkItem) -> None:
    """The ``failed`` event for a settled item whose code is 400 or more (nothing otherwise)."""
    if item.code is None or item.code < 400:
        return
    notice = item.notice
    log_event(
        logger,
        logging.ERROR,
        "failed",
        notice.path,
        item.code,
        notice.header("source"),
        item.message,
        stacklevel=3,
    )
