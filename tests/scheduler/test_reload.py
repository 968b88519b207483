"""Live reload of the spec (reload verb, SIGHUP, mtime watch) and the decision log."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from sarra.scheduler import cli
from tests.scheduler.conftest import SLEEPER, Proc, Runner, spec_text, status_of, wait_for
from tests.scheduler.fake_master import Cluster


def started(runner: Runner) -> int:
    s = runner.sched
    return 0 if s is None else sum(1 for r in s.state.tasks.values() if r.started)


def subscribes(cluster: Cluster) -> int:
    return [k for _, k in cluster.calls].count("SUBSCRIBE")


def rewrite(path: Path, text: str) -> None:
    """Replace the spec file so that its mtime surely changes."""
    old = path.stat().st_mtime
    path.write_text(text)
    os.utime(path, (old + 2, old + 2))


def post_reload(state_dir: Path) -> tuple[int, str]:
    addr = (state_dir / "leader.addr").read_text().strip()
    token = (state_dir / "control.token").read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    req = urllib.request.Request(f"http://{addr}/reload", method="POST", data=b"", headers=auth)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, str(json.load(resp)["result"])
    except urllib.error.HTTPError as e:
        return e.code, str(json.load(e)["result"])


def test_a_reloaded_count_scales_down_and_up_without_restart_or_replacing_the_others(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    url = cluster.masters[0].url
    r = start_scheduler(spec_text(url, tmp_path / "st", SLEEPER.format(count=4)))
    wait_for(lambda: started(r) == 4, 30, "4 started")
    before = set(cluster.running_tasks())
    sched = r.sched
    r.spec_path.write_text(spec_text(url, tmp_path / "st", SLEEPER.format(count=2)))
    out = io.StringIO()
    assert cli.main(["reload", str(r.spec_path)], out=out) == 0
    assert "count 4 -> 2 (scale down)" in out.getvalue()
    assert sched.spec.workers["feed"].count == 2  # reported done once the leader holds it
    wait_for(lambda: len(cluster.running_tasks()) == 2 and len(sched.state.tasks) == 2, 30, "2")
    assert set(cluster.running_tasks()) < before
    r.spec_path.write_text(spec_text(url, tmp_path / "st", SLEEPER.format(count=3)))
    out = io.StringIO()
    assert cli.main(["reload", str(r.spec_path)], out=out) == 0
    assert "count 2 -> 3 (scale up)" in out.getvalue()
    wait_for(lambda: started(r) == 3 and len(cluster.running_tasks()) == 3, 30, "3 started")
    assert len(set(cluster.running_tasks()) & before) == 2
    assert r.sched is sched and subscribes(cluster) == 1  # same subscription throughout
    assert status_of(tmp_path / "st")["spec"]["feed"]["count"] == 3


def test_a_changed_command_rolls_through_the_workers_one_at_a_time_on_sighup(
    cluster: Cluster, tmp_path: Path
) -> None:
    url = cluster.masters[0].url
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text(url, tmp_path / "st", SLEEPER.format(count=3)))
    proc = Proc(spec, tmp_path / "sched.log")
    try:
        wait_for(lambda: len(cluster.running_tasks()) == 3, 30, "3 running")
        # the status document has tasks only once the leader's loop has run a step
        wait_for(
            lambda: len(ts := status_of(tmp_path / "st").get("tasks", [])) == 3
            and all(t["started"] for t in ts),
            10, "3 started in the status document",
        )  # fmt: skip
        old = set(cluster.running_tasks())
        new_workers = SLEEPER.format(count=3).replace("sleep 300", "sleep 301")
        spec.write_text(spec_text(url, tmp_path / "st", new_workers))
        os.kill(proc.p.pid, signal.SIGHUP)
        lowest = 3
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tasks = cluster.running_tasks()
            lowest = min(lowest, len(tasks))
            if not set(tasks) & old and len(tasks) == 3:
                doc = status_of(tmp_path / "st")
                if len(doc.get("tasks", [])) == 3 and all(t["started"] for t in doc["tasks"]):
                    break
            time.sleep(0.05)
        assert not set(cluster.running_tasks()) & old, "not all workers were replaced"
        assert lowest >= 2  # never more than one worker down at a time
        assert len(cluster.launches) == 6
        assert proc.p.poll() is None and subscribes(cluster) == 1  # no restart
        text = proc.text()
        assert "reload (SIGHUP): worker type feed changed" in text
        assert text.count("decision: kill task") == 3 and "rolling update of feed" in text
    finally:
        proc.kill()


def test_a_bad_spec_is_refused_with_its_reason_and_the_running_one_kept(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    url = cluster.masters[0].url
    st = tmp_path / "st"
    good = spec_text(url, st, SLEEPER.format(count=2), "watch_spec = true\n")
    r = start_scheduler(good)
    wait_for(lambda: started(r) == 2, 30, "2 started")
    before = set(cluster.running_tasks())
    rewrite(r.spec_path, good.replace("count = 2", "count = -1"))  # noticed by the mtime watch
    wait_for(lambda: "refused" in status_of(st).get("last_reload", ""), 10, "the watch")
    assert "count must be an integer from 0 to" in status_of(st)["last_reload"]
    code, text = post_reload(st)
    assert code == 400 and "keeping the running spec" in text
    assert cli.main(["reload", str(r.spec_path)], out=io.StringIO()) == 2  # checked locally
    rewrite(r.spec_path, good.replace(url, "http://127.0.0.1:1"))
    code, text = post_reload(st)
    assert code == 400 and "cannot change master" in text
    assert r.sched.spec.workers["feed"].count == 2 and r.sched.spec.scheduler.master == url
    assert set(cluster.running_tasks()) == before
    rewrite(r.spec_path, good.replace("count = 2", "count = 3"))
    wait_for(lambda: started(r) == 3, 30, "the watched file's new count")
    assert before < set(cluster.running_tasks())


def test_every_decision_is_logged_with_its_reason(
    cluster: Cluster,
    start_scheduler: Callable[[str], Runner],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sarra.scheduler")
    url = cluster.masters[0].url
    r = start_scheduler(spec_text(url, tmp_path / "st", SLEEPER.format(count=2)))
    wait_for(lambda: started(r) == 2, 30, "2 started")

    def said(*parts: str) -> bool:
        return any(all(p in m for p in parts) for m in caplog.messages)

    # placement: where, and why there
    assert said("decision: launch", "slot feed-0", "placed there because fits; fewest feed")
    # decline: the third agent's offer is not needed, with the filter length and the reason
    wait_for(lambda: said("decision: decline", "for 30s"), 10, "a decline")
    assert said("nothing pending: offers suppressed")
    # kill: scale down by reload
    r.spec_path.write_text(spec_text(url, tmp_path / "st", SLEEPER.format(count=1)))
    assert cli.main(["reload", str(r.spec_path)], out=io.StringIO()) == 0
    wait_for(lambda: len(cluster.running_tasks()) == 1, 30, "the scale down")
    assert said("decision: kill task", "(feed-1 on", "no longer in the spec (scale down)")
    assert said("KILL", "(feed-1)", "no longer in the spec")
    # relaunch: the survivor dies; it goes back where it was, and the log says both whys
    (victim,) = cluster.running_tasks().values()
    assert victim.proc is not None
    os.kill(victim.proc.pid, signal.SIGKILL)
    wait_for(lambda: said("decision: relaunch", "slot feed-0"), 30, "the relaunch")
    assert said(
        "decision: relaunch",
        f"its task {victim.task_id} ended TASK_FAILED",
        "back on the agent of its previous task",
    )
    assert said("slot(s) pending (feed-0): reviving offers")
