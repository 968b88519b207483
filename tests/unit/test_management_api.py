"""The management API transport shared by ``sr status`` and ``sr_police``
(:mod:`sarra.broker.management`), against a stdlib HTTP server on loopback."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from sarra.broker.management import DEFAULT_PORT, ManagementApi
from sarra.errors import AccessRefused, BrokerError

#: path -> (status, body) the server answers; anything else is 404
REPLIES: dict[str, tuple[int, bytes]] = {
    "/pfx/api/nodes": (200, b'[{"name": "rabbit@a", "running": true}]'),
    "/pfx/api/whoami": (200, b'{"name": "admin"}'),
    "/pfx/api/empty": (204, b""),
    "/pfx/api/refused": (403, b"no"),
    "/pfx/api/broken": (500, b"internal trouble"),
    "/pfx/api/garbage": (200, b"<html>"),
}


class _Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, str | None, bytes]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path, self.headers.get("Authorization"), body))
        status, reply = REPLIES.get(self.path.split("?")[0], (404, b"not found"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[ManagementApi]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.seen = []
    try:
        yield ManagementApi.from_url(
            f"http://127.0.0.1:{server.server_port}/pfx/", "admin", "s3cret", timeout=10
        )
    finally:
        server.shutdown()
        server.server_close()


def test_a_call_sends_basic_auth_and_json_and_decodes_the_reply(api: ManagementApi) -> None:
    assert api.request("GET", "whoami") == {"name": "admin"}
    with pytest.raises(BrokerError, match=r"PUT /pfx/api/users/bob .*: 404"):
        api.request("PUT", "users/bob", {"tags": ""})  # only a GET 404 means "nothing there"
    token = "Basic " + base64.b64encode(b"admin:s3cret").decode()
    assert _Handler.seen == [
        ("GET", "/pfx/api/whoami", token, b""),
        ("PUT", "/pfx/api/users/bob", token, json.dumps({"tags": ""}).encode()),
    ]


def test_statuses_map_to_none_or_the_error_each_means(api: ManagementApi) -> None:
    assert api.request("GET", "nowhere") is None  # a GET 404: nothing there
    assert api.request("DELETE", "empty") is None  # an empty reply
    with pytest.raises(BrokerError, match="404"):
        api.request("GET", "nowhere", missing_ok=False)
    with pytest.raises(AccessRefused, match=r"refused GET /pfx/api/refused .*'admin' \(403\)"):
        api.request("GET", "refused")
    with pytest.raises(BrokerError, match="500 internal trouble"):
        api.request("GET", "broken")
    with pytest.raises(BrokerError, match="not JSON"):
        api.request("GET", "garbage")


def test_rows_wants_a_list(api: ManagementApi) -> None:
    assert api.rows("nodes?columns=name,running") == [{"name": "rabbit@a", "running": True}]
    assert _Handler.seen[-1][1] == "/pfx/api/nodes?columns=name,running"
    with pytest.raises(BrokerError, match="not a list"):
        api.rows("whoami")
    with pytest.raises(BrokerError, match="404"):
        api.rows("nowhere")


def test_an_unreachable_api_and_a_url_that_is_not_http_are_broker_errors() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    api = ManagementApi.from_url(f"http://127.0.0.1:{port}/", "admin", "x", timeout=5)
    where = rf"\(GET /api/nodes on 127\.0\.0\.1:{port}\)"
    with pytest.raises(BrokerError, match=rf"unreachable {where}"):
        api.rows("nodes")
    for url in ("amqp://host/", "http:///nohost", "nothing"):
        with pytest.raises(BrokerError, match="not http"):
            ManagementApi.from_url(url, "admin", "x")
    assert ManagementApi.from_url("https://h/", "u", "p").port == DEFAULT_PORT
