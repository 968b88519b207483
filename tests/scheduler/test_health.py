"""Health checks (mapped to Mesos HealthCheck, run by the test master's agents) and crash loops."""

from __future__ import annotations

import io
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sarra.errors import ConfigError
from sarra.scheduler import cli
from sarra.scheduler.service import render_html
from sarra.scheduler.spec import parse_spec
from tests.scheduler.conftest import Runner, spec_text, wait_for
from tests.scheduler.fake_master import Cluster

WORKER = """
[workers.feed]
config = "feed"
count = {count}
cpus = 0.5
mem = 64
command = "{command}"
kill_grace_seconds = 1
{health}
"""


def workers(count: int, command: str, health: str = "") -> str:
    return WORKER.format(count=count, command=command, health=health)


def launch_times(cluster: Cluster, n: int, timeout: float) -> list[float]:
    """When each of the first ``n`` launches was seen (polled)."""
    seen: list[float] = []
    deadline = time.monotonic() + timeout
    while len(seen) < n and time.monotonic() < deadline:
        while len(seen) < min(n, len(cluster.launches)):
            seen.append(time.monotonic())
        time.sleep(0.02)
    return seen


def task_doc(runner: Runner) -> list[dict[str, Any]]:
    sched = runner.sched
    return [] if sched is None else list(sched.snapshot()["tasks"])


