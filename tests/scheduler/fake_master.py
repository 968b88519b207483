"""A Mesos master for tests only: the v1 scheduler HTTP API (JSON) over real loopback HTTP.

Follows shared/docs/mesos-v1-facts.md section 5.3: status codes and validation, chunked RecordIO
streams with a fresh ``Mesos-Stream-Id`` per subscription (records split across chunks at
random), heartbeats, one subscription per framework ("Framework failed over"),
``failover_timeout`` expiry then "Framework has been removed", offers from configured agents with
refuse filters, SUPPRESS/REVIVE, ACCEPT validation (TASK_ERROR / TASK_DROPPED|LOST without uuid),
tasks run as real local processes in sandboxes, executor updates with uuids held per task until
acknowledged and resent with backoff, reconciliation answers per case, KILL with SIGTERM then
SIGKILL, agents that can be removed, non-leading masters answering 307 and 503 without a leader,
a new leader that re-learns agents after a delay, and, when ``Cluster.credentials`` is set,
HTTP framework authentication (basic; 401 before any routing, as the master's authenticator
does; a subscribing ``framework_info.principal`` must be the authenticated one, else 400).
Health checks (``TaskInfo.health_check``, COMMAND in the sandbox or HTTP GET on loopback) are
run as an agent's executor does: after ``delay_seconds``, every ``interval_seconds``, each
bounded by ``timeout_seconds``; a change of health is a TASK_RUNNING update with ``healthy`` and
reason REASON_TASK_HEALTH_CHECK_STATUS_UPDATED; failures before the first success are ignored
for ``grace_period_seconds``; ``consecutive_failures`` failures kill the task (TASK_KILLED,
``healthy`` false).
A master may serve HTTPS (``add_master(tls=context)``: the test makes a CA and a certificate) and
the API under a path prefix (``add_master(prefix="/mesos")``, as behind a proxy: any other path
is 404), with redirects naming the leader's own prefix.

The offer side follows the real master and agent too:

* roles: a framework's roles are validated like the master does (``roles`` needs the
  MULTI_ROLE capability, ``role`` and ``roles`` not both, valid names) and a refused one gets an
  ERROR event; every role is offered: unreserved resources to one role at a time (the first
  role neither suppressed nor filtered on that agent), reserved ones only to their role;
* reservations: agents may have static reservations (``AgentSpec.reserved``); a framework with
  RESERVATION_REFINEMENT sees ``reservations``, one without sees the older ``role`` and
  ``reservation`` fields; a task must name reserved resources exactly as offered (else
  TASK_ERROR), and every resource of a MULTI_ROLE framework must carry the offer's
  ``allocation_info.role``;
* RESERVE (dynamic, principal checked) and CREATE (persistent volumes, unique persistence id,
  relative container path, on reserved disk only) run in order before LAUNCH; an invalid one is
  dropped (``Cluster.dropped``) and the next operations see the resources without it; a
  volume's directory lives on the agent (``<root>/<agent>/volumes/roles/<role>/<id>``), is
  linked into the sandbox at its container path (as the posix isolator does) and survives its
  tasks; an unused volume is offered again with its reserved disk;
* attributes are parsed as an agent parses ``--attributes``: numbers are SCALAR, ``[a-b]``
  RANGES, ``{a,b}`` SET, the rest TEXT;
* a task starts with an agent's environment only: ``CommandInfo.environment``, the MESOS_*
  variables and a default PATH (never the test's own environment), as the framework's
  ``user``: a user that does not exist, or another user than the one running the tests, fails
  the task as an unprivileged agent would.

One :class:`Cluster` holds the agents (and so the task processes); masters come and go over it.
A single ticker thread drives time (processes, resends, heartbeats, offers, timeouts); each
subscription's HTTP handler thread writes its queued records.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pwd
import queue
import random
import select
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sarra.scheduler.mesos import close_stranded_tls_socket

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TERMINAL = {
    "TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR", "TASK_DROPPED",
    "TASK_GONE", "TASK_GONE_BY_OPERATOR",
}  # fmt: skip
PATHS = ("/api/v1/scheduler", "/master/api/v1/scheduler")


@dataclass
class AgentSpec:
    hostname: str
    cpus: float = 4.0
    mem: float = 4096.0
    disk: float = 10000.0
    attributes: dict[str, str] = field(default_factory=dict)  # as --attributes values
    reserved: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # static


# A resource of an agent: (name, reservations as JSON ("" = unreserved), persistence id or "").
Key = tuple[str, str, str]


def _attribute(name: str, text: str) -> dict[str, Any]:
    """An agent's ``--attributes`` value, typed as the agent does."""
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        rs = []
        for part in t[1:-1].split(","):
            lo, _, hi = part.strip().partition("-")
            rs.append({"begin": int(lo), "end": int(hi)})
        return {"name": name, "type": "RANGES", "ranges": {"range": rs}}
    if t.startswith("{") and t.endswith("}"):
        items = [i.strip() for i in t[1:-1].split(",") if i.strip()]
        return {"name": name, "type": "SET", "set": {"item": items}}
    try:
        return {"name": name, "type": "SCALAR", "scalar": {"value": float(t)}}
    except ValueError:
        return {"name": name, "type": "TEXT", "text": {"value": text}}


def _role_error(role: str) -> str | None:
    if role == "*":
        return None
    if not role or role.startswith("/") or role.endswith("/") or "//" in role:
        return f"Role '{role}' is invalid: empty, or a leading, trailing or double slash"
    for part in role.split("/"):
        if part in (".", "..", "*") or part.startswith("-"):
            return f"Role '{role}' is invalid: component '{part}'"
        if any(c in part for c in "\t\n\v\f\r \x7f"):
            return f"Role '{role}' is invalid: whitespace or backspace"
    return None


def _last_role(reservations: str) -> str | None:
    stack = json.loads(reservations) if reservations else []
    return str(stack[-1]["role"]) if stack else None


@dataclass
class Volume:
    persistence_id: str
    role: str
    reservations: str
    size: float
    container_path: str
    path: Path


@dataclass
class Task:
    task_id: str
    framework_id: str
    agent_id: str
    cpus: float
    mem: float
    disk: float
    state: str = "TASK_STAGING"
    proc: subprocess.Popen[bytes] | None = None
    killing: bool = False
    kill_deadline: float = 0.0
    grace: float = 3.0
    updates: list[dict[str, Any]] = field(default_factory=list)  # unacked, head in flight
    next_send: float = 0.0
    backoff: float = 0.0
    labels: dict[str, Any] = field(default_factory=dict)
    uses: dict[Key, float] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # what the task process started with
    health: HealthRun | None = None  # the task's health check, when it has one


