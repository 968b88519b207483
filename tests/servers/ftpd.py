"""A throwaway FTP and FTPS server for the test suite (a pytest plugin).

Runs tests/servers/ftpd_server.py (pyftpdlib, from the dev extra) as a child process on a free
loopback port: one user with a password, reading and writing under ``root``. The FTPS one
requires explicit TLS (``AUTH TLS``, ``PROT P``) with a certificate for 127.0.0.1 signed by a
throwaway CA (``ca_file``).
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers.nginx import _test_ca_and_server_cert, free_port, wait_for_port

SERVER = Path(__file__).with_name("ftpd_server.py")


@dataclass(frozen=True)
class Ftpd:
    port: int
    user: str
    password: str
    #: the directory the user sees as ``/``
    root: Path
    tls: bool
    ca_file: Path | None
    pid: int

    @property
    def scheme(self) -> str:
        return "ftps" if self.tls else "ftp"

    @property
    def url(self) -> str:
        """The origin, with the user but without the password."""
        return f"{self.scheme}://{self.user}@127.0.0.1:{self.port}"

    @property
    def credentials_line(self) -> str:
        return f"{self.scheme}://{self.user}:{self.password}@127.0.0.1:{self.port}/"


def start_ftpd(
    directory: Path,
    *,
    tls: bool = False,
    disable: tuple[str, ...] = (),
    hostile: str = "",
    port: int | None = None,
) -> tuple[Ftpd, Callable[[], None]]:
    """Start a server serving ``directory/root``; returns it and its stop function."""
    root = directory / "root"
    root.mkdir(parents=True, exist_ok=True)
    password_file = directory / "password"
    if not password_file.exists():  # a restart keeps the password
        password_file.write_text(f"pw-{secrets.token_hex(8)}")
        password_file.chmod(0o600)
    password = password_file.read_text()
    port = port or free_port()
    command = [
        sys.executable, str(SERVER), "--port", str(port), "--root", str(root),
        "--user", "sarra", "--password-file", str(password_file),
    ]  # fmt: skip
    ca_file = None
    if tls:
        if not (directory / "cert.pem").exists():
            _test_ca_and_server_cert(directory)
        command += ["--cert", str(directory / "cert.pem"), "--key", str(directory / "key.pem")]
        ca_file = directory / "ca.pem"
    if disable:
        command += ["--disable", ",".join(disable)]
    if hostile:
        command += ["--hostile", hostile]
    log = directory / "log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    wait_for_port(port, process, log)

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    server = Ftpd(port, "sarra", password, root, tls, ca_file, process.pid)
    return server, stop


@pytest.fixture(scope="session")
def ftpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ftpd]:
    """A throwaway plain FTP server on 127.0.0.1."""
    server, stop = start_ftpd(tmp_path_factory.mktemp("ftpd"))
    try:
        yield server
    finally:
        stop()


@pytest.fixture(scope="session")
def ftpsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ftpd]:
    """A throwaway FTPS server (explicit TLS required) on 127.0.0.1."""
    server, stop = start_ftpd(tmp_path_factory.mktemp("ftpsd"), tls=True)
    try:
        yield server
    finally:
        stop()
