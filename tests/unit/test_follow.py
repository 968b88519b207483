"""``sr log component/config`` (sarra/cli/follow.py) on real files: the last lines of every
instance merged in time order, then what is appended, across new instances, rotation and
truncation, complete lines only, passwords masked."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sarra.cli import pump
from sarra.cli.follow import Follower, last_lines, log_files
from tests.cli_doubles import standin_runtime


def _line(second: int, instance: int, text: str) -> str:
    return f"2026-12-06 10:00:{second:02d},000 [INFO] subscribe/feed/{instance:03d} x: {text}\n"


def _write(path: Path, *lines: str, mode: str = "a") -> None:
    with open(path, mode) as fh:
        fh.write("".join(lines))


def test_the_last_lines_of_every_instance_come_merged_in_time_order(tmp_path: Path) -> None:
    _write(tmp_path / "sr_subscribe_feed_001.log", _line(1, 1, "a"), _line(4, 1, "d"))
    _write(tmp_path / "sr_subscribe_feed_002.log", _line(2, 2, "b"), _line(3, 2, "c"))
    _write(tmp_path / "sr_subscribe_feed_002.log.2026-12-05", _line(0, 2, "old"))  # rotated
    _write(tmp_path / "sr_subscribe_feeder_001.log", _line(2, 1, "other config"))
    paths = log_files(tmp_path, "subscribe", "feed")
    assert [p.name for p in paths] == ["sr_subscribe_feed_001.log", "sr_subscribe_feed_002.log"]
    assert [ln[-2:] for ln in last_lines(paths, 10)] == [" a", " b", " c", " d"]
    assert [ln[-2:] for ln in last_lines(paths, 2)] == [" c", " d"]
    assert last_lines(paths, 0) == []


def test_following_reads_appends_new_instances_rotation_and_truncation(tmp_path: Path) -> None:
    one = tmp_path / "sr_subscribe_feed_001.log"
    _write(one, _line(0, 1, "before"))
    seen: list[str] = []
    follower = Follower(lambda: log_files(tmp_path, "subscribe", "feed"), seen.append)
    follower.start_at_end()
    _write(one, _line(1, 1, "appended"), "2026-12-06 10:00:02,000 half a li")
    follower.poll()
    assert [s[-8:] for s in seen] == ["appended"]
    _write(one, "ne\n")
    two = tmp_path / "sr_subscribe_feed_002.log"
    _write(two, _line(3, 2, "new instance"))
    follower.poll()
    assert seen[1].endswith("half a line") and seen[2].endswith("new instance")
    _write(one, _line(4, 1, "last of the old file"))
    os.rename(one, tmp_path / "sr_subscribe_feed_001.log.2026-12-06")
    _write(one, _line(5, 1, "first of the new file"))
    follower.poll()
    assert [s.rsplit(": ", 1)[1] for s in seen[3:]] == [
        "last of the old file",
        "first of the new file",
    ]
    _write(two, _line(6, 2, "cut"), mode="w")  # shorter than what was read
    follower.poll()
    assert seen[-1].endswith(": cut")
    follower.poll()
    assert len(seen) == 6  # nothing twice
    follower.close()


def test_sr_log_prints_masked_lines_and_refuses_bad_selections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SR_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SR_CONFIG_DIR", str(tmp_path / "config"))
    (tmp_path / "config" / "log").mkdir(parents=True)
    rt = standin_runtime()
    logs = rt.log_dir()
    logs.mkdir(parents=True, exist_ok=True)
    _write(logs / "sr_subscribe_feed_001.log", _line(1, 1, "amqps://bob:Secr3t@host/ down"))
    out, err = io.StringIO(), io.StringIO()
    assert pump.main(["log", "--no-follow", "subscribe/feed"], runtime=rt, out=out, err=err) == 0
    assert "amqps://bob:***@host/ down" in out.getvalue() and "Secr3t" not in out.getvalue()
    err = io.StringIO()
    assert pump.main(["log", "nosuch/feed"], runtime=rt, err=err) == 2
    assert "unknown component" in err.getvalue()
    err = io.StringIO()
    assert pump.main(["log", "subscribe"], runtime=rt, err=err) == 2
    err = io.StringIO()
    assert pump.main(["log", "--no-follow", "subscribe/none"], runtime=rt, err=err) == 1
    assert "no log file" in err.getvalue()
    # ``sr stop log``: the component named log is still a selection, not this action
    assert pump.main(["list", "log"], runtime=rt, err=io.StringIO()) == 2


def test_sr_log_follows_until_interrupted(tmp_path: Path) -> None:
    logs = tmp_path / "log"  # sarra.config.paths.log_dir: <state_dir>/log
    logs.mkdir()
    path = logs / "sr_subscribe_feed_001.log"
    _write(path, _line(1, 1, "old"))
    env = {**os.environ, "SR_STATE_DIR": str(tmp_path), "SR_CONFIG_DIR": str(tmp_path / "config")}
    code = "import sys; from sarra.cli.pump import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "log", "-n", "1", "subscribe/feed"],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().endswith(": old\n")
        time.sleep(0.5)  # following now
        _write(path, _line(2, 1, "new"))
        assert proc.stdout.readline().endswith(": new\n")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