@dataclass
class Agent:
    agent_id: str
    spec: AgentSpec
    tasks: dict[str, Task] = field(default_factory=dict)
    removed: bool = False
    pool: dict[Key, float] = field(default_factory=dict)  # total resources, by key
    volumes: dict[str, Volume] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.spec
        unreserved = [s.cpus, s.mem, s.disk]
        for role, amounts in s.reserved.items():
            res = json.dumps([{"type": "STATIC", "role": role}], sort_keys=True)
            for i, name in enumerate(("cpus", "mem", "disk")):
                if amounts[i] > 0:
                    self.pool[(name, res, "")] = amounts[i]
                    unreserved[i] -= amounts[i]
        for i, name in enumerate(("cpus", "mem", "disk")):
            self.pool[(name, "", "")] = unreserved[i]


@dataclass
class Offer:
    agent_id: str
    role: str
    pool: dict[Key, float]


@dataclass
class Framework:
    framework_id: str
    info: dict[str, Any]
    stream: Stream | None = None
    disconnected_at: float | None = None
    suppressed: set[str] = field(default_factory=set)
    filters: dict[tuple[str, str], float] = field(default_factory=dict)  # (agent, role) -> until
    offers: dict[str, Offer] = field(default_factory=dict)

    @property
    def partition_aware(self) -> bool:
        caps = {c.get("type") for c in self.info.get("capabilities", [])}
        return "PARTITION_AWARE" in caps

    @property
    def capabilities(self) -> set[str]:
        return {str(c.get("type")) for c in self.info.get("capabilities", [])}

    @property
    def roles(self) -> list[str]:
        return list(self.info.get("roles") or [self.info.get("role") or "*"])


class Stream:
    """One subscription's outgoing records (written by its HTTP handler thread)."""

    def __init__(self) -> None:
        self.stream_id = str(uuid.uuid4())
        self.q: queue.Queue[bytes | None] = queue.Queue()
        self.paused = False  # half-open partition: nothing is sent, socket stays open
        self.last_heartbeat = time.monotonic()
        self.closed = False

    def send(self, event: dict[str, Any]) -> None:
        if not self.paused and not self.closed:
            self.q.put(json.dumps(event).encode())

    def send_raw(self, record: bytes) -> None:
        self.q.put(record)

    def close(self) -> None:
        self.closed = True
        self.q.put(None)


def _status(
    task: Task, state: str, source: str, reason: str | None = None, **kw: Any
) -> dict[str, Any]:
    st: dict[str, Any] = {
        "task_id": {"value": task.task_id},
        "state": state,
        "source": source,
        "agent_id": {"value": task.agent_id},
        "timestamp": time.time(),
    }
    if reason:
        st["reason"] = reason
    st.update(kw)
    return st


