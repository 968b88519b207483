"""sr2's ``msg_rename_whatfn``: drop everything from the first ``:`` of each file name, as a
Sundew ``WHATFN`` sender did (``CACN00_CWAO_081900:pxatx:CWAO:...`` becomes
``CACN00_CWAO_081900``). The directories are kept."""

from __future__ import annotations

from typing import Any


def on_message(work: Any) -> None:
    if not work.dest_rel:
        return
    folder, slash, name = work.dest_rel.rpartition("/")
    stem = name.split(":", 1)[0]
    if stem:
        work.dest_rel = f"{folder}{slash}{stem}"
