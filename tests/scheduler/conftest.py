"""Fixtures for scheduler tests: a ZooKeeper server, a fake Mesos cluster, scheduler runners."""

from __future__ import annotations

import getpass
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sarra.scheduler.service import SchedulerService
from sarra.scheduler.spec import load_spec
from tests.scheduler.fake_master import AgentSpec, Cluster
from tests.scheduler.zookeeper import ZooKeeper, zookeeper_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def zookeeper() -> Iterator[ZooKeeper]:
    with tempfile.TemporaryDirectory(prefix="sr-zk-") as d, zookeeper_server(Path(d)) as zk:
        yield zk


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def spec_text(
    master: str,
    state_dir: Path,
    workers: str,
    extra: str = "",
) -> str:
    return (
        "[scheduler]\n"
        'name = "pump"\n'
        f'master = "{master}"\n'
        f'user = "{getpass.getuser()}"\n'
        f'state_dir = "{state_dir}"\n'
        "failover_timeout = 60\n"
        "min_running_seconds = 0.5\n"
        "staging_timeout = 3\n"
        "avoid_seconds = 30\n"
        "refuse_seconds = 30\n"
        "heartbeat_misses = 4\n"
        "kill_retry_seconds = 2\n"
        "call_timeout = 5\n"
        "backoff_seconds = 0.5\n"
        f"{extra}\n{workers}"
    )


SLEEPER = """
[workers.feed]
config = "feed"
count = {count}
cpus = 0.5
mem = 64
command = "exec sleep 300"
kill_grace_seconds = 1
"""


class Runner:
    """A scheduler copy running in a thread of the test process."""

    def __init__(self, spec_path: Path) -> None:
        self.spec_path = spec_path
        self.service = SchedulerService(load_spec(spec_path), spec_path)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.rc: int | None = None
        self.thread.start()

    def _run(self) -> None:
        self.rc = self.service.run()

    @property
    def sched(self) -> Any:
        return self.service.scheduler

    def stop(self) -> None:
        self.service.stop()
        self.thread.join(20)
        assert not self.thread.is_alive(), "scheduler thread did not stop"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path / "agents",
        [
            AgentSpec(f"agent{i}.test", cpus=4, mem=2048, attributes={"rack": f"r{i % 2}"})
            for i in range(3)
        ],
    )
    c.add_master()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def start_scheduler(tmp_path: Path) -> Iterator[Callable[[str], Runner]]:
    runners: list[Runner] = []

    def start(text: str) -> Runner:
        path = tmp_path / f"spec{len(runners)}.toml"
        path.write_text(text)
        r = Runner(path)
        runners.append(r)
        return r

    yield start
    for r in runners:
        r.stop()


class Proc:
    """A scheduler copy as a real process (``python -m sarra.scheduler.cli run``)."""

    def __init__(self, spec_path: Path, log: Path, *options: str) -> None:
        self.log = log
        self.out = open(log, "wb")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.p = subprocess.Popen(
            [sys.executable, "-m", "sarra.scheduler.cli", *options, "run", str(spec_path)],
            stdout=self.out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip

    def kill(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait()
        self.out.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def status_of(state_dir: Path) -> dict[str, Any]:
    addr = (state_dir / "leader.addr").read_text().strip()
    with urllib.request.urlopen(f"http://{addr}/status.json", timeout=5) as resp:
        doc: dict[str, Any] = json.load(resp)
        return doc


logging.getLogger("kazoo").setLevel(logging.WARNING)
