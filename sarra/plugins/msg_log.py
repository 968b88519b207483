"""sr2's ``msg_log``: log each notice accepted, before any transfer (``on_message msg_log``)."""

from __future__ import annotations

import logging
import time
from typing import Any

from sarra.codec.timestamps import parse_timestamp

log = logging.getLogger(__name__)


def describe(work: Any) -> str:
    """One line about a notice: pubtime, URL, topic and lag (seconds since it was published)."""
    n = work.notice
    try:
        lag = f"{time.time() - parse_timestamp(n.pubtime):.3f}"
    except ValueError:
        lag = "?"
    return f"{n.pubtime} {n.base_url}{n.rel_path} topic={n.topic} lag={lag}"


def on_message(work: Any) -> None:
    log.info("msg_log received: %s", describe(work))
