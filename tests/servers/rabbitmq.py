"""A throwaway RabbitMQ node for the test session (pytest plugin).

The node gets its own name (with the pid of the test run), its own free loopback ports and
its own directories, so it never depends on, nor disturbs, a node already running on 5672.
It is started once per session, with the management plugin, and stopped at the end even
when startup or the tests fail. Without RabbitMQ installed the fixture fails (never skips)
and says how to install it.

Recipe: shared/docs/test-servers.md. Only loopback addresses are used.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sarra.broker.base import BrokerUrl
from tests.servers.lifecycle import session_server, started

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
READY_TIMEOUT = 60.0
CTL_TIMEOUT = 60.0


def _free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (kept bound together so none repeats)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _as_rabbitmq(argv: Sequence[str]) -> list[str]:
    """Run ``argv`` as the rabbitmq user (the node's files and Erlang cookie are theirs)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "rabbitmq", "--", *argv]
    return list(argv)


@dataclass
class RabbitNode:
    """A running throwaway node: where it listens and how to poke it."""

    host: str
    port: int
    mgmt_port: int
    dist_port: int
    nodename: str
    base_dir: Path
    env: dict[str, str] = field(repr=False)
    process: subprocess.Popen[bytes] | None = None
    #: the amqps listener's port when started with ``tls=``; its PEM files are
    #: ``base_dir/tls/{ca,cert,key}.pem`` (replace them, then ``reload_tls()``)
    tls_port: int | None = None

    # -- addresses ---------------------------------------------------------------------
    def url(self, user: str = "guest", password: str = "guest", vhost: str = "/") -> str:
        """An ``amqp://`` URL for this node (vhost ``/`` is written as the empty path)."""
        path = "" if vhost == "/" else urllib.parse.quote(vhost, safe="")
        user_q = urllib.parse.quote(user, safe="")
        pw_q = urllib.parse.quote(password, safe="")
        return f"amqp://{user_q}:{pw_q}@{self.host}:{self.port}/{path}"

    def broker_url(self, user: str = "guest", password: str = "guest") -> BrokerUrl:
        return BrokerUrl(host=self.host, port=self.port, user=user, password=password)

    # -- control -----------------------------------------------------------------------
    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT) -> str:
        """Run ``rabbitmqctl -n <node> ARGS`` and return its stdout; raise on failure."""
        argv = _as_rabbitmq([str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.nodename, *args])
        proc = subprocess.run(
            argv, env=self.env, capture_output=True, timeout=timeout, cwd=self.base_dir
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout.decode(errors='replace')}{proc.stderr.decode(errors='replace')}"
            )
        return proc.stdout.decode(errors="replace")

    def add_user(self, name: str, password: str, tags: Sequence[str] = ()) -> None:
        self.ctl("add_user", name, password)
        if tags:
            self.ctl("set_user_tags", name, *tags)

    def set_permissions(
        self, user: str, configure: str, write: str, read: str, vhost: str = "/"
    ) -> None:
        self.ctl("set_permissions", "-p", vhost, user, configure, write, read)

    def reload_tls(self) -> None:
        """Make new amqps connections use the PEM files as they are now on disk."""
        self.ctl("eval", "ssl:clear_pem_cache().")

    def close_all_connections(self, reason: str = "test") -> None:
        self.ctl("close_all_connections", reason)

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.wait_ready()

    def restart(self) -> None:
        """Stop the whole node and start it again on the same ports and data."""
        self.stop()
        self.start()

    def mgmt_get(self, path: str) -> Any:
        """GET ``/api/<path>`` from the management API as guest; the decoded JSON."""
        req = urllib.request.Request(f"http://{self.host}:{self.mgmt_port}/api/{path}")
        token = base64.b64encode(b"guest:guest").decode()
        req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)

    def queue_info(self, name: str, vhost: str = "/") -> Any:
        """The management API's description of one queue (arguments, messages, ...)."""
        return self.mgmt_get(
            f"queues/{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(name, safe='')}"
        )

    # -- lifecycle ---------------------------------------------------------------------
    def log_tail(self, limit: int = 6000) -> str:
        """The end of the node's logs, for failure messages."""
        chunks = []
        for path in [*sorted(self.base_dir.glob("log/*.log")), self.base_dir / "stdout.log"]:
            if path.exists():
                text = path.read_text(errors="replace")
                chunks.append(f"--- {path.name}\n{text[-limit:]}")
        return "\n".join(chunks)

    def start(self) -> None:
        out = (self.base_dir / "stdout.log").open("ab")
        try:
            self.process = subprocess.Popen(
                _as_rabbitmq([str(RABBITMQ_BIN / "rabbitmq-server")]),
                env=self.env,
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        self.wait_ready()

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until the app runs and both listeners accept; fail with the node's log."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"RabbitMQ node {self.nodename} exited with {self.process.returncode}\n"
                    + self.log_tail()
                )
            try:
                self.ctl("-q", "await_startup", "--timeout", "15", timeout=30)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                last = str(exc)
                time.sleep(1.0)
                continue
            if _port_open(self.port) and _port_open(self.mgmt_port):
                return
            last = "listeners not open yet"
            time.sleep(0.5)
        raise RuntimeError(
            f"RabbitMQ node {self.nodename} not ready after {timeout:.0f}s: {last}\n"
            + self.log_tail()
        )

    def stop(self) -> None:
        """Stop the node; kill its process group if it does not stop politely."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.ctl("stop", timeout=30)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.process = None


def _make_node(tls: tuple[bytes, bytes, bytes] | None = None) -> RabbitNode:
    port, mgmt_port, dist_port, tls_port = _free_ports(4)
    base = Path(tempfile.mkdtemp(prefix="sarra-rabbit-"))
    nodename = f"sarra_test_{os.getpid()}_{secrets.token_hex(2)}@localhost"
    (base / "mnesia").mkdir()
    (base / "log").mkdir()
    (base / "enabled_plugins").write_text("[rabbitmq_management].\n")
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{port}\n"
        f"management.tcp.port = {mgmt_port}\n"
        "management.tcp.ip = 127.0.0.1\n"
        "loopback_users.guest = true\n"
    )
    if tls is not None:
        (base / "tls").mkdir()
        for pem, data in zip(("ca", "cert", "key"), tls, strict=True):
            (base / "tls" / f"{pem}.pem").write_bytes(data)
        with (base / "rabbitmq.conf").open("a") as conf:
            conf.write(
                f"listeners.ssl.default = 127.0.0.1:{tls_port}\n"
                f"ssl_options.cacertfile = {base}/tls/ca.pem\n"
                f"ssl_options.certfile = {base}/tls/cert.pem\n"
                f"ssl_options.keyfile = {base}/tls/key.pem\n"
                "ssl_options.verify = verify_none\n"
                "ssl_options.fail_if_no_peer_cert = false\n"
            )
    # our own (empty) env file: the system one names the default node
    (base / "rabbitmq-env.conf").write_text("")
    base.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(base, "rabbitmq", "rabbitmq")
        for path in base.rglob("*"):
            shutil.chown(path, "rabbitmq", "rabbitmq")
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": "/var/lib/rabbitmq",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "RABBITMQ_NODENAME": nodename,
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_PID_FILE": str(base / "pid"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    return RabbitNode(
        host="127.0.0.1",
        port=port,
        mgmt_port=mgmt_port,
        dist_port=dist_port,
        nodename=nodename,
        base_dir=base,
        env=env,
        tls_port=tls_port if tls is not None else None,
    )


def start_rabbitmq(tls: tuple[bytes, bytes, bytes] | None = None) -> RabbitNode:
    """Start a throwaway node (guest/guest on loopback); ``stop()`` it when done.

    ``tls``: PEM bytes of (CA, server certificate, server key) to add an amqps listener on
    ``node.tls_port`` (client certificates are not asked for).

    Raises:
        RuntimeError: RabbitMQ is not installed.
    """
    if not (RABBITMQ_BIN / "rabbitmq-server").exists():
        raise RuntimeError("RabbitMQ is not installed: run `apt-get install -y rabbitmq-server`")
    return started(_make_node(tls))


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitNode]:
    """A throwaway RabbitMQ node for the whole session (guest/guest on loopback)."""
    with session_server(start_rabbitmq, "the broker tests need a real node") as node:
        yield node


@dataclass(frozen=True)
class AmqpNames:
    """Unique exchange and queue name prefixes for one test (guest may use any name)."""

    exchange: str
    queue: str

    def x(self, suffix: str = "") -> str:
        return f"{self.exchange}{suffix}"

    def q(self, suffix: str = "") -> str:
        return f"{self.queue}{suffix}"


@pytest.fixture
def amqp_names() -> AmqpNames:
    tag = secrets.token_hex(4)
    return AmqpNames(exchange=f"x_test_{tag}", queue=f"q_guest.test.{tag}")
