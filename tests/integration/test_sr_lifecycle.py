"""``sr`` over real instance processes of two components (the heartbeat doubles of
tests.cli_doubles, launched detached as ``sr_<component> start`` launches them)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarra.cli import pump
from sarra.cli.instances import process_matches, read_pid_file
from tests.cli_doubles import standin_runtime


class Sr:
    def __init__(self, root: Path) -> None:
        self.runtime = standin_runtime(stop_timeout=5.0)
        self.config_dir = root / "config"
        self.state_dir = root / "state"
        self.out = ""

    def __call__(self, *argv: str) -> int:
        out, err = io.StringIO(), io.StringIO()
        rc = pump.main(argv, runtime=self.runtime, out=out, err=err)
        self.out = out.getvalue() + err.getvalue()
        return rc

    def pids(self) -> dict[str, int]:
        """``component/config/NNN`` -> pid, from the pid files."""
        found = {}
        for path in sorted(self.state_dir.glob("*/*/*.pid")):
            pid = read_pid_file(path)
            if pid is not None:
                number = path.stem.rsplit("_", 1)[1]
                found[f"{path.parent.parent.name}/{path.parent.name}/{number}"] = pid
        return found


@pytest.fixture
def sr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sr]:
    monkeypatch.setenv("SR_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SR_STATE_DIR", str(tmp_path / "state"))
    sr = Sr(tmp_path)
    (sr.config_dir / "subscribe").mkdir(parents=True)
    (sr.config_dir / "post").mkdir(parents=True)
    (sr.config_dir / "subscribe" / "feed.conf").write_text(
        "instances 2\nbroker amqps://feeder:TopSecret@broker.example/\n"
    )
    (sr.config_dir / "subscribe" / "idle.conf.off").write_text("instances 1\n")
    (sr.config_dir / "post" / "poll.conf").write_text("sleep 5\n")
    yield sr
    for label, pid in sr.pids().items():  # never leave daemons behind, even if a test failed
        if process_matches(pid, label.split("/")[:2]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def wait_until_gone(pid: int, words: list[str]) -> None:
    for _ in range(200):
        if not process_matches(pid, words):
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still alive")


def test_sr_starts_shows_reloads_and_stops_every_component(sr: Sr) -> None:
    assert sr("start") == 0, sr.out
    pids = sr.pids()
    assert sorted(pids) == ["post/poll/001", "subscribe/feed/001", "subscribe/feed/002"]
    for label, pid in pids.items():
        assert process_matches(pid, label.split("/")[:2])
    assert "subscribe/feed: instance 002 started" in sr.out
    assert "post/poll: instance 001 started" in sr.out
    assert "idle" not in sr.out  # disabled: not started, not an error

    assert sr("status", "--json") == 0, sr.out
    document = json.loads(sr.out)
    assert document["ok"] is True
    records = {f"{r['component']}/{r['config']}": r for r in document["configs"]}
    assert sorted(records) == ["post/poll", "subscribe/feed", "subscribe/idle"]
    feed = records["subscribe/feed"]["instances"]
    assert (feed["expected"], feed["running"]) == (2, 2)
    assert sorted(feed["pids"]) == sorted([pids["subscribe/feed/001"], pids["subscribe/feed/002"]])
    assert records["post/poll"]["instances"]["pids"] == [pids["post/poll/001"]]
    assert records["subscribe/idle"]["instances"]["running"] == 0
    assert "TopSecret" not in sr.out

    # reload restarts only the config whose file changed after its instances started
    later = time.time() + 5
    os.utime(sr.config_dir / "post" / "poll.conf", (later, later))
    assert sr("reload") == 0, sr.out
    assert "subscribe/feed: unchanged since started" in sr.out
    assert "post/poll: configuration changed, restarting" in sr.out
    reloaded = sr.pids()
    assert reloaded["subscribe/feed/001"] == pids["subscribe/feed/001"]
    assert reloaded["post/poll/001"] != pids["post/poll/001"]
    wait_until_gone(pids["post/poll/001"], ["post", "poll"])

    assert sr("stop") == 0, sr.out
    assert sr.out.count("stopped") == 3
    assert "subscribe/idle: not running" in sr.out
    assert sr.pids() == {}
    for label, pid in reloaded.items():
        wait_until_gone(pid, label.split("/")[:2])
    assert sr("status", "--json") == 1
    assert all(r["instances"]["running"] == 0 for r in json.loads(sr.out)["configs"])
