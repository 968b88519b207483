"""Per-file event lines: the text form and the JSON keys of one event."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sarra.cli.logs import remove_handler, setup_file_logging
from sarra.flow.events import log_event


def _logged(tmp_path: Path, json_lines: bool) -> list[str]:
    path = tmp_path / ("j.log" if json_lines else "t.log")
    handler = setup_file_logging(
        path, context="sender/out/002", loglevel="info", json_lines=json_lines
    )
    log = logging.getLogger("sarra.test.events")
    try:
        log_event(log, logging.INFO, "sent", "dir/a b.txt", 201, "alice", "to sftp", size=7)
        url = "sftp://u:Pw0rd@host/x"
        log_event(log, logging.ERROR, "failed", "dir/c.txt", 499, None, f"cannot reach {url}")
        log_event(log, logging.DEBUG, "copied", "dir/d.txt", 201, "bob")  # below the level
    finally:
        remove_handler(handler)
    return path.read_text().splitlines()


def test_text_lines_carry_event_code_relpath_and_source(tmp_path: Path) -> None:
    sent, failed = _logged(tmp_path, json_lines=False)
    assert sent.endswith(
        '[INFO] sender/out/002 sarra.test.events: sent code=201 relPath="dir/a b.txt" '
        "source=alice: to sftp"
    )
    assert failed.endswith(
        "[ERROR] sender/out/002 sarra.test.events: failed code=499 relPath=dir/c.txt source=-: "
        "cannot reach sftp://u:***@host/x"
    )


def test_json_lines_carry_the_fields_as_keys_of_their_own(tmp_path: Path) -> None:
    sent, failed = (json.loads(line) for line in _logged(tmp_path, json_lines=True))
    assert sent["context"] == "sender/out/002"
    assert (sent["event"], sent["relPath"], sent["code"], sent["source"], sent["bytes"]) == (
        "sent",
        "dir/a b.txt",
        201,
        "alice",
        7,
    )
    assert (failed["event"], failed["code"], failed["source"], failed["level"]) == (
        "failed",
        499,
        None,
        "ERROR",
    )
    assert "bytes" not in failed
    assert "Pw0rd" not in json.dumps(failed) and "u:***@host" in failed["message"]
