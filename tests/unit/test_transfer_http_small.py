"""HttpTransport.get_small's response reading, against canned responses on a socket pair
(the real nginx and the fault server are in tests/integration/test_transfer_http.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

import sarra.transfer.http as http_mod
from sarra.errors import IntegrityError, NotFound, PolicyRefused, TransportUnavailable
from sarra.transfer.http import HttpTransport

BASE = "http://files.example:8080"
URL = f"{BASE}/dir/f.bin"


class _Conn:
    """Stands for the http.client connection: only its socket is used by get_small."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | None = sock
        self.connected = 0

    def connect(self) -> None:
        self.connected += 1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None


@pytest.fixture
def pair() -> Iterator[tuple[HttpTransport, socket.socket, _Conn]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    transport = HttpTransport(BASE, timeout=5)
    conn = _Conn(ours)
    transport._conn = conn  # type: ignore[assignment]
    yield transport, theirs, conn
    theirs.close()
    transport.close()


def _request(theirs: socket.socket) -> bytes:
    got = b""
    while not got.endswith(b"\r\n\r\n"):
        got += theirs.recv(4096)
    return got


def test_the_request_names_the_host_target_and_agent(pair) -> None:
    transport, theirs, conn = pair
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    assert list(transport.get_small(URL, 3)) == [b"abc"]
    request = _request(theirs).decode()
    assert request.startswith("GET /dir/f.bin HTTP/1.1\r\n")
    assert "\r\nHost: files.example:8080\r\n" in request
    assert "\r\nUser-Agent: sarra/0.1\r\n" in request
    assert "Authorization" not in request
    assert transport._conn is conn  # kept alive


def test_a_chunked_body_is_read_whole(pair) -> None:
    transport, theirs, conn = pair
    theirs.sendall(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    assert list(transport.get_small(URL, 5)) == [b"abcde"]
    assert transport._conn is conn


def test_an_empty_file_yields_nothing(pair) -> None:
    transport, theirs, _ = pair
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert list(transport.get_small(URL, 0)) == []


def test_connection_close_drops_the_connection_after_the_body(pair) -> None:
    transport, theirs, conn = pair
    theirs.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nab")
    assert list(transport.get_small(URL, 2)) == [b"ab"]
    assert transport._conn is None
    assert conn.sock is None


def test_a_body_longer_than_the_limit_is_refused(pair) -> None:
    transport, theirs, _ = pair
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
    with pytest.raises(IntegrityError, match="longer than the 4 bytes"):
        transport.get_small(URL, 4)
    assert transport._conn is None


def test_a_body_cut_short_is_truncated(pair) -> None:
    transport, theirs, _ = pair
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(IntegrityError, match=r"truncated body \(5 bytes came\)"):
        transport.get_small(URL, 10)
    assert transport._conn is None


def test_a_body_ended_only_by_the_close_is_refused(pair) -> None:
    transport, theirs, _ = pair
    theirs.sendall(b"HTTP/1.1 200 OK\r\n\r\n01234")
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(IntegrityError, match="truncated"):
        transport.get_small(URL, 10)


def test_bytes_after_the_response_drop_the_connection(pair) -> None:
    transport, theirs, _ = pair
    theirs.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"
    )
    with pytest.raises(IntegrityError, match="after the response"):
        transport.get_small(URL, 1)
    assert transport._conn is None


def test_a_short_error_page_is_drained_and_the_connection_kept(pair) -> None:
    transport, theirs, conn = pair
    theirs.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot here!")
    with pytest.raises(NotFound, match="HTTP 404 Not Found"):
        transport.get_small(URL, 3)  # the limit is the file's, not the error page's
    assert transport._conn is conn
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    assert list(transport.get_small(URL, 3)) == [b"abc"]


def test_garbage_is_transport_unavailable(pair) -> None:
    transport, theirs, _ = pair
    theirs.sendall(b"SMTP ready\r\n\r\n")
    with pytest.raises(TransportUnavailable):
        transport.get_small(URL, 3)
    assert transport._conn is None


def test_a_close_before_any_response_on_a_fresh_connection_is_unavailable(pair) -> None:
    transport, theirs, conn = pair
    conn.sock, fresh = None, conn.sock  # as if not yet connected: connect() then the socket

    def connect() -> None:
        conn.sock = fresh

    conn.connect = connect  # type: ignore[method-assign]
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(TransportUnavailable, match="closed before the response"):
        transport.get_small(URL, 3)


def test_another_origin_is_refused_before_anything_is_sent(pair) -> None:
    transport, theirs, _ = pair
    with pytest.raises(PolicyRefused):
        transport.get_small("http://elsewhere.example/f", 3)
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):
        theirs.recv(1)


def test_without_httptools_or_for_an_odd_target_it_is_plain_get(pair, monkeypatch) -> None:
    transport, _, _ = pair
    calls: list[str] = []
    monkeypatch.setattr(transport, "get", lambda url: calls.append(url) or iter([b"x"]))
    odd = f"{BASE}/a b"
    assert list(transport.get_small(odd, 1)) == [b"x"]
    monkeypatch.setattr(http_mod, "httptools", None)
    assert list(transport.get_small(URL, 1)) == [b"x"]
    assert calls == [odd, URL]
