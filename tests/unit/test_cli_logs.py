"""Instance log files get the ``chmod_log`` mode, and so does each file a rotation starts."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

from sarra.cli.logs import remove_handler, setup_file_logging


def test_the_log_and_each_rotated_in_file_get_the_chmod_log_mode(tmp_path: Path) -> None:
    path = tmp_path / "sr_subscribe_x_001.log"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # as the spawner leaves it
    handler = setup_file_logging(path, context="subscribe/x/001", mode=0o640, follow_stdio=False)
    try:
        assert path.stat().st_mode & 0o777 == 0o640
        logging.getLogger("test").warning("before rotation")
        assert isinstance(handler, logging.handlers.TimedRotatingFileHandler)
        handler.doRollover()
        logging.getLogger("test").warning("after rotation")
        assert path.stat().st_mode & 0o777 == 0o640
        assert "after rotation" in path.read_text()
        assert len(list(tmp_path.glob("sr_subscribe_x_001.log.*"))) == 1
    finally:
        remove_handler(handler)
        handler.close()


def test_stderr_is_the_journal_only_when_journal_stream_names_it(tmp_path, monkeypatch):
    import io
    import sys

    from sarra.cli.logs import stderr_is_journal

    with open(tmp_path / "stream", "w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        info = os.fstat(stream.fileno())
        assert stderr_is_journal({"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"})
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino + 1}"})
        assert not stderr_is_journal({})
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # no file descriptor
    assert not stderr_is_journal({"JOURNAL_STREAM": "1:2"})


def test_json_lines_are_one_object_per_line_with_passwords_masked(tmp_path):
    import json

    path = tmp_path / "sr_subscribe_obs_001.log"
    handler = setup_file_logging(
        path, context="subscribe/obs/001", follow_stdio=False, json_lines=True
    )
    try:
        log = logging.getLogger("sarra.test.json")
        log.info("connected to %s", "amqp://bob:hunter2@pump.example.com/")
        try:
            raise ValueError("amqps://eve:s3cret@x/ refused")
        except ValueError:
            log.exception("failed")
    finally:
        remove_handler(handler)
    lines = path.read_text(encoding="utf-8").splitlines()
    first, second = (json.loads(line) for line in lines)  # nothing but JSON, one per line
    assert first["context"] == "subscribe/obs/001"
    assert first["level"] == "INFO" and first["logger"] == "sarra.test.json"
    assert first["message"] == "connected to amqp://bob:***@pump.example.com/"
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert "ValueError" in second["exception"] and "s3cret" not in second["exception"]
    assert "hunter2" not in path.read_text()
