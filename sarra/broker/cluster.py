"""The broker cluster as the RabbitMQ management HTTP API shows it: its nodes, and for each of
sarra's queues (``q_*``) the node holding it (a classic queue) or its leader and replicas
(a quorum queue), with those whose node is down.

``sr status`` and ``sr_police audit`` report it. Read from ``GET /api/nodes`` (``name``,
``running``) and ``GET /api/queues`` (``name``, ``type``, ``node``; for a quorum queue also
``leader``, ``members`` and ``online``). Any node's API answers for the whole cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

from sarra.broker.management import ManagementApi

#: the queues reported: sarra's, by the pump's naming rule (q_<user>.)
QUEUE_PREFIX = "q_"
QUEUE_COLUMNS = "name,type,node,leader,members,online"


@dataclass(frozen=True, slots=True)
class NodeView:
    name: str
    running: bool


@dataclass(frozen=True, slots=True)
class QueueView:
    """Where a queue lives: ``leader`` is the node serving it (a classic queue's only node),
    ``members`` every node with a replica (the leader among them), ``online`` those up."""

    name: str
    type: str
    leader: str | None
    members: tuple[str, ...]
    online: tuple[str, ...]

    @property
    def replicas_down(self) -> tuple[str, ...]:
        return tuple(m for m in self.members if m not in self.online)


@dataclass(frozen=True, slots=True)
class ClusterView:
    nodes: tuple[NodeView, ...]
    queues: tuple[QueueView, ...]

    @classmethod
    def from_rows(
        cls, nodes: Sequence[Mapping[str, Any]], queues: Sequence[Mapping[str, Any]]
    ) -> ClusterView:
        """The view of the API's ``/api/nodes`` and ``/api/queues`` rows (other queues than
        ``q_*`` left out)."""
        node_views = tuple(
            NodeView(str(n["name"]), bool(n.get("running"))) for n in nodes if "name" in n
        )
        running = {n.name for n in node_views if n.running}
        views = []
        for q in queues:
            name = str(q.get("name", ""))
            if not name.startswith(QUEUE_PREFIX):
                continue
            kind = str(q.get("type") or "classic")
            leader = q.get("leader") or q.get("node")
            members = tuple(str(m) for m in (q.get("members") or ([leader] if leader else [])))
            if "online" in q and kind == "quorum":
                online = tuple(str(m) for m in q.get("online") or ())
            else:
                online = tuple(m for m in members if m in running)
            views.append(QueueView(name, kind, str(leader) if leader else None, members, online))
        return cls(node_views, tuple(sorted(views, key=lambda v: v.name)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": [asdict(n) for n in self.nodes],
            "queues": [{**asdict(q), "replicas_down": list(q.replicas_down)} for q in self.queues],
        }

    def lines(self) -> list[str]:
        """Text for a person: a line per node, then a line per queue."""
        out = [f"broker cluster: {len(self.nodes)} node(s)"]
        out += [f"  node {n.name}: {'running' if n.running else 'DOWN'}" for n in self.nodes]
        for q in self.queues:
            others = [m for m in q.members if m != q.leader]
            where = f"leader {q.leader or '-'}"
            if q.type == "quorum":
                where += f", replicas {', '.join(others) or '-'}"
            down = f"; DOWN: {', '.join(q.replicas_down)}" if q.replicas_down else ""
            out.append(f"  queue {q.name} ({q.type}): {where}{down}")
        return out


def read_cluster(base_url: str, user: str, password: str, *, timeout: float = 15.0) -> ClusterView:
    """The cluster seen through the management API at ``base_url`` (http[s]://host:port/).

    Raises:
        AccessRefused: the API refused the user (401/403; ``/api/nodes`` needs the
            ``monitoring`` or ``administrator`` tag).
        BrokerError: the API cannot be reached or answered with another error.
    """
    api = ManagementApi.from_url(base_url, user, password, timeout=timeout)
    return ClusterView.from_rows(
        api.rows("nodes?columns=name,running"),
        api.rows(f"queues/{quote('/', safe='')}?columns={QUEUE_COLUMNS}"),
    )
