"""The scheduler's brain for one subscription: events in, calls out, the spec kept true.

:class:`PumpScheduler` owns the durable state (:mod:`sarra.scheduler.state`) and a
:class:`~sarra.scheduler.mesos.MesosClient`. The loop in :mod:`sarra.scheduler.service`
calls :meth:`connect`, then :meth:`step` until it returns False (stream ended: connect again)
or raises :class:`Deposed` (another copy took the framework over).

Slots: worker type ``feed`` with ``count = 3`` has slots ``feed-0..feed-2``. A slot is
*pending* when it has no live task (STAGING/STARTING/RUNNING and not being killed). A slot's
task is *started* after RUNNING for ``min_running_seconds``; a task that ends before that makes
its agent avoided for ``avoid_seconds``. Every decision is logged with its reason (placement,
decline and kill decisions on lines starting ``decision:``). :meth:`PumpScheduler.apply_spec`
swaps in a reloaded spec: counts scale and changed worker types roll at the next ticks.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from sarra.errors import SarraError
from sarra.scheduler import placement
from sarra.scheduler import resources as mres
from sarra.scheduler.mesos import CallRefused, MesosClient, StreamItem, Subscription
from sarra.scheduler.plan import build_plan
from sarra.scheduler.spec import PumpSpec, WorkerType
from sarra.scheduler.state import NOT_TERMINAL, Deposed, SchedulerState, Store, TaskRecord

log = logging.getLogger(__name__)

SHORT_REFUSE = 2.0  # decline offers we may want soon (something pending but unplaceable)
REVIVE_EVERY = 10.0  # while something is pending and no offer came, revive again


def _offer_view(offer: dict[str, Any]) -> placement.OfferView:
    """What placement needs of an offer: free scalars usable by its role, typed attributes."""
    res = {"cpus": 0.0, "mem": 0.0, "disk": 0.0}
    volumes = []
    for p in mres.pieces(offer):
        if p.volume is not None:
            volumes.append(p.volume)
        else:
            res[p.name] += p.value
    attrs = []
    for a in offer.get("attributes", []):
        try:
            typed = mres.offered_attribute(a)
        except (KeyError, TypeError, ValueError):
            typed = None
        if typed is not None:
            attrs.append((str(a.get("name")), typed))
    return placement.OfferView(
        offer_id=offer["id"]["value"],
        agent_id=offer["agent_id"]["value"],
        hostname=str(offer.get("hostname", "")),
        resources=placement.Resources(res["cpus"], res["mem"], res["disk"]),
        role=str((offer.get("allocation_info") or {}).get("role") or "*"),
        attributes=tuple(attrs),
        volumes=tuple(volumes),
    )


class PumpScheduler:
    """Keeps ``spec`` true through one Mesos framework."""

    def __init__(
        self,
        spec: PumpSpec,
        store: Store,
        client: MesosClient,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.settings = spec.scheduler
        self.store = store
        self.client = client
        self.clock = clock
        self.state: SchedulerState = store.load()
        self.sub: Subscription | None = None
        self.offers: dict[str, dict[str, Any]] = {}
        self.suppressed: bool | None = None
        self.last_revive = 0.0
        self.last_offer = 0.0
        self.recon_start = 0.0
        self.recon_next = 0.0
        self.recon_delay = 1.0
        self.last_implicit = 0.0
        self.stop_requested = False
        self.teardown_requested = False
        self.events_seen = 0
        self.slot_why: dict[str, str] = {}  # slot -> why it is pending (logged at its launch)
        self.slot_wait: dict[str, str] = {}  # slot -> why the last placement round left it
        self.slot_wait_agents: dict[str, tuple[tuple[str, str], ...]] = {}  # host, why not

    # -- framework info and connection ---------------------------------------------------
    def framework_info(self) -> dict[str, Any]:
        s = self.settings
        caps = [
            {"type": "PARTITION_AWARE"}, {"type": "MULTI_ROLE"},
            {"type": "RESERVATION_REFINEMENT"},
        ]  # fmt: skip
        info: dict[str, Any] = {
            "user": s.user,
            "name": f"sarra-{s.name}",
            "roles": list(self.spec.roles),
            "failover_timeout": s.failover_timeout,
            "checkpoint": s.checkpoint,
            "capabilities": caps,
        }
        if s.principal:
            info["principal"] = s.principal
        return info

    def connect(self) -> None:
        """(Re)subscribe with the persisted framework id, then reconcile everything known."""
        self.state = self.store.load()  # a new leader starts from what was persisted
        sub, payload = self.client.subscribe(
            self.framework_info(), self.state.framework_id, (), self.settings.heartbeat_misses
        )
        self.sub = sub  # closed by close() even if what follows fails
        fid = self.client.framework_id
        if fid != self.state.framework_id:
            log.info("framework id is %s (was %s): persisted", fid, self.state.framework_id)
            self.state.framework_id = fid
            self.store.save(self.state)
        log.info(
            "subscribed to %s as %s (heartbeat %ss)",
            sub.base, fid, payload.get("heartbeat_interval_seconds"),
        )  # fmt: skip
        self.offers.clear()  # the master discards outstanding offers on (re)subscription
        self.suppressed = None
        now = self.clock()
        self.recon_start = now
        self.recon_next = now
        self.recon_delay = 1.0
        self.last_implicit = 0.0
        self.last_offer = now

    def forget_framework(self) -> None:
        """After "Framework has been removed": its tasks are dead, start afresh."""
        log.warning("framework %s was removed: its tasks are gone", self.state.framework_id)
        self.state = SchedulerState(avoid=self.state.avoid, last_agent=self.state.last_agent)
        self.store.save(self.state)

    def close(self) -> None:
        if self.sub is not None:
            self.sub.close()
            self.sub = None

    # -- the loop step ----------------------------------------------------------------------
    def step(self, timeout: float = 0.2) -> bool:
        """Handle queued events (waiting up to ``timeout``) and act; False when disconnected."""
        if self.sub is None:
            return False
        deadline = self.clock() + timeout
        while True:
            remaining = max(0.0, deadline - self.clock())
            try:
                item = self.sub.events.get(timeout=remaining)
            except Exception:  # queue.Empty
                break
            if not self._handle_item(item):
                self.close()
                return False
            if self.sub.events.empty():
                break
        self.tick()
        return self.sub is not None

    def _handle_item(self, item: StreamItem) -> bool:
        if item.kind == "closed":
            log.warning("event stream ended: %s; will subscribe again", item.text)
            return False
        if item.kind == "malformed" or item.event is None:
            log.warning("ignored a malformed event record: %r", item.text)
            return True
        self.events_seen += 1
        try:
            return self.handle(item.event)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            log.warning("ignored an event that does not follow the protocol (%s): %r", e, item)
            return True

    def handle(self, ev: dict[str, Any]) -> bool:
        """Act on one event; False when the subscription must be dropped."""
        kind = ev.get("type")
        if kind == "HEARTBEAT":
            return True
        if kind == "OFFERS":
            for offer in ev["offers"].get("offers", []):
                self.offers[offer["id"]["value"]] = offer
            self.last_offer = self.clock()
            if self.suppressed:
                self.suppressed = False  # an offer proves we are not suppressed
            return True
        if kind == "RESCIND":
            oid = ev["rescind"]["offer_id"]["value"]
            log.info("offer %s rescinded", oid)
            self.offers.pop(oid, None)
            return True
        if kind == "UPDATE":
            self._on_update(ev["update"]["status"])
            return True
        if kind == "FAILURE":
            f = ev.get("failure") or {}
            log.warning("failure reported by the master: %s", f)
            return True
        if kind == "ERROR":
            message = str((ev.get("error") or {}).get("message", ""))
            if "failed over" in message.lower():
                log.error("master says the framework failed over to another copy: stepping down")
                self.close()
                raise Deposed(message)
            log.error("master sent ERROR %r; subscribing again", message)
            return False
        if kind == "SUBSCRIBED":
            return True
        log.warning("ignored an event of unknown type %r", kind)
        return True

    # -- status updates ------------------------------------------------------------------
    def _on_update(self, status: dict[str, Any]) -> None:
        task_id = status["task_id"]["value"]
        st = str(status["state"])
        agent_id = str((status.get("agent_id") or {}).get("value", ""))
        now = self.clock()
        rec = self.state.tasks.get(task_id)
        reason = status.get("reason", "")
        if rec is None:
            if st in NOT_TERMINAL:
                log.warning(
                    "decision: kill task %s (%s on agent %s): unknown to us (not in the state)",
                    task_id, st, agent_id or "?",
                )  # fmt: skip
                self._send_kill(task_id, agent_id or None)
            else:
                log.info("update %s for forgotten task %s (duplicate): ignored", st, task_id)
        else:
            healthy = status.get("healthy")
            healthy = healthy if isinstance(healthy, bool) else None
            self._apply(rec, st, agent_id, str(status.get("message", "")), reason, now, healthy)
        self.store.save(self.state)  # persist before acknowledging
        uid = status.get("uuid")
        if uid and agent_id:
            try:
                self.client.acknowledge(agent_id, task_id, str(uid))
            except SarraError as e:
                log.warning("acknowledge of %s %s failed (will be resent): %s", task_id, st, e)

    def _apply(
        self,
        rec: TaskRecord,
        st: str,
        agent_id: str,
        message: str,
        reason: Any,
        now: float,
        healthy: bool | None = None,
    ) -> None:
        prev = rec.state
        rec.last_update = now
        rec.message = message
        if agent_id:
            rec.agent_id = agent_id
        if healthy is not None and healthy != rec.healthy:
            log.info(
                "task %s (%s) is %s %s", rec.task_id, rec.slot,
                "healthy" if healthy else "UNHEALTHY", message,
            )  # fmt: skip
            rec.healthy = healthy
        if st == prev:
            return
        rec.state = st
        log.info("task %s (%s) %s -> %s %s %s", rec.task_id, rec.slot, prev, st, reason, message)
        if st == "TASK_RUNNING" and rec.running_since is None:
            rec.running_since = now
        if st == "TASK_RUNNING" and rec.kill_requested is None and self._slot_taken(rec):
            self._decide_kill(rec, f"it came back but slot {rec.slot} has another live task")
        if rec.terminal:
            self.state.last_agent[rec.slot] = rec.agent_id
            if rec.kill_requested is None:
                self.slot_why[rec.slot] = f"its task {rec.task_id} ended {st} {reason}".rstrip()
            # only a worker that really ran and died makes its agent suspect; a launch that
            # never happened (LOST/DROPPED/GONE from the master) says nothing about the agent
            failed_there = st in ("TASK_FAILED", "TASK_FINISHED")
            killed_unhealthy = st == "TASK_KILLED" and rec.healthy is False  # by its check
            if (
                not rec.started
                and rec.kill_requested is None
                and (st in ("TASK_FAILED", "TASK_FINISHED", "TASK_ERROR") or killed_unhealthy)
            ):
                self._crashed(rec, f"{st} {reason} {message}".strip(), now)
            if failed_there and not rec.started and rec.kill_requested is None:
                until = now + self.settings.avoid_seconds
                self.state.avoid[rec.agent_id] = until
                log.warning(
                    "task %s ended (%s) before it counted as started: avoiding agent %s for %.0fs",
                    rec.task_id, st, rec.agent_id, self.settings.avoid_seconds,
                )  # fmt: skip
            del self.state.tasks[rec.task_id]

    def _crashed(self, rec: TaskRecord, why: str, now: float) -> None:
        """A worker died before it counted as started: back off its slot, maybe give it up."""
        s = self.settings
        c = self.state.crash.setdefault(rec.slot, {"failures": 0})
        c["failures"] = n = int(c.get("failures", 0)) + 1
        c["last"] = why
        delay = min(s.backoff_seconds * 2 ** (n - 1), s.backoff_max_seconds)
        c["until"] = now + delay
        if s.crash_loop_limit and n >= s.crash_loop_limit:
            c["given_up"] = True
            log.error(
                "decision: give up slot %s: crash loop, %d consecutive failures before it "
                "counted as started (last: %s); not relaunched until the next reload",
                rec.slot, n, why,
            )  # fmt: skip
        else:
            log.warning(
                "slot %s crash loop: failure %d (%s); relaunch in %.1fs",
                rec.slot, n, why, delay,
            )  # fmt: skip

    def _held_back(self, slot: str, now: float) -> str | None:
        """Why ``slot`` is not relaunched now (crash-loop backoff), or None."""
        c = self.state.crash.get(slot)
        if c is None:
            return None
        if c.get("given_up"):
            return f"given up after {c['failures']} consecutive failures"
        if float(c.get("until", 0.0)) > now:
            return f"backing off after {c['failures']} failure(s)"
        return None

    def _slot_taken(self, rec: TaskRecord) -> bool:
        return any(
            r is not rec and r.slot == rec.slot and self._live(r) for r in self.state.tasks.values()
        )

    @staticmethod
    def _live(r: TaskRecord) -> bool:
        return r.state in NOT_TERMINAL and r.kill_requested is None

    # -- periodic work ---------------------------------------------------------------------
    def desired_slots(self) -> dict[str, WorkerType]:
        return {f"{w.name}-{i}": w for w in self.spec.workers.values() for i in range(w.count)}

    def tick(self) -> None:
        """Compare spec with reality and act: kills, rolling steps, timeouts, launches."""
        if self.sub is None:
            return
        now = self.clock()
        s = self.settings
        slots = self.desired_slots()
        dirty = False
        for rec in list(self.state.tasks.values()):
            if (
                rec.state == "TASK_RUNNING"
                and not rec.started
                and rec.running_since is not None
                and now - rec.running_since >= s.min_running_seconds
                and (rec.healthy or not rec.health_checked)
            ):
                rec.started = True
                dirty = True
                log.info("task %s (%s) counts as started", rec.task_id, rec.slot)
                if self.state.crash.pop(rec.slot, None) is not None:
                    log.info("slot %s is out of its crash loop", rec.slot)
            if rec.kill_requested is None and rec.slot not in slots and rec.state in NOT_TERMINAL:
                self._decide_kill(rec, f"slot {rec.slot} is no longer in the spec (scale down)")
            if (
                rec.state in ("TASK_STAGING", "TASK_STARTING")
                and rec.kill_requested is None
                and now - rec.launched_at > s.staging_timeout
            ):
                if rec.reconcile_sent is None:
                    log.warning("task %s stuck in %s: reconciling it", rec.task_id, rec.state)
                    rec.reconcile_sent = now
                    pair = [(rec.task_id, rec.agent_id)]
                    self._call(self.client.reconcile, pair)
                    dirty = True
                elif now - rec.reconcile_sent > s.staging_timeout:
                    self._decide_kill(rec, f"still {rec.state} after reconciliation: will relaunch")
                    self.slot_why[rec.slot] = f"its task {rec.task_id} was stuck in {rec.state}"
        # more than one live task on a slot (adopted duplicates): keep the oldest started one
        by_slot: dict[str, list[TaskRecord]] = {}
        for rec in self.state.tasks.values():
            if self._live(rec):
                by_slot.setdefault(rec.slot, []).append(rec)
        for live in by_slot.values():
            live.sort(key=lambda r: (not r.started, r.state != "TASK_RUNNING", r.launched_at))
            for extra in live[1:]:
                self._decide_kill(extra, f"slot {extra.slot} has two live tasks; keeping one")
        self._rolling_step(slots, by_slot)
        live_slots = {r.slot for r in self.state.tasks.values() if self._live(r)}
        for rec in self.state.tasks.values():
            if rec.kill_requested is not None and now - rec.kill_requested >= s.kill_retry_seconds:
                if rec.state not in NOT_TERMINAL and rec.state != "TASK_UNREACHABLE":
                    continue
                first = rec.kill_requested == 0.0
                rec.kill_requested = now
                dirty = True
                log.log(
                    logging.INFO if first else logging.WARNING,
                    "KILL %s (%s)%s: %s", rec.task_id, rec.slot,
                    "" if first else " again, not dead yet", rec.kill_reason or "requested",
                )  # fmt: skip
                self._send_kill(rec.task_id, rec.agent_id, self._grace(rec))
        self.state.avoid = {a: t for a, t in self.state.avoid.items() if t > now}
        if dirty:
            self.store.save(self.state)
        self._reconcile(now)
        pending = [
            slot for slot in slots if slot not in live_slots and not self._held_back(slot, now)
        ]
        self.slot_wait = {k: v for k, v in self.slot_wait.items() if k in pending}
        self.slot_wait_agents = {k: v for k, v in self.slot_wait_agents.items() if k in pending}
        self._offers_and_launch(pending, slots, now)

    def _grace(self, rec: TaskRecord) -> float | None:
        w = self.spec.workers.get(rec.worker_type)
        return w.kill_grace_seconds if w is not None else None

    def _rolling_step(
        self, slots: dict[str, WorkerType], by_slot: dict[str, list[TaskRecord]]
    ) -> None:
        """Replace one outdated task per worker type, only when all its slots are healthy."""
        for w in self.spec.workers.values():
            mine = [f"{w.name}-{i}" for i in range(w.count)]
            tasks = [by_slot.get(slot, [None])[0] for slot in mine]
            outdated = [t for t in tasks if t is not None and t.version != w.version]
            if not outdated:
                continue
            if not all(t is not None and t.started and t.healthy is not False for t in tasks):
                continue  # wait: the previous replacement (or another slot) is not healthy yet
            victim = outdated[0]
            why = f"rolling update of {w.name}: version {victim.version} -> {w.version}"
            self._decide_kill(victim, why + ", every other slot healthy")
            self.slot_why[victim.slot] = why

    def _reconcile(self, now: float) -> None:
        remaining = [
            r
            for r in self.state.tasks.values()
            if r.state in (*NOT_TERMINAL, "TASK_UNREACHABLE", "TASK_UNKNOWN")
            and r.last_update < self.recon_start
        ]
        if remaining and now >= self.recon_next:
            log.info("reconciling %d task(s) explicitly", len(remaining))
            pairs = [(r.task_id, r.agent_id) for r in remaining]
            self._call(self.client.reconcile, pairs)
            self.recon_next = now + self.recon_delay
            self.recon_delay = min(self.recon_delay * 2, 30.0)
        if now - self.last_implicit >= self.settings.reconcile_interval or self.last_implicit == 0:
            self.last_implicit = now
            self._call(self.client.reconcile, [])

    def _offers_and_launch(
        self, pending: list[str], slots: dict[str, WorkerType], now: float
    ) -> None:
        s = self.settings
        roles = list(self.spec.roles)
        starved = (
            not self.offers
            and now - self.last_offer > REVIVE_EVERY
            and now - self.last_revive > REVIVE_EVERY
        )
        if pending and (self.suppressed is not False or starved):
            log.info(
                "%d slot(s) pending (%s): reviving offers", len(pending), ", ".join(pending[:5])
            )
            if self._call(self.client.revive, roles):
                self.suppressed = False
                self.last_revive = now
        if not pending:
            if self.offers:
                ids = list(self.offers)
                self.offers.clear()
                log.info(
                    "decision: decline %d offer(s) for %.0fs: nothing pending",
                    len(ids), s.refuse_seconds,
                )  # fmt: skip
                self._call(self.client.decline, ids, s.refuse_seconds)
            if self.suppressed is not True and self._call(self.client.suppress, roles):
                log.info("nothing pending: offers suppressed")
                self.suppressed = True
            return
        if not self.offers:
            return
        running: dict[str, dict[str, int]] = {}
        for r in self.state.tasks.values():
            if self._live(r):
                per = running.setdefault(r.agent_id, {})
                per[r.worker_type] = per.get(r.worker_type, 0) + 1
        needs = [
            placement.Need(
                slot=slot,
                worker_type=slots[slot].name,
                resources=placement.Resources(slots[slot].cpus, slots[slot].mem, slots[slot].disk),
                role=slots[slot].role,
                hostnames=slots[slot].hostnames,
                attributes=slots[slot].attributes,
                prefer_agent=self.state.last_agent.get(slot),
                **self._volume_need(slot, slots[slot]),
            )
            for slot in pending
        ]
        views = {oid: _offer_view(o) for oid, o in self.offers.items()}
        decisions = placement.place(needs, running, list(views.values()), now, self.state.avoid)
        offered = dict(self.offers)
        self.offers.clear()
        for slot, why in decisions.reasons.items():
            log.info("slot %s not placed this round: %s", slot, why)
            self.slot_wait[slot] = why
            self.slot_wait_agents[slot] = decisions.by_agent.get(slot, ())
        for launch in decisions.launches:
            for slot in launch.slots:
                self.slot_wait.pop(slot, None)
                self.slot_wait_agents.pop(slot, None)
        for launch in decisions.launches:
            self._launch(launch, slots, views, offered, now, decisions.placed)
        if decisions.decline:
            refuse = SHORT_REFUSE if decisions.unplaced else s.refuse_seconds
            ids = list(decisions.decline)
            why = (
                f"slot(s) {', '.join(decisions.unplaced[:5])} still unplaced, want new offers soon"
                if decisions.unplaced
                else "every pending slot placed elsewhere"
            )
            log.info(
                "decision: decline %d offer(s) (%s) for %.0fs: %s",
                len(ids), ", ".join(sorted({views[o].hostname for o in ids})), refuse, why,
            )  # fmt: skip
            self._call(self.client.decline, ids, refuse)

    def _launch(
        self,
        launch: placement.Launch,
        slots: dict[str, WorkerType],
        views: dict[str, placement.OfferView],
        offered: dict[str, dict[str, Any]],
        now: float,
        placed: dict[str, str],
    ) -> None:
        view = views[launch.offer_ids[0]]
        infos = []
        records = []
        ops: list[dict[str, Any]] = []
        free = [p for oid in launch.offer_ids for p in mres.pieces(offered[oid])]
        for slot in launch.slots:
            w = slots[slot]
            task_id = f"{self.settings.name}.{slot}.{w.version}.{uuid.uuid4().hex[:8]}"
            try:
                resources, free, slot_ops = self._slot_resources(
                    w, slot, view.role, free, slot in launch.create_volumes
                )
            except ValueError as e:  # placement and the offers disagree: never launch blind
                log.error("slot %s not launched on %s: %s", slot, view.hostname, e)
                continue
            ops.extend(slot_ops)
            rec = TaskRecord(task_id, slot, w.name, w.version, launch.agent_id, view.hostname)
            rec.launched_at = now
            rec.health_checked = w.health_check is not None
            records.append(rec)
            infos.append(self.task_info(w, slot, task_id, launch.agent_id, resources))
        if not records:
            self._call(self.client.decline, list(launch.offer_ids), SHORT_REFUSE)
            return
        for rec in records:  # write-ahead: the intent is durable before ACCEPT leaves
            self.state.tasks[rec.task_id] = rec
        self.store.save(self.state)
        for rec in records:
            verb = "relaunch" if rec.slot in self.state.last_agent else "launch"
            log.info(
                "decision: %s %s for slot %s on %s (%s) using %d offer(s): slot pending because "
                "%s; placed there because %s",
                verb, rec.task_id, rec.slot, view.hostname, launch.agent_id,
                len(launch.offer_ids), self.slot_why.pop(rec.slot, "it has no live task"),
                placed.get(rec.slot, "it fits"),
            )  # fmt: skip
        try:
            self.client.accept(launch.offer_ids, infos, SHORT_REFUSE, ops)
        except CallRefused as e:
            log.error("ACCEPT refused (%s): launches dropped, slots stay pending", e)
            for rec in records:
                del self.state.tasks[rec.task_id]
            self.store.save(self.state)
        except SarraError as e:
            log.warning("ACCEPT outcome unknown (%s): reconciliation will tell", e)

    def volume_id(self, slot: str) -> str:
        """The persistence id of a slot's volume (stable across relaunches and copies)."""
        return f"sarra.{self.settings.name}.{slot}"

    def _volume_need(self, slot: str, w: WorkerType) -> dict[str, Any]:
        """The placement fields of a slot's volume: where it is, whether a task may hold it."""
        if not w.volume_mb:
            return {}
        holders = [r for r in self.state.tasks.values() if r.slot == slot]
        agent = holders[-1].agent_id if holders else self.state.last_agent.get(slot)
        return {
            "volume_id": self.volume_id(slot),
            "volume_mb": w.volume_mb,
            "volume_agent": agent,
            "volume_busy": bool(holders),
        }

    def _slot_resources(
        self, w: WorkerType, slot: str, role: str, free: list[mres.Piece], create: bool
    ) -> tuple[list[dict[str, Any]], list[mres.Piece], list[dict[str, Any]]]:
        """(the task's resources, what is left, RESERVE/CREATE operations to run first).

        Resources are cut from the offered ones as offered (reserved pieces first, each keeping
        its reservations). A volume is either the offered one with the slot's persistence id or,
        with ``create``, disk reserved to the role and made a volume in the same ACCEPT.
        """
        out: list[dict[str, Any]] = []
        ops: list[dict[str, Any]] = []
        for name, amount in (("cpus", w.cpus), ("mem", w.mem), ("disk", w.disk)):
            if amount > 0:
                got, free = mres.take(free, name, amount, role)
                out.extend(got)
        if not w.volume_mb:
            return out, free, ops
        vid = self.volume_id(slot)
        if not create:
            mine = [p for p in free if p.volume == vid]
            if not mine:
                raise ValueError(f"volume {vid} is not in the offers")
            path = ((mine[0].raw.get("disk") or {}).get("volume") or {}).get("container_path")
            if path != w.volume_path or abs(mine[0].value - w.volume_mb) > 1e-6:
                raise ValueError(
                    f"volume {vid} exists with path {path!r} and {mine[0].value} MB, the spec says "
                    f"{w.volume_path!r} and {w.volume_mb} MB: a volume cannot change (use a new "
                    "worker type, or destroy the volume with the Mesos operator API)"
                )
            free = [p for p in free if p.volume != vid]
            return [*out, mine[0].raw], free, ops
        # disk already reserved to the role is used first (reservations are kept as offered)
        whole = [
            p for p in free if p.name == "disk" and p.volume is None and p.value >= w.volume_mb
        ]
        if not whole:
            raise ValueError(f"no single disk resource holds {w.volume_mb} MB for volume {vid}")
        whole.sort(key=lambda p: p.reserved is None)  # disk already reserved to the role first
        disks, rest = mres.take([whole[0]], "disk", w.volume_mb, role)
        free = [p for p in free if p is not whole[0]] + rest
        principal = self.settings.principal
        reservation: dict[str, Any] = {
            "type": "DYNAMIC",
            "role": role,
            "labels": {"labels": [{"key": "sarra.volume", "value": vid}]},
        }
        if principal:
            reservation["principal"] = principal
        unreserved = [d for d in disks if not mres.reserved_role(d)]
        reserved = [d for d in disks if mres.reserved_role(d)]
        to_reserve = [
            {
                **{k: v for k, v in d.items() if k not in ("role", "reservation")},
                "reservations": [reservation],
            }
            for d in unreserved
        ]
        if to_reserve:
            ops.append({"type": "RESERVE", "reserve": {"resources": to_reserve}})
        persistence: dict[str, Any] = {"id": vid}
        if principal:
            persistence["principal"] = principal
        volumes = [
            {
                **d,
                "disk": {
                    **(d.get("disk") or {}),
                    "persistence": persistence,
                    "volume": {"container_path": w.volume_path, "mode": "RW"},
                },
            }
            for d in reserved + to_reserve
        ]
        if len(volumes) != 1:
            raise ValueError(f"volume {vid} would span {len(volumes)} disk resources")
        ops.append({"type": "CREATE", "create": {"volumes": volumes}})
        return [*out, volumes[0]], free, ops

    def task_info(
        self,
        w: WorkerType,
        slot: str,
        task_id: str,
        agent_id: str,
        resources: list[dict[str, Any]],
    ) -> dict[str, Any]:
        env = [{"name": k, "type": "VALUE", "value": v} for k, v in w.env]
        env.append({"name": "SR_SCHEDULER_SLOT", "type": "VALUE", "value": slot})
        info: dict[str, Any] = {
            "name": f"{self.settings.name}:{slot}",
            "task_id": {"value": task_id},
            "agent_id": {"value": agent_id},
            "resources": resources,
            "command": {
                "value": w.command,
                "shell": True,
                "uris": [{"value": u, "extract": True} for u in w.uris],
                "environment": {"variables": env},
            },
            "kill_policy": {"grace_period": {"nanoseconds": int(w.kill_grace_seconds * 1e9)}},
            "labels": {
                "labels": [
                    {"key": "sarra.pump", "value": self.settings.name},
                    {"key": "sarra.slot", "value": slot},
                    {"key": "sarra.version", "value": w.version},
                ]
            },
        }
        if w.health_check is not None:
            info["health_check"] = w.health_check.mesos(env)
        return info

    # -- helpers ---------------------------------------------------------------------------
    def _decide_kill(self, rec: TaskRecord, reason: str) -> None:
        """Mark ``rec`` for killing (KILL is sent, and repeated, by :meth:`tick`)."""
        log.info(
            "decision: kill task %s (%s on %s): %s", rec.task_id, rec.slot, rec.hostname, reason
        )
        rec.kill_requested = 0.0
        rec.kill_reason = reason

    def apply_spec(self, spec: PumpSpec) -> None:
        """Make ``spec`` the one kept true (a reload already validated by the caller).

        Counts scale at the next tick; tasks whose worker type changed version are replaced by
        :meth:`_rolling_step`, one at a time. Pending slots make the next tick revive offers.
        """
        old = set(self.desired_slots())
        versions = {n: w.version for n, w in self.spec.workers.items()}
        self.spec = spec
        self.settings = spec.scheduler
        for slot, c in list(self.state.crash.items()):
            name = slot.rsplit("-", 1)[0]
            w = spec.workers.get(name)
            if w is None or w.version != versions.get(name) or c.get("given_up"):
                # a changed worker type, or the operator's reload: a fresh start
                log.info("slot %s: crash-loop record cleared by the reload", slot)
                del self.state.crash[slot]
        for slot in sorted(set(self.desired_slots()) - old):
            self.slot_why[slot] = "new slot in the reloaded spec (scale up)"

    def _send_kill(self, task_id: str, agent_id: str | None, grace: float | None = None) -> None:
        self._call(self.client.kill, task_id, agent_id, grace)

    def _call(self, fn: Callable[..., int], *args: Any) -> bool:
        try:
            fn(*args)
            return True
        except SarraError as e:
            log.warning("call failed: %s", e)
            return False

    def allocated(self) -> int:
        """Live tasks (what stopping the scheduler would leave unmanaged)."""
        return sum(1 for r in self.state.tasks.values() if r.state in NOT_TERMINAL)

    def snapshot(self) -> dict[str, Any]:
        """The status document served as JSON (spec, tasks, pending work)."""
        now = self.clock()
        slots = self.desired_slots()
        live = {r.slot for r in self.state.tasks.values() if self._live(r)}
        return {
            "pump": self.settings.name,
            "framework_id": self.state.framework_id,
            "master": self.sub.base if self.sub is not None else None,
            "connected": self.sub is not None,
            "suppressed": self.suppressed,
            "spec": {
                n: {
                    "count": w.count,
                    "version": w.version,
                    "command": w.command,
                    "cpus": w.cpus,
                    "mem": w.mem,
                    "role": w.role,
                    **(
                        {"volume": {"size": w.volume_mb, "path": w.volume_path}}
                        if w.volume_mb
                        else {}
                    ),
                }
                for n, w in self.spec.workers.items()
            },
            "tasks": [
                {
                    "task_id": r.task_id,
                    "slot": r.slot,
                    "agent_id": r.agent_id,
                    "hostname": r.hostname,
                    "state": r.state,
                    "started": r.started,
                    "healthy": r.healthy,
                    "age": round(now - r.launched_at, 1),
                    "version": r.version,
                    "killing": r.kill_requested is not None,
                }
                for r in sorted(self.state.tasks.values(), key=lambda r: r.slot)
            ],
            "pending": sorted(set(slots) - live),
            "crash_loops": {
                slot: {
                    "failures": c.get("failures", 0),
                    "last": c.get("last", ""),
                    "given_up": bool(c.get("given_up")),
                    "relaunch_in": max(0.0, round(float(c.get("until", 0.0)) - now, 1)),
                }
                for slot, c in sorted(self.state.crash.items())
                if slot in slots
            },
            "plan": build_plan(
                self.spec.workers,
                self.state.tasks.values(),
                self.slot_wait,
                self.slot_why,
                self.settings.min_running_seconds,
                self.slot_wait_agents,
            ),
            "avoid": {a: round(t - now, 1) for a, t in self.state.avoid.items()},
            "allocated": self.allocated(),
        }
