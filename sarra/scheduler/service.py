"""The long-running ``sr_scheduler run``: leader election, the subscribe loop, status endpoint.

Several copies may run with the same spec. With ``zookeeper`` set in ``[scheduler]`` they
elect one leader through a kazoo ``Election`` at ``election_path``; only the leader subscribes
to Mesos. A leader that loses its ZooKeeper session, or that the master tells "Framework failed
over" (another copy subscribed), steps down and rejoins the election. Without ``zookeeper`` the
copy leads at once (single-copy deployments kept up by systemd or Marathon).

Every copy serves ``GET /status.json`` (and a small HTML page at ``/``) on ``status_listen``
(loopback by default); the leader advertises its address (``advertise``, else the listening
address, else, for a wildcard address, the host's name) in ``<state_dir>/leader.addr`` and,
with ZooKeeper, in the ``leader`` znode, so ``sr_scheduler status|reload|stop`` find it from
any host. ``POST /stop`` is refused (409) while workers are allocated unless ``force=1``;
``teardown=1`` removes the framework (kills every worker) — the only TEARDOWN.

With ZooKeeper the copies are one scheduler (see :mod:`sarra.scheduler.zkstate`): the state
lives in ZooKeeper, written by the leader only, fenced by its election node; a ``POST`` that
reaches a standby is relayed to the leader (503 while none is elected), so nothing is reported
done that the leader did not do; a stop is recorded in ZooKeeper and every copy then running
exits (not only the leader, which a standby would replace); a teardown is recorded in the state
so that no copy registers a new framework afterwards (``--new-framework`` clears it).

Control token: at start a copy makes sure ``<state_dir>/control.token`` exists (mode 600,
created with a fresh random token when absent; copies sharing the directory share it; with
ZooKeeper, the token is the one in the ``token`` znode and the file is rewritten with it).
Every ``POST`` (stop, teardown, reload) must carry ``Authorization: Bearer <token>``, and so
must ``GET`` when ``status_listen`` is not a loopback address (except ``GET /health``, which
answers ``ok`` and nothing else, for health checks); otherwise the answer is 401 and the
refusal is logged (method, path, peer; never the token). ``sr_scheduler`` finds it itself.

Live reload: ``POST /reload`` (``sr_scheduler reload``), SIGHUP, or with ``watch_spec = true``
a change of the spec file's mtime, re-reads the spec file. A spec that does not parse, or that
changes a setting only a restart can apply, is refused with the reason and the running spec is
kept; otherwise the leader scales to the new counts and rolls changed worker types through,
one worker at a time. A copy that becomes leader reads the file afresh.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sarra.errors import ConfigError, LocalError, SarraError, TransportUnavailable
from sarra.scheduler.core import PumpScheduler
from sarra.scheduler.mesos import (
    AuthenticationFailed,
    FrameworkRemoved,
    MesosClient,
    SubscriptionRefused,
)
from sarra.scheduler.spec import PumpSpec, is_loopback, load_spec, parse_listen, reload_changes
from sarra.scheduler.state import Deposed, StateStore, Store
from sarra.scheduler.zkstate import Shared, ZkStateStore, read_zk_auth, zk_client

log = logging.getLogger(__name__)

TOKEN_FILE = "control.token"


def token_path(spec: PumpSpec) -> Path:
    """Where the control token of ``spec``'s scheduler lives."""
    return spec.scheduler.state_dir / TOKEN_FILE


