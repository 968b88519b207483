"""Instances of a configuration: pid files, liveness, spawning and stopping.

Layout (sr2-compatible names, with 3+ digit instance numbers so 100+ instances work)::

    <state_dir(component, config)>/sr_<component>_<config>_<NNN>.pid    one per daemon instance
    <state_dir(component, config)>/sr_<component>_<config>_<NNN>.heart  touched by the instance
    <state_dir(component, config)>/sr_<component>_<config>_<NNN>.metrics.json  its counters
    <log_dir>/sr_<component>_<config>_<NNN>.log

A pid file is trusted only if the process it names is alive and its command line carries the
component and config names: a pid recycled by an unrelated process reads as a stale pid file,
and is never signalled.

Starting is a double fork: ``start`` launches ``<launcher> <component> _instance <n> <config>``
in a new session; that process forks the real instance, which writes its own pid file
atomically and then tells its parent, which exits. So ``start`` returns once every pid file
exists, and instances are not children of the caller.

Windows has neither fork nor signals: there ``start`` launches the instance itself as a
detached process in a new process group (``DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP``) and
waits until the pid file names it; liveness is asked of the process table
(:func:`sarra.osport.pid_alive`; ``os.kill(pid, 0)`` would terminate the process there), and
as Windows has no command line to read in ``/proc`` and reuses pids quickly, the pid file
also records the instance's creation time (``started <FILETIME>``, second line), which must
match the live process's (:func:`sarra.osport.process_started`): a reused pid, or a pid file
without that line, reads as stale and that process is never terminated;
``stop`` asks for a graceful stop by creating ``<stem>.stop``, which the instance polls
(:func:`watch_stop_request`), and terminates the process if it is still alive at the timeout.

State files are replaced atomically through a temporary named after the final file and the
writer's pid (``[.]<name>.<pid>.tmp``; the retry queue's compaction ``<name>.<pid>.compact``).
A killed writer leaves it behind: an instance starting removes those of the configuration's
state directory whose writer is gone (:func:`remove_stale_temporaries`); nothing reads them.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sarra import osport
from sarra.cli.logs import instance_tag, log_path

log = logging.getLogger(__name__)

#: how often a Windows instance looks for its stop request (seconds)
STOP_POLL = 0.5
#: environment variable telling an instance process it runs under a supervisor
#: (:mod:`sarra.cli.supervisor`; defined here so an instance need not import that module)
SUPERVISED_ENV = "SARRA_SUPERVISED"


class State(enum.StrEnum):
    """What ``status`` reports for one instance."""

    RUNNING = "running"
    STOPPED = "stopped"
    STALE = "stale pid"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Instance:
    """One numbered instance of a configuration and where its files live."""

    component: str
    config: str
    number: int
    state_dir: Path
    log_dir: Path

    @property
    def stem(self) -> str:
        return f"sr_{self.component}_{self.config}_{instance_tag(self.number)}"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / f"{self.stem}.pid"

    @property
    def stop_path(self) -> Path:
        """Windows: created by ``stop`` to ask the instance to finish (no signals there)."""
        return self.state_dir / f"{self.stem}.stop"

    @property
    def heartbeat_path(self) -> Path:
        return self.state_dir / f"{self.stem}.heart"

    @property
    def metrics_path(self) -> Path:
        """The instance's metrics document (:mod:`sarra.flow.metrics`), rewritten every few
        seconds while it runs."""
        return self.state_dir / f"{self.stem}.metrics.json"

    @property
    def log_path(self) -> Path:
        return log_path(self.log_dir, self.component, self.config, self.number)

    @property
    def label(self) -> str:
        return f"{self.component}/{self.config}/{instance_tag(self.number)}"


#: the temporary of an atomic state write: ``[.]<final name>.<writer's pid>.tmp|compact``
_TEMPORARY = re.compile(r"\.?.+\.(?P<pid>[0-9]{1,10})\.(?:tmp|compact)")


def remove_stale_temporaries(state_dir: Path) -> list[str]:
    """Remove from ``state_dir`` (not below it) the temporaries of atomic state writes whose
    writing process is gone (SIGKILL, power cut); returns their names. A temporary of a live
    process (another instance writing now) and any other file are left alone."""
    try:
        entries = list(os.scandir(state_dir))
    except OSError:
        return []
    removed = []
    for entry in entries:
        m = _TEMPORARY.fullmatch(entry.name)
        if m is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(m.group("pid"))
        if pid == os.getpid() or _writer_alive(pid):
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            continue  # another instance starting removed it first
        except OSError as e:
            log.warning("could not remove the stale temporary %s: %s", entry.path, e)
            continue
        removed.append(entry.name)
    return removed


def _writer_alive(pid: int) -> bool:
    """Whether process ``pid`` may still write: it exists and, on Linux, is not a zombie (a
    killed instance stays one until reaped, which a container's init may never do)."""
    if not 0 < pid < 2**31 or not osport.pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # "pid (comm) S ...": the state follows the last ")"
            return f.read().rpartition(b")")[2].split()[:1] != [b"Z"]
    except OSError:
        return True  # no /proc (not Linux), or not ours to read: alive as far as we know


def write_pid_file(path: Path, pid: int, started: int | None = None) -> None:
    """Write ``pid`` to ``path`` atomically (temporary file, fsync, rename), with the
    process's creation time as a second line ``started <n>`` when ``started`` is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        text = f"{pid}\n" + (f"started {started}\n" if started is not None else "")
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    osport.replace(tmp, path)


def read_pid_record(path: Path) -> tuple[int | None, int | None]:
    """(pid, creation time) from ``path``; pid None if the file is missing, empty or its
    first line is not a positive integer; creation time None where not recorded."""
    try:
        lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    except FileNotFoundError:
        return None, None
    first = lines[0].strip() if lines else ""
    pid = int(first) if first.isdigit() and int(first) > 0 else None
    started = None
    for line in lines[1:]:
        key, _, value = line.strip().partition(" ")
        if key == "started" and value.isdigit():
            started = int(value)
    return pid, started


def read_pid_file(path: Path) -> int | None:
    """The pid in ``path``, or None if the file is missing, empty or not a positive integer."""
    return read_pid_record(path)[0]


def remove_pid_file(path: Path, pid: int | None = None) -> None:
    """Remove ``path``; if ``pid`` is given, only while the file still names that pid."""
    if pid is not None and read_pid_file(path) != pid:
        return
    path.unlink(missing_ok=True)


def process_matches(pid: int, markers: Sequence[str], started: int | None = None) -> bool:
    """True if ``pid`` is a live process whose argv contains every string in ``markers``.

    Zombies have an empty command line, so they read as gone. On Windows the process must
    be alive and have been created at ``started`` (what its pid file recorded; None never
    matches: such a pid cannot be told from a reused one). Where /proc is missing
    elsewhere (BSD), only liveness is checked, without signalling the process.
    """
    if sys.platform == "win32":
        return (
            started is not None and osport.pid_alive(pid) and osport.process_started(pid) == started
        )
    cmdline = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self/cmdline").exists():
        try:
            args = cmdline.read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return False
        words = {a.decode(errors="replace") for a in args}
        return all(m in words for m in markers)
    return osport.pid_alive(pid)


def _markers(inst: Instance) -> tuple[str, ...]:
    return (inst.component, inst.config)


def instance_pid(inst: Instance) -> tuple[State, int | None]:
    """Liveness of one instance: (RUNNING, pid), (STALE, pid) or (STOPPED, None)."""
    return _instance_record(inst)[:2]


def _instance_record(inst: Instance) -> tuple[State, int | None, int | None]:
    pid, started = read_pid_record(inst.pid_path)
    if pid is None:
        state = State.STALE if inst.pid_path.exists() else State.STOPPED
        return state, None, None
    if process_matches(pid, _markers(inst), started):
        return State.RUNNING, pid, started
    return State.STALE, pid, started


def last_activity(inst: Instance) -> float | None:
    """Latest mtime of the instance's log and heartbeat files, or None if neither exists."""
    times = []
    for path in (inst.log_path, inst.heartbeat_path):
        with contextlib.suppress(FileNotFoundError):
            times.append(path.stat().st_mtime)
    return max(times) if times else None


def pid_file_numbers(state_dir: Path, component: str, config: str) -> list[int]:
    """Instance numbers that have a pid file in ``state_dir``, sorted."""
    pattern = re.compile(rf"sr_{re.escape(component)}_{re.escape(config)}_(\d{{3,}})\.pid")
    if not state_dir.is_dir():
        return []
    found = (pattern.fullmatch(p.name) for p in state_dir.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def spawn(
    instances: Sequence[Instance],
    launcher: Sequence[str],
    env: Mapping[str, str],
    timeout: float,
) -> dict[int, str | None]:
    """Start each instance as a detached daemon; returns ``{number: None or error text}``.

    All launches run in parallel; each is given ``timeout`` seconds to report that its pid
    file is written.
    """
    import subprocess  # only where instances are started: not in each instance's start-up

    if sys.platform == "win32":
        return _spawn_detached(instances, launcher, env, timeout)
    procs: list[tuple[Instance, subprocess.Popen[bytes]]] = []
    for inst in instances:
        inst.log_dir.mkdir(parents=True, exist_ok=True)
        inst.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(inst.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            argv = [*launcher, inst.component, "_instance", str(inst.number), inst.config]
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=dict(env),
            )
        finally:
            os.close(fd)
        procs.append((inst, proc))
    results: dict[int, str | None] = {}
    deadline = time.monotonic() + timeout
    for inst, proc in procs:
        try:
            code = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            results[inst.number] = f"did not start within {timeout:g} s, see {inst.log_path}"
            continue
        results[inst.number] = None if code == 0 else f"failed to start, see {inst.log_path}"
    return results


def _spawn_detached(
    instances: Sequence[Instance],
    launcher: Sequence[str],
    env: Mapping[str, str],
    timeout: float,
) -> dict[int, str | None]:
    """Windows: each instance is launched detached, in its own process group, and is the
    instance itself; it has started once its pid file names it."""
    import subprocess

    flags = getattr(subprocess, "DETACHED_PROCESS", 0) | getattr(
        subprocess, "CREATE_NEW_PROCESS_GROUP", 0
    )
    procs: list[tuple[Instance, subprocess.Popen[bytes]]] = []
    for inst in instances:
        inst.log_dir.mkdir(parents=True, exist_ok=True)
        inst.state_dir.mkdir(parents=True, exist_ok=True)
        inst.stop_path.unlink(missing_ok=True)
        argv = [*launcher, inst.component, "_instance", str(inst.number), inst.config]
        # the instance logs to its own file; no console, no inherited handles
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            creationflags=flags,
            close_fds=True,
            env=dict(env),
        )
        procs.append((inst, proc))
    results: dict[int, str | None] = {}
    deadline = time.monotonic() + timeout
    for inst, proc in procs:
        while True:
            if read_pid_file(inst.pid_path) == proc.pid:
                results[inst.number] = None
                break
            if proc.poll() is not None:
                results[inst.number] = f"failed to start, see {inst.log_path}"
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                results[inst.number] = f"did not start within {timeout:g} s, see {inst.log_path}"
                break
            time.sleep(0.05)
    return results


def watch_stop_request(inst: Instance, stop: threading.Event) -> Callable[[], None]:
    """Windows: set ``stop`` once ``inst.stop_path`` appears (what ``stop`` creates there, in
    place of SIGTERM). Returns a function ending the watch. Elsewhere signals do this job
    (:mod:`sarra.cli.signals`) and nothing is watched."""
    if sys.platform != "win32":
        return lambda: None
    inst.stop_path.unlink(missing_ok=True)  # a request left from an earlier instance
    done = threading.Event()

    def watch() -> None:
        while not done.wait(STOP_POLL):
            if inst.stop_path.exists():
                stop.set()
                return

    threading.Thread(target=watch, name="stop-request", daemon=True).start()
    return done.set


def _request_stop(inst: Instance, pid: int) -> None:
    """Ask ``inst`` (process ``pid``) to finish: SIGTERM, or on Windows its stop file."""
    if sys.platform == "win32":
        inst.stop_path.touch()
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def _force_stop(pid: int, started: int | None = None) -> None:
    """End process ``pid`` at once: SIGKILL; on Windows TerminateProcess, and only if the
    process was created at ``started`` (checked on the same handle)."""
    if sys.platform == "win32":
        if started is not None:
            osport.terminate_started(pid, started)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def terminate(instances: Iterable[Instance], timeout: float) -> dict[int, str]:
    """SIGTERM every running instance, SIGKILL those still alive after ``timeout`` seconds.

    Pid files are removed. Returns ``{number: outcome}`` with outcome one of ``stopped``,
    ``killed``, ``not running`` or ``stale pid removed``.
    """
    outcomes: dict[int, str] = {}
    waiting: dict[int, tuple[Instance, int, int | None]] = {}
    instances_list = list(instances)
    for inst in instances_list:
        state, pid, started = _instance_record(inst)
        if state is State.RUNNING and pid is not None:
            _request_stop(inst, pid)
            waiting[inst.number] = (inst, pid, started)
        else:
            outcomes[inst.number] = "stale pid removed" if state is State.STALE else "not running"
            remove_pid_file(inst.pid_path)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for number, (inst, pid, started) in list(waiting.items()):
            if not process_matches(pid, _markers(inst), started):
                outcomes[number] = "stopped"
                remove_pid_file(inst.pid_path, pid)
                del waiting[number]
        if waiting:
            time.sleep(0.05)
    for number, (inst, pid, started) in waiting.items():
        if process_matches(pid, _markers(inst), started):
            _force_stop(pid, started)
            outcomes[number] = "killed"
        else:
            outcomes[number] = "stopped"
        remove_pid_file(inst.pid_path, pid)
    if sys.platform == "win32":
        for inst in instances_list:
            inst.stop_path.unlink(missing_ok=True)
    return dict(sorted(outcomes.items()))


def daemonize(pid_path: Path) -> None:
    """Detach into a grandchild that owns ``pid_path``; the calling process exits.

    The parent exits 0 once the grandchild has written its pid file, 1 if the grandchild died
    first. Where fork is unavailable, the current process just writes its pid file.
    """
    if sys.platform == "win32" or not hasattr(os, "fork"):
        write_pid_file(pid_path, os.getpid(), osport.process_started(os.getpid()))
        return
    read_end, write_end = os.pipe()
    child = os.fork()
    if child:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as ready:
            ok = ready.read(1) == b"1"
        # os._exit: the parent must not run atexit hooks or flush state it shares with the
        # grandchild.
        os._exit(0 if ok else 1)
    os.close(read_end)
    with contextlib.suppress(OSError):
        os.setsid()
    write_pid_file(pid_path, os.getpid())
    os.write(write_end, b"1")
    os.close(write_end)
