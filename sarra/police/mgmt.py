"""A client of the RabbitMQ management HTTP API for sr_police: the calls it makes, over the
transport in :mod:`sarra.broker.management`.

Why HTTP and not ``rabbitmqctl``: the API works from any host that can reach the broker
(rabbitmqctl needs the node's Erlang cookie, so root on the broker host), it returns
structured data (users, permissions, queues with their consumer and message counts), and
every call is idempotent (PUT creates or updates). Only vhost ``/`` is used (spec 1.5).

Message and consumer counts come from the broker's statistics, refreshed every few seconds
(``collect_statistics_interval``): an audit sees a queue as it was a moment ago.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from sarra.broker.cluster import QUEUE_COLUMNS, ClusterView
from sarra.broker.management import DEFAULT_PORT, ManagementApi
from sarra.config.credentials import parse_url
from sarra.errors import ConfigError
from sarra.police.pump import Permission

VHOST = "/"


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


class Management(ManagementApi):
    """Calls to ``<base_url>/api/...`` as one (administrator) user."""

    def __init__(self, base_url: str, user: str, password: str, *, timeout: float = 15.0):
        try:
            url = parse_url(base_url)
        except ConfigError as exc:
            raise ConfigError(f"bad management_url: {exc}", option="management_url") from exc
        if url.scheme not in ("http", "https"):
            raise ConfigError("management_url must be http:// or https://", option="management_url")
        super().__init__(
            url.scheme,
            url.host.strip("[]"),
            url.effective_port or DEFAULT_PORT,
            url.path,
            user,
            password,
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"<Management {self.scheme}://{self.username}@{self.host}:{self.port}{self.prefix}>"

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

    def cluster(self) -> ClusterView:
        """The nodes, and where each ``q_`` queue lives (leader, replicas)."""
        nodes = self.request("GET", "nodes?columns=name,running") or []
        queues = self.request("GET", f"queues/{_q(VHOST)}?columns={QUEUE_COLUMNS}") or []
        return ClusterView.from_rows(nodes, queues)

    def delete_queue(self, name: str) -> None:
        self.request("DELETE", f"queues/{_q(VHOST)}/{_q(name)}")