def test_a_command_health_check_is_sent_to_mesos_and_a_worker_counts_only_once_healthy(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    health = (
        'health_check = { command = "test -f ready", delay = 0, interval = 0.3, timeout = 5, '
        "grace_period = 30, consecutive_failures = 3 }"
    )
    command = "sleep 2; touch ready; exec sleep 300"
    r = start_scheduler(
        spec_text(cluster.masters[0].url, tmp_path / "st", workers(1, command, health))
    )
    wait_for(lambda: len(cluster.running_tasks()) == 1, 30, "the worker running")
    (task,) = cluster.running_tasks().values()
    assert task.health is not None
    check = task.health.check
    assert check["type"] == "COMMAND" and check["command"]["value"] == "test -f ready"
    assert check["interval_seconds"] == 0.3 and check["consecutive_failures"] == 3
    assert check["grace_period_seconds"] == 30 and check["delay_seconds"] == 0
    # RUNNING for longer than min_running_seconds (0.5) but not healthy yet: not started
    time.sleep(1.2)
    (doc,) = task_doc(r)
    assert doc["state"] == "TASK_RUNNING" and not doc["started"] and doc["healthy"] is None
    wait_for(lambda: task_doc(r)[0]["healthy"] is True, 20, "healthy")
    wait_for(lambda: task_doc(r)[0]["started"], 5, "started once healthy")
    assert task.health.runs >= 3  # checked repeatedly, failures inside the grace period ignored
    assert len(cluster.launches) == 1


def test_an_http_health_check_probes_the_worker(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    health = (
        f'health_check = {{ http_port = {port}, http_path = "/", delay = 0, interval = 0.3, '
        "timeout = 2, grace_period = 30 }"
    )
    command = f"exec {sys.executable} -m http.server {port} --bind 127.0.0.1"
    r = start_scheduler(
        spec_text(cluster.masters[0].url, tmp_path / "st", workers(1, command, health))
    )
    wait_for(lambda: task_doc(r) and task_doc(r)[0]["started"], 30, "started once healthy")
    (task,) = cluster.running_tasks().values()
    assert task.health is not None and task.health.check["type"] == "HTTP"
    assert task.health.check["http"] == {"scheme": "http", "port": port, "path": "/"}
    assert task_doc(r)[0]["healthy"] is True


def test_a_rolling_update_waits_for_the_replacement_to_be_healthy(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    health = (
        'health_check = { command = "test -f ready", delay = 0, interval = 0.3, timeout = 5, '
        "grace_period = 60 }"
    )
    url = cluster.masters[0].url
    r = start_scheduler(
        spec_text(url, tmp_path / "st", workers(2, "touch ready; exec sleep 300", health))
    )
    wait_for(lambda: len(task_doc(r)) == 2 and all(t["started"] for t in task_doc(r)), 30, "up")
    old = set(cluster.running_tasks())
    # the new version never becomes healthy (never creates "ready")
    r.spec_path.write_text(spec_text(url, tmp_path / "st", workers(2, "exec sleep 301", health)))
    out = io.StringIO()
    assert cli.main(["reload", str(r.spec_path)], out=out) == 0, out.getvalue()
    wait_for(lambda: len(set(cluster.running_tasks()) - old) == 1, 30, "one replacement")
    time.sleep(4.0)  # RUNNING well past min_running_seconds, but unhealthy
    running = set(cluster.running_tasks())
    assert len(running & old) == 1  # the second old worker was not touched
    new = [t for t in task_doc(r) if t["task_id"] not in old]
    assert len(new) == 1 and not new[0]["started"] and new[0]["healthy"] is not True
    # once healthy, the roll goes on
    (new_task,) = [t for tid, t in cluster.running_tasks().items() if tid not in old]
    sandbox = tmp_path / "agents" / new_task.agent_id / new_task.framework_id / new_task.task_id
    (sandbox / "ready").touch()
    wait_for(lambda: not set(cluster.running_tasks()) & old, 30, "both replaced")


def test_a_crash_looping_worker_backs_off_then_is_given_up_and_reported(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    extra = "backoff_seconds = 0.6\nbackoff_max_seconds = 5\ncrash_loop_limit = 3\n"
    text = spec_text(cluster.masters[0].url, tmp_path / "st", workers(1, "exit 3"), extra)
    # avoided agents (each failure avoids one) must not be what stops the launches here
    text = text.replace("backoff_seconds = 0.5\n", "").replace(
        "avoid_seconds = 30", "avoid_seconds = 1"
    )
    r = start_scheduler(text)
    times = launch_times(cluster, 3, 30)
    assert len(times) == 3
    assert times[1] - times[0] >= 0.5  # first delay 0.6 s
    assert times[2] - times[1] >= 1.1  # doubled: 1.2 s
    doc = wait_for(
        lambda: (d := r.sched.snapshot())["crash_loops"].get("feed-0", {}).get("given_up") and d,
        15, "the slot given up",
    )  # fmt: skip
    loop = doc["crash_loops"]["feed-0"]
    assert loop["failures"] == 3 and "TASK_FAILED" in loop["last"]
    time.sleep(3.0)
    assert len(cluster.launches) == 3  # given up: no more launches
    assert "feed-0" in r.service.status["crash_loops"]
    page = render_html(r.service.status)
    assert "<h2>Crash loops</h2><ul><li>feed-0: 3 failure(s), given up; last: TASK_FAILED" in page
    # the operator's reload (no change needed) retries the slot
    out = io.StringIO()
    assert cli.main(["reload", str(r.spec_path)], out=out) == 0
    wait_for(lambda: len(cluster.launches) == 4, 15, "a retry after the reload")


def test_a_worker_killed_by_its_failing_health_check_counts_as_a_crash(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    health = (
        'health_check = { command = "false", delay = 0, interval = 0.2, timeout = 5, '
        "grace_period = 0.5, consecutive_failures = 2 }"
    )
    extra = "crash_loop_limit = 2\n"
    r = start_scheduler(
        spec_text(
            cluster.masters[0].url, tmp_path / "st", workers(1, "exec sleep 300", health), extra
        )
    )
    wait_for(
        lambda: r.sched and r.sched.state.crash.get("feed-0", {}).get("given_up"), 30, "given up"
    )
    killed = [t for t in cluster.all_tasks().values() if t.state == "TASK_KILLED"]
    assert len(killed) == 2 and all(t.health and t.health.killed for t in killed)
    assert "TASK_KILLED" in r.sched.state.crash["feed-0"]["last"]
    assert not cluster.running_tasks()


@pytest.mark.parametrize(
    "health, why",
    [
        ('{ command = "true", http_port = 80 }', "either command or http_port"),
        ("{ interval = 3 }", "either command or http_port"),
        ("{ http_port = 0 }", "http_port must be a port number"),
        ('{ command = "true", every = 3 }', "unknown keys ['every']"),
        ('{ http_port = 80, http_path = "x" }', "http_path must start with /"),
        ('{ command = "true", consecutive_failures = 0 }', "consecutive_failures must be"),
    ],
)
def test_bad_health_checks_are_refused(health: str, why: str) -> None:
    text = spec_text(
        "http://127.0.0.1:1", Path("/tmp/x"), workers(1, "true", f"health_check = {health}")
    )
    with pytest.raises(ConfigError, match="health_check") as e:
        parse_spec(text)
    assert why in str(e.value)


def test_a_bad_crash_loop_limit_is_refused() -> None:
    text = spec_text(
        "http://127.0.0.1:1", Path("/tmp/x"), workers(1, "true"), "crash_loop_limit = -1"
    )
    with pytest.raises(ConfigError, match="crash_loop_limit must be a non-negative integer"):
        parse_spec(text)
