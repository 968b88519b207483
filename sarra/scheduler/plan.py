"""The deployment plan: the spec and the scheduler's state shown as phases and steps.

A pure function in the style of :mod:`sarra.scheduler.placement`: no I/O, no clock of its own.
:func:`build_plan` derives, from the worker types of the spec, the task records the scheduler
keeps and the reasons it recorded (why a slot became pending, why the last placement round
did not place it), one *phase* per worker type and one *step* per slot. :func:`render_text`
turns the plan into the lines ``sr_scheduler status`` prints.

Step statuses (one word, then a reason in plain words):

``complete``
    a task of the current version counts as started (RUNNING for ``min_running_seconds``);
``running``
    RUNNING, not yet for ``min_running_seconds``;
``staging``
    the master reported the task STAGING or STARTING;
``launching``
    ACCEPT sent, no status update received yet;
``rolling``
    the slot's task of an older version is being stopped by a rolling update (its
    replacement may already be launched elsewhere: a worker without a volume does not wait);
``outdated``
    runs an older version and waits for its turn (one worker per type at a time, and only
    while every other slot of the type counts as started);
``waiting-for-volume``
    its persistent volume is still held by the previous task (being killed, not by a rolling
    update) or the agent holding it is not offered (even after a failure there: the state is
    on that agent only);
``waiting-for-offer``
    no offer fits (the reason says which of cpus/mem/disk, role, hostname or attribute);
``failed``
    its last task failed or was lost; relaunching (with the wait, if any);
``pending``
    no live task and no placement round yet (e.g. just after a reload or a kill);
``stopping``
    a task of a slot no longer in the spec (scale down), being killed.

A phase is ``complete`` when all its steps are; ``rolling`` while a rolling update of the
type is under way (its reason says which slot is rolled or what it waits for); ``stopping``
for a worker type removed from the spec whose tasks are still being killed; otherwise
``in-progress``. The plan is ``complete`` when every phase is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sarra.scheduler.spec import WorkerType
from sarra.scheduler.state import NOT_TERMINAL, TaskRecord

STATUSES = (
    "complete", "running", "staging", "launching", "rolling", "outdated", "waiting-for-volume",
    "waiting-for-offer", "failed", "pending", "stopping",
)  # fmt: skip
FAILED_ENDINGS = ("TASK_FAILED", "TASK_LOST", "TASK_ERROR", "TASK_DROPPED", "TASK_GONE")
ROLLING = "rolling update"


def explain_wait(reason: str, w: WorkerType) -> str:
    """A placement reason (:func:`sarra.scheduler.placement.place`) in an operator's words."""
    if reason == "no offers":
        return "no offer received from the master"
    if reason == "role":
        return f"no offer for role {w.role!r}"
    if reason == "hostname":
        return f"no offer from an allowed host ({', '.join(w.hostnames)})"
    if reason.startswith("attribute "):
        name = reason.split(" ", 1)[1]
        wanted = dict(w.attributes).get(name, "?")
        return f"no offer from an agent whose attribute {name} matches {wanted!r}"
    if reason == "resources":
        need = f"{w.cpus:g} cpus, {w.mem:g} MB mem"
        if w.disk:
            need += f", {w.disk:g} MB disk"
        if w.volume_mb:
            need += f" (+{w.volume_mb:g} MB disk for a new volume)"
        return f"no offer has {need} free"
    if reason == "agent avoided":
        return "the fitting agents are avoided for a while (a task failed there early)"
    return reason


def explain_agent(reason: str, w: WorkerType) -> str:
    """Why one agent's offers do not fit ``w`` (a placement reason), in an operator's words."""
    if reason == "role":
        return f"offered to another role, not {w.role!r}"
    if reason == "hostname":
        return "not an allowed host"
    if reason.startswith("attribute "):
        name = reason.split(" ", 1)[1]
        return f"attribute {name} does not match {dict(w.attributes).get(name, '?')!r}"
    if reason == "resources":
        return "less than " + explain_wait(reason, w).removeprefix("no offer has ")
    if reason == "agent avoided":
        return "avoided for a while (a task failed there early)"
    return reason


def explain_agents(refusals: Sequence[tuple[str, str]], w: WorkerType) -> str:
    """Why no offered agent fits ``w``, grouped by reason: ``host, host: why; host: why``."""
    hosts: dict[str, list[str]] = {}
    for host, reason in refusals:
        if host not in hosts.setdefault(reason, []):
            hosts[reason].append(host)
    return "no offer fits: " + "; ".join(
        f"{', '.join(h)}: {explain_agent(r, w)}" for r, h in hosts.items()
    )


