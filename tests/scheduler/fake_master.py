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

One :class:`Cluster` holds the agents (and so the task processes); masters come and go over it.
A single ticker thread drives time (processes, resends, heartbeats, offers, timeouts); each
subscription's HTTP handler thread writes its queued records.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import random
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
    attributes: dict[str, str] = field(default_factory=dict)


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


@dataclass
class Agent:
    agent_id: str
    spec: AgentSpec
    tasks: dict[str, Task] = field(default_factory=dict)
    removed: bool = False


@dataclass
class Framework:
    framework_id: str
    info: dict[str, Any]
    stream: Stream | None = None
    disconnected_at: float | None = None
    suppressed: set[str] = field(default_factory=set)
    filters: dict[str, float] = field(default_factory=dict)  # agent id -> refused until
    offers: dict[str, tuple[str, tuple[float, float, float], str]] = field(default_factory=dict)

    @property
    def partition_aware(self) -> bool:
        caps = {c.get("type") for c in self.info.get("capabilities", [])}
        return "PARTITION_AWARE" in caps

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
        # HTTP framework authentication (principal -> secret); None: not required
        self.credentials: dict[str, str] | None = None
        self.unauthorized = 0  # requests answered 401
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-mesos", daemon=True)
        self._thread.start()

    # -- masters ---------------------------------------------------------------------------
    def add_master(self) -> FakeMaster:
        m = FakeMaster(self)
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
                        "filters": dict(fw.filters),
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
                    continue
                if t.killing:
                    self.executor_update(t, "TASK_KILLED", "REASON_EXECUTOR_TERMINATED")
                elif code == 0:
                    self.executor_update(t, "TASK_FINISHED")
                else:
                    self.executor_update(t, "TASK_FAILED", "REASON_COMMAND_EXECUTOR_FAILED")

    def executor_update(self, t: Task, state: str, reason: str | None = None) -> None:
        """A reliable (uuid-carrying) update from the task's executor, queued on its agent."""
        t.state = state
        uid = base64.b64encode(uuid.uuid4().bytes).decode()
        t.updates.append(_status(t, state, "SOURCE_EXECUTOR", reason, uuid=uid))
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

    def launch(self, fw: Framework, agent: Agent, info: dict[str, Any]) -> None:
        """Start one task as a real local process in its sandbox."""
        tid = info["task_id"]["value"]
        res = {r["name"]: float(r.get("scalar", {}).get("value", 0.0)) for r in info["resources"]}
        t = Task(
            tid,
            fw.framework_id,
            agent.agent_id,
            res.get("cpus", 0.0),
            res.get("mem", 0.0),
            res.get("disk", 0.0),
        )
        ns = ((info.get("kill_policy") or {}).get("grace_period") or {}).get("nanoseconds")
        if ns is not None:
            t.grace = int(ns) / 1e9
        agent.tasks[tid] = t
        self.launches.append(tid)
        cmd = info["command"]
        sandbox = self.root / agent.agent_id / fw.framework_id / tid
        sandbox.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        for var in (cmd.get("environment") or {}).get("variables", []):
            env[var["name"]] = var.get("value", "")
        env.update(
            MESOS_SANDBOX=str(sandbox), MESOS_DIRECTORY=str(sandbox),
            MESOS_FRAMEWORK_ID=fw.framework_id, MESOS_EXECUTOR_ID=tid,
            MESOS_AGENT_ENDPOINT="127.0.0.1:5051", MESOS_TASK_ID=tid,
        )  # fmt: skip
        self.executor_update(t, "TASK_STARTING")
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
                t.proc = subprocess.Popen(
                    argv, cwd=sandbox, env=env, stdout=out, stderr=err, start_new_session=True
                )
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
        if urllib.parse.urlsplit(self.path).path not in PATHS:
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
                    if r and not sock.recv(1, socket.MSG_PEEK):
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

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        handler = type("Handler", (_Handler,), {"master": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.frameworks: dict[str, Framework] = {}
        self.completed: set[str] = set()
        self.counter = 0
        self.offer_counter = 0
        self.recovered_at = 0.0
        self.recovering = False  # hook: 503 "Master has not finished recovery"
        self.root_submissions = True
        self._last_alloc = 0.0
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
            h._reply(307, "", {"Location": f"//127.0.0.1:{leader.port}/api/v1/scheduler"})
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
                fw.filters[offer[0]] = time.monotonic() + refuse

    def _accept(self, fw: Framework, body: dict[str, Any]) -> None:
        c = self.cluster
        if c.drop_next_accept:
            c.drop_next_accept = False
            return  # lost on the way: nothing happens
        offer_ids = [o["value"] for o in body.get("offer_ids", [])]
        c.accepts.append(offer_ids)
        agents = {fw.offers[o][0] for o in offer_ids if o in fw.offers}
        if c.drop_accepts_for_agent is not None and c.drop_accepts_for_agent in agents:
            return  # lost on the way
        if c.rescind_next_accept:
            c.rescind_next_accept = False
            for oid in offer_ids:
                if fw.offers.pop(oid, None) is not None and fw.stream is not None:
                    fw.stream.send({"type": "RESCIND", "rescind": {"offer_id": {"value": oid}}})
        offers = [fw.offers.get(oid) for oid in offer_ids]
        valid = (
            bool(offers)
            and all(o is not None for o in offers)
            and len({o[0] for o in offers if o}) == 1
        )
        tasks = [
            ti
            for op in body.get("operations", [])
            if op.get("type") == "LAUNCH"
            for ti in op["launch"].get("task_infos", [])
        ]
        if not valid:
            for oid in offer_ids:
                fw.offers.pop(oid, None)
            state = "TASK_DROPPED" if fw.partition_aware else "TASK_LOST"
            for ti in tasks:
                self._master_update(
                    fw,
                    ti["task_id"]["value"],
                    ti["agent_id"]["value"],
                    state,
                    "REASON_INVALID_OFFERS",
                    "Task launched with invalid offers",
                )
            return
        agent = c.agents[offers[0][0]]  # type: ignore[index]
        free = [sum(o[1][i] for o in offers if o) for i in range(3)]  # type: ignore[misc]
        for ti in tasks:
            tid = ti["task_id"]["value"]
            res = {
                r["name"]: float(r.get("scalar", {}).get("value", 0.0))
                for r in ti.get("resources", [])
            }
            need = [res.get("cpus", 0.0), res.get("mem", 0.0), res.get("disk", 0.0)]
            error = None
            if c.find_task(fw.framework_id, tid) is not None:
                error = "Task has duplicate ID"
            elif ("command" in ti) == ("executor" in ti):
                error = "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present"  # noqa: E501
            elif not ti.get("resources"):
                error = "Task uses no resources"
            elif any(n > f + 1e-9 for n, f in zip(need, free, strict=True)):
                error = "Task uses more resources than available in the offers"
            if error:
                self._master_update(
                    fw, tid, agent.agent_id, "TASK_ERROR", "REASON_TASK_INVALID", error
                )
                continue
            free = [f - n for f, n in zip(free, need, strict=True)]
            c.launch(fw, agent, ti)
        self._release(fw, offer_ids, body.get("filters"))

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
                if offer[0] == agent.agent_id:
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
            role = fw.roles[0]
            if fw.stream is None or role in fw.suppressed:
                continue
            offers = []
            for a in c.agents.values():
                if a.removed or fw.filters.get(a.agent_id, 0.0) > now:
                    continue
                if any(o[0] == a.agent_id for o in fw.offers.values()):
                    continue
                used = [0.0, 0.0, 0.0]
                for t in a.tasks.values():
                    if t.state not in TERMINAL:
                        used = [used[0] + t.cpus, used[1] + t.mem, used[2] + t.disk]
                for other in self.frameworks.values():
                    for o in other.offers.values():
                        if o[0] == a.agent_id:
                            used = [u + x for u, x in zip(used, o[1], strict=True)]
                free = (a.spec.cpus - used[0], a.spec.mem - used[1], a.spec.disk - used[2])
                if free[0] < 0.01 or free[1] < 1:
                    continue
                # split_offers: the agent's free resources come as two offers (as when the
                # allocator offers freed resources separately); the scheduler must combine them
                parts = 2 if c.split_offers else 1
                for _ in range(parts):
                    part = (free[0] / parts, free[1] / parts, free[2] / parts)
                    self.offer_counter += 1
                    oid = f"{c.master_id}-O{self.offer_counter}"
                    fw.offers[oid] = (a.agent_id, part, role)
                    alloc = {"role": role}
                    offers.append({
                        "id": {"value": oid}, "framework_id": {"value": fw.framework_id},
                        "agent_id": {"value": a.agent_id}, "hostname": a.spec.hostname,
                        "allocation_info": alloc,
                        "resources": [
                            {"name": n, "type": "SCALAR", "scalar": {"value": v}, "allocation_info": alloc}  # noqa: E501
                            for n, v in zip(("cpus", "mem", "disk"), part, strict=True)
                        ],
                        "attributes": [
                            {"name": k, "type": "TEXT", "text": {"value": v}} for k, v in a.spec.attributes.items()  # noqa: E501
                        ],
                    })  # fmt: skip
            if offers:
                fw.stream.send({"type": "OFFERS", "offers": {"offers": offers}})


def _error(message: str) -> dict[str, Any]:
    return {"type": "ERROR", "error": {"message": message}}
