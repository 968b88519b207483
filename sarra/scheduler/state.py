"""Durable scheduler state: the framework id and one record per task the scheduler launched.

Write-ahead rule: a task record is written (and fsynced) *before* the ACCEPT that launches it,
so whichever copy leads next knows every task that might exist and reconciles it instead of
launching a second one. The framework id is written as soon as SUBSCRIBED brings it.

Two stores keep the same JSON document: :class:`StateStore`, a file replaced atomically
(temporary file, fsync, rename, fsync of the directory) for a single copy, and
``sarra.scheduler.zkstate.ZkStateStore``, a znode written only while this copy holds the
election (the election is the fence), for several copies on several hosts.

A teardown asked by an operator is recorded in the document (``torn_down``) so that no copy,
now or later, registers a new framework by itself.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sarra.errors import LocalError, SarraError

NOT_TERMINAL = ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING")


@dataclass
class TaskRecord:
    """What the scheduler knows of one task (launched, or about to be)."""

    task_id: str
    slot: str  # "<worker type>-<index>"
    worker_type: str
    version: str  # the worker type's version the task was launched from
    agent_id: str
    hostname: str = ""
    state: str = "TASK_STAGING"
    launched_at: float = 0.0
    running_since: float | None = None
    last_update: float = 0.0
    reconcile_sent: float | None = None
    kill_requested: float | None = None  # last KILL sent (kills are repeated until terminal)
    kill_reason: str = ""  # why the scheduler decided to kill it (logged with every KILL)
    started: bool = False  # RUNNING for at least min_running_seconds (and healthy, if checked)
    health_checked: bool = False  # launched with a health check
    healthy: bool | None = None  # the last health reported by the agent (None: not yet)
    message: str = ""

    @property
    def terminal(self) -> bool:
        return self.state not in NOT_TERMINAL and self.state not in (
            "TASK_UNREACHABLE",
            "TASK_UNKNOWN",
        )


@dataclass
class SchedulerState:
    """The persisted document."""

    framework_id: str | None = None
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    avoid: dict[str, float] = field(default_factory=dict)  # agent id -> until (epoch seconds)
    last_agent: dict[str, str] = field(default_factory=dict)  # slot -> agent of its last task
    # slot -> {"failures": n, "until": epoch, "last": why, "given_up": bool}: a worker that
    # keeps dying before it counts as started is relaunched after a growing delay, then not
    crash: dict[str, dict[str, Any]] = field(default_factory=dict)
    # set by an operator's teardown: {"framework_id", "at" (epoch), "by" (copy)}; no copy
    # registers a new framework while it is set (``sr_scheduler --new-framework run`` clears it)
    torn_down: dict[str, Any] | None = None


class Deposed(SarraError):
    """This copy no longer leads: another copy holds the framework or the election."""


def encode(state: SchedulerState) -> bytes:
    """The persisted JSON form of ``state``."""
    doc = {
        "framework_id": state.framework_id,
        "tasks": {k: asdict(v) for k, v in state.tasks.items()},
        "avoid": state.avoid,
        "last_agent": state.last_agent,
        "crash": state.crash,
        "torn_down": state.torn_down,
    }
    return json.dumps(doc, indent=1, sort_keys=True).encode()


def decode(raw: bytes | str, where: str) -> SchedulerState:
    """Parse the persisted form; :class:`LocalError` naming ``where`` when it is corrupt."""
    try:
        doc: dict[str, Any] = json.loads(raw)
        tasks = {k: TaskRecord(**v) for k, v in doc.get("tasks", {}).items()}
        torn = doc.get("torn_down")
        if torn is not None and not isinstance(torn, dict):
            raise TypeError("torn_down is not an object")
        return SchedulerState(
            framework_id=doc.get("framework_id"),
            tasks=tasks,
            avoid={str(k): float(v) for k, v in doc.get("avoid", {}).items()},
            last_agent={str(k): str(v) for k, v in doc.get("last_agent", {}).items()},
            crash={str(k): dict(v) for k, v in doc.get("crash", {}).items()},
            torn_down=torn,
        )
    except (ValueError, TypeError, AttributeError) as e:
        raise LocalError(f"scheduler state {where} is corrupt: {e}") from e


class Store(Protocol):
    """Where the leader keeps :class:`SchedulerState` (a file, or a znode)."""

    def load(self) -> SchedulerState: ...

    def save(self, state: SchedulerState) -> None: ...


class StateStore:
    """Load and save :class:`SchedulerState` under ``directory/state.json``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "state.json"

    def load(self) -> SchedulerState:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return SchedulerState()
        except OSError as e:
            raise LocalError(f"cannot read scheduler state {self.path}: {e}") from e
        return decode(raw, str(self.path))

    def save(self, state: SchedulerState) -> None:
        """Replace the document atomically and durably."""
        data = encode(state)
        tmp = self.path.with_suffix(".tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise LocalError(f"cannot write scheduler state {self.path}: {e}") from e
