"""The deployment plan against the test master with real worker processes."""

from __future__ import annotations

import io
import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sarra.scheduler import cli
from tests.scheduler.conftest import SLEEPER, Runner, spec_text, status_of, wait_for
from tests.scheduler.fake_master import Cluster

UNPLACEABLE = """
[workers.big]
config = "big"
count = 1
cpus = 8
mem = 64
command = "exec sleep 300"
kill_grace_seconds = 1

[workers.picky]
config = "picky"
count = 1
cpus = 0.1
mem = 32
command = "exec sleep 300"
attributes = { rack = "r7" }
kill_grace_seconds = 1
"""

# ignores SIGTERM (inherited through exec): a kill takes the whole grace period, long enough
# to see the old task stopping in the plan
STUBBORN = SLEEPER.replace('"exec sleep 300"', "\"trap '' TERM; exec sleep 300\"").replace(
    "kill_grace_seconds = 1", "kill_grace_seconds = 3"
)


def status(st: Path) -> dict[str, Any]:
    """The leader's status document, empty while no leader has written its address."""
    return status_of(st) if (st / "leader.addr").exists() else {}


def steps(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for p in doc.get("plan", {}).get("phases", []) for s in p["steps"]}


def status_text(spec: Path) -> str:
    out = io.StringIO()
    assert cli.main(["status", str(spec)], out=out) == 0
    return out.getvalue()


def test_a_worker_that_no_offer_fits_is_shown_waiting_with_its_reason(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    st = tmp_path / "st"
    r = start_scheduler(
        spec_text(cluster.masters[0].url, st, SLEEPER.format(count=2) + UNPLACEABLE)
    )
    wait_for(
        lambda: (s := steps(status(st))).get("feed-1", {}).get("status") == "complete"
        and s["feed-0"]["status"] == "complete"
        and s["big-0"]["status"] == s["picky-0"]["status"] == "waiting-for-offer",
        30, "feed complete, big and picky waiting",
    )  # fmt: skip
    doc = status_of(st)
    got = steps(doc)
    assert got["big-0"]["reason"].startswith("no offer has 8 cpus, 64 MB mem free")
    assert got["picky-0"]["reason"].startswith(
        "no offer from an agent whose attribute rack matches 'r7'"
    )
    phases = {p["name"]: p for p in doc["plan"]["phases"]}
    assert phases["feed"]["status"] == "complete" and phases["big"]["status"] == "in-progress"
    assert doc["plan"]["status"] == "in-progress"
    assert len(cluster.running_tasks()) == 2  # the two that fit run, nothing else launched
    text = status_text(r.spec_path)
    assert "plan deployment: in-progress" in text and "phase feed: complete" in text
    assert "big-0  waiting-for-offer   no offer has 8 cpus" in text, text
    assert "picky-0  waiting-for-offer   no offer from an agent whose attribute rack" in text
    addr = (st / "leader.addr").read_text().strip()
    with urllib.request.urlopen(f"http://{addr}/", timeout=5) as resp:
        page = resp.read().decode()
    assert "<h3>Phase big: in-progress</h3>" in page and "waiting-for-offer" in page


def test_when_agents_miss_different_things_the_step_names_each(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    st = tmp_path / "st"
    # agents 0 and 2 are rack r0, agent 1 rack r1; one feed worker (0.5 cpus) on each of the
    # three 4-cpu agents leaves 3.5 cpus: too little on r0, the wrong rack on agent 1
    hungry = (
        '[workers.hungry]\nconfig = "h"\ncount = 1\ncpus = 3.8\nmem = 32\n'
        'command = "exec sleep 300"\nattributes = { rack = "r0" }\n'
    )
    start_scheduler(spec_text(cluster.masters[0].url, st, SLEEPER.format(count=3) + hungry))
    wait_for(
        lambda: (s := steps(status(st))).get("hungry-0", {}).get("status") == "waiting-for-offer"
        and all(s[f"feed-{i}"]["status"] == "complete" for i in range(3)),
        30, "feed complete, hungry waiting",
    )  # fmt: skip
    reason = steps(status(st))["hungry-0"]["reason"]
    assert reason.startswith("no offer fits: "), reason
    assert "agent0.test, agent2.test: less than 3.8 cpus, 32 MB mem free" in reason, reason
    assert "agent1.test: attribute rack does not match 'r0'" in reason, reason


def test_a_stateful_worker_whose_agent_is_gone_waits_for_its_volume(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    st = tmp_path / "st"
    keep = SLEEPER.format(count=1).replace("[workers.feed]", "[workers.keep]")
    keep += 'role = "pump"\nvolume = { size = 32, path = "state" }\n'
    start_scheduler(spec_text(cluster.masters[0].url, st, keep))
    wait_for(lambda: status(st).get("plan", {}).get("status") == "complete", 30, "complete")
    (task,) = cluster.running_tasks().values()
    cluster.remove_agent(task.agent_id)  # the volume, and the worker's state, are lost with it
    wait_for(
        lambda: steps(status(st))["keep-0"]["status"] == "waiting-for-volume", 30, "volume wait"
    )
    reason = steps(status(st))["keep-0"]["reason"]
    assert reason.startswith(f"its volume is on agent {task.agent_id}, not offered"), reason
    assert not cluster.running_tasks()  # never launched elsewhere without its state


def test_a_reload_shows_the_rolling_step_then_completion(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    st = tmp_path / "st"
    url = cluster.masters[0].url
    r = start_scheduler(spec_text(url, st, STUBBORN.format(count=2)))
    wait_for(lambda: status(st).get("plan", {}).get("status") == "complete", 30, "complete")
    old = set(cluster.running_tasks())
    r.spec_path.write_text(spec_text(url, st, STUBBORN.format(count=2).replace("300", "301")))
    assert cli.main(["reload", str(r.spec_path)], out=io.StringIO()) == 0
    seen: list[tuple[str, str, str]] = []  # (phase status, phase reason, rolled slot's step)
    trace: list[tuple[str, ...]] = []
    texts: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        doc = status_of(st)
        phase = doc["plan"]["phases"][0]
        trace.append(
            (phase["status"], *(f"{s['status']}:{s.get('state')}" for s in phase["steps"]))
        )
        for s in phase["steps"]:
            if s["status"] == "rolling":
                seen.append((phase["status"], phase["reason"], s["reason"]))
                if len(texts) < 1:
                    texts.append(status_text(r.spec_path))
        if doc["plan"]["status"] == "complete" and not set(cluster.running_tasks()) & old:
            break
        time.sleep(0.1)
    assert doc["plan"]["status"] == "complete", doc["plan"]
    assert {s["version"] for s in steps(doc).values()} == {doc["spec"]["feed"]["version"]}
    assert seen, f"the plan never showed a rolling step: {trace}"
    phase_status, reason, step = seen[0]
    assert phase_status == "rolling" and "rolling update to version" in reason
    assert "rolling feed-" in reason and "old task" in step and "rolling update of feed" in step
    assert "phase feed: rolling (rolling update to version" in texts[0], texts[0]
    assert re.search(
        r"\n    feed-[01]  rolling +replacement|\n    feed-[01]  rolling +old task", texts[0]
    )
    for slot in ("feed-0", "feed-1"):  # each rolled in turn, shown while its old task stops
        polls = [r_ for _, r_, _ in seen if f"rolling {slot}" in r_]
        assert len(polls) >= 2, (slot, len(polls))
