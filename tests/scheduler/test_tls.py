"""An https master verified against a CA, and the API under a path prefix (behind a proxy).

The CA and the master's certificate are made here with openssl; the test master serves TLS
with Python's ssl module and answers only under its prefix.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sarra.scheduler.mesos import MesosClient, Subscription, _open
from tests.scheduler.conftest import SLEEPER, Runner, spec_text, wait_for
from tests.scheduler.fake_master import AgentSpec, Cluster


def make_ca(d: Path, name: str) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) for 127.0.0.1, signed by a new CA."""
    ca_key, ca_crt = d / f"{name}-ca.key", d / f"{name}-ca.crt"
    key, csr, crt = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt"
    ext = d / f"{name}.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
        str(ca_crt), "-days", "2", "-subj", f"/CN={name} test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return ca_crt, crt, key


def server_context(crt: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    return ctx


def test_an_https_master_under_a_path_prefix_is_used_when_its_ca_is_configured(
    tmp_path: Path, start_scheduler: Callable[[str], Runner]
) -> None:
    ca, crt, key = make_ca(tmp_path, "good")
    cluster = Cluster(tmp_path / "agents", [AgentSpec("agent0.test")])
    try:
        # two masters behind TLS, each under /mesos: the standby one redirects to the leader
        leader = cluster.add_master(tls=server_context(crt, key), prefix="/mesos")
        other = cluster.add_master(tls=server_context(crt, key), prefix="/mesos")
        assert leader.url.startswith("https://127.0.0.1:") and leader.url.endswith("/mesos")
        url = f"https://127.0.0.1:{other.port},127.0.0.1:{leader.port}/mesos"
        text = spec_text(url, tmp_path / "st", SLEEPER.format(count=2), f'master_ca_file = "{ca}"')
        r = start_scheduler(text)
        wait_for(lambda: len(cluster.running_tasks()) == 2, 30, "2 workers through TLS")
        assert r.sched.sub.base == leader.url  # followed the redirect, kept https and prefix
        kinds = [k for _, k in cluster.calls]
        assert "SUBSCRIBE" in kinds and "ACCEPT" in kinds
        assert leader.tls_failures == 0 and other.tls_failures == 0
        wait_for(lambda: r.service.status.get("master") == leader.url, 10, "status: the master")
    finally:
        cluster.close()


def test_an_https_master_signed_by_another_ca_is_not_trusted(
    tmp_path: Path, start_scheduler: Callable[[str], Runner]
) -> None:
    _, crt, key = make_ca(tmp_path, "master")
    other_ca, _, _ = make_ca(tmp_path, "other")
    cluster = Cluster(tmp_path / "agents", [AgentSpec("agent0.test")])
    try:
        m = cluster.add_master(tls=server_context(crt, key))
        text = spec_text(m.url, tmp_path / "st", SLEEPER.format(count=1),
                         f'master_ca_file = "{other_ca}"')  # fmt: skip
        r = start_scheduler(text)
        wait_for(lambda: m.tls_failures >= 2, 30, "handshakes refused by the scheduler")
        assert not cluster.calls and not cluster.launches  # nothing sent to an unverified master
        assert r.service.leading and r.sched.sub is None
    finally:
        cluster.close()


def test_the_api_path_prefix_is_required_by_a_master_behind_a_proxy(
    tmp_path: Path, start_scheduler: Callable[[str], Runner]
) -> None:
    cluster = Cluster(tmp_path / "agents", [AgentSpec("agent0.test")])
    try:
        m = cluster.add_master(prefix="/proxy/mesos")
        bare = m.url[: -len("/proxy/mesos")]
        r = start_scheduler(spec_text(bare, tmp_path / "st1", SLEEPER.format(count=1)))
        time.sleep(2.0)
        assert not cluster.calls  # without the prefix the proxy answers 404 to everything
        assert r.service.leading and r.sched.sub is None
        r.stop()
        r2 = start_scheduler(spec_text(m.url, tmp_path / "st2", SLEEPER.format(count=1)))
        wait_for(lambda: len(cluster.running_tasks()) == 1, 30, "the worker via the prefix")
        assert r2.sched.sub.base == m.url
    finally:
        cluster.close()


def test_a_closed_tls_subscription_releases_its_socket_at_once(tmp_path: Path) -> None:
    """The stream's descriptor goes with ``close()``, not later with the garbage collector.

    The response object kept the TLS socket open after the connection was closed: the
    descriptor leaked until collected (seen as a ResourceWarning in another test's set-up).
    """
    ca, crt, key = make_ca(tmp_path, "fd")
    cluster = Cluster(tmp_path / "agents", [AgentSpec("agent0.test")])
    try:
        m = cluster.add_master(tls=server_context(crt, key))
        info = {
            "user": getpass.getuser(), "name": "t", "roles": ["*"], "failover_timeout": 0.0,
            "capabilities": [{"type": "MULTI_ROLE"}],
        }  # fmt: skip
        for started in (False, True):  # closed before the reader thread runs, and by it
            client = MesosClient(m.url, 5.0, ca_file=str(ca))
            before = set(os.listdir("/proc/self/fd"))
            if started:
                sub, _ = client.subscribe(info, None)
            else:
                base, conn, resp, sock = _open(
                    m.url, json.dumps({"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
                                      ).encode(),
                    {"Content-Type": "application/json"}, 5.0, client._tls,
                )  # fmt: skip
                sub = Subscription(base, conn, resp, sock, resp.getheader("Mesos-Stream-Id") or "")
                assert sub.first_event()["type"] in ("SUBSCRIBED", "ERROR")  # the stream is open
            assert set(os.listdir("/proc/self/fd")) - before  # the stream holds a descriptor
            sub.close()
            wait_for(lambda b=before: not set(os.listdir("/proc/self/fd")) - b, 10, "fd released")
    finally:
        cluster.close()


@pytest.mark.parametrize(
    ("framing", "body", "hangs_up"),
    [
        (b"Transfer-Encoding: chunked\r\n", b"", True),
        (b"Connection: close\r\n", b"", True),
        (b"Transfer-Encoding: chunked\r\n", b"b\r\n9\nnot json!\r\n", False),
    ],
    ids=["chunked-eof", "eof", "not-json"],
)
def test_a_subscription_without_a_first_event_leaves_no_socket_open(
    tmp_path: Path, framing: bytes, body: bytes, hangs_up: bool
) -> None:
    """The master answers 200 but no SUBSCRIBED: it hangs up, or its first record is garbage.

    ``subscribe`` fails with MasterUnavailable and the stream's descriptor is closed before
    it returns (a stream still open from the master's side was left to the garbage collector).
    """
    import socket
    import threading

    from sarra.scheduler.mesos import MasterUnavailable

    ca, crt, key = make_ca(tmp_path, "eof")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    served: list[int] = []

    def serve() -> None:
        with listener, server_context(crt, key).wrap_socket(listener, server_side=True) as tls:
            conn, _ = tls.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                head, _, got = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(got) < length:  # all of it read: closing then sends no reset
                    got += conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Mesos-Stream-Id: s1\r\n" + framing + b"\r\n" + body)  # fmt: skip
                served.append(1)
                if not hangs_up:  # keep the stream open until the scheduler closes it
                    conn.settimeout(10)
                    with contextlib.suppress(OSError):
                        while conn.recv(4096):
                            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = MesosClient(f"https://127.0.0.1:{port}", 5.0, ca_file=str(ca))
    info = {"user": getpass.getuser(), "name": "t", "roles": ["*"]}
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(MasterUnavailable, match=r"closed before|Incomplete|not JSON") as caught:
        client.subscribe(info, None)
    t.join(10)
    assert not t.is_alive()  # the master saw the scheduler close the stream
    assert served == [1]  # the request reached the master and got its answer
    # ``caught`` keeps the traceback, and so every frame's locals, alive: only an explicit
    # close can have released the descriptor by now.
    assert caught.tb is not None
    wait_for(lambda: not set(os.listdir("/proc/self/fd")) - before, 5, "stream fd released")


def test_a_master_resetting_during_the_tls_wrap_leaves_no_socket_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A master whose listening socket closes between the scheduler's connect and its wrap.

    The kernel resets the connection that was never accepted; CPython's ``SSLSocket``
    creation re-raises that reset without closing the TLS socket it made. ``_open`` closes
    it (it used to stay open as long as the exception, kept by a log record, then surfaced
    as a ResourceWarning in another test's set-up).
    """
    import http.client
    import socket

    from sarra.scheduler.mesos import MasterUnavailable, close_stranded_tls_socket

    listener = socket.create_server(("127.0.0.1", 0), backlog=1)
    port = listener.getsockname()[1]
    connect = socket.create_connection

    def connect_then_master_stops(*args: object, **kwargs: object) -> socket.socket:
        sock = connect(*args, **kwargs)  # type: ignore[arg-type]
        listener.close()  # the master stops before accepting: the kernel resets the peer
        time.sleep(0.1)
        return sock

    monkeypatch.setattr(http.client.socket, "create_connection", connect_then_master_stops)
    with pytest.raises(MasterUnavailable, match="reset") as caught:
        _open(f"https://127.0.0.1:{port}", b"{}", {}, 5.0, ssl.create_default_context())
    # The reset's traceback (kept alive here) holds the TLS socket CPython made: closed.
    stranded = []
    tb = caught.value.__cause__.__traceback__ if caught.value.__cause__ else None
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_create":
            stranded.append(tb.tb_frame.f_locals["self"])
        tb = tb.tb_next
    assert [type(s) for s in stranded] == [ssl.SSLSocket]  # the path CPython leaves open
    assert stranded[0].fileno() == -1
    assert not close_stranded_tls_socket(caught.value.__cause__)  # nothing left to close


def test_only_the_socket_of_a_failed_tls_wrap_is_closed() -> None:
    """The helper leaves alone every other socket of the failed call (a listening one)."""
    import socket

    from sarra.scheduler.mesos import close_stranded_tls_socket

    keep = socket.create_server(("127.0.0.1", 0))
    try:
        try:
            _ = keep
            raise ConnectionResetError(104, "reset")
        except OSError as e:
            assert not close_stranded_tls_socket(e)
        assert keep.fileno() != -1
    finally:
        keep.close()
