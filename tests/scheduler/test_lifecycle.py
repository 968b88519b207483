"""Spec changes, failover_timeout expiry, stopping, the spec file and the command line."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from sarra.errors import ConfigError
from sarra.scheduler import cli
from sarra.scheduler.spec import load_spec, parse_spec
from sarra.scheduler.state import StateStore
from tests.scheduler.conftest import SLEEPER, Runner, spec_text, wait_for
from tests.scheduler.fake_master import Cluster

ETC = Path(__file__).resolve().parents[2] / "etc" / "scheduler"


def started(runner: Runner) -> int:
    s = runner.sched
    return 0 if s is None else sum(1 for r in s.state.tasks.values() if r.started)


def test_the_example_spec_loads_and_bad_specs_name_the_problem(tmp_path: Path) -> None:
    spec = load_spec(ETC / "pump.toml")
    assert spec.workers and all(w.count >= 1 for w in spec.workers.values())
    head = '[scheduler]\nmaster = "http://m:5050"\nuser = "sarra"\n'
    with pytest.raises(ConfigError, match="count"):
        parse_spec(head + '[workers.a]\nconfig = "x"\ncount = -1\n')
    with pytest.raises(ConfigError, match="master"):
        parse_spec("[scheduler]\n")
    with pytest.raises(ConfigError, match="TOML"):
        parse_spec("[scheduler\n")
    with pytest.raises(ConfigError, match=r"unknown keys.*watch_spc"):
        parse_spec(head + "watch_spc = true\n")
    base = head + '[workers.a]\nconfig = "x"\ncount = 1\n'
    assert parse_spec(base).workers["a"].command == "sr_subscribe foreground x"
    bigger = parse_spec(base.replace("count = 1", "count = 5")).workers["a"]
    assert bigger.version == parse_spec(base).workers["a"].version  # count does not roll
    assert parse_spec(base + "mem = 512\n").workers["a"].version != bigger.version


def test_a_changed_command_rolls_through_the_workers_one_at_a_time(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    url = cluster.masters[0].url
    first = start_scheduler(spec_text(url, tmp_path / "st", SLEEPER.format(count=3)))
    wait_for(lambda: started(first) == 3, 30, "3 started")
    old = set(cluster.running_tasks())
    first.stop()  # operators change the spec by restarting the scheduler with it
    new_workers = SLEEPER.format(count=3).replace("sleep 300", "sleep 301")
    second = start_scheduler(spec_text(url, tmp_path / "st", new_workers))
    lowest = 3
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tasks = cluster.running_tasks()
        lowest = min(lowest, len(tasks))
        if not set(tasks) & old and len(tasks) == 3 and started(second) == 3:
            break
        time.sleep(0.05)
    assert not set(cluster.running_tasks()) & old, "not all workers were replaced"
    assert lowest >= 2  # never more than one worker down at a time
    assert len(cluster.launches) == 6


def test_a_new_count_scales_down_and_up_without_replacing_the_others(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    url = cluster.masters[0].url
    r = start_scheduler(spec_text(url, tmp_path / "st", SLEEPER.format(count=4)))
    wait_for(lambda: started(r) == 4, 30, "4 started")
    before = set(cluster.running_tasks())
    r.stop()
    r = start_scheduler(spec_text(url, tmp_path / "st", SLEEPER.format(count=2)))
    wait_for(lambda: len(cluster.running_tasks()) == 2 and len(r.sched.state.tasks) == 2, 30, "2")
    assert set(cluster.running_tasks()) < before
    r.stop()
    r = start_scheduler(spec_text(url, tmp_path / "st", SLEEPER.format(count=3)))
    wait_for(lambda: started(r) == 3, 30, "3 started")
    assert len(set(cluster.running_tasks()) & before) == 2


def test_after_failover_timeout_the_framework_is_removed_and_not_silently_recreated(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    url = cluster.masters[0].url
    text = spec_text(url, tmp_path / "st", SLEEPER.format(count=2)).replace(
        "failover_timeout = 60", "failover_timeout = 0.5"
    )
    r = start_scheduler(text)
    wait_for(lambda: started(r) == 2, 30, "2 started")
    fid = r.sched.state.framework_id
    r.stop()
    wait_for(lambda: not cluster.running_tasks(), 15, "the master to kill the abandoned tasks")
    r = start_scheduler(text)
    r.thread.join(20)
    assert r.rc == 3 and not cluster.running_tasks()
    assert StateStore(tmp_path / "st").load().framework_id == fid  # untouched, for the operator
    again = text.replace("[scheduler]\n", '[scheduler]\non_framework_removed = "register"\n')
    r = start_scheduler(again)
    # the persisted records of the removed framework count as started until the copy learns
    # the framework is gone: wait for the new framework id, then for its own two workers
    wait_for(lambda: r.sched and r.sched.state.framework_id not in (None, fid), 30, "new id")
    wait_for(lambda: started(r) == 2, 30, "a new framework with 2 started")
    assert r.sched.state.framework_id != fid and len(cluster.running_tasks()) == 2


def test_stop_is_refused_while_workers_are_allocated_unless_forced(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    text = spec_text(cluster.masters[0].url, tmp_path / "st", SLEEPER.format(count=1))
    r = start_scheduler(text)
    wait_for(lambda: started(r) == 1 and r.service.status.get("allocated") == 1, 30, "1 started")
    spec = str(r.spec_path)
    out = io.StringIO()
    assert cli.main(["--json", "status", spec], out=out) == 0
    doc = json.loads(out.getvalue())
    assert doc["leader"] and doc["tasks"][0]["state"] == "TASK_RUNNING"
    addr = (tmp_path / "st" / "leader.addr").read_text().strip()
    with urllib.request.urlopen(f"http://{addr}/", timeout=5) as resp:
        assert b"<h1>Pump pump (leader)</h1>" in resp.read()
    out = io.StringIO()
    assert cli.main(["stop", spec], out=out) == 4 and "refused" in out.getvalue()
    assert r.thread.is_alive()
    assert cli.main(["--force", "stop", spec], out=io.StringIO()) == 0
    r.thread.join(20)
    assert r.rc == 0 and len(cluster.running_tasks()) == 1  # workers keep running (failover)
    assert "TEARDOWN" not in [k for _, k in cluster.calls]


def test_teardown_happens_only_on_explicit_removal(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    r = start_scheduler(spec_text(cluster.masters[0].url, tmp_path / "st", SLEEPER.format(count=2)))
    wait_for(lambda: started(r) == 2 and r.service.status.get("allocated") == 2, 30, "2 started")
    assert cli.main(["--force", "--teardown", "stop", str(r.spec_path)], out=io.StringIO()) == 0
    r.thread.join(20)
    assert "TEARDOWN" in [k for _, k in cluster.calls]
    wait_for(lambda: not cluster.running_tasks(), 15, "all workers killed")
    assert StateStore(tmp_path / "st").load().framework_id is None
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(
            f"http://{(tmp_path / 'st' / 'leader.addr').read_text().strip()}/", timeout=2
        )
