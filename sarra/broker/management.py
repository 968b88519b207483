"""The transport of the RabbitMQ management HTTP API (stdlib ``http.client`` + ``json``).

One call is one request to ``<scheme>://<host>:<port><prefix>/api/<path>`` with HTTP basic
authentication; the reply is decoded JSON. Shared by ``sr status`` (the cluster view,
:mod:`sarra.broker.cluster`) and ``sr_police`` (:mod:`sarra.police.mgmt`), which each add the
calls they make.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from typing import Any
from urllib.parse import urlsplit

from sarra.errors import AccessRefused, BrokerError

#: the management plugin's port when the URL names none
DEFAULT_PORT = 15672


class ManagementApi:
    """Calls to ``<prefix>/api/...`` on one management listener, as one user."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        prefix: str,
        user: str,
        password: str,
        *,
        timeout: float = 15.0,
    ):
        self.scheme = scheme
        self.host = host
        self.port = port
        self.prefix = prefix.rstrip("/")
        self.username = user
        self.timeout = timeout
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._auth = f"Basic {token}"

    @classmethod
    def from_url(
        cls, base_url: str, user: str, password: str, *, timeout: float = 15.0
    ) -> ManagementApi:
        """The API at ``base_url`` (http[s]://host[:port][/prefix]).

        Raises:
            BrokerError: the URL is not of that form.
        """
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise BrokerError(f"management URL {base_url!r}: not http(s)://host[:port]/")
        port = url.port or DEFAULT_PORT
        return cls(url.scheme, url.hostname, port, url.path, user, password, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, *, missing_ok: bool = True) -> Any:
        """One API call; the decoded JSON reply, or None for an empty reply (or, with
        ``missing_ok``, a GET answered 404).

        Raises:
            AccessRefused: 401 (login refused) or 403 (not allowed).
            BrokerError: the API cannot be reached, or any other error status, or a reply
                that is not JSON.
        """
        conn: http.client.HTTPConnection
        if self.scheme == "https":
            ctx = ssl.create_default_context()
            conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=ctx
            )
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        where = f"{method} {self.prefix}/api/{path.split('?')[0]} on {self.host}:{self.port}"
        try:
            conn.request(method, f"{self.prefix}/api/{path}", body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise BrokerError(f"management API unreachable ({where}): {exc}") from exc
        finally:
            conn.close()
        if resp.status in (401, 403):
            raise AccessRefused(
                f"management API refused {where} for user {self.username!r} ({resp.status})"
            )
        if resp.status == 404 and method == "GET" and missing_ok:
            return None
        if resp.status >= 300:
            text = payload.decode(errors="replace")[:300]
            raise BrokerError(f"management API {where}: {resp.status} {text}".rstrip())
        if not payload.strip():
            return None
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise BrokerError(f"management API {where}: reply is not JSON") from exc

    def rows(self, path: str) -> list[Any]:
        """A GET whose reply must be a JSON list (a 404 or an empty reply is an error).

        Raises:
            AccessRefused, BrokerError: as :meth:`request`; BrokerError also when the reply
                is not a list.
        """
        reply = self.request("GET", path, missing_ok=False)
        if not isinstance(reply, list):
            where = f"GET {self.prefix}/api/{path.split('?')[0]} on {self.host}:{self.port}"
            raise BrokerError(f"management API {where}: not a list")
        return reply
