"""Lifecycle of real instance processes: start, status, sanity, stop, stale pid files.

Instances are launched with ``python -m tests.cli_doubles`` (the CLI over a heartbeat test
component), detached and in their own sessions, exactly as ``sr_subscribe start`` does.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarra.cli.instances import process_matches, read_pid_file
from sarra.cli.main import main
from sarra.flow.heartbeat import HeartbeatFile
from tests.cli_doubles import standin_runtime


class Cli:
    def __init__(self, root: Path) -> None:
        self.runtime = standin_runtime(stop_timeout=10.0)
        self.config_dir = root / "config"
        self.state = root / "state" / "subscribe" / "feed"
        self.logs = root / "state" / "log"
        self.out = ""

    def __call__(self, *argv: str) -> int:
        out, err = io.StringIO(), io.StringIO()
        rc = main("subscribe", argv, runtime=self.runtime, out=out, err=err)
        self.out = out.getvalue() + err.getvalue()
        return rc

    def pids(self) -> dict[int, int]:
        found = {}
        for path in sorted(self.state.glob("*.pid")):
            pid = read_pid_file(path)
            if pid is not None:
                found[int(path.stem.rsplit("_", 1)[1])] = pid
        return found

    def states(self) -> list[str]:
        return [line.split()[3] for line in self.out.splitlines()[1:] if line.split()[1].isdigit()]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    monkeypatch.setenv("SR_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SR_STATE_DIR", str(tmp_path / "state"))
    cli = Cli(tmp_path)
    (cli.config_dir / "subscribe").mkdir(parents=True)
    (cli.config_dir / "subscribe" / "feed.conf").write_text(
        "instances 3\nbroker amqps://feeder:TopSecret@broker.example/\n"
    )
    yield cli
    for pid in cli.pids().values():  # never leave daemons behind, even if a test failed
        if process_matches(pid, ["subscribe", "feed"]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def wait_until_gone(pid: int) -> None:
    for _ in range(200):
        if not process_matches(pid, ["subscribe", "feed"]):
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still alive")


def test_start_status_sanity_and_stop_manage_three_real_instances(cli: Cli) -> None:
    assert cli("start", "feed") == 0, cli.out
    pids = cli.pids()
    assert sorted(pids) == [1, 2, 3]
    assert all(process_matches(pid, ["subscribe", "feed"]) for pid in pids.values())

    assert cli("status") == 0, cli.out
    assert cli.states() == ["running"] * 3
    assert "backlog 7" in cli.out

    # an instance that cannot make outcomes durable says so in its heartbeat (engine._pause)
    heart = HeartbeatFile(cli.state / "sr_subscribe_feed_001.heart")
    heart.beat("paused: retry queue: No space left on device")
    assert cli("status") == 0, cli.out
    assert cli.states() == ["paused", "running", "running"]
    assert "No space left on device" in cli.out
    heart.beat("")
    assert cli("status") == 0
    assert cli.states() == ["running"] * 3

    assert cli("start") == 0  # idempotent: nothing new
    assert cli.out.count("already running") == 3
    assert cli.pids() == pids

    os.kill(pids[2], signal.SIGKILL)
    wait_until_gone(pids[2])
    assert cli("status", "feed") == 1
    assert cli.states() == ["running", "stale", "running"]  # "stale pid"

    assert cli("sanity") == 0, cli.out
    assert "instance 002 started" in cli.out
    restarted = cli.pids()
    assert restarted[1] == pids[1] and restarted[3] == pids[3]
    assert restarted[2] != pids[2]
    assert cli("status") == 0

    assert cli("stop") == 0
    assert cli.out.count("stopped") == 3
    assert cli.pids() == {}
    for number, pid in restarted.items():
        wait_until_gone(pid)
        marker = cli.state / f"sr_subscribe_feed_{number:03d}.stopped"
        assert marker.read_text() == str(pid)  # each saw its stop event: a graceful stop

    for number in (1, 2, 3):
        text = (cli.logs / f"sr_subscribe_feed_{number:03d}.log").read_text()
        assert f"subscribe/feed/{number:03d}" in text
        assert "amqps://feeder:***@broker.example/" in text
        assert "TopSecret" not in text


def test_sanity_restarts_an_instance_silent_longer_than_sanity_log_dead(cli: Cli) -> None:
    cli.runtime = standin_runtime(stop_timeout=1.0)
    conf = cli.config_dir / "subscribe" / "feed.conf"
    conf.write_text("instances 2\nsanity_log_dead 0\n")
    assert cli("start", "feed") == 0, cli.out
    pids = cli.pids()
    stems = {n: cli.state / f"sr_subscribe_feed_{n:03d}" for n in (1, 2)}
    for stem in stems.values():  # each instance beats its heartbeat file
        for _ in range(100):
            if stem.with_suffix(".heart").exists():
                break
            time.sleep(0.05)
    # instance 2 hangs: frozen, its heartbeat, log and pid files last written 100 s ago
    os.kill(pids[2], signal.SIGSTOP)
    long_ago = time.time() - 100
    for path in (
        stems[2].with_suffix(".heart"),
        stems[2].with_suffix(".pid"),
        cli.logs / "sr_subscribe_feed_002.log",
    ):
        os.utime(path, (long_ago, long_ago))

    assert cli("sanity") == 0, cli.out  # sanity_log_dead 0: never judged hung
    assert cli.pids() == pids
    assert "hung" not in cli.out

    conf.write_text("instances 2\nsanity_log_dead 30\n")
    assert cli("sanity") == 0, cli.out
    said = r"instance 002 silent for 1\d\d s \(sanity_log_dead 30 s\): hung, restarting"
    assert re.search(said, cli.out), cli.out
    assert "instance 002 killed" in cli.out  # a frozen process ignores SIGTERM
    assert "instance 002 started" in cli.out
    assert "001" not in cli.out  # beating: left alone
    wait_until_gone(pids[2])
    restarted = cli.pids()
    assert restarted[1] == pids[1] and restarted[2] != pids[2]
    assert process_matches(restarted[2], ["subscribe", "feed"])

    assert cli("sanity") == 0, cli.out  # the new instance beats: nothing to do
    assert cli.pids() == restarted
    assert cli("stop", "feed") == 0


def test_stale_pid_files_are_replaced_by_start_and_never_signal_another_process(
    cli: Cli,
) -> None:
    cli.state.mkdir(parents=True)
    (cli.state / "sr_subscribe_feed_001.pid").write_text(f"{os.getpid()}\n")  # recycled pid
    (cli.state / "sr_subscribe_feed_002.pid").write_text("garbage\n")
    assert cli("status", "feed") == 1
    assert cli.states() == ["stale", "stale", "stopped"]

    assert cli("start", "feed") == 0, cli.out
    pids = cli.pids()
    assert sorted(pids) == [1, 2, 3] and os.getpid() not in pids.values()

    (cli.config_dir / "subscribe" / "feed.conf").write_text("instances 2\n")
    assert cli("restart", "feed") == 0, cli.out
    assert sorted(cli.pids()) == [1, 2]
    assert cli("stop", "feed") == 0
    assert cli.pids() == {}


def test_disable_is_refused_while_running_and_cleanup_too(cli: Cli) -> None:
    (cli.config_dir / "subscribe" / "feed.conf").write_text("instances 1\n")
    assert cli("start", "feed") == 0, cli.out
    assert cli("disable", "feed") == 1
    assert cli("cleanup", "feed") == 1
    assert cli("stop", "feed") == 0
    assert cli("disable", "feed") == 0
    assert cli("status") == 0
    assert cli.out.splitlines()[1].split() == ["subscribe/feed", "-", "-", "disabled", "-"]
    assert cli("start") == 0  # disabled configs are not part of "all"
    assert cli.pids() == {}


def test_reset_on_deletes_queue_and_state_before_a_start_with_nothing_running(cli: Cli) -> None:
    (cli.config_dir / "subscribe" / "feed.conf").write_text("instances 1\nreset on\n")
    component = cli.runtime.registry["subscribe"]
    cli.state.mkdir(parents=True)
    (cli.state / "retry_001.queue").write_text("old notices")
    assert cli("start", "feed") == 0, cli.out
    assert component.cleaned == ["feed"]  # type: ignore[attr-defined]
    assert not (cli.state / "retry_001.queue").exists()
    assert sorted(cli.pids()) == [1]
    assert cli("start", "feed") == 0, cli.out  # running: no reset under live instances
    assert "reset skipped" in cli.out
    assert component.cleaned == ["feed"]  # type: ignore[attr-defined]
    assert cli("restart", "feed") == 0, cli.out
    assert component.cleaned == ["feed", "feed"]  # type: ignore[attr-defined]
    assert cli("stop", "feed") == 0


def test_without_reset_a_start_keeps_the_state(cli: Cli) -> None:
    (cli.config_dir / "subscribe" / "feed.conf").write_text("instances 1\n")
    cli.state.mkdir(parents=True)
    (cli.state / "retry_001.queue").write_text("old notices")
    assert cli("start", "feed") == 0, cli.out
    assert cli.runtime.registry["subscribe"].cleaned == []  # type: ignore[attr-defined]
    assert (cli.state / "retry_001.queue").read_text() == "old notices"
    assert cli("stop", "feed") == 0


def test_a_start_removes_the_temporaries_a_killed_instance_left_and_keeps_the_state(
    cli: Cli,
) -> None:
    (cli.config_dir / "subscribe" / "feed.conf").write_text("instances 1\n")
    assert cli("start", "feed") == 0, cli.out
    killed = cli.pids()[1]
    os.kill(killed, signal.SIGKILL)
    wait_until_gone(killed)
    state = {"retry_001.jsonl": '{"op": "put"}\n', "recent_files_001.cache": "d1 x\n"}
    for name, text in state.items():
        (cli.state / name).write_text(text)
    stale = [
        f"recent_files_001.cache.{killed}.tmp",  # nodupe's save
        f".sr_subscribe_feed_001.metrics.json.{killed}.tmp",  # metrics, exit notes, pid files
        f"retry_001.jsonl.{killed}.compact",  # the retry queue's compaction
        f".poll_seen.json.{killed}.tmp",  # a poll's state
    ]
    kept = [
        f"recent_files_002.cache.{os.getpid()}.tmp",  # a live writer's
        "notes.tmp",  # not a temporary of ours
        f"retry_001.jsonl.{killed}.tmp.old",
    ]
    for name in stale + kept:
        (cli.state / name).write_text("half-written")
    (cli.state / "sub").mkdir()
    (cli.state / "sub" / f"x.{killed}.tmp").write_text("not in the state directory itself")

    assert cli("start", "feed") == 0, cli.out
    for _ in range(200):  # the instance clears them once started, after start returned
        if not any((cli.state / name).exists() for name in stale):
            break
        time.sleep(0.05)
    assert [name for name in stale if (cli.state / name).exists()] == []
    assert all((cli.state / name).read_text() == "half-written" for name in kept)
    assert (cli.state / "sub" / f"x.{killed}.tmp").exists()
    assert {name: (cli.state / name).read_text() for name in state} == state
    assert cli("stop", "feed") == 0
    log = (cli.logs / "sr_subscribe_feed_001.log").read_text()
    assert f"removed recent_files_001.cache.{killed}.tmp" in log


def test_chmod_log_sets_the_mode_of_instance_logs(cli: Cli) -> None:
    (cli.config_dir / "subscribe" / "feed.conf").write_text("instances 1\nchmod_log 640\n")
    assert cli("start", "feed") == 0, cli.out
    log = cli.logs / "sr_subscribe_feed_001.log"
    # already when start returns (the instance has written its pid file): a stop that comes
    # at once must not leave the 600 the spawner created the file with
    assert log.stat().st_mode & 0o777 == 0o640
    assert cli("stop", "feed") == 0
    assert log.stat().st_mode & 0o777 == 0o640


def test_log_format_json_makes_every_instance_log_line_a_json_object(cli: Cli) -> None:
    import json

    (cli.config_dir / "subscribe" / "feed.conf").write_text(
        "instances 1\nlog_format json\nbroker amqps://feeder:TopSecret@broker.example/\n"
    )
    assert cli("start", "feed") == 0, cli.out
    log = cli.logs / "sr_subscribe_feed_001.log"
    for _ in range(200):  # the heartbeat component logs the broker once it runs
        if log.exists() and "logged broker" in log.read_text():
            break
        time.sleep(0.05)
    assert cli("stop", "feed") == 0
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(r["message"].startswith("instance subscribe/feed/001 started") for r in records)
    logged = [r for r in records if r["message"].startswith("logged broker")]
    assert logged and logged[0]["context"] == "subscribe/feed/001"
    assert "TopSecret" not in log.read_text()
