"""Failover: scheduler copies elected through a real ZooKeeper, and master failover."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.scheduler.conftest import SLEEPER, Proc, Runner, spec_text, status_of, wait_for
from tests.scheduler.fake_master import AgentSpec, Cluster
from tests.scheduler.zookeeper import ZooKeeper


def test_killing_the_leader_with_20_workers_hands_over_to_the_standby_without_killing_any(
    tmp_path: Path, zookeeper: ZooKeeper
) -> None:
    agents = [AgentSpec(f"agent{i}.test", cpus=4, mem=4096) for i in range(4)]
    cluster = Cluster(tmp_path / "agents", agents)
    master = cluster.add_master()
    procs: list[Proc] = []
    try:
        feed_hosts = '["agent0.test", "agent1.test", "agent2.test"]'
        workers = SLEEPER.format(count=20).replace(
            "kill_grace", f"hostnames = {feed_hosts}\nkill_grace"
        )
        workers += '\n[workers.late]\nconfig = "late"\ncount = 1\ncpus = 0.5\nmem = 64\n'
        workers += 'command = "exec sleep 300"\nhostnames = ["agent3.test"]\n'
        extra = (
            f'zookeeper = "{zookeeper.hosts}"\nelection_path = "/sr/{tmp_path.name}"\n'
            "zk_session_timeout = 3\n"
        )
        state = tmp_path / "st"
        spec = tmp_path / "spec.toml"
        text = spec_text(master.url, state, workers, extra)
        spec.write_text(text.replace("staging_timeout = 3\n", "staging_timeout = 60\n"))
        late_agent = next(a for a in cluster.agents.values() if a.spec.hostname == "agent3.test")
        cluster.drop_accepts_for_agent = late_agent.agent_id  # the leader's launch gets lost
        procs.append(Proc(spec, tmp_path / "a.log"))
        wait_for(lambda: (state / "leader.addr").exists(), 30, "a leader")
        procs.append(Proc(spec, tmp_path / "b.log"))
        wait_for(lambda: len(cluster.running_tasks()) == 20, 60, "20 running workers")
        first = wait_for(
            lambda: status_of(state).get("framework_id") and status_of(state), 10, "status"
        )
        assert str(procs[0].p.pid) in first["copy"]
        wait_for(
            lambda: any(t["slot"] == "late-0" for t in status_of(state)["tasks"]), 10, "intent"
        )
        before = {tid: t.proc.pid for tid, t in cluster.running_tasks().items() if t.proc}
        cluster.drop_accepts_for_agent = None
        killed_at = time.monotonic()
        procs[0].kill()
        calls_before = len(cluster.calls)
        # the standby is elected, resubscribes with the same framework id and reconciles
        wait_for(lambda: len(cluster.running_tasks()) == 21, 30, "the standby to take over")
        assert time.monotonic() - killed_at < 30
        after = status_of(state)
        assert str(procs[1].p.pid) in after["copy"]
        assert after["framework_id"] == first["framework_id"]
        now_running = {tid: t.proc.pid for tid, t in cluster.running_tasks().items() if t.proc}
        assert all(now_running.get(tid) == pid for tid, pid in before.items())  # none killed
        late = [tid for tid in cluster.launches if ".late-0." in tid]
        assert len(late) == 1  # the in-flight launch started exactly once
        assert "RECONCILE" in [k for _, k in cluster.calls[calls_before:]]
    finally:
        for p in procs:
            p.kill()
        cluster.close()


def test_the_scheduler_follows_a_master_failover_found_through_zookeeper_and_reconciles(
    tmp_path: Path, zookeeper: ZooKeeper, start_scheduler: Callable[[str], Runner]
) -> None:
    cluster = Cluster(tmp_path / "agents", [AgentSpec("agent0.test"), AgentSpec("agent1.test")])
    cluster.reregister_delay = 1.0
    m1 = cluster.add_master()
    m2 = cluster.add_master()
    path = f"/mesos-{tmp_path.name}"
    try:
        m1.register_in_zookeeper(zookeeper.hosts, path)
        m2.register_in_zookeeper(zookeeper.hosts, path)
        url = f"zk://{zookeeper.hosts}{path}"
        runner = start_scheduler(spec_text(url, tmp_path / "st", SLEEPER.format(count=3)))
        wait_for(lambda: len(cluster.running_tasks()) == 3, 30, "3 workers")
        wait_for(lambda: not any(cluster.state()["unacked"].values()), 10, "acks")
        before = set(cluster.running_tasks())
        assert runner.sched.sub.base == m1.url
        m1.unregister()
        cluster.elect(m2)  # m1 loses leadership and its state; m2 re-learns agents after 1 s
        wait_for(lambda: runner.sched.sub is not None and runner.sched.sub.base == m2.url, 30, "m2")
        m2_calls = lambda: [k for p, k in cluster.calls if p == str(m2.port)]  # noqa: E731
        wait_for(lambda: "RECONCILE" in m2_calls(), 10, "reconciliation at m2")
        time.sleep(2.0)
        assert set(cluster.running_tasks()) == before
        assert len(cluster.launches) == 3
        assert all(r.state == "TASK_RUNNING" for r in runner.sched.state.tasks.values())
    finally:
        cluster.close()