def read_token(path: Path) -> str:
    """The control token in ``path``; :class:`LocalError` says why it cannot be used."""
    try:
        if sys.platform != "win32" and os.stat(path).st_mode & 0o077:
            raise LocalError(
                f"control token {path} is readable by other users: remove it (a new one is "
                "made at the next start) or chmod 600 it"
            )
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError as e:
        raise LocalError(
            f"no control token at {path}: is a scheduler running with this state_dir?"
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not ASCII"
        raise LocalError(f"cannot read control token {path}: {why}") from e
    if len(token) < 32:
        raise LocalError(f"control token {path} is empty or too short")
    return token


def read_secret(path: Path) -> str:
    """The framework secret in ``path`` (mode 600); :class:`LocalError` says why not."""
    try:
        if sys.platform != "win32" and os.stat(path).st_mode & 0o077:
            raise LocalError(f"secret_file {path} is readable by other users: chmod 600 it")
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8"
        raise LocalError(f"cannot read secret_file {path}: {why}") from e
    if not secret:
        raise LocalError(f"secret_file {path} is empty")
    return secret


def write_token(path: Path, token: str) -> None:
    """Replace ``path`` with ``token`` (mode 600 from the start, atomically)."""
    tmp = path.with_name(f"{TOKEN_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def advertised(host: str, port: int, configured: str) -> str:
    """``host:port`` others reach this copy's endpoint at (never a wildcard address)."""
    name = configured or host
    if name in ("0.0.0.0", "::", ""):
        name = socket.getfqdn()
        if name == "localhost" or name.startswith("localhost."):
            name = socket.gethostname()
    return f"[{name}]:{port}" if ":" in name else f"{name}:{port}"


def ensure_token(path: Path) -> str:
    """Return the token in ``path``, making the file (mode 600, random token) when absent."""
    if not path.exists():
        tmp = path.with_name(f"{TOKEN_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (secrets.token_urlsafe(32) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another copy made it first: then use theirs
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return read_token(path)


class SchedulerService:
    """One copy of the scheduler process."""

    def __init__(
        self, spec: PumpSpec, spec_path: str | Path | None = None, new_framework: bool = False
    ) -> None:
        self.spec = spec
        self.new_framework = new_framework  # clear a recorded teardown when elected
        self.spec_path = spec_path
        self.reload_requested = threading.Event()  # set by SIGHUP, served by the leader loop
        self._reload_lock = threading.Lock()
        self._pending_spec: PumpSpec | None = None
        self._applied = threading.Condition()  # notified when the leader loop took a spec
        self._applied_count = 0
        self._spec_mtime = self._mtime()
        self._last_watch = 0.0
        self.last_reload = ""  # outcome of the last reload, shown in the status document
        self.store: Store = StateStore(spec.scheduler.state_dir)
        self.shared: Shared | None = None  # the ZooKeeper znodes, with zookeeper set
        self.stop_event = threading.Event()
        self.zk_lost = threading.Event()
        self.leading = False
        self.scheduler: PumpScheduler | None = None
        self.exit_code = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._election: Any = None
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.status: dict[str, Any] = {
            "pump": spec.scheduler.name,
            "leader": False,
            "copy": self.identity,
        }
        self.address = ""
        self.token = ""  # set by prepare(); never logged nor shown
        self.credentials: tuple[str, str] | None = None  # (principal, secret), from prepare()
        self.zk_auth = ""  # "user:password" from zk_auth_file (prepare()); never logged

    def prepare(self) -> None:
        """Check ``state_dir`` before serving anything: writable, token made, state readable.

        Raises :class:`LocalError` naming the directory or file and the problem.
        """
        d = self.spec.scheduler.state_dir
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LocalError(f"state_dir {d} cannot be created: {e.strerror}") from e
        if not os.access(d, os.W_OK | os.X_OK):
            raise LocalError(f"state_dir {d} is not writable: permission denied to this user")
        try:
            self.token = ensure_token(d / TOKEN_FILE)
        except OSError as e:
            raise LocalError(f"state_dir {d} is not writable: {e.strerror}") from e
        self.store.load()  # a corrupt state.json is refused here, not in the leader loop
        s = self.spec.scheduler
        if s.secret_file:
            self.credentials = (s.principal, read_secret(Path(s.secret_file)))
        if s.zk_auth_file:
            self.zk_auth = ":".join(read_zk_auth(s.zk_auth_file))

    # -- status endpoint -------------------------------------------------------------------
    def start_http(self) -> tuple[str, int]:
        host, port = parse_listen(self.spec.scheduler.status_listen, "status_listen")
        exposed = not is_loopback(host)
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.debug("status endpoint: " + format, *args)

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorized(self) -> bool:
                got = self.headers.get("Authorization", "")
                ok = bool(service.token) and hmac.compare_digest(
                    got.encode("utf-8", "replace"), f"Bearer {service.token}".encode()
                )
                if not ok:
                    log.warning(
                        "control endpoint: refused %s %s from %s (%s)",
                        self.command, urllib.parse.urlsplit(self.path).path,
                        self.client_address[0], "wrong token" if got else "no token",
                    )  # fmt: skip
                    body = json.dumps(
                        {"result": "refused: this call needs the control token "
                         "(sr_scheduler reads it from <state_dir>/control.token)"}
                    ).encode()  # fmt: skip
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Bearer realm="sr_scheduler"')
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                return ok

            def do_GET(self) -> None:
                if self.path == "/health":  # liveness for Marathon or a load balancer: no data
                    self._send(200, b"ok\n", "text/plain")
                    return
                if exposed and not self._authorized():
                    return
                doc = service.status
                if self.path.startswith("/status.json"):
                    self._send(200, json.dumps(doc, indent=1).encode(), "application/json")
                elif self.path in ("/", "/index.html"):
                    self._send(200, render_html(doc).encode(), "text/html; charset=utf-8")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _forward(self) -> bool:
                """On a standby: relay this POST to the leader. False: answer it here."""
                shared = service.shared
                if service.leading or shared is None:
                    return False
                try:
                    addr = shared.leader_address()
                except Exception as e:  # a ZooKeeper error: say so, do nothing
                    addr, why = None, f"ZooKeeper cannot be read ({e!r})"
                else:
                    why = "no leader is elected at the moment"
                if addr == service.address:
                    return False
                if addr is None:
                    body = json.dumps({"result": f"refused: {why}; nothing done"}).encode()
                    self._send(503, body, "application/json")
                    return True
                req = urllib.request.Request(
                    f"http://{addr}{self.path}", method="POST", data=b"",
                    headers={"Authorization": f"Bearer {service.token}"},
                )  # fmt: skip
                try:
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        code, body = resp.status, resp.read()
                except urllib.error.HTTPError as e:
                    code, body = e.code, e.read()
                except OSError as e:
                    code = 502
                    body = json.dumps(
                        {"result": f"refused: the leader at {addr} cannot be reached ({e}); "
                         "nothing done"}
                    ).encode()  # fmt: skip
                log.info(
                    "control endpoint: relayed POST %s to the leader at %s: %d",
                    urllib.parse.urlsplit(self.path).path, addr, code,
                )  # fmt: skip
                self._send(code, body, "application/json")
                return True

            def do_POST(self) -> None:
                if not self._authorized() or self._forward():
                    return
                url = urllib.parse.urlsplit(self.path)
                q = urllib.parse.parse_qs(url.query)
                if url.path == "/reload":
                    ok, text = service.reload("reload request")
                    if ok and not service.wait_applied(10.0):
                        text += " (accepted; the leader applies it at its next step)"
                    body = json.dumps({"result": text}).encode()
                    self._send(200 if ok else 400, body, "application/json")
                    return
                if url.path != "/stop":
                    self._send(404, b"not found\n", "text/plain")
                    return
                code, text = service.request_stop(
                    force=q.get("force") == ["1"], teardown=q.get("teardown") == ["1"]
                )
                self._send(code, json.dumps({"result": text}).encode(), "application/json")

        server_class = ThreadingHTTPServer
        if ":" in host:

            class V6Server(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            server_class = V6Server
        try:
            self._httpd = server_class((host, port), Handler)
        except OSError as e:
            raise LocalError(f"cannot listen on status_listen {host}:{port}: {e.strerror}") from e
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, name="status-http", daemon=True).start()
        addr = self._httpd.server_address
        return str(addr[0]), int(addr[1])

    def request_stop(self, force: bool, teardown: bool) -> tuple[int, str]:
        """Decide a stop request (from the status endpoint)."""
        allocated = int(self.status.get("allocated", 0))
        if allocated and not force:
            return 409, f"refused: {allocated} worker(s) allocated; use --force"
        sched = self.scheduler
        if sched is not None:
            sched.teardown_requested = teardown
        if self.shared is not None:
            try:  # every copy running now exits, not only this one (a standby would lead)
                self.shared.request_stop(self.identity, teardown)
            except Exception as e:
                if sched is not None:
                    sched.teardown_requested = False
                return 503, f"refused: the stop cannot be recorded in ZooKeeper ({e!r})"
        if sched is not None:
            sched.stop_requested = True
        self.stop_event.set()
        if self._election is not None:
            self._election.cancel()
        return 200, "stopping" + (" and tearing the framework down" if teardown else "")

    # -- live reload -------------------------------------------------------------------------
    def _mtime(self) -> float | None:
        if self.spec_path is None:
            return None
        try:
            return os.stat(self.spec_path).st_mtime
        except OSError:
            return None

    def reload(self, why: str) -> tuple[bool, str]:
        """Re-read the spec file; apply it if valid. (accepted, what happened or why not)."""
        if self.spec_path is None:
            return False, "reload refused: this scheduler was not started from a spec file"
        with self._reload_lock:
            self._spec_mtime = self._mtime()  # a refused file is not retried until it changes
            try:
                new = load_spec(self.spec_path)
                changes = reload_changes(self.spec, new)
            except ConfigError as e:
                text = f"reload refused ({why}): {e}; keeping the running spec"
                log.error("%s", text)
                self.last_reload = text
                return False, text
            if not changes:
                text = f"reload ({why}): no change"
                log.info("%s", text)
                self.last_reload = text
                self._pending_spec = new  # still retries slots given up after a crash loop
                return True, text
            for line in changes:
                log.info("reload (%s): %s", why, line)
            self.spec = new
            self._pending_spec = new
            text = f"reloaded ({why}): " + "; ".join(changes)
            self.last_reload = text
            return True, text

    def _serve_reloads(self, sched: PumpScheduler | None) -> None:
        """In the leader's loop: SIGHUP, the mtime watch, then hand a new spec over."""
        if self.reload_requested.is_set():
            self.reload_requested.clear()
            self.reload("SIGHUP")
        now = time.monotonic()
        if self.spec.scheduler.watch_spec and now - self._last_watch >= 1.0:
            self._last_watch = now
            if self._mtime() != self._spec_mtime:
                self.reload("spec file changed")
        with self._reload_lock:
            new, self._pending_spec = self._pending_spec, None
        if new is not None and sched is not None:
            sched.apply_spec(new)
        if new is not None:
            with self._applied:
                self._applied_count += 1
                self._applied.notify_all()

    def wait_applied(self, timeout: float) -> bool:
        """After an accepted reload: wait until the leader's loop has taken the new spec.

        True at once when nothing is pending (no change, or already taken), or when this copy
        does not lead (the spec is read afresh when it becomes leader).
        """
        deadline = time.monotonic() + timeout
        with self._applied:
            while self.scheduler is not None and self._pending_spec is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._applied.wait(min(left, 0.2))
        return True

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; the process exit code (:class:`LocalError`: bad state_dir)."""
        if not self.token:
            self.prepare()
        host, port = self.start_http()
        self.address = advertised(host, port, self.spec.scheduler.advertise)
        log.info("status endpoint on http://%s/ (copy %s)", self.address, self.identity)
        try:
            zk_hosts = self.spec.scheduler.zookeeper
            if zk_hosts:
                self._run_elected(zk_hosts)
            else:
                self._lead()
        finally:
            if self._httpd is not None:
                self._httpd.shutdown()
                self._httpd.server_close()
        return self.exit_code

    def stop(self) -> None:
        """Ask the run to end (signal handlers); never tears the framework down."""
        self.stop_event.set()
        if self.scheduler is not None:
            self.scheduler.stop_requested = True
        if self._election is not None:
            self._election.cancel()

    def _fence(self) -> str | None:
        """This copy's election node while it leads (what every ZooKeeper write checks)."""
        lock = getattr(self._election, "lock", None)
        if not self.leading or lock is None or not lock.node:
            return None
        return f"{lock.path}/{lock.node}"

    def _on_stop_request(self, doc: dict[str, Any]) -> None:
        if self.stop_event.is_set() or doc.get("by") == self.identity:
            return  # this copy recorded it: it stops (and tears down) by itself
        log.warning(
            "stop requested through ZooKeeper by %s%s: this copy exits",
            doc.get("by", "?"), " (with teardown)" if doc.get("teardown") else "",
        )  # fmt: skip
        self.stop()

    def _share(self, zk: Any) -> None:
        """Take the token, the state and the stop requests from ZooKeeper."""
        s = self.spec.scheduler
        shared = Shared(zk, s.election_path)
        token = shared.ensure_token()
        if not s.zk_auth_file:
            log.warning(
                "ZooKeeper without zk_auth_file: the control token and the state in %s are "
                "readable by anyone who can reach ZooKeeper", s.election_path,
            )  # fmt: skip
        path = token_path(self.spec)
        if token != self.token:
            write_token(path, token)  # the local sr_scheduler finds the shared token here
            self.token = token
        store = ZkStateStore(shared, self._fence)
        self.store = store
        self.shared = shared
        shared.watch_stop(self._on_stop_request)

    def _migrate(self) -> None:
        """A state.json left by a file-based scheduler becomes the ZooKeeper state once."""
        if not isinstance(self.store, ZkStateStore):
            return
        old = StateStore(self.spec.scheduler.state_dir)
        if not old.path.exists() or self.store.load().framework_id or self.store.load().torn_down:
            return
        state = old.load()
        if state.framework_id or state.tasks:
            log.warning(
                "moving the scheduler state in %s (framework %s) into ZooKeeper",
                old.path, state.framework_id,
            )  # fmt: skip
            self.store.save(state)
            old.path.rename(old.path.with_suffix(".json.moved-to-zookeeper"))

    def _run_elected(self, hosts: str) -> None:
        from kazoo.client import KazooState
        from kazoo.exceptions import KazooException
        from kazoo.handlers.threading import KazooTimeoutError

        zk = zk_client(self.spec.scheduler, hosts)

        def listener(state: str) -> None:
            if state == KazooState.LOST:
                log.error("ZooKeeper session lost: stepping down")
                self.zk_lost.set()
            elif state == KazooState.SUSPENDED:
                log.warning("ZooKeeper connection suspended")

        zk.add_listener(listener)
        try:
            zk.start(timeout=30)
            self._share(zk)
        except (KazooException, KazooTimeoutError) as e:
            zk.close()
            raise LocalError(f"ZooKeeper {hosts} cannot be used: {e!r}") from e
        try:
            while not self.stop_event.is_set():
                self.zk_lost.clear()
                assert self.shared is not None
                self._election = zk.Election(self.shared.election, self.identity)
                log.info("waiting to be elected leader at %s", self.shared.election)
                self._election.run(self._lead)
                if not self.stop_event.is_set():
                    time.sleep(1.0)
        finally:
            zk.stop()
            zk.close()

    def _lead(self) -> None:
        if self.stop_event.is_set():
            return
        log.info("this copy (%s) leads pump %s", self.identity, self.spec.scheduler.name)
        if self.spec_path is not None:
            self.reload("elected leader")  # the file may have changed while this copy waited
            self._pending_spec = None  # applied below: the scheduler is made from self.spec
        self.leading = True
        self.status = {**self.status, "leader": True, "connected": False}
        try:
            self._migrate()
            if not self._may_register():
                return
            self._write_leader_addr()
            s = self.spec.scheduler
            client = MesosClient(
                s.master, s.call_timeout, self.credentials, s.master_ca_file, self.zk_auth
            )
            sched = PumpScheduler(self.spec, self.store, client)
        except (Deposed, TransportUnavailable) as e:  # rejoin the election
            log.warning("cannot take the lead now: %s", e)
            self.leading = False
            return
        except SarraError as e:
            log.error("cannot lead: %s", e)
            self.exit_code = 1
            self.stop_event.set()
            self.leading = False
            return
        self.scheduler = sched
        backoff = 0.5
        try:
            while not self.stop_event.is_set() and not self.zk_lost.is_set():
                self._serve_reloads(sched)
                try:
                    sched.connect()
                    backoff = 0.5
                except AuthenticationFailed as e:
                    log.error(
                        "authentication to the Mesos master failed as principal %r (%s): "
                        "check principal and secret_file; not retrying",
                        s.principal or "(none: no secret_file)", e,
                    )  # fmt: skip
                    self.exit_code = 6
                    self.stop_event.set()
                    break
                except FrameworkRemoved as e:
                    if self.spec.scheduler.on_framework_removed != "register":
                        log.error(
                            "framework %s was removed (%s); not registering a new one "
                            "(on_framework_removed = \"stop\")",
                            sched.state.framework_id, e,
                        )  # fmt: skip
                        self.exit_code = 3
                        self.stop_event.set()
                        break
                    sched.forget_framework()
                    continue
                except SubscriptionRefused as e:
                    log.error("subscription refused: %s", e)
                    self._wait(backoff)
                    backoff = min(backoff * 2, 15.0)
                    continue
                except SarraError as e:
                    log.warning("cannot subscribe (%s); retrying in %.1fs", e, backoff)
                    self._wait(backoff)
                    backoff = min(backoff * 2, 15.0)
                    continue
                while not sched.stop_requested and not self.zk_lost.is_set():
                    self._serve_reloads(sched)
                    alive = sched.step(0.2)
                    self.status = {
                        **sched.snapshot(),
                        "leader": True,
                        "copy": self.identity,
                        "last_reload": self.last_reload,
                    }
                    if not alive:
                        break
                if sched.stop_requested:
                    self._finish(sched)
                    break
        except Deposed:
            log.warning("deposed: another copy holds the framework now")
        finally:
            sched.close()
            self.leading = False
            self.scheduler = None
            self.status = {"pump": s.name, "leader": False, "copy": self.identity}
            self._withdraw_leader()

    def _may_register(self) -> bool:
        """False (and the copy stops) when an operator's teardown is recorded."""
        state = self.store.load()
        torn = state.torn_down
        if torn is None:
            return True
        if self.new_framework:
            log.warning(
                "--new-framework: clearing the teardown of framework %s recorded by %s",
                torn.get("framework_id"), torn.get("by"),
            )  # fmt: skip
            state.torn_down = None
            state.framework_id = None
            state.tasks.clear()
            self.store.save(state)
            self.new_framework = False
            return True
        log.error(
            "framework %s was torn down by an operator (%s, at %s): not registering a new "
            "one; run a copy with --new-framework to start a new framework",
            torn.get("framework_id"), torn.get("by"),
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(torn.get("at") or 0))),
        )  # fmt: skip
        self.exit_code = 3
        self.stop_event.set()
        self.leading = False
        return False

    def _finish(self, sched: PumpScheduler) -> None:
        if sched.teardown_requested:
            fid = sched.state.framework_id
            log.warning("explicit removal: TEARDOWN of framework %s", fid)
            # recorded first: whatever happens next, no copy registers a new framework
            sched.state.torn_down = {"framework_id": fid, "at": time.time(), "by": self.identity}
            self.store.save(sched.state)
            try:
                sched.client.teardown()
            except SarraError as e:
                log.error("TEARDOWN failed: %s", e)
                sched.state.torn_down = None
                self.store.save(sched.state)
                self.exit_code = 1
                return
            sched.state.framework_id = None
            sched.state.tasks.clear()
            self.store.save(sched.state)
        else:
            log.info("scheduler stopping; workers keep running until failover_timeout")

    def _wait(self, seconds: float) -> None:
        self.stop_event.wait(seconds)

    def _write_leader_addr(self) -> None:
        """Advertise this copy as the leader: ``leader`` znode (fenced), ``leader.addr``."""
        if isinstance(self.store, ZkStateStore) and self.shared is not None:
            doc = {"address": self.address, "copy": self.identity, "since": time.time()}
            self.store.write(self.shared.leader, json.dumps(doc).encode(), ephemeral=True)
        d = self.spec.scheduler.state_dir
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f"leader.addr.{os.getpid()}"
        tmp.write_text(self.address + "\n")
        os.replace(tmp, d / "leader.addr")

    def _withdraw_leader(self) -> None:
        """After leading: remove the ``leader`` znode if it is still this copy's."""
        shared = self.shared
        if shared is None:
            return
        try:
            if shared.leader_address() == self.address:
                shared.zk.delete(shared.leader)
        except Exception as e:  # the session may be gone; the ephemeral node goes with it
            log.debug("leader znode not removed: %r", e)


def render_html(doc: dict[str, Any]) -> str:
    """A small human page of the status document."""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(t['slot'])}</td><td>{e(t['task_id'])}</td><td>{e(t['hostname'])}</td>"
        f"<td>{e(t['agent_id'])}</td><td>{e(t['state'])}</td><td>{t['age']}</td>"
        f"<td>{'yes' if t['started'] else 'no'}</td>"
        f"<td>{ {True: 'yes', False: 'NO'}.get(t.get('healthy'), '-') }</td></tr>"
        for t in doc.get("tasks", [])
    )
    spec = "".join(
        f"<li>{e(n)}: {w['count']} x <code>{e(w['command'])}</code> ({w['cpus']} cpus, "
        f"{w['mem']} MB)</li>"
        for n, w in doc.get("spec", {}).items()
    )
    pending = ", ".join(e(p) for p in doc.get("pending", [])) or "none"
    loops = "".join(
        f"<li>{e(slot)}: {c['failures']} failure(s), "
        f"{'given up' if c['given_up'] else 'relaunch in ' + str(c['relaunch_in']) + ' s'}; "
        f"last: {e(str(c['last']))}</li>"
        for slot, c in doc.get("crash_loops", {}).items()
    )
    plan = doc.get("plan") or {}
    phases = "".join(
        f"<h3>Phase {e(ph['name'])}: {e(ph['status'])}</h3><p>{e(ph['reason'])}</p>"
        "<table border='1'><tr><th>step</th><th>status</th><th>reason</th></tr>"
        + "".join(
            f"<tr><td>{e(s['name'])}</td><td>{e(s['status'])}</td><td>{e(s['reason'])}</td></tr>"
            for s in ph["steps"]
        )
        + "</table>"
        for ph in plan.get("phases", [])
    )
    role = "leader" if doc.get("leader") else "standby"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>sr_scheduler "
        f"{e(str(doc.get('pump')))}</title></head><body>"
        f"<h1>Pump {e(str(doc.get('pump')))} ({role})</h1>"
        f"<p>framework {e(str(doc.get('framework_id')))} on master "
        f"{e(str(doc.get('master')))}</p>"
        f"<h2>Plan {e(str(plan.get('name', 'deployment')))}: "
        f"{e(str(plan.get('status', 'none')))}</h2>{phases}<h2>Spec</h2><ul>{spec}</ul>"
        f"<h2>Tasks</h2><table border='1'><tr><th>slot</th><th>task</th><th>host</th>"
        f"<th>agent</th><th>state</th><th>age (s)</th><th>started</th><th>healthy</th></tr>"
        f"{rows}</table>"
        f"<h2>Pending</h2><p>{pending}</p>"
        f"<h2>Crash loops</h2><ul>{loops or '<li>none</li>'}</ul></body></html>"
    )
