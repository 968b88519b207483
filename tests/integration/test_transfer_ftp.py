"""FTP/FTPS transport behaviour beyond the shared contract (test_transport_conformance.py):
fallbacks for servers without REST or MLSD, listings that try to escape, session reuse and
recovery, certificate checks. Against real pyftpdlib servers on loopback."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarra.config.credentials import Credential, parse_url
from sarra.errors import HostilePath, NotFound, TransferError, TransportUnavailable
from sarra.transfer import open_transport
from sarra.transfer.base import CHUNK_SIZE
from sarra.transfer.ftp import FtpTransport
from tests.servers.ftpd import Ftpd, start_ftpd

pytestmark = pytest.mark.servers

DATA = os.urandom(CHUNK_SIZE + 4321)


def _open(server: Ftpd, **kwargs: object) -> FtpTransport:
    cred = Credential(parse_url(server.credentials_line))
    ca = str(server.ca_file) if server.ca_file else None
    opts: dict[str, object] = {"credentials": cred, "timeout": 10, "ca_file": ca, **kwargs}
    made = open_transport(server.url, **opts)  # type: ignore[arg-type]
    assert isinstance(made, FtpTransport)
    return made


@pytest.fixture(scope="module")
def old_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ftpd]:
    """A server that implements neither REST nor MLSD, and answers crafted listings for any
    directory named ``hostile``."""
    server, stop = start_ftpd(
        tmp_path_factory.mktemp("oldftpd"), disable=("REST", "MLSD"), hostile="hostile"
    )
    try:
        yield server
    finally:
        stop()


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ftpd]:
    server, stop = start_ftpd(tmp_path_factory.mktemp("hostileftpd"), hostile="hostile")
    try:
        yield server
    finally:
        stop()


def test_ranges_are_right_on_a_server_without_rest(old_server: Ftpd) -> None:
    (old_server.root / "data.bin").write_bytes(DATA)
    with _open(old_server) as t:
        url = f"{old_server.url}/data.bin"
        assert b"".join(t.get(url, CHUNK_SIZE - 3, 10)) == DATA[CHUNK_SIZE - 3 : CHUNK_SIZE + 7]
        assert b"".join(t.get(url, 5)) == DATA[5:]
        assert b"".join(t.get(url)) == DATA
        assert t.connections_made == 1


def test_listing_falls_back_to_list_without_mlsd(old_server: Ftpd) -> None:
    d = old_server.root / "listed"
    d.mkdir()
    (d / "a file.txt").write_bytes(b"x" * 1234)
    (d / "sub").mkdir()
    with _open(old_server) as t:
        entries = {e.name: e for e in t.listdir(f"{old_server.url}/listed")}
    assert set(entries) == {"a file.txt", "sub"}
    assert entries["a file.txt"].size == 1234 and not entries["a file.txt"].is_dir
    assert entries["sub"].is_dir
    mtime = entries["a file.txt"].mtime
    # ls -l shows minutes (recent files) in the server's time zone: pyftpdlib uses UTC
    assert mtime is not None and abs(mtime - (d / "a file.txt").stat().st_mtime) < 61


@pytest.mark.parametrize("which", ["mlsd", "list"])
def test_listed_names_that_would_escape_are_left_out(
    which: str, hostile_server: Ftpd, old_server: Ftpd, caplog: pytest.LogCaptureFixture
) -> None:
    server = hostile_server if which == "mlsd" else old_server
    (server.root / "hostile").mkdir(exist_ok=True)
    with _open(server) as t:
        entries = t.listdir(f"{server.url}/hostile")
    assert [(e.name, e.size) for e in entries] == [("good.txt", 5)]
    assert "could escape" in caplog.text and "../../etc/passwd" in caplog.text


def test_cr_lf_in_a_path_is_refused_before_any_io(hostile_server: Ftpd) -> None:
    with _open(hostile_server) as t:
        with pytest.raises(HostilePath):
            t.stat("/x\r\nDELE /important")
        with pytest.raises(HostilePath):
            t.get(f"{hostile_server.url}/x%0D%0ADELE%20y")
        assert t.connections_made == 0


def test_a_session_is_reused_and_a_reader_may_stop_early(ftpd: Ftpd) -> None:
    (ftpd.root / "reuse.bin").write_bytes(DATA)
    url = f"{ftpd.url}/reuse.bin"
    with _open(ftpd) as t:
        for _ in range(3):
            chunks = t.get(url)
            assert next(chunks) == DATA[:CHUNK_SIZE]
            chunks.close()  # abandoned mid-file: the session must stay in step
            assert t.stat(url).size == len(DATA)
        assert b"".join(t.get(url, 7, 3)) == DATA[7:10]
        assert t.connections_made == 1


def test_a_dropped_session_is_reopened_for_idempotent_operations(tmp_path: Path) -> None:
    server, stop = start_ftpd(tmp_path)
    (server.root / "f.bin").write_bytes(DATA)
    try:
        with _open(server) as t:
            assert t.stat(f"{server.url}/f.bin").size == len(DATA)
            stop()
            server, stop = start_ftpd(tmp_path, port=server.port)
            assert b"".join(t.get(f"{server.url}/f.bin")) == DATA
            assert t.connections_made == 2
    finally:
        stop()


def test_an_untrusted_certificate_is_refused_and_not_retried(ftpsd: Ftpd) -> None:
    (ftpsd.root / "c.bin").write_bytes(b"c")
    with _open(ftpsd, ca_file=None) as t, pytest.raises(TransferError) as caught:
        t.stat(f"{ftpsd.url}/c.bin")
    assert not caught.value.retryable and "certificate" in str(caught.value)
    with _open(ftpsd, ca_file=None, tls_verify=False) as t:  # tls_rigour lax
        assert t.stat(f"{ftpsd.url}/c.bin").size == 1


def test_tls_from_the_credentials_line_on_an_ftp_url(ftpsd: Ftpd) -> None:
    # sr2's form: an ftp:// URL whose credentials line says tls
    (ftpsd.root / "t.bin").write_bytes(b"tls")
    url = f"ftp://{ftpsd.user}@127.0.0.1:{ftpsd.port}"
    cred = Credential(parse_url(f"ftp://{ftpsd.user}:{ftpsd.password}@127.0.0.1:{ftpsd.port}/"))
    plain = open_transport(url, credentials=cred, timeout=10)
    with plain, pytest.raises(TransferError):  # the server requires TLS
        plain.stat(f"{url}/t.bin")
    secured = Credential(cred.url, tls=True)
    with open_transport(url, credentials=secured, timeout=10, ca_file=str(ftpsd.ca_file)) as t:
        assert b"".join(t.get(f"{url}/t.bin")) == b"tls"


def test_a_server_that_never_answers_times_out_as_unavailable() -> None:
    # a listener that accepts and says nothing (no 220 banner)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        t = open_transport(f"ftp://u@127.0.0.1:{port}", timeout=1)
        started = time.monotonic()
        with t, pytest.raises(TransportUnavailable) as caught:
            t.stat("/x")
        assert caught.value.retryable and time.monotonic() - started < 10


def test_missing_files_and_directories_are_not_found(ftpd: Ftpd) -> None:
    with _open(ftpd) as t:
        with pytest.raises(NotFound):
            t.rename("/no/such/file", "/elsewhere")
        with pytest.raises(NotFound):
            t.delete("/no-such-thing")
        (ftpd.root / "full").mkdir(exist_ok=True)
        (ftpd.root / "full" / "f").write_bytes(b"x")
        with pytest.raises(TransferError) as caught:  # a directory that is not empty
            t.delete("/full")
        assert not isinstance(caught.value, NotFound) and not caught.value.retryable
        assert (ftpd.root / "full" / "f").exists()


def test_active_mode_works_where_passive_is_refused(tmp_path: Path) -> None:
    server, stop = start_ftpd(tmp_path, disable=("PASV", "EPSV"))
    (server.root / "a.bin").write_bytes(DATA)
    url = f"{server.url}/a.bin"
    try:
        passive = Credential(parse_url(server.credentials_line))
        t = open_transport(server.url, credentials=passive, timeout=10)
        with t, pytest.raises(TransferError):
            b"".join(t.get(url))
        # `active` in the credentials line: the server connects back (PORT/EPRT)
        active = Credential(parse_url(server.credentials_line), passive=False)
        with open_transport(server.url, credentials=active, timeout=10) as t:
            assert b"".join(t.get(url, 10, 20)) == DATA[10:30]
            assert t.listdir(server.url + "/")[0].name == "a.bin"
    finally:
        stop()


def test_listing_a_missing_directory_is_not_found(ftpd: Ftpd) -> None:
    with _open(ftpd) as t, pytest.raises(NotFound):
        t.listdir(f"{ftpd.url}/no/such/dir")


def test_a_line_break_in_the_user_of_a_url_never_reaches_the_server(ftpd: Ftpd) -> None:
    # the user comes from a notice's baseUrl: it must not inject commands
    url = f"ftp://a%0D%0ADELE%20x@127.0.0.1:{ftpd.port}"
    with open_transport(url, timeout=10) as t, pytest.raises(HostilePath):
        t.stat(f"{url}/x")
    assert t.connections_made == 0


def test_abort_fails_a_transfer_midway_and_ends_the_transport(ftpd: Ftpd) -> None:
    big = os.urandom(8 * CHUNK_SIZE)
    (ftpd.root / "big.bin").write_bytes(big)
    t = _open(ftpd)
    chunks = t.get(f"{ftpd.url}/big.bin")
    assert next(chunks) == big[:CHUNK_SIZE]
    threading.Thread(target=t.abort).start()
    with pytest.raises(TransferError):
        b"".join(chunks)
    with pytest.raises(TransportUnavailable):
        t.stat(f"{ftpd.url}/big.bin")
    t.close()
