"""sr2's ``file_log``: log each file once it is placed (``on_file file_log``)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def on_file(work: Any) -> None:
    log.info("file_log downloaded to: %s", work.local_path)
