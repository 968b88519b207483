"""The deployment plan is a pure function of the spec and the scheduler's state."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sarra.scheduler.plan import build_plan, explain_wait, render_text
from sarra.scheduler.spec import WorkerType
from sarra.scheduler.state import TaskRecord

FEED = WorkerType(
    name="feed", component="subscribe", config="feed", count=3, cpus=0.5, mem=64, disk=0,
    command="sleep 300", attributes=(("rack", "r9"),), role="pump",
)  # fmt: skip
OLD = replace(FEED, command="sleep 299").version


def task(
    slot: str, state: str = "TASK_RUNNING", version: str = FEED.version, **kw: Any
) -> TaskRecord:
    rec = TaskRecord(
        f"pump.{slot}.{version}.x", slot, slot.rsplit("-", 1)[0], version, "a1", "agent1.test"
    )
    rec.state = state
    rec.last_update = 1.0
    rec.started = state == "TASK_RUNNING"
    for k, v in kw.items():
        setattr(rec, k, v)
    return rec


def steps(plan: dict[str, Any], phase: int = 0) -> dict[str, tuple[str, str]]:
    return {s["name"]: (s["status"], s["reason"]) for s in plan["phases"][phase]["steps"]}


def test_all_started_is_complete_at_every_level() -> None:
    plan = build_plan({"feed": FEED}, [task(f"feed-{i}") for i in range(3)], {}, {})
    assert plan["status"] == "complete" and plan["phases"][0]["status"] == "complete"
    assert {s for s, _ in steps(plan).values()} == {"complete"}
    assert "3 of 3" in plan["phases"][0]["reason"]


def test_each_task_state_maps_to_its_step() -> None:
    tasks = [
        task("feed-0", "TASK_RUNNING", started=False),
        task("feed-1", "TASK_STAGING"),
        task("feed-2", "TASK_STAGING", last_update=0.0),
    ]
    plan = build_plan({"feed": FEED}, tasks, {}, {}, min_running_seconds=30)
    got = steps(plan)
    assert got["feed-0"][0] == "running" and "after 30s" in got["feed-0"][1]
    assert got["feed-1"] == ("staging", "TASK_STAGING on agent1.test")
    assert got["feed-2"][0] == "launching"
    assert plan["status"] == "in-progress" and plan["phases"][0]["reason"] == "0 of 3 complete"


def test_an_unplaceable_slot_waits_for_an_offer_with_the_reason_in_words() -> None:
    tasks = [task("feed-0"), task("feed-1")]
    for raw, words in [
        ("resources", "no offer has 0.5 cpus, 64 MB mem free"),
        ("role", "no offer for role 'pump'"),
        ("attribute rack", "no offer from an agent whose attribute rack matches 'r9'"),
        ("no offers", "no offer received from the master"),
    ]:
        got = steps(build_plan({"feed": FEED}, tasks, {"feed-2": raw}, {}))["feed-2"]
        assert got[0] == "waiting-for-offer" and got[1].startswith(words), got
    assert explain_wait("hostname", replace(FEED, hostnames=("h1",))).endswith("(h1)")


def test_when_agents_differ_the_step_says_which_agent_misses_what() -> None:
    tasks = [task("feed-0"), task("feed-1")]
    refusals = (("a0.test", "resources"), ("a1.test", "attribute rack"), ("a2.test", "resources"))
    plan = build_plan({"feed": FEED}, tasks, {"feed-2": "resources"}, {}, 0, {"feed-2": refusals})
    assert steps(plan)["feed-2"] == (
        "waiting-for-offer",
        "no offer fits: a0.test, a2.test: less than 0.5 cpus, 64 MB mem free; "
        "a1.test: attribute rack does not match 'r9'",
    )
    same = (("a0.test", "role"), ("a1.test", "role"))
    plan = build_plan({"feed": FEED}, tasks, {"feed-2": "role"}, {}, 0, {"feed-2": same})
    assert steps(plan)["feed-2"] == ("waiting-for-offer", "no offer for role 'pump'")


def test_a_volume_wait_and_a_failure_are_named() -> None:
    tasks = [task("feed-0"), task("feed-1")]
    held = "its volume is still held by its previous task"
    assert steps(build_plan({"feed": FEED}, tasks, {"feed-2": held}, {}))["feed-2"] == (
        "waiting-for-volume", held,
    )  # fmt: skip
    # lost with its agent: the volume is there only, so the step waits for the volume
    gone = {"feed-2": "its task t9 ended TASK_GONE_BY_OPERATOR"}
    away = {"feed-2": "its volume is on agent a1, not offered"}
    status, reason = steps(build_plan({"feed": FEED}, tasks, away, gone))["feed-2"]
    assert status == "waiting-for-volume" and reason.startswith(away["feed-2"])
    assert "TASK_GONE" in reason
    stateful = replace(FEED, volume_mb=10, volume_path="state")
    stuck = task("feed-2", "TASK_STAGING", stateful.version, kill_requested=1.0,
                 kill_reason="still TASK_STAGING after reconciliation")  # fmt: skip
    status, reason = steps(build_plan({"feed": stateful}, [stuck], {}, {}))["feed-2"]
    assert status == "waiting-for-volume" and "released when it ends" in reason
    why = {"feed-2": "its task t9 ended TASK_FAILED REASON_COMMAND_EXECUTOR_FAILED"}
    status, reason = steps(build_plan({"feed": FEED}, tasks, {"feed-2": "resources"}, why))[
        "feed-2"
    ]
    assert status == "failed" and "TASK_FAILED" in reason and "no offer has 0.5 cpus" in reason


def test_a_rolling_update_shows_the_slot_being_rolled_and_who_waits() -> None:
    tasks = [
        task("feed-0", "TASK_RUNNING", OLD, kill_requested=5.0,
             kill_reason=f"rolling update of feed: version {OLD} -> {FEED.version}"),
        task("feed-1", "TASK_RUNNING", OLD),
        task("feed-2", "TASK_RUNNING", OLD),
    ]  # fmt: skip
    plan = build_plan({"feed": FEED}, tasks, {}, {})
    got = steps(plan)
    assert got["feed-0"][0] == "rolling" and "old task" in got["feed-0"][1]
    assert got["feed-1"][0] == got["feed-2"][0] == "outdated"
    phase = plan["phases"][0]
    assert plan["status"] == phase["status"] == "rolling"
    assert "0 of 3 on it" in phase["reason"] and "rolling feed-0" in phase["reason"]
    # the replacement is launched while the old task still stops (no volume to wait for)
    tasks.append(task("feed-0", "TASK_STAGING"))
    plan = build_plan({"feed": FEED}, tasks, {}, {})
    status, reason = steps(plan)["feed-0"]
    assert status == "rolling" and "replacement" in reason and "old task" in reason
    assert "1 of 3 on it; rolling feed-0" in plan["phases"][0]["reason"]
    # the old task is gone, the replacement runs but is not started yet: the next one waits
    tasks[0] = task("feed-0", "TASK_RUNNING", started=False)
    del tasks[-1]
    phase = build_plan({"feed": FEED}, tasks, {}, {})["phases"][0]
    assert phase["status"] == "rolling" and "1 of 3 on it" in phase["reason"]
    assert "waiting for feed-0 (running)" in phase["reason"]


def test_scale_down_shows_the_task_being_stopped() -> None:
    tasks = [task(f"feed-{i}") for i in range(3)]
    tasks[2].kill_requested = 1.0
    tasks[2].kill_reason = "slot feed-2 is no longer in the spec (scale down)"
    plan = build_plan({"feed": replace(FEED, count=2)}, tasks, {}, {})
    assert steps(plan)["feed-2"] == ("stopping", tasks[2].kill_reason)
    assert plan["status"] == "in-progress"
    # a worker type taken out of the spec gets a phase of its own until its tasks are gone
    plan = build_plan({}, tasks, {}, {})
    assert [(p["name"], p["status"]) for p in plan["phases"]] == [("feed", "stopping")]
    assert [s["status"] for s in plan["phases"][0]["steps"]] == ["stopping"] * 3
    assert plan["status"] == "in-progress"


def test_the_text_rendering_lists_every_step_with_its_reason() -> None:
    plan = build_plan({"feed": FEED}, [task("feed-0")], {"feed-1": "role"}, {})
    doc = {"pump": "p", "leader": True, "copy": "h:1", "connected": True, "plan": plan,
           "framework_id": "fw", "master": "http://m", "allocated": 1}  # fmt: skip
    text = render_text(doc)
    assert "plan deployment: in-progress" in text
    assert "phase feed: in-progress (1 of 3 complete)" in text
    assert "feed-1  waiting-for-offer   no offer for role 'pump'" in text
    assert "this copy does not lead" in render_text({"pump": "p", "leader": False})
