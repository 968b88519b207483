"""Per-file event lines: the text form and the JSON keys of one event."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from sarra.cli.logs import remove_handler, setup_file_logging
from sarra.flow.events import EVENT_ATTR, log_event, log_failure
from sarra.flow.work import WorkItem
from sarra.notice import Checksum, Notice, frozen_headers


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


def test_a_field_is_quoted_exactly_when_it_holds_a_blank_or_a_double_quote() -> None:
    from sarra.flow.events import _word

    # every character str.isspace() knows is at or below U+3000 (ideographic space)
    assert not any(chr(i).isspace() for i in range(0x3001, 0x110000, 7))
    for c in map(chr, range(0x3001)):
        text = f"a{c}b"
        assert (_word(text) != text) == (c.isspace() or c == '"'), hex(ord(c))


def _item(code: int | None) -> WorkItem:
    sum_ = Checksum("d", "d41d8cd98f00b204e9800998ecf8427e")
    notice = Notice(
        exchange="xpublic",
        topic="v02.post.dir",
        pubtime="20240101000000.0",
        base_url="http://h",
        rel_path="/dir/a.txt",
        path="dir/a.txt",
        headers=frozen_headers({"sum": sum_.wire(), "source": "alice"}),
        checksum=sum_,
        parts=None,
    )
    return WorkItem(notice, code=code, message="gave up")


def test_log_failure_logs_failed_for_codes_of_400_and_more_at_the_callers_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("sarra.test.events")
    with caplog.at_level(logging.DEBUG, logger="sarra.test.events"):
        for code in (None, 201, 304, 399):
            log_failure(log, _item(code))
        assert caplog.records == []
        line = sys._getframe().f_lineno + 1
        log_failure(log, _item(404))
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "failed code=404 relPath=dir/a.txt source=alice: gave up"
    assert getattr(record, EVENT_ATTR) == {
        "event": "failed",
        "relPath": "dir/a.txt",
        "code": 404,
        "source": "alice",
    }
    # the record names the component's line, not the helper's
    assert (record.pathname, record.lineno) == (__file__, line)