def _step(name: str, status: str, reason: str, rec: TaskRecord | None = None) -> dict[str, Any]:
    step: dict[str, Any] = {"name": name, "status": status, "reason": reason}
    if rec is not None:
        step.update(
            task_id=rec.task_id, hostname=rec.hostname, state=rec.state, version=rec.version
        )
    return step


def _live(r: TaskRecord) -> bool:
    return r.state in NOT_TERMINAL and r.kill_requested is None


def _slot_step(
    slot: str,
    w: WorkerType,
    recs: list[TaskRecord],
    waits: Mapping[str, str],
    why: Mapping[str, str],
    min_running_seconds: float,
    by_agent: Mapping[str, Sequence[tuple[str, str]]],
) -> dict[str, Any]:
    live = sorted(
        (r for r in recs if _live(r)),
        key=lambda r: (not r.started, r.state != "TASK_RUNNING", r.launched_at),
    )
    stopping = [r for r in recs if r.state in NOT_TERMINAL and r.kill_requested is not None]
    rolled = [r for r in stopping if r.kill_reason.startswith(ROLLING)]
    if live:
        r = live[0]
        where = f"on {r.hostname or r.agent_id}"
        if rolled and r.version == w.version:  # the replacement runs before the old one ends
            old = rolled[0]
            return _step(
                slot, "rolling",
                f"replacement {r.task_id} {r.state} {where}; old task {old.task_id} (version "
                f"{old.version}) on {old.hostname} stopping: {old.kill_reason}",
                r,
            )  # fmt: skip
        if r.version != w.version:
            return _step(
                slot, "outdated",
                f"runs version {r.version} {where}; waits its turn to be replaced by "
                f"{w.version} (one worker at a time, once every other slot counts as started)",
                r,
            )  # fmt: skip
        if r.state == "TASK_RUNNING":
            if r.started:
                return _step(slot, "complete", f"running {where}", r)
            return _step(
                slot, "running",
                f"running {where}; counts as started after {min_running_seconds:g}s",
                r,
            )  # fmt: skip
        if r.last_update == 0.0:
            return _step(slot, "launching", f"launch sent to {r.hostname}, no update yet", r)
        return _step(slot, "staging", f"{r.state} {where}", r)
    if stopping:
        r = stopping[0]
        if r.kill_reason.startswith(ROLLING):
            held = "; its volume is released when it ends" if w.volume_mb else ""
            return _step(
                slot, "rolling",
                f"old task {r.task_id} (version {r.version}) on {r.hostname} stopping: "
                f"{r.kill_reason}{held}",
                r,
            )  # fmt: skip
        if w.volume_mb:
            return _step(
                slot, "waiting-for-volume",
                f"task {r.task_id} being killed ({r.kill_reason}); its volume is released when "
                "it ends",
                r,
            )  # fmt: skip
        return _step(slot, "pending", f"task {r.task_id} being killed: {r.kill_reason}", r)
    wait = waits.get(slot)
    pending_why = why.get(slot, "")
    because = f" (pending because {pending_why})" if pending_why else ""
    if wait is not None and "volume" in wait:
        return _step(slot, "waiting-for-volume", explain_wait(wait, w) + because)
    if pending_why.startswith("its task") and any(e in pending_why for e in FAILED_ENDINGS):
        text = pending_why + "; relaunching"
        if wait:
            text += f", waiting: {explain_wait(wait, w)}"
        return _step(slot, "failed", text)
    if wait is not None:
        refusals = by_agent.get(slot, ())
        text = (
            explain_agents(refusals, w)
            if len({r for _, r in refusals}) > 1
            else explain_wait(wait, w)
        )
        return _step(slot, "waiting-for-offer", text + because)
    if pending_why.startswith(ROLLING):
        return _step(slot, "pending", f"{pending_why}: old task ended, launching its replacement")
    return _step(slot, "pending", pending_why or "no live task; waiting for offers")


