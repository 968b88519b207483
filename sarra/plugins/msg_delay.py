"""sr2's ``msg_delay``: hold each notice until it is ``msg_delay`` seconds old (default 300).

sr2 put a notice that was too young back in its retry queue and looked again later; sarra
holds it in the flow thread for the time it still needs, which gives the same result for
notices that arrive in order: none is processed before it is ``msg_delay`` old. An instance
asked to stop while it holds a notice stops once the wait ends (at most ``msg_delay``), or is
killed by the stop's escalation; the notice, not acked, is delivered again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sarra.codec.timestamps import parse_timestamp

log = logging.getLogger(__name__)

_delay = {"seconds": 300.0}
#: replaced by tests
sleep = time.sleep


def on_start(config: Any) -> None:
    _delay["seconds"] = float(config.msg_delay)


def hold_until_old(what: str, since: float, delay: float) -> None:
    """Sleep until ``since`` (epoch seconds) is ``delay`` seconds ago."""
    wait = delay - (time.time() - since)
    if wait > 0:
        log.info("%s is not %gs old yet: holding it %.1fs", what, delay, wait)
        sleep(wait)


def on_message(work: Any) -> None:
    notice = work.notice
    hold_until_old(f"notice {notice.path}", parse_timestamp(notice.pubtime), _delay["seconds"])
