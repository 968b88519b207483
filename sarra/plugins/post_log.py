"""sr2's ``post_log``: log each notice about to be posted (``on_post post_log``)."""

from __future__ import annotations

import logging
from typing import Any

from sarra.plugins.msg_log import describe

log = logging.getLogger(__name__)


def on_post(work: Any) -> None:
    log.info("post_log posting: %s", describe(work))
