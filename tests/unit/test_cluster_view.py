"""The election token's wire form and the cluster view read from the management API's rows
(nodes; q_ queues with leader, members, online), with the audit's findings on it."""

from __future__ import annotations

import socket
import zlib
from pathlib import Path

import pytest

from sarra.broker.cluster import ClusterView
from sarra.broker.election import Token
from sarra.cli.clusterstatus import cluster_section
from sarra.police.audit import ERROR, WARNING, check_cluster

NODES = [
    {"name": "rabbit@a", "running": True},
    {"name": "rabbit@b", "running": True},
    {"name": "rabbit@c", "running": False},
]
QUEUES = [
    {
        "name": "q_bob.sr_subscribe.feed",
        "type": "quorum",
        "node": "rabbit@a",
        "leader": "rabbit@a",
        "members": ["rabbit@a", "rabbit@b", "rabbit@c"],
        "online": ["rabbit@a", "rabbit@b"],
    },
    {"name": "q_bob.sr_sender.out", "type": "classic", "node": "rabbit@c"},
    {"name": "q_bob.sr_poll.p.election", "type": "classic", "node": "rabbit@b"},
    {"name": "amq.gen-xyz", "type": "classic", "node": "rabbit@a"},
]


def test_a_token_reads_back_as_written_and_anything_else_is_refused() -> None:
    token = Token(7, "host:1", '{"seen": {}}')
    assert Token.decode(token.encode()) == token
    for body in (b"", b"plain text", Token(1, "h", "").encode()[:-3], zlib.compress(b"[1]")):
        with pytest.raises(ValueError, match="not an election token"):
            Token.decode(body)


def test_the_view_names_each_q_queues_leader_replicas_and_those_down() -> None:
    view = ClusterView.from_rows(NODES, QUEUES)
    assert [n.name for n in view.nodes if not n.running] == ["rabbit@c"]
    by_name = {q.name: q for q in view.queues}
    assert sorted(by_name) == [
        "q_bob.sr_poll.p.election",
        "q_bob.sr_sender.out",
        "q_bob.sr_subscribe.feed",
    ]
    feed = by_name["q_bob.sr_subscribe.feed"]
    assert feed.leader == "rabbit@a" and feed.replicas_down == ("rabbit@c",)
    # a classic queue lives on its node: down with it
    assert by_name["q_bob.sr_sender.out"].replicas_down == ("rabbit@c",)
    assert by_name["q_bob.sr_poll.p.election"].replicas_down == ()
    text = "\n".join(view.lines())
    assert "node rabbit@c: DOWN" in text
    assert (
        "queue q_bob.sr_subscribe.feed (quorum): leader rabbit@a, replicas rabbit@b, rabbit@c; "
        "DOWN: rabbit@c" in text
    )
    assert view.to_dict()["queues"][2]["replicas_down"] == ["rabbit@c"]


def test_the_audit_flags_a_node_down_and_each_queue_with_a_replica_down() -> None:
    found = {
        (f.check, f.subject, f.severity)
        for f in check_cluster(ClusterView.from_rows(NODES, QUEUES))
    }
    assert found == {
        ("cluster_node_down", "rabbit@c", ERROR),
        ("queue_replica_down", "q_bob.sr_subscribe.feed", WARNING),
        ("queue_replica_down", "q_bob.sr_sender.out", WARNING),
    }
    healthy = [dict(n, running=True) for n in NODES]
    queues = [dict(q, online=q.get("members", [])) for q in QUEUES]
    assert check_cluster(ClusterView.from_rows(healthy, queues)) == []


def test_sr_status_has_no_cluster_section_without_admin_and_says_why_it_cannot_tell(
    tmp_path: Path,
) -> None:
    assert cluster_section(tmp_path) == (None, [])
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "admin.conf").write_text(
        f"admin amqp://boss@127.0.0.1/\nmanagement_url http://127.0.0.1:{port}/\n"
    )
    cred = tmp_path / "credentials.conf"
    cred.write_text("amqp://boss:Sekr3t@127.0.0.1/\n")
    cred.chmod(0o600)
    doc, lines = cluster_section(tmp_path)
    assert doc is not None and "unreachable" in doc["error"]
    assert lines == [f"broker cluster: cannot tell: {doc['error']}"]
    assert "Sekr3t" not in repr((doc, lines))
    cred.write_text("")
    doc, _lines = cluster_section(tmp_path)
    assert doc == {"error": "no password for the admin account boss in credentials.conf"}
