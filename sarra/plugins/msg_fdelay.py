"""sr2's ``msg_fdelay`` (sr3 ``filter.fdelay``): hold each notice until it is ``msg_fdelay``
seconds old (default 300) and then, if the file already exists locally, until that file was
last modified ``msg_fdelay`` seconds ago. As in sr2, notices of removals (sum ``R``) are
dropped. Stopping while a notice is held waits as for ``msg_delay``.
"""

from __future__ import annotations

import os
from typing import Any

from sarra.codec.timestamps import parse_timestamp
from sarra.plugins import msg_delay

_delay = {"seconds": 300.0}


def on_start(config: Any) -> None:
    _delay["seconds"] = float(config.msg_fdelay)


def on_message(work: Any) -> bool:
    notice = work.notice
    if notice.checksum.letter == "R":
        return False
    delay = _delay["seconds"]
    msg_delay.hold_until_old(f"notice {notice.path}", parse_timestamp(notice.pubtime), delay)
    local = work.local_path
    try:
        mtime = os.stat(local).st_mtime if local else None
    except OSError:
        mtime = None
    if mtime is not None:
        msg_delay.hold_until_old(f"file {local}", mtime, delay)
    return True
