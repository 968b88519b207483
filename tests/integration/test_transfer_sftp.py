"""SftpTransport against a real throwaway sshd."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarra.config.credentials import Credential, parse_url
from sarra.errors import TransferError, TransportUnavailable
from sarra.transfer import open_transport
from sarra.transfer.sftp import CHUNK_SIZE, WINDOW_CHUNKS, SftpTransport
from sarra.transfer.url import retrieval_url
from tests.servers.sshd import Sshd

pytestmark = pytest.mark.servers

BLOCK = 1 << 20
# Longer than one read-ahead window, and not a multiple of the chunk size.
DATA = os.urandom((WINDOW_CHUNKS + 2) * CHUNK_SIZE + 4321)


def key_credential(ssh_keyfile: str) -> Credential:
    return Credential(parse_url("sftp://root@127.0.0.1"), ssh_keyfile=ssh_keyfile)


@pytest.fixture(scope="module")
def big(sshd: Sshd) -> Path:
    path = sshd.root_dir / "in" / "big file#1.bin"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(DATA)
    return path


@pytest.fixture
def sftp(sshd: Sshd, tmp_path: Path) -> Iterator[SftpTransport]:
    transport = open_transport(
        sshd.url,
        credentials=key_credential(ssh_keyfile=str(sshd.key_path)),
        timeout=10,
        options={"state_dir": str(tmp_path / "state")},
    )
    assert isinstance(transport, SftpTransport)
    yield transport
    transport.close()
    # The host key was accepted on first use and saved in the state directory.
    if transport.connections_made:
        assert f"[127.0.0.1]:{sshd.port}" in (tmp_path / "state" / "known_hosts").read_text()


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def url_of(sshd: Sshd, path: Path) -> str:
    # sr2 form: a baseUrl without path and a relPath with a leading `/`: absolute.
    return retrieval_url(sshd.url, str(path), rel_path_absolute=True)


def test_a_range_longer_than_the_read_ahead_window_is_read_exactly(
    sshd: Sshd, big: Path, sftp: SftpTransport
) -> None:
    offset, length = BLOCK - 3, (WINDOW_CHUNKS + 1) * CHUNK_SIZE
    data = b"".join(sftp.get(url_of(sshd, big), offset, length))
    assert data == DATA[offset : offset + length]


def test_operations_share_one_session(sshd: Sshd, big: Path, sftp: SftpTransport) -> None:
    url = url_of(sshd, big)
    for i in range(10):
        assert b"".join(sftp.get(url, i * 100, 100)) == DATA[i * 100 : (i + 1) * 100]
    assert sftp.stat(url).size == len(DATA)
    assert sftp.connections_made == 1


def test_a_login_relative_path_is_under_the_home_directory(sshd: Sshd, sftp: SftpTransport) -> None:
    home = Path(os.path.expanduser("~root"))
    name = f"sarra-test-{os.getpid()}.txt"
    (home / name).write_bytes(b"at home")
    try:
        url = retrieval_url(sshd.url, name, rel_path_absolute=False)
        assert b"".join(sftp.get(url)) == b"at home"
    finally:
        (home / name).unlink()


def test_a_dropped_session_is_reopened(sshd: Sshd, big: Path, sftp: SftpTransport) -> None:
    url = url_of(sshd, big)
    assert b"".join(sftp.get(url, 0, 10)) == DATA[:10]
    assert sshd.drop_sessions() >= 1
    assert b"".join(sftp.get(url, 10, 10)) == DATA[10:20]
    assert sftp.stat(url).size == len(DATA)
    assert sftp.connections_made == 2


def test_the_host_key_is_remembered_and_a_changed_one_refused(
    sshd: Sshd, big: Path, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    cred = key_credential(ssh_keyfile=str(sshd.key_path))
    first = SftpTransport(sshd.url, credentials=cred, options={"known_hosts": str(known_hosts)})
    assert first.stat(url_of(sshd, big)).size == len(DATA)
    first.close()
    entry = known_hosts.read_text()
    assert f"[127.0.0.1]:{sshd.port}" in entry
    # Replace the saved key with another one: the next connection must be refused.
    other = tmp_path / "other_key"
    keygen(other)
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {(tmp_path / 'other_key.pub').read_text()}")
    second = SftpTransport(sshd.url, credentials=cred, options={"known_hosts": str(known_hosts)})
    with pytest.raises(TransferError, match="host key") as caught:
        second.stat(url_of(sshd, big))
    assert not caught.value.retryable
    second.close()


def test_an_unreachable_server_is_transport_unavailable(tmp_path: Path) -> None:
    from tests.servers.nginx import free_port

    transport = SftpTransport(f"sftp://root@127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(TransportUnavailable):
        transport.stat("/")


# paramiko's read-ahead runs in its own thread, which dies with "Socket is closed" when the
# session goes away under it; our reader still sees the loss and raises. That thread's
# exception is paramiko's, so it is tolerated here (and only here).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_session_dropped_in_the_middle_of_a_body_is_transport_unavailable(
    sshd: Sshd, big: Path, sftp: SftpTransport
) -> None:
    body = sftp.get(url_of(sshd, big))
    assert next(body) == DATA[:CHUNK_SIZE]
    sshd.drop_sessions()
    with pytest.raises(TransportUnavailable):
        b"".join(body)
    # The next operation opens a new session.
    assert b"".join(sftp.get(url_of(sshd, big), 0, 5)) == DATA[:5]
    # Let the dead read-ahead threads end inside this test, not in the next one.
    for thread in threading.enumerate():
        if "_prefetch_thread" in thread.name:
            thread.join(timeout=10)
