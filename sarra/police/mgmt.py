"""A small client of the RabbitMQ management HTTP API (stdlib ``http.client`` + ``json``).

Why HTTP and not ``rabbitmqctl``: the API works from any host that can reach the broker
(rabbitmqctl needs the node's Erlang cookie, so root on the broker host), it returns
structured data (users, permissions, queues with their consumer and message counts), and
every call is idempotent (PUT creates or updates). Only vhost ``/`` is used (spec 1.5).

Message and consumer counts come from the broker's statistics, refreshed every few seconds
(``collect_statistics_interval``): an audit sees a queue as it was a moment ago.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import urllib.parse
from typing import Any

from sarra.config.credentials import parse_url
from sarra.errors import AccessRefused, BrokerError, ConfigError
from sarra.police.pump import Permission

VHOST = "/"


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


class Management:
    """Calls to ``<base_url>/api/...`` as one (administrator) user."""

    def __init__(self, base_url: str, user: str, password: str, *, timeout: float = 15.0):
        try:
            url = parse_url(base_url)
        except ConfigError as exc:
            raise ConfigError(f"bad management_url: {exc}", option="management_url") from exc
        if url.scheme not in ("http", "https"):
            raise ConfigError("management_url must be http:// or https://", option="management_url")
        self.scheme = url.scheme
        self.host = url.host.strip("[]")
        self.port = url.effective_port or 15672
        self.prefix = url.path.rstrip("/")
        self.username = user
        self.timeout = timeout
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._auth = f"Basic {token}"

    def __repr__(self) -> str:
        return f"<Management {self.scheme}://{self.username}@{self.host}:{self.port}{self.prefix}>"

    # -- transport ---------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One API call; the decoded JSON reply, or None for an empty reply or a GET 404.

        Raises:
            AccessRefused: 401 (login refused) or 403 (not allowed).
            BrokerError: the API cannot be reached, or any other error status.
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
        where = f"{method} {self.prefix}/api/{path}"
        try:
            conn.request(method, f"{self.prefix}/api/{path}", body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise BrokerError(
                f"management API {self.host}:{self.port} unreachable ({where}): {exc}"
            ) from exc
        finally:
            conn.close()
        if resp.status in (401, 403):
            raise AccessRefused(
                f"management API refused {where} for user {self.username!r} ({resp.status})"
            )
        if resp.status == 404 and method == "GET":
            return None
        if resp.status >= 300:
            text = payload.decode(errors="replace")[:300]
            raise BrokerError(f"management API {where}: {resp.status} {text}")
        if not payload.strip():
            return None
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise BrokerError(f"management API {where}: reply is not JSON") from exc

    # -- users and permissions ---------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        reply: dict[str, Any] = self.request("GET", "whoami")
        return reply

    def users(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "users") or [])

    def user(self, name: str) -> dict[str, Any] | None:
        reply: dict[str, Any] | None = self.request("GET", f"users/{_q(name)}")
        return reply

    def put_user(self, name: str, password: str, tags: str) -> None:
        self.request("PUT", f"users/{_q(name)}", {"password": password, "tags": tags})

    def delete_user(self, name: str) -> None:
        self.request("DELETE", f"users/{_q(name)}")

    def permissions(self) -> dict[str, Permission]:
        """Permissions on vhost ``/`` by user name."""
        rows = self.request("GET", f"vhosts/{_q(VHOST)}/permissions") or []
        return {r["user"]: Permission(r["configure"], r["write"], r["read"]) for r in rows}

    def put_permission(self, user: str, perm: Permission) -> None:
        body = {"configure": perm.configure, "write": perm.write, "read": perm.read}
        self.request("PUT", f"permissions/{_q(VHOST)}/{_q(user)}", body)

    # -- exchanges and queues ----------------------------------------------------------
    def exchanges(self) -> list[dict[str, Any]]:
        return list(self.request("GET", f"exchanges/{_q(VHOST)}") or [])

    def put_exchange(self, name: str) -> None:
        """Declare a durable topic exchange (spec 1.1); idempotent."""
        body = {"type": "topic", "durable": True, "auto_delete": False, "internal": False}
        self.request("PUT", f"exchanges/{_q(VHOST)}/{_q(name)}", body)

    def delete_exchange(self, name: str) -> None:
        self.request("DELETE", f"exchanges/{_q(VHOST)}/{_q(name)}")

    def queues(self) -> list[dict[str, Any]]:
        """Each queue with at least ``name``, ``messages`` and ``consumers``."""
        rows = self.request(
            "GET", f"queues/{_q(VHOST)}?columns=name,messages,messages_ready,consumers,durable"
        )
        return list(rows or [])

    def delete_queue(self, name: str) -> None:
        self.request("DELETE", f"queues/{_q(VHOST)}/{_q(name)}")
