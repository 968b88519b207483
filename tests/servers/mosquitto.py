"""A throwaway Mosquitto broker for the MQTT tests (pytest plugin).

Started on a free loopback port with its own configuration, password file and persistence
directory (persistent sessions and queued QoS 1 messages survive a :meth:`Mosquitto.restart`),
stopped at the end even when the tests fail. Without Mosquitto installed the fixture fails
(never skips): ``scripts/bootstrap`` installs Debian's ``mosquitto``. Only loopback is used.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers.lifecycle import session_server, started, terminate, wait_listening
from tests.servers.nginx import _test_ca_and_server_cert
from tests.servers.rabbitmq import _free_ports, _port_open

MOSQUITTO = Path("/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = Path("/usr/bin/mosquitto_passwd")
USER, PASSWORD = "sarra", "mqtt-secret"


@dataclass
class Mosquitto:
    port: int
    base_dir: Path
    #: an mqtts listener, its certificate signed by the throwaway CA ``ca_file``
    tls_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> Path:
        return self.base_dir / "ca.pem"

    @property
    def user(self) -> str:
        return USER

    @property
    def password(self) -> str:
        return PASSWORD

    def url(self) -> str:
        return f"mqtt://{USER}@127.0.0.1:{self.port}/"

    @property
    def credentials_line(self) -> str:
        return f"mqtt://{USER}:{PASSWORD}@127.0.0.1:{self.port}/"

    def start(self) -> None:
        with open(self.base_dir / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(self.base_dir / "mosquitto.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_listening(
            self.proc,
            lambda: _port_open(self.port) and (not self.tls_port or _port_open(self.tls_port)),
            "mosquitto",
            self.log_tail,
        )

    def stop(self) -> None:
        """SIGTERM: Mosquitto writes its persistence file, then exits."""
        terminate(self.proc)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def wait_subscribed(self, queue: str, timeout: float = 30.0) -> None:
        """Wait until a session of ``queue`` (client id ``<queue>_NN``) subscribed, with a
        plain or a shared filter: from then on, what is published is kept for it."""
        made = re.compile(rf"(^|\s){re.escape(queue)}_\d+ 1 ", re.MULTILINE)
        deadline = time.monotonic() + timeout
        while not made.search(self.log_tail(1 << 20)):
            if time.monotonic() > deadline:
                raise AssertionError(f"no subscription of {queue} within {timeout}s")
            time.sleep(0.05)

    def wait_disconnected(self, client_id: str, timeout: float = 10.0) -> None:
        """Wait until Mosquitto has handled the disconnection of ``client_id``, and so every
        packet the client sent before it (its PUBACKs: a broker stopped sooner drops them
        unread and sends those deliveries again after its restart)."""
        cid = re.escape(client_id)
        # a DISCONNECT, or the socket closed without one (paho does either)
        gone = re.compile(
            rf"Client {cid} (disconnected|closed its connection)|on client {cid}, disconnecting"
        )
        deadline = time.monotonic() + timeout
        while not gone.search(self.log_tail(1 << 20)):
            if time.monotonic() > deadline:
                seen = [x for x in self.log_tail(1 << 20).splitlines() if client_id in x]
                raise AssertionError(
                    f"{client_id} not seen disconnecting within {timeout}s: {seen[-5:]}"
                )
            time.sleep(0.02)

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return (self.base_dir / "mosquitto.log").read_text(errors="replace")[-limit:]
        except OSError:
            return ""


def start_mosquitto() -> Mosquitto:
    if not MOSQUITTO.exists():
        raise RuntimeError("Mosquitto is not installed: run `apt-get install -y mosquitto`")
    base = Path(tempfile.mkdtemp(prefix="sarra-mosquitto-"))
    port, tls_port = _free_ports(2)
    _test_ca_and_server_cert(base)
    passwd = base / "passwd"
    subprocess.run(
        [str(MOSQUITTO_PASSWD), "-b", "-c", str(passwd), USER, PASSWORD],
        check=True,
        capture_output=True,
    )
    passwd.chmod(0o600)
    (base / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous false\n"
        f"password_file {passwd}\n"
        "persistence true\n"
        f"persistence_location {base}/\n"
        "max_queued_messages 100000\n"
        "max_inflight_messages 100\n"
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {base}/ca.pem\ncertfile {base}/cert.pem\nkeyfile {base}/key.pem\n"
        "log_type error\nlog_type warning\nlog_type notice\nlog_type subscribe\n"
    )
    if os.geteuid() == 0:
        # run as root, mosquitto drops to its own user, which must read and write here
        account = pwd.getpwnam("mosquitto")
        for path in (base, passwd, base / "key.pem", base / "cert.pem", base / "ca.pem"):
            os.chown(path, account.pw_uid, account.pw_gid)
    return started(Mosquitto(port, base, tls_port))


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Mosquitto]:
    """A throwaway Mosquitto for the whole session (user sarra, on loopback)."""
    with session_server(start_mosquitto, "the MQTT tests need a real Mosquitto") as node:
        yield node
