"""sr2's ``msg_renamer`` and ``msg_rename_dmf``: append ``:YYYYmmddHHMMSS`` (local time of
receipt) to the name of each file, as Sundew's receivers did."""

from __future__ import annotations

import time
from typing import Any


def on_message(work: Any) -> None:
    if work.dest_rel:
        work.dest_rel += time.strftime(":%Y%m%d%H%M%S", time.localtime())
