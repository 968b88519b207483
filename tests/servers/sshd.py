"""A throwaway sshd (SFTP) for the test suite (a pytest plugin).

Runs ``/usr/sbin/sshd -D`` as a child process on a free loopback port with its own config,
host key and authorized key; root logs in with a generated ed25519 key (no password).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers.nginx import free_port, wait_for_port

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class Sshd:
    port: int
    user: str
    key_path: Path
    root_dir: Path
    pid: int

    @property
    def url(self) -> str:
        return f"sftp://{self.user}@127.0.0.1:{self.port}"

    def session_pids(self) -> list[int]:
        """Pids of the per-connection sshd processes (children of our sshd)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def drop_sessions(self) -> int:
        """Kill every client session of this sshd (the listener stays); returns how many."""
        pids = self.session_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        return len(pids)


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sarra-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A throwaway sshd with internal-sftp on 127.0.0.1, stopped at the end of the session."""
    if not os.path.exists(SSHD):
        pytest.fail("sshd is not installed: run `apt-get install -y openssh-server`")
    if shutil.which("ssh-keygen") is None:
        pytest.fail("ssh-keygen is not installed: run `apt-get install -y openssh-client`")
    directory = tmp_path_factory.mktemp("sshd")
    root_dir = tmp_path_factory.mktemp("sftp_root")
    _keygen(directory / "host_key")
    _keygen(directory / "client_key")
    (directory / "authorized_keys").write_text((directory / "client_key.pub").read_text())
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {directory}/host_key\n"
        f"PidFile {directory}/sshd.pid\n"
        f"AuthorizedKeysFile {directory}/authorized_keys\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "StrictModes no\n"
        "UsePAM no\n"
        "MaxStartups 50\n"
        "Subsystem sftp internal-sftp\n"
    )
    os.makedirs("/run/sshd", exist_ok=True)
    log = directory / "log"
    process = subprocess.Popen(
        [SSHD, "-D", "-f", str(config), "-E", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process, log)
        yield Sshd(
            port=port,
            user="root",
            key_path=directory / "client_key",
            root_dir=root_dir,
            pid=process.pid,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
