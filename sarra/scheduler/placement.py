"""Placement: which pending worker goes onto which agent. A pure function, no I/O.

This is the seam between the pump's intent and a cluster engine: the Mesos adapter turns
offers into :class:`OfferView` values and the decisions back into ACCEPT/DECLINE calls; another
engine can feed the same function from its own notion of free capacity.

Rules, in order:

* offers never span agents; all offers of one agent are combined (Mesos allows one ACCEPT
  over several offers of the same agent and role);
* a worker fits an agent when the agent's combined free resources (minus what this round
  already placed there) cover its cpus/mem/disk, the offer's role is the worker's role, the
  hostname is allowed and every required attribute matches (typed: see
  :func:`sarra.scheduler.resources.attribute_matches`);
* a worker with a persistent volume whose volume exists (``volume_agent``) goes to that agent
  only: onto the offered volume, or, when the agent is offered without it and no earlier task
  still holds it, onto a new one; a worker without a volume yet needs its size as extra disk;
* agents in ``avoid`` (until a time later than ``now``) are skipped, except by a worker whose
  volume is there (its state is nowhere else);
* a worker with a ``prefer_agent`` (relaunch in place) goes there when it fits;
* otherwise the agent running the fewest workers of that type wins (spreading), ties broken
  by most free cpus, then agent id (deterministic);
* offers of agents that receive nothing are declined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sarra.scheduler.resources import attribute_matches


@dataclass(frozen=True)
class Resources:
    """Scalar resources (cpus, MB of memory, MB of disk)."""

    cpus: float = 0.0
    mem: float = 0.0
    disk: float = 0.0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpus + other.cpus, self.mem + other.mem, self.disk + other.disk)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpus - other.cpus, self.mem - other.mem, self.disk - other.disk)

    def covers(self, need: Resources) -> bool:
        eps = 1e-9
        return (
            self.cpus + eps >= need.cpus
            and self.mem + eps >= need.mem
            and self.disk + eps >= need.disk
        )


@dataclass(frozen=True)
class Need:
    """A worker slot waiting for a place."""

    slot: str  # e.g. "feed-2"
    worker_type: str
    resources: Resources
    role: str = "*"
    hostnames: tuple[str, ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()
    prefer_agent: str | None = None
    volume_id: str | None = None  # persistence id of the worker's volume, None: no volume
    volume_mb: float = 0.0
    volume_agent: str | None = None  # the agent holding the volume (None: not created yet)
    volume_busy: bool = False  # an earlier task of the slot may still hold the volume


@dataclass(frozen=True)
class OfferView:
    """What placement needs to know of one offer."""

    offer_id: str
    agent_id: str
    hostname: str
    resources: Resources
    role: str = "*"
    attributes: tuple[tuple[str, Any], ...] = ()  # name, (type, value) as offered
    volumes: tuple[str, ...] = ()  # persistence ids of the volumes offered (not free disk)


@dataclass(frozen=True)
class Launch:
    """Launch these slots on one agent using (all of) these offers."""

    agent_id: str
    offer_ids: tuple[str, ...]
    slots: tuple[str, ...]
    create_volumes: tuple[str, ...] = ()  # slots whose volume is reserved and created first


@dataclass(frozen=True)
class Decisions:
    """The outcome of one placement round."""

    launches: tuple[Launch, ...] = ()
    decline: tuple[str, ...] = ()
    unplaced: tuple[str, ...] = ()
    reasons: dict[str, str] = field(default_factory=dict)  # slot -> why it was not placed
    placed: dict[str, str] = field(default_factory=dict)  # slot -> why it went where it did
    # slot not placed -> (hostname, why not there) for every offered agent
    by_agent: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)


@dataclass
class _Agent:
    agent_id: str
    hostname: str
    role: str
    attributes: dict[str, Any]
    free: Resources
    offer_ids: list[str]
    placed: list[str]
    volumes: set[str] = field(default_factory=set)
    created: list[str] = field(default_factory=list)


def _volume_plan(need: Need, agent: _Agent) -> tuple[str | None, bool, Resources]:
    """(reason it cannot go there or None, create a volume?, resources it takes there)."""
    if need.volume_id is None:
        return None, False, need.resources
    if need.volume_agent is not None and need.volume_agent != agent.agent_id:
        return f"its volume is on agent {need.volume_agent}", False, need.resources
    if need.volume_id in agent.volumes:
        return None, False, need.resources  # the volume brings its own disk
    if need.volume_agent is not None and need.volume_busy:
        return "its volume is still held by its previous task", False, need.resources
    return None, True, need.resources + Resources(0.0, 0.0, need.volume_mb)


def _fits(need: Need, agent: _Agent) -> tuple[str | None, bool, Resources]:
    """(None when the need fits the agent, else why not; create a volume?; what it takes)."""
    if need.role != agent.role:
        return "role", False, need.resources
    if need.hostnames and agent.hostname not in need.hostnames:
        return "hostname", False, need.resources
    for k, v in need.attributes:
        offered = agent.attributes.get(k)
        if offered is None or not attribute_matches(v, offered):
            return f"attribute {k}", False, need.resources
    why, create, takes = _volume_plan(need, agent)
    if why is not None:
        return why, False, takes
    if not agent.free.covers(takes):
        return "resources", create, takes
    return None, create, takes


def place(
    desired: Sequence[Need],
    running: Mapping[str, Mapping[str, int]],
    offers: Sequence[OfferView],
    now: float,
    avoid: Mapping[str, float],
) -> Decisions:
    """Place ``desired`` onto ``offers``.

    ``running`` maps agent id -> worker type -> number of that type already there (spreading);
    ``avoid`` maps agent id -> time until which it must not receive new workers.
    """
    agents: dict[tuple[str, str], _Agent] = {}
    for o in offers:
        key = (o.agent_id, o.role)
        a = agents.get(key)
        if a is None:
            a = agents[key] = _Agent(
                o.agent_id, o.hostname, o.role, dict(o.attributes), Resources(), [], []
            )
        a.free = a.free + o.resources
        a.offer_ids.append(o.offer_id)
        a.volumes.update(o.volumes)
    counts: dict[str, dict[str, int]] = {k: dict(v) for k, v in running.items()}
    reasons: dict[str, str] = {}
    placed: dict[str, str] = {}
    unplaced: list[str] = []
    by_agent: dict[str, tuple[tuple[str, str], ...]] = {}
    for need in desired:
        candidates: list[_Agent] = []
        refusals: list[tuple[str, str]] = []
        plans: dict[tuple[str, str], tuple[bool, Resources]] = {}
        why = "no offers"
        if need.volume_agent is not None:
            why = f"its volume is on agent {need.volume_agent}, not offered"
        for a in agents.values():
            if avoid.get(a.agent_id, 0.0) > now and need.volume_agent != a.agent_id:
                why = "agent avoided"
                refusals.append((a.hostname, why))
                continue
            r, create, takes = _fits(need, a)
            if r is None:
                candidates.append(a)
                plans[(a.agent_id, a.role)] = (create, takes)
            else:
                refusals.append((a.hostname, r))
                if not r.startswith("its volume is on agent") or why == "no offers":
                    why = r
        if not candidates:
            unplaced.append(need.slot)
            reasons[need.slot] = why
            by_agent[need.slot] = tuple(refusals)
            continue
        preferred = [a for a in candidates if a.agent_id == need.prefer_agent]
        if preferred:
            chosen = preferred[0]
            placed[need.slot] = "back on the agent of its previous task"
        else:
            chosen = min(
                candidates,
                key=lambda a: (
                    counts.get(a.agent_id, {}).get(need.worker_type, 0),
                    -a.free.cpus,
                    a.agent_id,
                ),
            )
            there = counts.get(chosen.agent_id, {}).get(need.worker_type, 0)
            placed[need.slot] = (
                f"fits; fewest {need.worker_type} workers there ({there}) of "
                f"{len(candidates)} fitting agent(s)"
                + ("" if need.prefer_agent is None else ", its previous agent not offered or full")
            )
        create, takes = plans[(chosen.agent_id, chosen.role)]
        chosen.free = chosen.free - takes
        chosen.placed.append(need.slot)
        if create:
            chosen.created.append(need.slot)
        elif need.volume_id is not None:
            chosen.volumes.discard(need.volume_id)
        per = counts.setdefault(chosen.agent_id, {})
        per[need.worker_type] = per.get(need.worker_type, 0) + 1
    launches = tuple(
        Launch(a.agent_id, tuple(a.offer_ids), tuple(a.placed), tuple(a.created))
        for a in sorted(agents.values(), key=lambda a: (a.agent_id, a.role))
        if a.placed
    )
    decline = tuple(oid for a in agents.values() if not a.placed for oid in a.offer_ids)
    return Decisions(launches, decline, tuple(unplaced), reasons, placed, by_agent)
