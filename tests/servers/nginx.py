"""Throwaway HTTP servers for the test suite (a pytest plugin).

``nginx``: a real nginx on a free loopback port (plain HTTP, and HTTPS with a certificate
signed by a throwaway test CA, ``ca_file``), serving ``root``; everything under ``/private/``
needs HTTP Basic auth as ``auth_user``/``auth_password``; directories under ``/listing/`` are
listed (``autoindex on``, for sr_poll). ``broken_http``: a small Python
server whose behaviour is chosen by path prefix, for fault tests:

* ``/norange/<path>``: ignores Range and answers 200 with the whole file;
* ``/truncate/<path>``: headers as usual (200 or 206) but only half the body, then closes;
* ``/corrupt/<path>``: as usual, with the first byte of the body flipped;
* ``/shiftrange/<path>``: answers a Range with 206 but the range one byte further on;
* ``/slow/<path>``: as usual, but waits ``slow_seconds`` (settable while it runs) halfway
  through the body, so the client holds a partly written file meanwhile;
* ``/status/<code>/...``: answers that status with a short body;
* anything else: the file under ``root`` with proper Range support.

It counts the TCP connections it accepted and can close all idle kept-alive connections
(``drop_connections``) to test reconnection.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

NGINX = "/usr/sbin/nginx"


def free_port() -> int:
    """A loopback TCP port free at the time of asking."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    """Wait until something accepts connections on 127.0.0.1:port (at most 20 s)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            text = log.read_text(errors="replace") if log and log.exists() else ""
            pytest.fail(f"server exited with {process.returncode} before listening:\n{text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listens on 127.0.0.1:{port} after 20 s")


@dataclass(frozen=True)
class Nginx:
    port: int
    tls_port: int
    root: Path
    ca_file: Path
    auth_user: str = "tester"
    auth_password: str = "open sesame"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def https_base_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"


_NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    keepalive_timeout 60s;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        root {www};
        location /private/ {{
            auth_basic "sarra test";
            auth_basic_user_file {dir}/htpasswd;
        }}
        # directory index pages for sr_poll (times in UTC, exact sizes: the defaults)
        location /listing/ {{
            autoindex on;
        }}
    }}
}}
"""


def _openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], check=True, capture_output=True, text=True)
    return done.stdout


def _test_ca_and_server_cert(directory: Path) -> None:
    """``ca.pem`` (a throwaway CA) and ``cert.pem``/``key.pem`` for 127.0.0.1 signed by it."""
    d = str(directory)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-days", "2", "-subj", "/CN=sarra test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem",
    )  # fmt: skip
    _openssl(
        "req", "-new", *ec, "-subj", "/CN=127.0.0.1",
        "-keyout", f"{d}/key.pem", "-out", f"{d}/server.csr",
    )  # fmt: skip
    (directory / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", f"{d}/server.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", f"{d}/server.ext", "-out", f"{d}/cert.pem",
    )  # fmt: skip


def _htpasswd(directory: Path, user: str, password: str) -> None:
    hashed = _openssl("passwd", "-apr1", password).strip()
    (directory / "htpasswd").write_text(f"{user}:{hashed}\n")


def start_nginx(directory: Path, www: Path | None = None) -> tuple[Nginx, Callable[[], None]]:
    """Start a throwaway nginx in ``directory`` serving ``www`` (default ``directory/www``).

    Returns the server description and a function that stops it. Used by the fixture and by
    ``scripts/demo``.
    """
    if shutil.which(NGINX) is None and shutil.which("nginx") is None:
        raise RuntimeError("nginx is not installed: run `apt-get install -y nginx`")
    binary = NGINX if shutil.which(NGINX) else str(shutil.which("nginx"))
    directory.mkdir(parents=True, exist_ok=True)
    root = www if www is not None else directory / "www"
    root.mkdir(parents=True, exist_ok=True)
    (directory / "tmp").mkdir(exist_ok=True)
    _test_ca_and_server_cert(directory)
    _htpasswd(directory, Nginx.auth_user, Nginx.auth_password)
    port, tls_port = free_port(), free_port()
    conf = directory / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(dir=directory, www=root, port=port, tls_port=tls_port))
    log = directory / "error.log"
    process = subprocess.Popen(
        [binary, "-c", str(conf), "-p", str(directory), "-e", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    try:
        wait_for_port(port, process, log)
        wait_for_port(tls_port, process, log)
    except BaseException:
        stop()
        raise
    return Nginx(port, tls_port, root, directory / "ca.pem"), stop


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """A throwaway nginx serving ``root`` on 127.0.0.1 (HTTP and HTTPS), stopped at the end."""
    try:
        server, stop = start_nginx(tmp_path_factory.mktemp("nginx"))
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield server
    finally:
        stop()


# -- broken_http ----------------------------------------------------------------------------

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class BrokenHttp:
    port: int
    root: Path
    server: ThreadingHTTPServer
    connections: list[socket.socket] = field(default_factory=list)
    accepted: int = 0
    #: how long ``/slow/`` answers pause mid-body (a test may change it any time)
    slow_seconds: float = 0.0
    last_headers: dict[str, str] = field(default_factory=dict)
    #: while set, files under this directory (relative to ``root``) answer 404 as if absent
    absent: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def drop_connections(self) -> None:
        """Close every open client connection from the server side."""
        with self.lock:
            sockets, self.connections = self.connections, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    state: BrokenHttp

    def setup(self) -> None:
        super().setup()
        with self.state.lock:
            self.state.accepted += 1
            self.state.connections.append(self.connection)

    def handle(self) -> None:
        # The client or drop_connections may close the socket at any time: nothing to do then.
        with contextlib.suppress(OSError):
            super().handle()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send_status(self, code: int) -> None:
        body = f"status {code}\n".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self.state.last_headers = dict(self.headers.items())
        path = unquote(urlsplit(self.path).path)
        status = re.fullmatch(r"/status/(\d{3})(/.*)?", path)
        if status:
            self._send_status(int(status[1]))
            return
        mode, _, rest = path.lstrip("/").partition("/")
        if mode not in ("norange", "truncate", "corrupt", "shiftrange", "slow"):
            mode, rest = "", path.lstrip("/")
        file = (self.state.root / rest).resolve()
        absent = self.state.absent
        hidden = absent and file.is_relative_to((self.state.root / absent).resolve())
        if hidden or not file.is_relative_to(self.state.root.resolve()) or not file.is_file():
            self._send_status(404)
            return
        data = file.read_bytes()
        first, last, code = 0, len(data) - 1, 200
        asked = _RANGE.fullmatch(self.headers.get("Range", ""))
        if asked and mode != "norange":
            first = int(asked[1])
            last = min(int(asked[2]), len(data) - 1) if asked[2] else len(data) - 1
            if first >= len(data) or last < first:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            code = 206
            if mode == "shiftrange" and last + 1 < len(data):
                first, last = first + 1, last + 1
        body = data[first : last + 1]
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        if code == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        self.end_headers()
        if self.command == "HEAD":
            return
        if mode == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if mode == "slow":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            time.sleep(self.state.slow_seconds)
            body = body[len(body) // 2 :]
        if mode == "corrupt" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        self.wfile.write(body)


@pytest.fixture(scope="session")
def broken_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokenHttp]:
    """A fault-injecting HTTP server on a free loopback port (see the module docstring)."""
    root = tmp_path_factory.mktemp("broken_http")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    state = BrokenHttp(port=server.server_address[1], root=root, server=server)
    handler = type("Handler", (_Handler,), {"state": state})
    server.RequestHandlerClass = handler
    thread = threading.Thread(target=server.serve_forever, name="broken_http", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        state.drop_connections()
        server.server_close()
        thread.join(timeout=10)
