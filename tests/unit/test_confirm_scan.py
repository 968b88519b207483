"""Publisher confirms read in bulk (``scan_confirms`` and ``BrokerSession._read_confirms``):
every ack and nack is counted exactly as py-amqp's dispatch would count it, whatever way the
frames are cut by the reads, and any other frame is left to py-amqp."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import amqp.transport
import pytest

from sarra.broker import BrokerSession, BrokerUrl
from sarra.broker.frames import scan_confirms
from sarra.errors import BrokerError


def confirm(tag: int, *, multiple: bool = False, nack: bool = False, channel: int = 1) -> bytes:
    method = 120 if nack else 80
    payload = struct.pack(">HHQB", 60, method, tag, 1 if multiple else 0)
    return struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce"


HEARTBEAT = struct.pack(">BHI", 8, 0, 0) + b"\xce"


def other_method(channel: int = 1) -> bytes:
    payload = struct.pack(">HH", 20, 41)  # channel.close-ok: anything not a confirm
    return struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce"


def test_a_run_of_confirms_is_read_in_order_with_its_flags() -> None:
    buf = confirm(1) + confirm(5, multiple=True) + confirm(6, nack=True)
    buf += confirm(9, multiple=True, nack=True)
    used, got = scan_confirms(buf, 1)
    assert used == len(buf)
    assert got == [(1, False, False), (5, True, False), (6, False, True), (9, True, True)]


def test_scanning_stops_at_a_cut_frame_another_frame_or_channel_or_a_bad_frame_end() -> None:
    a, b = confirm(1), confirm(2)
    assert scan_confirms(a + b[:20], 1) == (21, [(1, False, False)])
    assert scan_confirms(a + HEARTBEAT + b, 1) == (21, [(1, False, False)])
    assert scan_confirms(a + other_method() + b, 1) == (21, [(1, False, False)])
    assert scan_confirms(a + confirm(2, channel=2), 1) == (21, [(1, False, False)])
    assert scan_confirms(a + b[:20] + b"\x00", 1) == (21, [(1, False, False)])
    assert scan_confirms(b"", 1) == (0, [])


def transport_on(sock: socket.socket) -> Any:
    """py-amqp's own TCP transport (its read buffer, frame reader and timeouts) on ``sock``."""
    t = amqp.transport.TCPTransport.__new__(amqp.transport.TCPTransport)
    t.sock = sock
    t._read_buffer = b""
    t._quick_recv = sock.recv
    t.raise_on_initial_eintr = True
    t.connected = True
    return t


class Conn:
    """What ``_drain_confirms`` uses of a py-amqp connection; ``drain_events`` reads one
    frame with py-amqp's reader and dispatches confirms to the session as py-amqp's
    channel events do."""

    def __init__(self, session: BrokerSession, sock: socket.socket) -> None:
        self.session = session
        self.transport = transport_on(sock)
        self.bytes_recv = 0
        self.others: list[tuple[int, int]] = []  # (frame type, channel) handed to py-amqp

    def drain_events(self, timeout: float) -> None:
        ftype, channel, payload = self.transport.read_frame()
        self.bytes_recv += 1
        confirms = ((60, 80), (60, 120))
        if ftype == 1 and channel == 1 and struct.unpack_from(">HH", payload) in confirms:
            _c, method, tag, flags = struct.unpack(">HHQB", payload)
            on = self.session._on_confirm_nack if method == 120 else self.session._on_confirm_ack
            on(tag, bool(flags & 1))
        else:
            self.others.append((ftype, channel))

    def heartbeat_tick(self, rate: int) -> None:
        pass


class Channel:
    channel_id = 1


_SOCKETS: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _SOCKETS:
        _SOCKETS.pop().close()


def session_awaiting(n: int) -> tuple[BrokerSession, Conn, socket.socket]:
    ours, broker = socket.socketpair()
    _SOCKETS.extend((ours, broker))
    session = BrokerSession(BrokerUrl("127.0.0.1", 1))
    conn = Conn(session, ours)
    session._control_ch = Channel()
    session._publish_seq = n
    session._pending = set(range(1, n + 1))
    return session, conn, broker


def feed(sock: socket.socket, chunks: list[bytes], pause: float = 0.02) -> threading.Thread:
    def run() -> None:
        for c in chunks:
            sock.sendall(c)
            time.sleep(pause)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos = [], 0
    for s in sizes:
        out.append(data[pos : pos + s])
        pos += s
    out.append(data[pos:])
    return [c for c in out if c]


def test_confirms_cut_across_reads_are_all_counted() -> None:
    session, conn, broker = session_awaiting(8)
    data = confirm(1) + confirm(3, multiple=True) + confirm(4) + confirm(6) + confirm(5)
    data += confirm(8, multiple=True)
    t = feed(broker, cut(data, [5, 30, 17, 21, 40, 1, 2]))
    session._await_confirms(conn, 0, time.monotonic() + 10)
    t.join()
    assert session._pending == set()
    assert conn.bytes_recv == 6  # every confirm frame counts as a sign of life
    assert conn.transport._read_buffer == b""


def test_waiting_stops_at_the_allowed_count_and_leaves_the_rest_unread() -> None:
    session, conn, broker = session_awaiting(4)
    broker.sendall(confirm(2, multiple=True))
    session._await_confirms(conn, 2, time.monotonic() + 10)
    assert session._pending == {3, 4}
    broker.sendall(confirm(3) + confirm(4))
    session._await_confirms(conn, 0, time.monotonic() + 10)
    assert session._pending == set()


def test_a_nack_among_acks_is_a_broker_error_counting_what_it_refused() -> None:
    session, conn, broker = session_awaiting(6)
    broker.sendall(confirm(2, multiple=True) + confirm(4, multiple=True, nack=True))
    with pytest.raises(BrokerError, match=r"nacked\) 2 messages"):
        session._await_confirms(conn, 0, time.monotonic() + 10)
    assert session._pending == {5, 6}


def test_other_frames_between_confirms_go_to_py_amqp_in_order() -> None:
    session, conn, broker = session_awaiting(4)
    data = confirm(1) + HEARTBEAT + confirm(2) + confirm(9, channel=2) + confirm(4, multiple=True)
    t = feed(broker, cut(data, [21, 3, 26, 10]))
    session._await_confirms(conn, 0, time.monotonic() + 10)
    t.join()
    assert session._pending == set()
    assert conn.others == [(8, 0), (1, 2)]
    assert conn.bytes_recv == 5


def test_a_closed_connection_is_a_broker_error() -> None:
    session, conn, broker = session_awaiting(2)
    broker.sendall(confirm(1))
    broker.close()
    session._conn = conn
    with pytest.raises((BrokerError, OSError)):
        session._await_confirms(conn, 0, time.monotonic() + 10)
    assert session._pending == {2}


def test_no_confirm_in_time_is_a_broker_error() -> None:
    session, conn, _broker = session_awaiting(1)
    with pytest.raises(BrokerError, match="not confirmed"):
        session._await_confirms(conn, 0, time.monotonic() + 0.3)
