"""Foreground supervision of instances, for a service manager (systemd ``Type=exec``).

``sr_<component> supervise [config ...]`` and ``sr supervise`` run every instance of the
chosen configurations as children of one long-lived process, which stays in the foreground,
so that systemd knows its main PID, sees it die, and restarts the unit (``Restart=``); a
``Type=forking`` unit around ``start`` leaves systemd no main PID to watch.

Contract:

- Each child is the ordinary instance process (``<launcher> <component> _instance <n>
  <config>``) told by :data:`SUPERVISED_ENV` not to detach and to log to its stderr, which the
  service manager collects (``journalctl -u``). It writes its own pid file, so ``status`` and
  ``sr status`` see it, and it stops gracefully (SIGTERM) when the supervisor dies.
- Each configuration supervised gets ``sr_<component>_<config>.supervisor`` in its state
  directory, naming the supervisor's pid. ``start``, ``stop``, ``restart`` and ``sanity`` of
  the per-component commands leave such a configuration to its supervisor
  (:func:`supervisor_of`): ``restart`` asks it to restart that configuration, ``stop`` points
  to the service.
- A configuration already run by another live supervisor is left to it (and looked at again
  at the next reload).
- A child that exits is started again after a back-off (1 s doubling to 60 s while it keeps
  dying within :data:`HEALTHY_AFTER` seconds of its start).
- SIGTERM/SIGINT: every child gets SIGTERM (in-flight work finished or returned to the queue,
  as ``stop`` does), and those still alive after the stop timeout get SIGKILL; then the
  supervisor removes its marks and exits 0. A second signal kills the children at once.
- SIGHUP (``systemctl reload``): the plan is read again. Configurations that were removed or
  disabled are stopped, new ones started, and a configuration whose file changed, whose number
  of instances changed or for which a restart was requested (``restart`` writes
  ``sr_<component>_<config>.restart``) is stopped and started again. A plan that does not load
  (a configuration error) is logged and the running instances are left as they are.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from sarra.cli.instances import (
    SUPERVISED_ENV,
    Instance,
    process_matches,
    read_pid_file,
    write_pid_file,
)
from sarra.errors import ConfigError, LocalError

log = logging.getLogger(__name__)

#: seconds a child must live for its back-off to start again at 1 s
HEALTHY_AFTER = 60.0
MAX_BACKOFF = 60.0


@dataclass(frozen=True, slots=True)
class Planned:
    """One configuration to supervise: its instances, and what identifies its version."""

    component: str
    config: str
    instances: tuple[Instance, ...]
    #: modification time (ns) of the configuration file, or 0 when unknown
    stamp: int
    #: environment of its children (the user's options travel there, never on the command line)
    env: Mapping[str, str]

    @property
    def label(self) -> str:
        return f"{self.component}/{self.config}"

    @property
    def state_dir(self) -> Path:
        return self.instances[0].state_dir


def mark_path(state_dir: Path, component: str, config: str, kind: str) -> Path:
    """``sr_<component>_<config>.<kind>`` (``supervisor`` or ``restart``) in ``state_dir``."""
    return state_dir / f"sr_{component}_{config}.{kind}"


def supervisor_of(state_dir: Path, component: str, config: str) -> int | None:
    """The pid of the live supervisor running ``component/config``, or None."""
    pid = read_pid_file(mark_path(state_dir, component, config, "supervisor"))
    if pid is None or pid == os.getpid():
        return None
    return pid if process_matches(pid, ["supervise"]) else None


def request_restart(state_dir: Path, component: str, config: str, pid: int) -> None:
    """Ask supervisor ``pid`` to restart ``component/config`` (it acts on SIGHUP)."""
    mark_path(state_dir, component, config, "restart").touch()
    if sys.platform == "win32":  # no SIGHUP there; the supervisor is for POSIX service managers
        raise LocalError("restarting through the supervisor needs SIGHUP, which Windows lacks")
    os.kill(pid, signal.SIGHUP)


@dataclass(slots=True)
class _Child:
    inst: Instance
    env: Mapping[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = 1.0
    due: float = 0.0  # monotonic time of the next start while proc is None


@dataclass
class Supervisor:
    """Runs the instances of ``plan()`` until SIGTERM (see the module docstring).

    ``plan`` raises :class:`ConfigError` when a configuration does not load; at start-up that
    is the caller's error, at a reload it is logged.
    """

    plan: Callable[[], Sequence[Planned]]
    launcher: Sequence[str]
    stop_timeout: float
    _planned: dict[str, Planned] = field(default_factory=dict)
    _children: dict[str, list[_Child]] = field(default_factory=dict)
    _stop: int = 0
    _reload: bool = False

    def run(self) -> int:
        planned = list(self.plan())
        previous = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, self._on_stop),
            signal.SIGINT: signal.signal(signal.SIGINT, self._on_stop),
        }
        if sys.platform != "win32":  # (Windows: no reload signal)
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hup)
        try:
            for item in planned:
                self._begin(item)
            log.info(
                "supervising %d instance(s) of %d configuration(s)", self._count(), len(planned)
            )
            while not self._stop:
                if self._reload:
                    self._reload = False
                    self._reread()
                self._tend()
                time.sleep(0.2)
            log.info("stopping %d instance(s)", self._count())
            self._end_all(list(self._children))
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
        return 0

    # -- signals -----------------------------------------------------------------------

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stop += 1
        if self._stop > 1:  # second signal: no more waiting
            for children in self._children.values():
                for child in children:
                    if child.proc is not None and child.proc.poll() is None:
                        child.proc.kill()

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload = True

    # -- the plan ----------------------------------------------------------------------

    def _count(self) -> int:
        return sum(len(c) for c in self._children.values())

    def _begin(self, item: Planned) -> None:
        other = supervisor_of(item.state_dir, item.component, item.config)
        if other is not None:  # e.g. sr_subscribe@obs.service beside sarra.service
            log.warning("%s: already run by supervisor pid %d, left to it", item.label, other)
            return
        self._planned[item.label] = item
        write_pid_file(
            mark_path(item.state_dir, item.component, item.config, "supervisor"), os.getpid()
        )
        mark_path(item.state_dir, item.component, item.config, "restart").unlink(missing_ok=True)
        children = [_Child(inst, item.env) for inst in item.instances]
        self._children[item.label] = children
        for child in children:
            self._launch(child)

    def _reread(self) -> None:
        try:
            fresh = {p.label: p for p in self.plan()}
        except ConfigError as exc:
            log.error("reload refused, instances left as they are: %s", exc)
            return
        for label, old in list(self._planned.items()):
            new = fresh.get(label)
            asked = mark_path(old.state_dir, old.component, old.config, "restart").exists()
            if new is None:
                log.info("%s: no longer configured, stopping", label)
                self._end_all([label])
            elif asked or new.stamp != old.stamp or len(new.instances) != len(old.instances):
                log.info("%s: %s, restarting", label, "restart asked" if asked else "changed")
                self._end_all([label])
                self._begin(new)
        for label, new in fresh.items():
            if label not in self._planned:
                log.info("%s: new configuration, starting", label)
                self._begin(new)

    def _end_all(self, labels: Sequence[str]) -> None:
        """Stop the children of ``labels`` together (SIGTERM, then SIGKILL) and unmark them."""
        children = [c for label in labels for c in self._children.get(label, [])]
        for child in children:
            if child.proc is not None and child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for child in children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                log.warning(
                    "instance %s did not stop in %g s: killed", child.inst.label, self.stop_timeout
                )
                child.proc.kill()
                child.proc.wait()
            child.inst.pid_path.unlink(missing_ok=True)
        for label in labels:
            item = self._planned.pop(label, None)
            self._children.pop(label, None)
            if item is not None:
                mark = mark_path(item.state_dir, item.component, item.config, "supervisor")
                if read_pid_file(mark) == os.getpid():
                    mark.unlink(missing_ok=True)

    # -- the children ------------------------------------------------------------------

    def _launch(self, child: _Child) -> None:
        inst = child.inst
        inst.state_dir.mkdir(parents=True, exist_ok=True)
        argv = [*self.launcher, inst.component, "_instance", str(inst.number), inst.config]
        env = {**child.env, SUPERVISED_ENV: str(os.getpid())}
        child.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, close_fds=True, env=env)
        child.started = time.monotonic()
        log.info("instance %s started, pid %d", inst.label, child.proc.pid)

    def _tend(self) -> None:
        now = time.monotonic()
        for children in self._children.values():
            for child in children:
                if child.proc is None:
                    if now >= child.due and not self._stop:
                        self._launch(child)
                    continue
                code = child.proc.poll()
                if code is None:
                    continue
                lived = now - child.started
                child.backoff = (
                    1.0 if lived >= HEALTHY_AFTER else min(child.backoff * 2, MAX_BACKOFF)
                )
                delay = 1.0 if lived >= HEALTHY_AFTER else child.backoff / 2
                log.warning(
                    "instance %s exited with status %d after %.0f s; starting it again in %g s",
                    child.inst.label,
                    code,
                    lived,
                    delay,
                )
                child.proc = None
                child.due = now + delay


def plan_entry(
    component: str,
    config: str,
    path: Path | None,
    count: int,
    state_dir: Path,
    log_dir: Path,
    env: Mapping[str, str],
) -> Planned:
    """The :class:`Planned` of ``count`` instances (numbered from 1) of one configuration."""
    stamp = 0
    if path is not None:
        with contextlib.suppress(OSError):
            stamp = path.stat().st_mtime_ns
    insts = tuple(Instance(component, config, n, state_dir, log_dir) for n in range(1, count + 1))
    return Planned(component, config, insts, stamp, env)


def set_parent_death_signal(parent: int) -> None:
    """In a supervised child on Linux: receive SIGTERM when the supervisor dies (and stop at
    once if it already has), so no instance outlives its supervisor."""
    import ctypes
    import sys

    if sys.platform != "linux":
        return
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
