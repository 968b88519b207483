"""A throwaway Redis for the shared duplicate store's tests (pytest plugin).

Started from Debian's ``redis-server`` on a free loopback port with its own configuration,
working directory and log, an ACL user ``sarra`` with a password (the default user is off, so
the password must come from ``credentials.conf``), and stopped at the end even when the tests
fail. :meth:`Redis.stop` and :meth:`Redis.start` on the same port let outage tests cut it.
Without ``redis-server`` the fixture fails (never skips): ``scripts/bootstrap`` installs it.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers.lifecycle import session_server, started, terminate, wait_listening
from tests.servers.rabbitmq import _free_ports, _port_open

REDIS_SERVER = Path("/usr/bin/redis-server")
USER, PASSWORD = "sarra", "redis-secret"


@dataclass
class Redis:
    port: int
    base_dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def user(self) -> str:
        return USER

    @property
    def password(self) -> str:
        return PASSWORD

    def url(self, db: int = 0) -> str:
        """The URL a configuration names (no password)."""
        return f"redis://{USER}@127.0.0.1:{self.port}/{db}"

    def credentials_line(self, db: int = 0) -> str:
        return f"redis://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        with open(self.base_dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(REDIS_SERVER), str(self.base_dir / "redis.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_listening(self.proc, lambda: _port_open(self.port), "redis-server", self.log_tail)

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return (self.base_dir / "redis.log").read_text(errors="replace")[-limit:]
        except OSError:
            return ""


def start_redis() -> Redis:
    if not REDIS_SERVER.exists():
        raise RuntimeError("redis-server is not installed: run `apt-get install -y redis-server`")
    base = Path(tempfile.mkdtemp(prefix="sarra-redis-"))
    (port,) = _free_ports(1)
    conf = base / "redis.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\nprotected-mode yes\ndaemonize no\n"
        f'dir {base}\nlogfile {base}/redis.log\nsave ""\nappendonly no\n'
        "user default off\n"
        f"user {USER} on >{PASSWORD} ~* &* +@all\n"
    )
    conf.chmod(0o600)
    return started(Redis(port, base))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    """A throwaway Redis for the whole session (user sarra, on loopback)."""
    with session_server(start_redis, "the shared store tests need a real Redis") as node:
        yield node