def build_plan(
    workers: Mapping[str, WorkerType],
    tasks: Iterable[TaskRecord],
    waits: Mapping[str, str],
    why: Mapping[str, str],
    min_running_seconds: float = 0.0,
    by_agent: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> dict[str, Any]:
    """The deployment plan of ``workers`` given the scheduler's task records.

    ``waits`` maps a slot to why the last placement round did not place it (the raw reason of
    :func:`~sarra.scheduler.placement.place`); ``why`` maps a slot to why it became pending;
    ``by_agent`` maps a slot to (hostname, reason) for each agent offered in that round
    (:attr:`~sarra.scheduler.placement.Decisions.by_agent`): when the agents differ, the step
    says which agent does not fit for which reason.
    """
    by_agent = by_agent or {}
    by_slot: dict[str, list[TaskRecord]] = {}
    for r in tasks:
        by_slot.setdefault(r.slot, []).append(r)
    phases = []
    wanted: set[str] = set()
    for w in workers.values():
        slots = [f"{w.name}-{i}" for i in range(w.count)]
        wanted.update(slots)
        steps = [
            _slot_step(s, w, by_slot.get(s, []), waits, why, min_running_seconds, by_agent)
            for s in slots
        ]
        extra = sorted(
            (r for s, rs in by_slot.items() if s not in wanted for r in rs
             if r.worker_type == w.name and r.state in NOT_TERMINAL),
            key=lambda r: r.slot,
        )  # fmt: skip
        for r in extra:
            steps.append(_step(r.slot, "stopping", r.kill_reason or "no longer in the spec", r))
        rolled = [s for s in steps if s["status"] == "rolling"]
        outdated = [s for s in steps if s["status"] == "outdated"]
        rolling_kill = any(
            why.get(s, "").startswith(ROLLING) for s in slots if not any(
                _live(r) for r in by_slot.get(s, []))
        )  # fmt: skip
        if all(s["status"] == "complete" for s in steps):
            status, reason = "complete", f"{w.count} of {w.count} running version {w.version}"
        elif rolled or outdated or rolling_kill:
            done = sum(1 for s in steps if s.get("version") == w.version and s["name"] in slots)
            status = "rolling"
            reason = f"rolling update to version {w.version}: {done} of {w.count} on it"
            if rolled:
                reason += f"; rolling {rolled[0]['name']} (old task stopping)"
            elif outdated:
                busy = [s for s in steps if s["status"] not in ("complete", "outdated")]
                if busy:
                    reason += (
                        f"; waiting for {busy[0]['name']} ({busy[0]['status']}) before the next one"
                    )
        else:
            busy = [s for s in steps if s["status"] != "complete"]
            status = "in-progress"
            reason = f"{len(steps) - len(busy)} of {len(steps)} complete"
        phases.append(
            {"name": w.name, "status": status, "reason": reason, "version": w.version,
             "steps": steps}
        )  # fmt: skip
    removed = sorted(
        {r.worker_type for rs in by_slot.values() for r in rs if r.state in NOT_TERMINAL}
        - set(workers)
    )
    for name in removed:  # a worker type taken out of the spec: its tasks being killed
        steps = [
            _step(r.slot, "stopping", r.kill_reason or "no longer in the spec", r)
            for s in sorted(by_slot)
            for r in by_slot[s]
            if r.worker_type == name and r.state in NOT_TERMINAL
        ]
        phases.append(
            {"name": name, "status": "stopping", "reason": "worker type removed from the spec",
             "version": "", "steps": steps}
        )  # fmt: skip
    if all(p["status"] == "complete" for p in phases):
        status = "complete"
    elif any(p["status"] == "rolling" for p in phases):
        status = "rolling"
    else:
        status = "in-progress"
    return {"name": "deployment", "status": status, "phases": phases}


def render_text(doc: Mapping[str, Any]) -> str:
    """The status document of a scheduler copy as lines for an operator."""
    role = "leader" if doc.get("leader") else "standby"
    lines = [f"pump {doc.get('pump')} ({role}, copy {doc.get('copy', '?')})"]
    if not doc.get("leader"):
        lines.append("  this copy does not lead: it holds no plan")
        return "\n".join(lines) + "\n"
    state = "connected" if doc.get("connected") else "not connected"
    lines.append(
        f"framework {doc.get('framework_id')} on {doc.get('master')} ({state}); "
        f"{doc.get('allocated', 0)} task(s) allocated"
    )
    plan = doc.get("plan") or {}
    lines.append(f"plan {plan.get('name', 'deployment')}: {plan.get('status', 'unknown')}")
    for phase in plan.get("phases", []):
        lines.append(f"  phase {phase['name']}: {phase['status']} ({phase['reason']})")
        width = max((len(s["name"]) for s in phase["steps"]), default=0)
        for s in phase["steps"]:
            lines.append(f"    {s['name']:<{width}}  {s['status']:<18}  {s['reason']}")
    avoid = doc.get("avoid") or {}
    if avoid:
        lines.append(
            "avoided agents: " + ", ".join(f"{a} ({t:.0f}s left)" for a, t in avoid.items())
        )
    if doc.get("last_reload"):
        lines.append(f"last reload: {doc['last_reload']}")
    return "\n".join(lines) + "\n"
