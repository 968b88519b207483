"""relPath escaping and topic derivation (spec 2.1-2.3, 3.4).

Only a space (``%20``) and ``#`` (``%23``) are ever escaped, and only those two are decoded,
in one pass, so ``%41`` and a lone ``%`` survive unchanged.
"""

from __future__ import annotations

import functools
import logging
import re

from sarra.errors import MalformedMessage

log = logging.getLogger(__name__)

#: AMQP routing keys are short strings; sr2 cuts topics at 253 bytes (spec 2.2)
TOPIC_MAX_BYTES = 253
_ESCAPES = {"%20": " ", "%23": "#"}
_ESCAPED = re.compile("%2[03]")


def escape_relpath(path: str) -> str:
    """Write a space as ``%20`` and ``#`` as ``%23``; nothing else changes."""
    return path.replace(" ", "%20").replace("#", "%23")


def decode_relpath(wire: str) -> str:
    """Decode exactly ``%20`` and ``%23`` in a single left-to-right pass."""
    return _ESCAPED.sub(lambda m: _ESCAPES[m.group(0)], wire)


def logical_path(wire_relpath: str) -> str:
    """The logical path of a wire relPath: decoded, without its leading ``/``."""
    return decode_relpath(wire_relpath).lstrip("/")


def cut_topic(topic: str, max_bytes: int = TOPIC_MAX_BYTES) -> str:
    """Cut ``topic`` to the longest prefix of at most ``max_bytes`` UTF-8 bytes.

    The cut always falls on a character boundary, and a cut is logged as a warning.

    Raises:
        MalformedMessage: ``topic`` is not valid UTF-8 (a lone surrogate from a directory
            name that was not).
    """
    try:
        raw = topic.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise MalformedMessage(
            f"topic {ascii(topic)[:200]} is not valid UTF-8 (lone surrogate)"
        ) from exc
    if len(raw) <= max_bytes:
        return topic
    # errors="ignore" drops only the partial character at the end of the slice
    cut = raw[:max_bytes].decode("utf-8", errors="ignore")
    log.warning("topic of %d bytes cut to %d bytes: %s", len(raw), len(cut.encode()), cut)
    return cut


def topic_for(prefix: str, logical_path: str) -> str:
    """The post topic: ``prefix`` plus one escaped level per directory of ``logical_path``.

    The file name never appears; empty components are dropped; a ``.`` inside a directory
    name adds levels, as in sr2. The result is cut per :func:`cut_topic`.
    """
    return cut_topic(_joined_topic(prefix, logical_path.rpartition("/")[0]))


@functools.lru_cache(maxsize=1024)
def _joined_topic(prefix: str, directory: str) -> str:
    """``prefix`` and the escaped levels of ``directory``, before the cut. Cached: a run
    posts many files from few directories (the cut, which may log, is made every time)."""
    return ".".join([prefix, *(escape_relpath(d) for d in directory.split("/") if d)])


def report_topic(post_topic: str) -> str:
    """The report topic for a post topic: its second level replaced by ``report``."""
    levels = post_topic.split(".")
    if len(levels) < 2:
        levels.append("report")
    else:
        levels[1] = "report"
    return cut_topic(escape_relpath(".".join(levels)))
