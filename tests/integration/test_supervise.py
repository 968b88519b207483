"""``supervise``: instances as children of one foreground process, as systemd runs them.

The supervisor is a real process (``python -m tests.cli_doubles subscribe supervise feed``,
the CLI over the heartbeat test component), and so are its children.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sarra.cli.instances import process_matches, read_pid_file
from sarra.cli.main import main
from tests.cli_doubles import standin_runtime

ROOT = Path(__file__).resolve().parents[2]


class Pump:
    """One configuration, ``subscribe/feed``, and the supervisors started over it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "config" / "subscribe" / "feed.conf"
        self.state = root / "state" / "subscribe" / "feed"
        self.procs: list[subprocess.Popen[str]] = []
        self.out = ""

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SR_CONFIG_DIR"] = str(self.root / "config")
        env["SR_STATE_DIR"] = str(self.root / "state")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        return env

    def supervise(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.cli_doubles", "subscribe", "supervise", "feed"],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def cli(self, *argv: str) -> int:
        out, err = io.StringIO(), io.StringIO()
        rc = main("subscribe", argv, runtime=standin_runtime(), out=out, err=err)
        self.out = out.getvalue() + err.getvalue()
        return rc

    def pids(self) -> dict[int, int]:
        found = {}
        for path in sorted(self.state.glob("*.pid")):
            pid = read_pid_file(path)
            if pid is not None and process_matches(pid, ["subscribe", "feed"]):
                found[int(path.stem.rsplit("_", 1)[1])] = pid
        return found

    def stopped_gracefully(self) -> set[int]:
        return {int(p.read_text()) for p in self.state.glob("*.stopped")}


def wait_for(what: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        time.sleep(0.05)
    raise AssertionError(f"not true after {timeout} s: {what}")


def gone(pid: int) -> bool:
    return not process_matches(pid, ["subscribe", "feed"])


@pytest.fixture
def pump(tmp_path: Path) -> Iterator[Pump]:
    pump = Pump(tmp_path)
    pump.conf.parent.mkdir(parents=True)
    pump.conf.write_text("instances 3\n")
    yield pump
    for proc in pump.procs:  # never leave processes behind, even if a test failed
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    for pid in pump.pids().values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_children_run_are_restarted_and_stop_gracefully_with_the_supervisor(
    pump: Pump, monkeypatch: pytest.MonkeyPatch
) -> None:
    sup = pump.supervise()
    wait_for(lambda: len(pump.pids()) == 3)
    first = pump.pids()
    assert all(os.getppid() != pid for pid in first.values())
    assert (pump.state / "sr_subscribe_feed.supervisor").read_text().strip() == str(sup.pid)
    monkeypatch.setenv("SR_CONFIG_DIR", str(pump.root / "config"))
    monkeypatch.setenv("SR_STATE_DIR", str(pump.root / "state"))
    # the per-component verbs see the instances and leave them to their supervisor
    assert pump.cli("status", "feed") == 0
    assert pump.out.count("running") == 3, pump.out
    assert pump.cli("start", "feed") == 0
    assert f"already running under supervisor pid {sup.pid}" in pump.out
    assert pump.cli("stop", "feed") == 1
    assert "stop the service instead" in pump.out
    assert pump.cli("sanity", "feed") == 0
    assert "run by supervisor" in pump.out
    assert pump.pids() == first  # none of them touched the instances
    # a killed child is started again under the same number
    os.kill(first[2], signal.SIGKILL)
    # one reading per check: a child being started again may match in one reading and not
    # yet in the next (its pid file written before its command line is the component's)
    wait_for(lambda: pump.pids().get(2, first[2]) != first[2])
    now = pump.pids()
    assert now[1] == first[1] and now[3] == first[3]
    # SIGTERM: every child stops gracefully, then the supervisor exits 0 and unmarks
    live = pump.pids()
    sup.send_signal(signal.SIGTERM)
    out, _ = sup.communicate(timeout=30)
    assert sup.returncode == 0, out
    assert set(live.values()) <= pump.stopped_gracefully()
    assert all(gone(pid) for pid in live.values())
    assert not list(pump.state.glob("*.pid"))
    assert not (pump.state / "sr_subscribe_feed.supervisor").exists()
    assert "instance subscribe/feed/002 exited with status -9" in out


def test_reload_applies_a_changed_file_and_restart_asks_the_supervisor(
    pump: Pump, monkeypatch: pytest.MonkeyPatch
) -> None:
    sup = pump.supervise()
    wait_for(lambda: len(pump.pids()) == 3)
    first = pump.pids()
    # SIGHUP with nothing changed: nothing restarted
    sup.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert pump.pids() == first
    # a file that no longer loads: refused, instances left as they are
    pump.conf.write_text("instances many\n")
    os.utime(pump.conf, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    sup.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert pump.pids() == first
    # a change of the number of instances: all stopped gracefully, two started
    pump.conf.write_text("instances 2\n")
    os.utime(pump.conf, ns=(time.time_ns() + 2 * 10**9, time.time_ns() + 2 * 10**9))
    sup.send_signal(signal.SIGHUP)
    wait_for(lambda: sorted(pump.pids()) == [1, 2] and first[1] not in pump.pids().values())
    assert set(first.values()) <= pump.stopped_gracefully()
    # restart through the per-component command: the supervisor restarts them
    second = pump.pids()
    monkeypatch.setenv("SR_CONFIG_DIR", str(pump.root / "config"))
    monkeypatch.setenv("SR_STATE_DIR", str(pump.root / "state"))
    assert pump.cli("restart", "feed") == 0
    assert f"restart asked of supervisor pid {sup.pid}" in pump.out
    wait_for(lambda: len(pump.pids()) == 2 and not set(pump.pids().values()) & set(second.values()))
    sup.send_signal(signal.SIGTERM)
    out, _ = sup.communicate(timeout=30)
    assert sup.returncode == 0
    assert "reload refused, instances left as they are" in out
    assert "subscribe/feed: changed, restarting" in out
    assert "subscribe/feed: restart asked, restarting" in out


def test_children_stop_when_the_supervisor_is_killed(pump: Pump) -> None:
    sup = pump.supervise()
    wait_for(lambda: len(pump.pids()) == 3)
    live = pump.pids()
    sup.kill()
    sup.communicate(timeout=30)
    wait_for(lambda: all(gone(pid) for pid in live.values()))
    assert set(live.values()) <= pump.stopped_gracefully()  # SIGTERM, not a kill


def test_a_second_supervisor_leaves_a_supervised_config_alone(pump: Pump) -> None:
    first = pump.supervise()
    wait_for(lambda: len(pump.pids()) == 3)
    live = pump.pids()
    second = pump.supervise()
    time.sleep(1.5)
    assert pump.pids() == live
    second.send_signal(signal.SIGTERM)
    out, _ = second.communicate(timeout=30)
    assert f"subscribe/feed: already run by supervisor pid {first.pid}, left to it" in out
    assert pump.pids() == live  # stopping the second touched nothing
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=30)
    assert all(gone(pid) for pid in live.values())
