"""sr3's ``callback log``: log each notice accepted and each file placed."""

from __future__ import annotations

import logging
from typing import Any

from sarra.plugins.msg_log import describe

log = logging.getLogger(__name__)


def on_message(work: Any) -> None:
    log.info("accepted: %s", describe(work))


def on_file(work: Any) -> None:
    log.info("downloaded: %s", work.local_path)
