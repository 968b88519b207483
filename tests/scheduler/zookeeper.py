"""A throwaway standalone ZooKeeper server (Debian package ``zookeeper``) on a free port.

Runs ``org.apache.zookeeper.server.ZooKeeperServerMain`` with its own config and data
directory, a short tickTime (so session timeouts, hence leader failover, are quick), and no
admin server. Fails (never skips) when the package is missing, saying how to install it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

JAR = Path("/usr/share/java/zookeeper.jar")
CONF = Path("/etc/zookeeper/conf")
READY_TIMEOUT = 60.0


@dataclass
class ZooKeeper:
    port: int
    base: Path
    process: subprocess.Popen[bytes]

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ok(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                s.sendall(b"ruok")
                return s.recv(4) == b"imok"
        except OSError:
            return False

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.base / "zookeeper.out").read_text(errors="replace")[-3000:]
        return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def zookeeper_server(base: Path) -> Iterator[ZooKeeper]:
    if not JAR.exists():
        raise RuntimeError(
            f"{JAR} not found: install ZooKeeper (apt-get install zookeeper, or scripts/bootstrap)"
        )
    port = _free_port()
    (base / "data").mkdir(parents=True, exist_ok=True)
    cfg = base / "zoo.cfg"
    cfg.write_text(
        "tickTime=250\n"
        f"dataDir={base / 'data'}\n"
        f"clientPort={port}\n"
        "clientPortAddress=127.0.0.1\n"
        "maxClientCnxns=0\n"
        "minSessionTimeout=500\n"
        "maxSessionTimeout=10000\n"
        "admin.enableServer=false\n"
        "4lw.commands.whitelist=ruok,srvr\n"
    )
    argv = [
        "java", "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
        f"-Dzookeeper.log.dir={base}", "-cp", f"{CONF}:{JAR}",
        "org.apache.zookeeper.server.ZooKeeperServerMain", str(cfg),
    ]  # fmt: skip
    out = open(base / "zookeeper.out", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    zk = ZooKeeper(port, base, proc)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not zk.ok():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ZooKeeper did not start:\n{zk.log_tail()}")
            time.sleep(0.2)
        yield zk
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.close()
