"""What a real Mesos master and agent impose, enforced by the test master, met by the scheduler.

Roles (validated, several per framework, reserved resources only for their role), typed agent
attributes, the agent's minimal task environment, the framework user, and stateful workers:
a persistent volume on dynamically reserved disk that outlives its task.
"""

from __future__ import annotations

import getpass
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sarra.errors import ConfigError
from sarra.scheduler.core import PumpScheduler
from sarra.scheduler.mesos import MesosClient, SubscriptionRefused
from sarra.scheduler.spec import PumpSpec, parse_spec, reload_changes
from sarra.scheduler.state import SchedulerState
from tests.scheduler.conftest import Runner, spec_text, wait_for
from tests.scheduler.fake_master import DEFAULT_PATH, AgentSpec, Cluster

HEAD = '[scheduler]\nmaster = "http://m:5050"\nuser = "sarra"\n'


def worker(name: str, extra: str, command: str = "exec sleep 300", cpus: float = 0.5) -> str:
    return (
        f'[workers.{name}]\nconfig = "{name}"\ncount = 1\ncpus = {cpus}\nmem = 64\n'
        f'command = "{command}"\nkill_grace_seconds = 1\n{extra}\n'
    )


@pytest.fixture
def odd_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Agent 0: 1 free cpu + 2 reserved to "pump", rack 1 (SCALAR); agent 1: rack r1 (TEXT)."""
    c = Cluster(
        tmp_path / "agents",
        [
            AgentSpec("a0.test", cpus=3, mem=1024, attributes={"rack": "1"},
                      reserved={"pump": (2.0, 512.0, 0.0)}),
            AgentSpec("a1.test", cpus=1, mem=1024,
                      attributes={"rack": "r1", "ports": "[8000-8100]"}),
        ],
    )  # fmt: skip
    c.add_master()
    try:
        yield c
    finally:
        c.close()


def test_spec_refuses_a_role_the_master_would_refuse_and_a_missing_user() -> None:
    for bad in ("a b", "-pump", "eng//pump", "eng/*", ".."):
        with pytest.raises(ConfigError, match="role"):
            parse_spec(HEAD + worker("x", f'role = "{bad}"'))
    with pytest.raises(ConfigError, match="user is required"):
        parse_spec(HEAD.replace('user = "sarra"\n', "") + worker("x", ""))
    with pytest.raises(ConfigError, match="volume needs a role"):
        parse_spec(HEAD + worker("x", 'volume = { size = 10, path = "state" }'))
    with pytest.raises(ConfigError, match="relative path"):
        parse_spec(HEAD + worker("x", 'role = "p"\nvolume = { size = 10, path = "/abs" }'))
    spec = parse_spec(HEAD + worker("x", 'role = "eng/pump"') + worker("y", ""))
    assert spec.roles == ("*", "eng/pump")
    vol = 'role = "p"\nvolume = { size = 10, path = "state" }'
    before = parse_spec(HEAD + worker("x", vol))
    with pytest.raises(ConfigError, match="cannot change the volume"):
        reload_changes(before, parse_spec(HEAD + worker("x", vol.replace("10", "20"))))
    assert reload_changes(
        before, parse_spec(HEAD + worker("x", vol).replace("count = 1", "count = 2"))
    )


def test_the_test_master_refuses_a_bad_role_and_roles_without_multi_role(
    odd_cluster: Cluster,
) -> None:
    url = odd_cluster.masters[0].url
    base = {"user": getpass.getuser(), "name": "t", "failover_timeout": 5.0}
    multi = [{"type": "MULTI_ROLE"}]
    for info, why in (
        ({**base, "roles": ["-x"], "capabilities": multi}, "invalid"),
        ({**base, "roles": ["a"]}, "MULTI_ROLE"),
        ({**base, "role": "a", "roles": ["a"], "capabilities": multi}, "both"),
    ):
        with pytest.raises(SubscriptionRefused, match=why):
            MesosClient(url, 5.0).subscribe(info, None)


def test_reserved_resources_serve_only_their_role_and_both_roles_get_offers(
    odd_cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    # 2.5 cpus exist on agent 0 only for role pump (1 free + 2 reserved); role "*" sees 1 + 1
    workers = worker("big", 'role = "pump"', cpus=2.5) + worker("small", "", cpus=0.5)
    runner = start_scheduler(spec_text(odd_cluster.masters[0].url, tmp_path / "st", workers))
    wait_for(lambda: len(odd_cluster.running_tasks()) == 2, 30, "both workers running")
    tasks = {t.task_id.split(".")[1]: t for t in odd_cluster.running_tasks().values()}
    big = tasks["big-0"]
    assert big.agent_id.endswith("-S0") and big.cpus == pytest.approx(2.5)
    reserved = [k for k in big.uses if k[0] == "cpus" and k[1]]
    assert reserved and big.uses[reserved[0]] == pytest.approx(2.0)  # named as offered
    assert not odd_cluster.dropped
    assert not [r for r in runner.sched.state.tasks.values() if r.state == "TASK_ERROR"]
    # a worker of role "*" never counts the reserved cpus: 2.5 cannot fit anywhere
    (tmp_path / "spec0.toml").write_text(
        spec_text(
            odd_cluster.masters[0].url,
            tmp_path / "st",
            worker("big", 'role = "pump"', cpus=2.5) + worker("small", "", cpus=0.5)
            + worker("greedy", "", cpus=2.5),
        )
    )  # fmt: skip
    ok, text = runner.service.reload("test")
    assert ok, text
    wait_for(
        lambda: "greedy-0" in runner.sched.snapshot()["pending"] and len(odd_cluster.launches) == 2,
        10,
        "greedy pending",
    )


def test_numeric_attributes_match_and_tasks_get_the_agent_environment_only(
    odd_cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    os.environ["SR_TEST_LEAK"] = "from-the-test"
    try:
        cmd = "env > $MESOS_SANDBOX/env.txt; exec sleep 300"
        workers = worker("a", 'attributes = { rack = "1" }\nenv = { FOO = "bar" }', cmd)
        workers += worker("b", "attributes = { ports = 8050 }", cmd)
        start_scheduler(spec_text(odd_cluster.masters[0].url, tmp_path / "st", workers))
        wait_for(lambda: len(odd_cluster.running_tasks()) == 2, 30, "both workers running")
    finally:
        del os.environ["SR_TEST_LEAK"]
    by_slot = {t.task_id.split(".")[1]: t for t in odd_cluster.running_tasks().values()}
    assert by_slot["a-0"].agent_id.endswith("-S0")  # rack 1 is SCALAR 1 on agent 0
    assert by_slot["b-0"].agent_id.endswith("-S1")  # 8050 lies in the RANGES [8000-8100]
    t = by_slot["a-0"]
    sandbox = odd_cluster.root / t.agent_id / t.framework_id / t.task_id
    envfile = sandbox / "env.txt"
    wait_for(lambda: envfile.exists() and "MESOS_TASK_ID" in envfile.read_text(), 10, "env")
    env = dict(line.split("=", 1) for line in envfile.read_text().splitlines() if "=" in line)
    assert env["FOO"] == "bar" and env["PATH"] == DEFAULT_PATH
    assert env["MESOS_SANDBOX"] == str(sandbox) and env["SR_SCHEDULER_SLOT"] == "a-0"
    assert "SR_TEST_LEAK" not in env and "VIRTUAL_ENV" not in env and "PYTHONPATH" not in env


def test_a_user_the_agents_do_not_have_fails_the_task(
    odd_cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    text = spec_text(odd_cluster.masters[0].url, tmp_path / "st", worker("a", ""))
    text = text.replace(f'user = "{getpass.getuser()}"', 'user = "no-such-user-sarra"')
    runner = start_scheduler(text)
    wait_for(lambda: odd_cluster.launches, 30, "a launch")
    tid = odd_cluster.launches[0]
    wait_for(lambda: odd_cluster.state()["tasks"].get(tid) == "TASK_FAILED", 30, "TASK_FAILED")
    t = odd_cluster.all_tasks()[tid]
    stderr = odd_cluster.root / t.agent_id / t.framework_id / tid / "stderr"
    assert "no-such-user-sarra" in stderr.read_text()
    assert runner.sched.framework_info()["user"] == "no-such-user-sarra"


STATEFUL = (
    "n=$(cat state/count 2>/dev/null || echo 0); echo $((n+1)) > state/count; "
    "echo $MESOS_TASK_ID >> state/tasks; exec sleep 300"
)


def test_a_stateful_worker_finds_its_state_again_after_being_killed(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    extra = 'role = "pump"\nvolume = { size = 32, path = "state" }'
    text = spec_text(cluster.masters[0].url, tmp_path / "st", worker("keep", extra, STATEFUL))
    text = text.replace("[scheduler]\n", '[scheduler]\nprincipal = "sarra-pump"\n')
    runner = start_scheduler(text)
    wait_for(lambda: len(cluster.running_tasks()) == 1, 30, "the worker running")
    (first,) = cluster.running_tasks().values()
    assert cluster.operations == ["RESERVE", "CREATE"] and not cluster.dropped
    agent = cluster.agents[first.agent_id]
    (volume,) = agent.volumes.values()
    assert volume.persistence_id == "sarra.pump.keep-0" and volume.role == "pump"
    assert '"principal": "sarra-pump"' in volume.reservations
    wait_for(lambda: (volume.path / "count").exists(), 10, "the first state write")
    wait_for(lambda: all(r.started for r in runner.sched.state.tasks.values()), 10, "started")
    assert first.proc is not None
    os.killpg(first.proc.pid, signal.SIGKILL)  # the worker dies; its agent stays
    wait_for(
        lambda: [t for t in cluster.running_tasks().values() if t.task_id != first.task_id],
        30,
        "the relaunch",
    )
    (second,) = cluster.running_tasks().values()
    assert second.agent_id == first.agent_id  # back where its state is
    wait_for(lambda: (volume.path / "count").read_text().strip() == "2", 10, "the second write")
    assert (volume.path / "tasks").read_text().split() == [first.task_id, second.task_id]
    # the relaunch used the offered volume: no second RESERVE or CREATE
    assert cluster.operations == ["RESERVE", "CREATE"] and not cluster.dropped
    sandbox = cluster.root / second.agent_id / second.framework_id / second.task_id
    assert (sandbox / "state").resolve() == volume.path.resolve()
    spec = runner.sched.snapshot()["spec"]["keep"]
    assert spec["role"] == "pump" and spec["volume"] == {"size": 32.0, "path": "state"}


def _first_offers(url: str, capabilities: list[str]) -> list[dict]:  # type: ignore[type-arg]
    info = {
        "user": getpass.getuser(), "name": "t", "roles": ["pump"], "failover_timeout": 0.0,
        "capabilities": [{"type": c} for c in ["MULTI_ROLE", *capabilities]],
    }  # fmt: skip
    sub, _ = MesosClient(url, 5.0).subscribe(info, None)
    try:
        while True:
            item = sub.events.get(timeout=10)
            if item.kind == "event" and item.event and item.event.get("type") == "OFFERS":
                offers: list[dict] = item.event["offers"]["offers"]  # type: ignore[type-arg]
                return offers
    finally:
        sub.close()


def test_reserved_resources_come_in_the_format_the_framework_declared(
    odd_cluster: Cluster,
) -> None:
    url = odd_cluster.masters[0].url
    refined = _first_offers(url, ["RESERVATION_REFINEMENT"])
    cpus = [r for o in refined for r in o["resources"] if r["name"] == "cpus"]
    reserved = [r for r in cpus if r.get("reservations")]
    assert reserved and reserved[0]["reservations"] == [{"type": "STATIC", "role": "pump"}]
    assert all("role" not in r for r in cpus)
    assert all(r["allocation_info"] == {"role": "pump"} for r in cpus)
    old = _first_offers(url, [])
    cpus = [r for o in old for r in o["resources"] if r["name"] == "cpus"]
    assert [r["role"] for r in cpus if "role" in r] == ["pump"]
    assert all("reservations" not in r for r in cpus)
    # the scheduler declares the capability, so a real master sends the current format
    spec = parse_spec(HEAD + worker("x", 'role = "pump"'))
    caps = {c["type"] for c in _framework_info(spec)["capabilities"]}
    assert {"RESERVATION_REFINEMENT", "MULTI_ROLE"} <= caps


class _NoStore:
    def load(self) -> SchedulerState:
        return SchedulerState()


def _framework_info(spec: PumpSpec) -> dict:  # type: ignore[type-arg]
    client = MesosClient("http://127.0.0.1:1")
    return PumpScheduler(spec, _NoStore(), client).framework_info()  # type: ignore[arg-type]


def test_the_test_master_refuses_what_a_real_master_refuses_in_an_accept(
    odd_cluster: Cluster,
) -> None:
    """Wrong reservation principal: RESERVE dropped; reserved cpus named as unreserved, or
    without allocation_info: TASK_ERROR (so a scheduler doing either fails its tests)."""
    url = odd_cluster.masters[0].url
    info = {
        "user": getpass.getuser(), "name": "t", "roles": ["pump"], "failover_timeout": 0.0,
        "principal": "p", "capabilities": [{"type": "MULTI_ROLE"},
                                           {"type": "RESERVATION_REFINEMENT"}],
    }  # fmt: skip
    client = MesosClient(url, 5.0)
    sub, _ = client.subscribe(info, None)
    try:
        offer = None
        while offer is None:
            item = sub.events.get(timeout=10)
            if item.kind == "event" and item.event and item.event.get("type") == "OFFERS":
                offer = next(
                    o
                    for o in item.event["offers"]["offers"]
                    if o["agent_id"]["value"].endswith("S0")
                )
        alloc = {"role": "pump"}

        def res(name: str, value: float, **kw: object) -> dict:  # type: ignore[type-arg]
            return {"name": name, "type": "SCALAR", "scalar": {"value": value}, **kw}

        reserve = {"type": "RESERVE", "reserve": {"resources": [res(
            "disk", 10, allocation_info=alloc,
            reservations=[{"type": "DYNAMIC", "role": "pump", "principal": "q"}],
        )]}}  # fmt: skip

        def task(tid: str, resources: list[dict]) -> dict:  # type: ignore[type-arg]
            return {
                "name": tid, "task_id": {"value": tid}, "agent_id": offer["agent_id"],
                "resources": resources, "command": {"value": "exec sleep 30"},
            }  # fmt: skip

        wrong = task(
            "t1", [res("cpus", 2.5, allocation_info=alloc), res("mem", 32, allocation_info=alloc)]
        )
        bare = task("t2", [res("cpus", 0.1), res("mem", 32)])
        client.accept([offer["id"]["value"]], [wrong, bare], 1.0, [reserve])
        errors = {}
        while len(errors) < 2:
            item = sub.events.get(timeout=10)
            if item.kind == "event" and item.event and item.event.get("type") == "UPDATE":
                st = item.event["update"]["status"]
                errors[st["task_id"]["value"]] = (st["state"], st.get("message", ""))
    finally:
        sub.close()
    assert errors["t1"] == ("TASK_ERROR", "Task uses more resources than available in the offers")
    assert errors["t2"][0] == "TASK_ERROR" and "allocation_info" in errors["t2"][1]
    assert len(odd_cluster.dropped) == 1 and "principal 'q'" in odd_cluster.dropped[0]
    assert not odd_cluster.launches


def test_a_rolling_update_of_a_stateful_worker_waits_for_its_volume_and_keeps_the_state(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    extra = 'role = "pump"\nvolume = { size = 32, path = "state" }'
    # the worker takes 2 s to stop: the volume stays held that long after the KILL
    slow = STATEFUL.replace("exec sleep 300", "trap 'sleep 2; exit 0' TERM; sleep 300 & wait")
    text = spec_text(cluster.masters[0].url, tmp_path / "st", worker("keep", extra, slow))
    text = text.replace("kill_grace_seconds = 1", "kill_grace_seconds = 5")
    runner = start_scheduler(text)
    wait_for(lambda: len(cluster.running_tasks()) == 1, 30, "the worker running")
    (first,) = cluster.running_tasks().values()
    (volume,) = cluster.agents[first.agent_id].volumes.values()
    wait_for(lambda: all(r.started for r in runner.sched.state.tasks.values()), 10, "started")
    # a new command: the old task is killed; the new one must wait until the volume is free
    (tmp_path / "spec0.toml").write_text(text.replace("sleep 300 &", "sleep 301 &"))
    ok, why = runner.service.reload("test")
    assert ok, why
    wait_for(
        lambda: [t for t in cluster.running_tasks().values() if t.task_id != first.task_id],
        30,
        "the replacement",
    )
    (second,) = cluster.running_tasks().values()
    assert second.agent_id == first.agent_id and first.state == "TASK_KILLED"
    wait_for(lambda: (volume.path / "count").read_text().strip() == "2", 10, "the second write")
    assert cluster.operations == ["RESERVE", "CREATE"] and not cluster.dropped
    # exactly two ACCEPTs: no launch was tried while the old task still held the volume
    assert len(cluster.accepts) == 2 and cluster.launches == [first.task_id, second.task_id]