class Cluster:
    """Agents with real task processes, and the masters that lead them in turn."""

    def __init__(
        self,
        root: Path,
        agents: list[AgentSpec],
        heartbeat: float = 0.3,
        update_retry: float = 0.5,
        update_retry_max: float = 4.0,
        allocation_interval: float = 0.1,
        reregister_delay: float = 0.0,
    ) -> None:
        self.root = root
        self.heartbeat = heartbeat
        self.update_retry = update_retry
        self.update_retry_max = update_retry_max
        self.allocation_interval = allocation_interval
        self.reregister_delay = reregister_delay
        self.lock = threading.RLock()
        self.masters: list[FakeMaster] = []
        self.leader: FakeMaster | None = None
        self.master_id = uuid.uuid4().hex[:8]
        self.agents: dict[str, Agent] = {}
        for i, spec in enumerate(agents):
            aid = f"{self.master_id}-S{i}"
            self.agents[aid] = Agent(aid, spec)
        # fault hooks
        self.drop_updates = 0
        self.duplicate_updates = 0
        self.drop_next_accept = False
        self.drop_accepts_for_agent: str | None = None
        self.rescind_next_accept = False
        self.split_offers = False
        self.accepts: list[list[str]] = []  # offer ids of every ACCEPT, in order
        self.calls: list[tuple[str, str]] = []  # (master port, call type)
        self.launches: list[str] = []  # task ids, in launch order
        self.dropped: list[str] = []  # offer operations dropped as invalid, with the reason
        self.operations: list[str] = []  # types of the offer operations applied, in order
        # HTTP framework authentication (principal -> secret); None: not required
        self.credentials: dict[str, str] | None = None
        self.unauthorized = 0  # requests answered 401
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-mesos", daemon=True)
        self._thread.start()

    # -- masters ---------------------------------------------------------------------------
    def add_master(self, tls: ssl.SSLContext | None = None, prefix: str = "") -> FakeMaster:
        m = FakeMaster(self, tls, prefix)
        with self.lock:
            self.masters.append(m)
            if self.leader is None and len(self.masters) == 1:
                self.leader = m
                m.recovered_at = time.monotonic()
        return m

    def elect(self, master: FakeMaster | None) -> None:
        """Leader change: the old leader drops all state; the new one re-learns agents."""
        with self.lock:
            old = self.leader
            if old is not None and old is not master:
                old.forget()
            self.leader = master
            if master is not None and master is not old:
                master.forget()
                master.recovered_at = time.monotonic() + self.reregister_delay

    # -- fault hooks -----------------------------------------------------------------------
    def remove_agent(self, agent_id: str) -> None:
        """The agent dies: its processes are killed, frameworks get FAILURE/RESCIND/LOST."""
        with self.lock:
            agent = self.agents[agent_id]
            agent.removed = True
            for t in agent.tasks.values():
                if t.proc is not None and t.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(t.proc.pid, signal.SIGKILL)
                    t.proc.wait()
            m = self.leader
            if m is not None:
                m.agent_removed(agent)
            agent.tasks.clear()

    def pause_stream(self, framework_id: str) -> None:
        with self.lock:
            fw = self.leader.frameworks[framework_id] if self.leader else None
            if fw is not None and fw.stream is not None:
                fw.stream.paused = True

    def inject(self, framework_id: str, record: bytes) -> None:
        """Queue a raw record (already the JSON bytes) on the framework's stream."""
        with self.lock:
            fw = self.leader.frameworks.get(framework_id) if self.leader else None
            if fw is not None and fw.stream is not None:
                fw.stream.send_raw(record)

    def running_tasks(self) -> dict[str, Task]:
        with self.lock:
            return {
                t.task_id: t
                for a in self.agents.values()
                for t in a.tasks.values()
                if t.state == "TASK_RUNNING" and t.proc is not None and t.proc.poll() is None
            }

    def all_tasks(self) -> dict[str, Task]:
        with self.lock:
            return {t.task_id: t for a in self.agents.values() for t in a.tasks.values()}

    def state(self) -> dict[str, Any]:
        """Observability for tests (like /state)."""
        with self.lock:
            m = self.leader
            return {
                "leader": m.port if m else None,
                "frameworks": {
                    fid: {
                        "connected": fw.stream is not None,
                        "offers": len(fw.offers),
                        "suppressed": sorted(fw.suppressed),
                        "filters": {f"{a}/{r}": t for (a, r), t in fw.filters.items()},
                    }
                    for fid, fw in (m.frameworks.items() if m else [])
                },
                "tasks": {t.task_id: t.state for t in self.all_tasks().values()},
                "unacked": {t.task_id: len(t.updates) for t in self.all_tasks().values()},
            }

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for m in self.masters:
            m.shutdown()
        with self.lock:
            for a in self.agents.values():
                for t in a.tasks.values():
                    if t.proc is not None and t.proc.poll() is None:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(t.proc.pid, signal.SIGKILL)
                        t.proc.wait()

    # -- the clock ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with self.lock:
                now = time.monotonic()
                self._processes(now)
                m = self.leader
                if m is not None:
                    m.tick(now)
                self._resend(now)

    def _processes(self, now: float) -> None:
        for a in self.agents.values():
            for t in list(a.tasks.values()):
                if t.proc is None or t.state in TERMINAL:
                    continue
                code = t.proc.poll()
                if code is None:
                    if t.killing and now >= t.kill_deadline:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(t.proc.pid, signal.SIGKILL)
                    elif t.health is not None and not t.killing:
                        self._health(t, now)
                    continue
                if t.killing and t.health is not None and t.health.killed:
                    self.executor_update(t, "TASK_KILLED", healthy=False)
                elif t.killing:
                    self.executor_update(t, "TASK_KILLED", "REASON_EXECUTOR_TERMINATED")
                elif code == 0:
                    self.executor_update(t, "TASK_FINISHED")
                else:
                    self.executor_update(t, "TASK_FAILED", "REASON_COMMAND_EXECUTOR_FAILED")

    def _health(self, t: Task, now: float) -> None:
        """Start the next check when due; act on a finished one."""
        h = t.health
        assert h is not None
        result = h.result
        if result is not None:
            h.result = None
            if result:
                h.failures = 0
                h.ever_healthy = True
            elif h.ever_healthy or now - h.started >= h.grace:
                h.failures += 1
            if result != h.reported and (result or h.failures > 0):
                h.reported = result
                self.executor_update(
                    t, "TASK_RUNNING", "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED", healthy=result
                )
            if h.failures >= h.limit:
                h.killed = True
                self.kill(t, None)
                return
        if not h.running and now >= h.next_check:
            h.next_check = now + h.interval
            h.start(self.root / t.agent_id / t.framework_id / t.task_id)

    def executor_update(self, t: Task, state: str, reason: str | None = None, **extra: Any) -> None:
        """A reliable (uuid-carrying) update from the task's executor, queued on its agent."""
        t.state = state
        uid = base64.b64encode(uuid.uuid4().bytes).decode()
        t.updates.append(_status(t, state, "SOURCE_EXECUTOR", reason, uuid=uid, **extra))
        if len(t.updates) == 1:
            t.next_send = 0.0
            t.backoff = self.update_retry

    def _resend(self, now: float) -> None:
        m = self.leader
        for a in self.agents.values():
            if a.removed or m is None or now < m.recovered_at:
                continue
            for t in list(a.tasks.values()):
                if not t.updates or now < t.next_send:
                    continue
                fw = m.frameworks.get(t.framework_id)
                if fw is None or fw.stream is None:
                    continue
                t.next_send = now + t.backoff
                t.backoff = min(t.backoff * 2, self.update_retry_max)
                if self.drop_updates > 0:
                    self.drop_updates -= 1
                    continue  # lost in transit; the agent resends it later
                event = {"type": "UPDATE", "update": {"status": t.updates[0]}}
                fw.stream.send(event)
                if self.duplicate_updates > 0:
                    self.duplicate_updates -= 1
                    fw.stream.send(event)

    def find_task(self, framework_id: str, task_id: str) -> Task | None:
        for a in self.agents.values():
            t = a.tasks.get(task_id)
            if t is not None and t.framework_id == framework_id:
                return t
        return None

    def launch(
        self, fw: Framework, agent: Agent, info: dict[str, Any], uses: dict[Key, float]
    ) -> None:
        """Start one task as a real local process in its sandbox, as the framework's user."""
        tid = info["task_id"]["value"]
        res: dict[str, float] = {}
        for (name, _, _), v in uses.items():
            res[name] = res.get(name, 0.0) + v
        t = Task(
            tid,
            fw.framework_id,
            agent.agent_id,
            res.get("cpus", 0.0),
            res.get("mem", 0.0),
            res.get("disk", 0.0),
        )
        t.uses = dict(uses)
        ns = ((info.get("kill_policy") or {}).get("grace_period") or {}).get("nanoseconds")
        if ns is not None:
            t.grace = int(ns) / 1e9
        if info.get("health_check"):
            t.health = HealthRun(info["health_check"], time.monotonic())
        agent.tasks[tid] = t
        self.launches.append(tid)
        cmd = info["command"]
        sandbox = self.root / agent.agent_id / fw.framework_id / tid
        sandbox.mkdir(parents=True, exist_ok=True)
        # an agent's environment, never the test's: CommandInfo.environment, MESOS_*, PATH
        env: dict[str, str] = {}
        for var in (cmd.get("environment") or {}).get("variables", []):
            env[var["name"]] = var.get("value", "")
        env.setdefault("PATH", DEFAULT_PATH)
        env.update(
            MESOS_SANDBOX=str(sandbox), MESOS_DIRECTORY=str(sandbox),
            MESOS_FRAMEWORK_ID=fw.framework_id, MESOS_EXECUTOR_ID=tid,
            MESOS_AGENT_ENDPOINT="127.0.0.1:5051", MESOS_TASK_ID=tid,
        )  # fmt: skip
        t.env = dict(env)
        self.executor_update(t, "TASK_STARTING")
        user = str(info.get("user") or fw.info.get("user") or "")
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            uid = None
        if uid is None or (uid != os.getuid() and os.getuid() != 0):
            why = "no such user" if uid is None else "the agent cannot switch to that user"
            (sandbox / "stderr").write_text(f"Failed to run as user '{user}': {why}\n")
            self.executor_update(t, "TASK_FAILED", "REASON_EXECUTOR_TERMINATED")
            return
        for (_, _, pid), _ in uses.items():  # persistent volumes: linked at their path
            if pid:
                vol = agent.volumes[pid]
                link = sandbox / vol.container_path
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(vol.path, target_is_directory=True)
        try:
            for u in cmd.get("uris", []):
                src = (
                    u["value"][len("file://") :] if u["value"].startswith("file://") else u["value"]
                )
                dest = sandbox / (u.get("output_file") or Path(src).name)
                shutil.copy(src, dest)
                if u.get("extract", True) and dest.suffix in (".gz", ".tgz", ".zip", ".tar"):
                    shutil.unpack_archive(dest, sandbox)
                if u.get("executable"):
                    dest.chmod(0o755)
            argv = (
                ["/bin/sh", "-c", cmd["value"]]
                if cmd.get("shell", True)
                else [cmd["value"], *cmd.get("arguments", [])]
            )
            with open(sandbox / "stdout", "wb") as out, open(sandbox / "stderr", "wb") as err:
                switch = uid if os.getuid() == 0 and uid != 0 else None
                if switch is not None:
                    for d in (sandbox, *(agent.volumes[k[2]].path for k in uses if k[2])):
                        os.chown(d, switch, -1)
                t.proc = subprocess.Popen(
                    argv, cwd=sandbox, env=env, stdout=out, stderr=err, start_new_session=True,
                    user=switch,
                )  # fmt: skip
        except (OSError, KeyError, shutil.ReadError) as e:
            (sandbox / "stderr").write_text(f"launch failed: {e}\n")
            self.executor_update(t, "TASK_FAILED", "REASON_CONTAINER_LAUNCH_FAILED")
            return
        self.executor_update(t, "TASK_RUNNING")

    def kill(self, t: Task, grace: float | None) -> None:
        if t.proc is None or t.state in TERMINAL or t.killing:
            return
        t.killing = True
        t.kill_deadline = time.monotonic() + (grace if grace is not None else t.grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(t.proc.pid, signal.SIGTERM)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    master: FakeMaster

    principal: str | None = None  # set by FakeMaster.authenticate

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, code: int, text: str = "", headers: dict[str, str] | None = None) -> None:
        body = text.encode()
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply(405, "Expecting 'POST'")

    do_PUT = do_DELETE = do_GET

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if urllib.parse.urlsplit(self.path).path not in [self.master.prefix + p for p in PATHS]:
            self._reply(404)
            return
        self.master.handle(self, body)

    def serve_stream(self, stream: Stream, first: dict[str, Any], fw: Framework | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Mesos-Stream-Id", stream.stream_id)
        self.end_headers()
        self.close_connection = True
        sock = self.connection
        items: list[bytes] = [json.dumps(first).encode()]
        try:
            while True:
                while items:
                    item = items.pop(0)
                    record = str(len(item)).encode() + b"\n" + item
                    cut = random.randint(1, len(record))  # chunk and record boundaries differ
                    for piece in (record[:cut], record[cut:]):
                        if piece:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                try:
                    nxt = stream.q.get(timeout=0.1)
                except queue.Empty:
                    r, _, _ = select.select([sock], [], [], 0)
                    if r:  # the scheduler sends nothing more on a stream: data means the end
                        try:
                            if isinstance(sock, ssl.SSLSocket):  # no MSG_PEEK through TLS
                                data = sock.recv(1)
                            else:
                                data = sock.recv(1, socket.MSG_PEEK)
                        except ssl.SSLWantReadError:
                            data = b"-"
                        if not data:
                            break  # the scheduler closed its end
                    continue
                if nxt is None:
                    with contextlib.suppress(OSError):
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                    break
                items.append(nxt)
        except OSError:
            pass
        if fw is not None:
            self.master.disconnected(fw, stream)


class FakeMaster:
    """One master process: an HTTP server on a free loopback port."""

    def __init__(
        self, cluster: Cluster, tls: ssl.SSLContext | None = None, prefix: str = ""
    ) -> None:
        self.cluster = cluster
        self.prefix = prefix
        handler = type("Handler", (_Handler,), {"master": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.tls_failures = 0  # TLS handshakes that failed (a client that did not trust us)
        # Connections being served: closed at shutdown, so that no handler thread still
        # running then leaves its socket to the garbage collector (a ResourceWarning, an
        # error under this suite's warning filter, in whichever test happens to collect it).
        self._open: set[Any] = set()
        self._open_lock = threading.Lock()
        track = self.httpd.finish_request

        def tracked(request: Any, client_address: Any) -> None:
            with self._open_lock:
                self._open.add(request)
            try:
                track(request, client_address)
            finally:
                with self._open_lock:
                    self._open.discard(request)

        self.httpd.finish_request = tracked  # type: ignore[method-assign]
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
            serve = self.httpd.finish_request

            def handshake_then_serve(request: Any, client_address: Any) -> None:
                try:
                    request.do_handshake()
                except (ssl.SSLError, OSError):
                    self.tls_failures += 1
                    return
                serve(request, client_address)

            self.httpd.finish_request = handshake_then_serve  # type: ignore[method-assign]
            accept = self.httpd.get_request

            def get_request() -> Any:
                # A client that reset before the accept: CPython's wrap re-raises the reset
                # without closing the TLS socket it made (socketserver then drops the error).
                try:
                    return accept()
                except OSError as e:
                    close_stranded_tls_socket(e)
                    raise

            self.httpd.get_request = get_request  # type: ignore[method-assign]
        self.port = int(self.httpd.server_address[1])
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}{prefix}"
        self.frameworks: dict[str, Framework] = {}
        self.completed: set[str] = set()
        self.counter = 0
        self.offer_counter = 0
        self.recovered_at = 0.0
        self.recovering = False  # hook: 503 "Master has not finished recovery"
        self.root_submissions = True
        self._last_alloc = 0.0
        self._turn = 0
        self._zk: Any = None
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def master_info(self) -> dict[str, Any]:
        return {
            "id": self.cluster.master_id, "ip": 16777343, "port": self.port,
            "hostname": "127.0.0.1", "version": "1.11.0",
            "address": {"hostname": "127.0.0.1", "ip": "127.0.0.1", "port": self.port},
        }  # fmt: skip

    def register_in_zookeeper(self, hosts: str, path: str) -> None:
        """Register as ``json.info_<seq>`` (ephemeral, sequential) like a real master."""
        from kazoo.client import KazooClient

        self._zk = KazooClient(hosts=hosts, timeout=5.0)
        self._zk.start(timeout=10)
        self._zk.ensure_path(path)
        self._zk.create(
            f"{path}/json.info_",
            json.dumps(self.master_info()).encode(),
            ephemeral=True,
            sequence=True,
        )

    def unregister(self) -> None:
        if self._zk is not None:
            self._zk.stop()
            self._zk.close()
            self._zk = None

    def shutdown(self) -> None:
        self.unregister()
        with self.cluster.lock:
            self.forget()
        self.httpd.shutdown()
        self.httpd.server_close()
        with self._open_lock:
            left = list(self._open)
        for request in left:
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                request.close()

    def forget(self) -> None:
        """Lose all in-memory state (a master process that died or lost leadership)."""
        for fw in self.frameworks.values():
            if fw.stream is not None:
                fw.stream.close()
                fw.stream = None
        self.frameworks.clear()
        self.completed.clear()

    # -- request handling -----------------------------------------------------------------
    def authenticate(self, h: _Handler) -> bool:
        """HTTP basic, as the master's authenticator does before any route (401 otherwise)."""
        creds = self.cluster.credentials
        h.principal = None
        if creds is None:
            return True
        kind, _, value = (h.headers.get("Authorization") or "").partition(" ")
        try:
            principal, _, secret = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            principal, secret = "", ""
        if kind != "Basic" or creds.get(principal) != secret or not principal:
            with self.cluster.lock:
                self.cluster.unauthorized += 1
            h._reply(401, "", {"WWW-Authenticate": 'Basic realm="mesos"'})
            return False
        h.principal = principal
        return True

    def handle(self, h: _Handler, body: bytes) -> None:
        c = self.cluster
        if not self.authenticate(h):
            return
        with c.lock:
            leader = c.leader
        if leader is None:
            h._reply(503, "No leader elected")
            return
        if leader is not self:
            location = f"//127.0.0.1:{leader.port}{leader.prefix}/api/v1/scheduler"
            h._reply(307, "", {"Location": location})
            return
        if self.recovering:
            h._reply(503, "Master has not finished recovery")
            return
        ctype = h.headers.get("Content-Type")
        if ctype is None:
            h._reply(400, "Expecting 'Content-Type' to be present")
            return
        if ctype.split(";")[0].strip() not in ("application/json", "application/x-protobuf"):
            h._reply(415, "Expecting 'Content-Type' of application/json or application/x-protobuf")
            return
        try:
            call = json.loads(body)
            if not isinstance(call, dict):
                raise ValueError("not an object")
        except ValueError as e:
            h._reply(400, f"Failed to parse body into JSON: {e}")
            return
        kind = call.get("type")
        if not kind:
            h._reply(400, "Expecting 'type' to be present")
            return
        if kind == "UNKNOWN":
            h._reply(501, "Received 'UNKNOWN' call")
            return
        with c.lock:
            c.calls.append((str(self.port), str(kind)))
        if kind == "SUBSCRIBE":
            self._subscribe(h, call)
            return
        fid = (call.get("framework_id") or {}).get("value")
        if not fid:
            h._reply(
                400, "Failed to validate scheduler::Call: Expecting 'framework_id' to be present"
            )
            return
        with c.lock:
            fw = self.frameworks.get(fid)
            if fw is None:
                h._reply(400, "Framework cannot be found")
                return
            if fw.stream is None:
                h._reply(403, "Framework is not subscribed")
                return
            sid = h.headers.get("Mesos-Stream-Id")
            if sid is None:
                h._reply(400, "All non-subscribe calls should include the 'Mesos-Stream-Id' header")
                return
            if sid != fw.stream.stream_id:
                h._reply(
                    400,
                    f"The stream ID '{sid}' included in this request didn't match the stream ID currently associated with framework ID {fid}",  # noqa: E501
                )
                return
            try:
                code = self._call(fw, str(kind), call)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                h._reply(400, f"Failed to validate scheduler::Call: {e!r}")
                return
        h._reply(code)

    def _subscribe(self, h: _Handler, call: dict[str, Any]) -> None:
        if h.headers.get("Mesos-Stream-Id") is not None:
            h._reply(400, "Subscribe calls should not include the 'Mesos-Stream-Id' header")
            return
        accept = h.headers.get("Accept", "*/*")
        if not any(
            a.strip().split(";")[0]
            in ("application/json", "*/*", "application/*", "application/x-protobuf")
            for a in accept.split(",")
        ):
            h._reply(406, "Expecting 'Accept' to allow application/json or application/x-protobuf")
            return
        info = (call.get("subscribe") or {}).get("framework_info")
        if not isinstance(info, dict) or "user" not in info or "name" not in info:
            h._reply(
                400,
                "Failed to validate scheduler::Call: Expecting 'subscribe.framework_info' with 'user' and 'name'",  # noqa: E501
            )
            return
        if h.principal is not None and info.get("principal") != h.principal:
            h._reply(
                400,
                f"Framework principal '{info.get('principal')}' does not match authenticated principal '{h.principal}'",  # noqa: E501
            )
            return
        caps = {str(c.get("type")) for c in info.get("capabilities", [])}
        refusal = None
        if info.get("roles") and "role" in info:
            refusal = "'FrameworkInfo.role' and 'FrameworkInfo.roles' cannot both be set"
        elif info.get("roles") and "MULTI_ROLE" not in caps:
            refusal = "'FrameworkInfo.roles' is set but the MULTI_ROLE capability is not"
        else:
            roles = list(info.get("roles") or [info.get("role") or "*"])
            refusal = next((e for e in map(_role_error, roles) if e), None)
            if refusal is None and len(set(roles)) != len(roles):
                refusal = "'FrameworkInfo.roles' contains duplicate items"
        if refusal is not None:
            h.serve_stream(Stream(), _error(refusal), None)
            return
        top = (call.get("framework_id") or {}).get("value")
        inner = (info.get("id") or {}).get("value")
        if top != inner:
            h._reply(
                400,
                "Failed to validate scheduler::Call: 'framework_id' differs from 'subscribe.framework_info.id'",  # noqa: E501
            )
            return
        stream = Stream()
        with self.cluster.lock:
            if info["user"] == "root" and not self.root_submissions:
                h.serve_stream(
                    stream,
                    _error(
                        "User 'root' is not allowed to run frameworks without --root_submissions set"  # noqa: E501
                    ),
                    None,
                )
                return
            if inner in self.completed:
                h.serve_stream(stream, _error("Framework has been removed"), None)
                return
            if inner is None:
                self.counter += 1
                inner = f"{self.cluster.master_id}-{self.counter:04d}"
            fw = self.frameworks.get(inner)
            if fw is None:
                fw = self.frameworks[inner] = Framework(inner, info)  # new, or recovered
            else:
                fw.info = info
                if fw.stream is not None:
                    fw.stream.send(_error("Framework failed over"))
                    fw.stream.close()
            fw.offers.clear()
            fw.stream = stream
            fw.disconnected_at = None
            fw.suppressed = set((call.get("subscribe") or {}).get("suppressed_roles") or [])
            for a in self.cluster.agents.values():  # agents resend unacked updates at once
                for t in a.tasks.values():
                    if t.framework_id == inner:
                        t.next_send = 0.0
        first = {
            "type": "SUBSCRIBED",
            "subscribed": {
                "framework_id": {"value": inner},
                "heartbeat_interval_seconds": self.cluster.heartbeat,
                "master_info": self.master_info(),
            },
        }
        h.serve_stream(stream, first, fw)

    def disconnected(self, fw: Framework, stream: Stream) -> None:
        with self.cluster.lock:
            stream.closed = True
            if fw.stream is stream:
                fw.stream = None
                fw.disconnected_at = time.monotonic()
                fw.offers.clear()  # rescinded; nobody listens

    def _call(self, fw: Framework, kind: str, call: dict[str, Any]) -> int:
        c = self.cluster
        body = call.get(kind.lower()) or {}
        if kind == "ACCEPT":
            self._accept(fw, body)
        elif kind == "DECLINE":
            self._release(fw, [o["value"] for o in body.get("offer_ids", [])], body.get("filters"))
        elif kind == "REVIVE":
            roles = set(body.get("roles") or fw.roles)
            fw.suppressed -= roles
            fw.filters.clear()
        elif kind == "SUPPRESS":
            fw.suppressed |= set(body.get("roles") or fw.roles)
        elif kind == "ACKNOWLEDGE":
            raw = body["uuid"]
            try:
                if len(base64.b64decode(raw, validate=True)) != 16:
                    raise ValueError
            except ValueError as e:
                raise ValueError("Failed to validate scheduler::Call: Not a valid UUID") from e
            t = c.find_task(fw.framework_id, body["task_id"]["value"])
            if t is not None and t.updates and t.updates[0].get("uuid") == raw:
                t.updates.pop(0)
                t.next_send = 0.0
                t.backoff = c.update_retry
        elif kind == "KILL":
            tid = body["task_id"]["value"]
            aid = (body.get("agent_id") or {}).get("value")
            t = c.find_task(fw.framework_id, tid)
            if t is None:
                self._reconcile(
                    fw,
                    [{"task_id": {"value": tid}, **({"agent_id": {"value": aid}} if aid else {})}],
                )
            elif aid is None or aid == t.agent_id:
                ns = ((body.get("kill_policy") or {}).get("grace_period") or {}).get("nanoseconds")
                c.kill(t, int(ns) / 1e9 if ns is not None else None)
        elif kind == "RECONCILE":
            self._reconcile(fw, body.get("tasks") or [])
        elif kind == "TEARDOWN":
            self.remove_framework(fw)
        elif kind in (
            "MESSAGE",
            "REQUEST",
            "SHUTDOWN",
            "ACKNOWLEDGE_OPERATION_STATUS",
            "RECONCILE_OPERATIONS",
        ):
            pass
        else:
            raise ValueError(f"unknown call type {kind}")
        return 202

    def _release(self, fw: Framework, offer_ids: list[str], filters: dict[str, Any] | None) -> None:
        refuse = float((filters or {}).get("refuse_seconds", 5.0))
        if refuse < 0:
            refuse = 5.0
        refuse = min(refuse, 31536000.0)
        for oid in offer_ids:
            offer = fw.offers.pop(oid, None)
            if offer is not None:
                fw.filters[(offer.agent_id, offer.role)] = time.monotonic() + refuse

    def _accept(self, fw: Framework, body: dict[str, Any]) -> None:
        c = self.cluster
        if c.drop_next_accept:
            c.drop_next_accept = False
            return  # lost on the way: nothing happens
        offer_ids = [o["value"] for o in body.get("offer_ids", [])]
        c.accepts.append(offer_ids)
        agents = {fw.offers[o].agent_id for o in offer_ids if o in fw.offers}
        if c.drop_accepts_for_agent is not None and c.drop_accepts_for_agent in agents:
            return  # lost on the way
        if c.rescind_next_accept:
            c.rescind_next_accept = False
            for oid in offer_ids:
                if fw.offers.pop(oid, None) is not None and fw.stream is not None:
                    fw.stream.send({"type": "RESCIND", "rescind": {"offer_id": {"value": oid}}})
        offers = [fw.offers.get(oid) for oid in offer_ids]
        present = [o for o in offers if o is not None]
        valid = (
            bool(offers)
            and len(present) == len(offers)
            and len({o.agent_id for o in present}) == 1
            and len({o.role for o in present}) == 1  # "must be allocated to the same role"
        )
        operations = body.get("operations", [])
        if not valid:
            for oid in offer_ids:
                fw.offers.pop(oid, None)
            state = "TASK_DROPPED" if fw.partition_aware else "TASK_LOST"
            for op in operations:
                for ti in (op.get("launch") or {}).get("task_infos", []):
                    self._master_update(
                        fw,
                        ti["task_id"]["value"],
                        ti["agent_id"]["value"],
                        state,
                        "REASON_INVALID_OFFERS",
                        "Task launched with invalid offers",
                    )
            return
        agent = c.agents[present[0].agent_id]
        role = present[0].role
        pool: dict[Key, float] = {}
        for o in present:
            for k, v in o.pool.items():
                pool[k] = pool.get(k, 0.0) + v
        for op in operations:
            kind = op.get("type")
            if kind == "LAUNCH":
                for ti in (op.get("launch") or {}).get("task_infos", []):
                    self._launch_one(fw, agent, role, pool, ti)
                continue
            if kind == "RESERVE":
                error = self._reserve(fw, agent, role, pool, op.get("reserve") or {})
            elif kind == "CREATE":
                error = self._create(fw, agent, role, pool, op.get("create") or {})
            else:
                error = "not modelled by the test master"
            if error:
                c.dropped.append(f"{kind}: {error}")
            else:
                c.operations.append(str(kind))
        self._release(fw, offer_ids, body.get("filters"))

    def _key(self, fw: Framework, r: dict[str, Any], role: str) -> tuple[Key, float]:
        """A resource named in a call, as an agent resource key (ValueError: invalid)."""
        name = r.get("name")
        if r.get("type") != "SCALAR" or name not in ("cpus", "mem", "disk"):
            raise ValueError(f"resource {name!r}: only SCALAR cpus, mem and disk are modelled")
        alloc = (r.get("allocation_info") or {}).get("role")
        if "MULTI_ROLE" in fw.capabilities and alloc is None:
            raise ValueError("Resources must have 'allocation_info' set (MULTI_ROLE framework)")
        if alloc is not None and alloc != role:
            raise ValueError(f"Resources allocated to role '{alloc}', the offers to '{role}'")
        if r.get("reservations") and ("role" in r or "reservation" in r):
            raise ValueError("Resource with 'reservations' cannot also set 'role'/'reservation'")
        stack = list(r.get("reservations") or [])
        if not stack and r.get("role") not in (None, "*"):
            old = {"type": "DYNAMIC" if "reservation" in r else "STATIC", "role": r["role"]}
            stack = [{**(r.get("reservation") or {}), **old}]
        pid = str(((r.get("disk") or {}).get("persistence") or {}).get("id") or "")
        value = float((r.get("scalar") or {}).get("value", 0.0))
        if value <= 0:
            raise ValueError(f"resource {name} has no positive value")
        return (str(name), json.dumps(stack, sort_keys=True) if stack else "", pid), value

    def _principal_error(self, fw: Framework, principal: Any, what: str) -> str | None:
        """With a framework principal, a reservation or volume must carry that one (without
        one, any value is allowed), as the master's RESERVE and CREATE validation does."""
        mine = fw.info.get("principal")
        if mine and not principal:
            return f"operation by principal '{mine}' has a {what} with no principal set"
        if mine and principal != mine:
            return f"{what} principal '{principal}' does not match the principal '{mine}'"
        return None

    def _reserve(
        self, fw: Framework, agent: Agent, role: str, pool: dict[Key, float], body: dict[str, Any]
    ) -> str | None:
        moves = []
        for r in body.get("resources", []):
            try:
                key, value = self._key(fw, r, role)
            except ValueError as e:
                return str(e)
            stack = json.loads(key[1]) if key[1] else []
            if not stack or stack[-1].get("type") != "DYNAMIC" or key[2]:
                return "a RESERVE needs a DYNAMIC reservation on plain resources"
            if stack[-1].get("role") != role or role == "*":
                return f"reservation role '{stack[-1].get('role')}' is not the offer role '{role}'"
            err = self._principal_error(fw, stack[-1].get("principal"), "reservation")
            if err:
                return err
            source = (key[0], json.dumps(stack[:-1], sort_keys=True) if len(stack) > 1 else "", "")
            if pool.get(source, 0.0) + 1e-9 < value:
                return f"the offers do not hold {value} {key[0]} to reserve"
            moves.append((source, key, value))
        for source, key, value in moves:
            for p in (pool, agent.pool):
                p[source] = p.get(source, 0.0) - value
                p[key] = p.get(key, 0.0) + value
        return None

    def _create(
        self, fw: Framework, agent: Agent, role: str, pool: dict[Key, float], body: dict[str, Any]
    ) -> str | None:
        made = []
        for r in body.get("volumes", []):
            try:
                key, value = self._key(fw, r, role)
            except ValueError as e:
                return str(e)
            disk = r.get("disk") or {}
            path = str((disk.get("volume") or {}).get("container_path") or "")
            if key[0] != "disk" or not key[2]:
                return "a volume is disk with 'disk.persistence.id'"
            if not key[1]:
                return "Persistent volumes cannot be created from unreserved resources"
            if not path or path.startswith("/") or ".." in path.split("/"):
                return f"volume container_path '{path}' must be relative, inside the sandbox"
            if key[2] in agent.volumes:
                return f"Persistence ID '{key[2]}' already exists"
            owner = (disk.get("persistence") or {}).get("principal")
            err = self._principal_error(fw, owner, "volume")
            if err:
                return err
            source = ("disk", key[1], "")
            if pool.get(source, 0.0) + 1e-9 < value:
                return f"the offers do not hold {value} MB of reserved disk for the volume"
            made.append((source, key, value, path))
        for source, key, value, path in made:
            for p in (pool, agent.pool):
                p[source] = p.get(source, 0.0) - value
                p[key] = p.get(key, 0.0) + value
            vrole = _last_role(key[1]) or role
            d = self.cluster.root / agent.agent_id / "volumes" / "roles" / vrole / key[2]
            d.mkdir(parents=True, exist_ok=True)
            agent.volumes[key[2]] = Volume(key[2], vrole, key[1], value, path, d)
        return None

    def _launch_one(
        self, fw: Framework, agent: Agent, role: str, pool: dict[Key, float], ti: dict[str, Any]
    ) -> None:
        c = self.cluster
        tid = ti["task_id"]["value"]
        error = None
        uses: dict[Key, float] = {}
        try:
            for r in ti.get("resources", []):
                key, value = self._key(fw, r, role)
                uses[key] = uses.get(key, 0.0) + value
        except ValueError as e:
            error = str(e)
        if error:
            pass
        elif c.find_task(fw.framework_id, tid) is not None:
            error = "Task has duplicate ID"
        elif ("command" in ti) == ("executor" in ti):
            error = "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present"  # noqa: E501
        elif not ti.get("resources"):
            error = "Task uses no resources"
        elif any(pool.get(k, 0.0) + 1e-9 < v for k, v in uses.items()):
            error = "Task uses more resources than available in the offers"
        if error:
            self._master_update(fw, tid, agent.agent_id, "TASK_ERROR", "REASON_TASK_INVALID", error)
            return
        for k, v in uses.items():
            pool[k] -= v
        c.launch(fw, agent, ti, uses)

    def _master_update(
        self, fw: Framework, task_id: str, agent_id: str, state: str, reason: str, message: str
    ) -> None:
        """An unreliable master-generated update: no uuid, not retried."""
        if fw.stream is None:
            return
        status = {
            "task_id": {"value": task_id}, "agent_id": {"value": agent_id}, "state": state,
            "source": "SOURCE_MASTER", "reason": reason, "message": message, "timestamp": time.time(),  # noqa: E501
        }  # fmt: skip
        fw.stream.send({"type": "UPDATE", "update": {"status": status}})

    def _reconcile(self, fw: Framework, items: list[dict[str, Any]]) -> None:
        c = self.cluster
        now = time.monotonic()
        recovering = now < self.recovered_at
        pa = fw.partition_aware
        if not items:  # implicit: every task the master knows
            if recovering:
                return
            for a in c.agents.values():
                for t in a.tasks.values():
                    if t.framework_id == fw.framework_id:
                        self._master_update(
                            fw,
                            t.task_id,
                            a.agent_id,
                            t.state,
                            "REASON_RECONCILIATION",
                            "Reconciliation: Latest task state",
                        )
            return
        for item in items:
            tid = item["task_id"]["value"]
            aid = (item.get("agent_id") or {}).get("value")
            t = c.find_task(fw.framework_id, tid)
            if t is not None and not recovering:
                self._master_update(
                    fw,
                    tid,
                    t.agent_id,
                    t.state,
                    "REASON_RECONCILIATION",
                    "Reconciliation: Latest task state",
                )
                continue
            agent = c.agents.get(aid) if aid else None
            if (
                recovering
                and (agent is not None or aid is None)
                and (agent is None or not agent.removed)
            ):
                continue  # agent not re-registered yet: no answer, the scheduler retries
            if agent is not None and not agent.removed:
                state = "TASK_GONE" if pa else "TASK_LOST"
            else:
                state = "TASK_UNKNOWN" if pa else "TASK_LOST"
            self._master_update(
                fw,
                tid,
                aid or "",
                state,
                "REASON_RECONCILIATION",
                "Reconciliation: Task is unknown",
            )

    def agent_removed(self, agent: Agent) -> None:
        for fw in self.frameworks.values():
            for oid, offer in list(fw.offers.items()):
                if offer.agent_id == agent.agent_id:
                    del fw.offers[oid]
                    if fw.stream is not None:
                        fw.stream.send({"type": "RESCIND", "rescind": {"offer_id": {"value": oid}}})
            if fw.stream is not None:
                fw.stream.send(
                    {"type": "FAILURE", "failure": {"agent_id": {"value": agent.agent_id}}}
                )
            for t in agent.tasks.values():
                if t.framework_id == fw.framework_id and t.state not in TERMINAL:
                    state = "TASK_GONE" if fw.partition_aware else "TASK_LOST"
                    self._master_update(
                        fw,
                        t.task_id,
                        agent.agent_id,
                        state,
                        "REASON_AGENT_REMOVED",
                        "Agent removed",
                    )

    def remove_framework(self, fw: Framework) -> None:
        for a in self.cluster.agents.values():
            for t in list(a.tasks.values()):
                if t.framework_id == fw.framework_id:
                    self.cluster.kill(t, 0.5)
                    t.updates.clear()
        if fw.stream is not None:
            fw.stream.close()
            fw.stream = None
        self.completed.add(fw.framework_id)
        del self.frameworks[fw.framework_id]

    # -- periodic ----------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        c = self.cluster
        for fw in list(self.frameworks.values()):
            if fw.stream is None:
                timeout = float(fw.info.get("failover_timeout", 0.0))
                if fw.disconnected_at is not None and now - fw.disconnected_at >= timeout:
                    self.remove_framework(fw)
                continue
            if now - fw.stream.last_heartbeat >= c.heartbeat:
                fw.stream.last_heartbeat = now
                fw.stream.send({"type": "HEARTBEAT"})
        if now < self.recovered_at or now - self._last_alloc < c.allocation_interval:
            return
        self._last_alloc = now
        for fw in self.frameworks.values():
            if fw.stream is None:
                continue
            offers = []
            for a in c.agents.values():
                if a.removed or any(o.agent_id == a.agent_id for o in fw.offers.values()):
                    continue
                free = self._free(a)
                unreserved_given = False
                # which role gets the unreserved resources first turns round (as a fair
                # allocator's shares would), so no role starves behind another one's declines
                self._turn += 1
                k = self._turn % len(fw.roles)
                for role in fw.roles[k:] + fw.roles[:k]:
                    if role in fw.suppressed or fw.filters.get((a.agent_id, role), 0.0) > now:
                        continue
                    pool = {}
                    for k, v in free.items():
                        if v < 1e-6:
                            continue
                        res_role = _last_role(k[1])
                        if res_role is None and unreserved_given:
                            continue
                        if res_role is not None and not (
                            role == res_role or role.startswith(res_role + "/")
                        ):
                            continue  # reserved to another role: never offered to this one
                        if len(json.loads(k[1] or "[]")) > 1 and (
                            "RESERVATION_REFINEMENT" not in fw.capabilities
                        ):
                            continue  # refined reservations need the capability
                        pool[k] = v
                    cpus = sum(v for k, v in pool.items() if k[0] == "cpus")
                    mem = sum(v for k, v in pool.items() if k[0] == "mem")
                    if cpus < 0.01 or mem < 1:
                        continue  # below the minimum allocatable resources
                    if any(_last_role(k[1]) is None for k in pool):
                        unreserved_given = True
                    # split_offers: the agent's free resources come as two offers (as when the
                    # allocator offers freed resources separately); the scheduler must combine
                    parts = 2 if c.split_offers else 1
                    for i in range(parts):
                        part = {
                            k: (v if k[2] else v / parts)
                            for k, v in pool.items()
                            if not k[2] or i == 0
                        }
                        self.offer_counter += 1
                        oid = f"{c.master_id}-O{self.offer_counter}"
                        fw.offers[oid] = Offer(a.agent_id, role, part)
                        offers.append(self._offer_json(fw, a, oid, role, part))
            if offers:
                fw.stream.send({"type": "OFFERS", "offers": {"offers": offers}})

    def _free(self, a: Agent) -> dict[Key, float]:
        """The agent's resources not used by a live task nor outstanding in an offer."""
        free = dict(a.pool)
        for t in a.tasks.values():
            if t.state not in TERMINAL:
                for k, v in t.uses.items():
                    free[k] = free.get(k, 0.0) - v
        for other in self.frameworks.values():
            for o in other.offers.values():
                if o.agent_id == a.agent_id:
                    for k, v in o.pool.items():
                        free[k] = free.get(k, 0.0) - v
        return free

    def _offer_json(
        self, fw: Framework, a: Agent, oid: str, role: str, pool: dict[Key, float]
    ) -> dict[str, Any]:
        alloc = {"role": role}
        resources = []
        for (name, res, pid), v in sorted(pool.items()):
            r: dict[str, Any] = {
                "name": name, "type": "SCALAR", "scalar": {"value": round(v, 3)},
                "allocation_info": alloc,
            }  # fmt: skip
            stack = json.loads(res) if res else []
            if stack and "RESERVATION_REFINEMENT" in fw.capabilities:
                r["reservations"] = stack
            elif stack:  # the format before reservation refinement
                r["role"] = stack[-1]["role"]
                if stack[-1].get("type") == "DYNAMIC":
                    r["reservation"] = {
                        k: stack[-1][k] for k in ("principal", "labels") if k in stack[-1]
                    }
            if pid:
                vol = a.volumes[pid]
                persistence = {"id": pid}
                if fw.info.get("principal"):
                    persistence["principal"] = fw.info["principal"]
                r["disk"] = {
                    "persistence": persistence,
                    "volume": {"container_path": vol.container_path, "mode": "RW"},
                }
            resources.append(r)
        return {
            "id": {"value": oid}, "framework_id": {"value": fw.framework_id},
            "agent_id": {"value": a.agent_id}, "hostname": a.spec.hostname,
            "allocation_info": alloc,
            "resources": resources,
            "attributes": [_attribute(k, v) for k, v in a.spec.attributes.items()],
        }  # fmt: skip


class HealthRun:
    """One task's health checking, as its executor does it (checks run in a thread each)."""

    def __init__(self, check: dict[str, Any], started: float) -> None:
        self.check = check
        self.started = started
        self.next_check = started + float(check.get("delay_seconds", 15.0))
        self.interval = float(check.get("interval_seconds", 10.0))
        self.timeout = float(check.get("timeout_seconds", 20.0))
        self.grace = float(check.get("grace_period_seconds", 10.0))
        self.limit = int(check.get("consecutive_failures", 3))
        self.failures = 0
        self.ever_healthy = False
        self.reported: bool | None = None
        self.result: bool | None = None  # set by the check's thread
        self.running = False
        self.killed = False  # killed because of failed checks
        self.runs = 0

    def start(self, sandbox: Path) -> None:
        self.running = True
        self.runs += 1
        threading.Thread(target=self._run, args=(sandbox,), daemon=True).start()

    def _run(self, sandbox: Path) -> None:
        ok = False
        try:
            if self.check.get("type") == "COMMAND":
                cmd = self.check["command"]
                env = {"PATH": DEFAULT_PATH}  # the agent's, never the test's
                for var in (cmd.get("environment") or {}).get("variables", []):
                    env[var["name"]] = var.get("value", "")
                env["MESOS_SANDBOX"] = str(sandbox)
                done = subprocess.run(
                    ["/bin/sh", "-c", cmd["value"]], cwd=sandbox, env=env,
                    timeout=self.timeout, capture_output=True,
                )  # fmt: skip
                ok = done.returncode == 0
            elif self.check.get("type") == "HTTP":
                http = self.check["http"]
                url = f"http://127.0.0.1:{int(http['port'])}{http.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                    ok = 200 <= resp.status < 400
        except (OSError, subprocess.SubprocessError, KeyError, ValueError):
            ok = False
        self.result = ok
        self.running = False


def _error(message: str) -> dict[str, Any]:
    return {"type": "ERROR", "error": {"message": message}}
