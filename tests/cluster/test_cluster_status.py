"""``sr status`` and ``sr_police audit`` report the broker cluster through the management API:
its three nodes, each ``q_`` queue's leader and replicas, and, with a node stopped, that
node down and the quorum queue's replica on it down."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from sarra.broker import BrokerSession, QueueSpec
from sarra.cli import pump
from sarra.config.credentials import CredentialStore, to_broker_url
from sarra.police import run
from tests.integration.flowkit import unique
from tests.servers.rabbitmq import RabbitNode

pytestmark = [pytest.mark.timeout(180)]


def sr_status(env: dict[str, str], *extra: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = pump.main([*extra, "status"], out=out, err=err)
    return rc, out.getvalue() + err.getvalue()


def test_status_and_audit_show_the_nodes_and_each_queues_leader_and_replicas(  # type: ignore[no-untyped-def]
    cluster: list[RabbitNode], tmp_path: Path, monkeypatch
) -> None:
    tag = unique("clst")
    config = tmp_path / "config"
    config.mkdir()
    ports = ",".join(f"127.0.0.1:{n.port}" for n in cluster)
    (config / "admin.conf").write_text(
        f"admin amqp://guest@{ports}/\nmanagement_url http://127.0.0.1:{cluster[1].mgmt_port}/\n"
    )
    cred = config / "credentials.conf"
    cred.write_text("".join(f"amqp://guest:guest@127.0.0.1:{n.port}/\n" for n in cluster))
    cred.chmod(0o600)
    env = {"SR_CONFIG_DIR": str(config), "SR_STATE_DIR": str(tmp_path / "state")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    quorum, classic = f"q_guest.{tag}.quorum", f"q_guest.{tag}.classic"
    url = to_broker_url(f"amqp://guest@127.0.0.1:{cluster[0].port}/", CredentialStore.load(cred))
    session = BrokerSession(url, connect_timeout=5)
    session.connect()
    session.declare_queue(QueueSpec(quorum, (), queue_type="quorum"))
    session.declare_queue(QueueSpec(classic, ()))
    session.close()
    names = sorted(n.nodename for n in cluster)
    try:
        rc, text = sr_status(env, "--json")
        assert rc == 0, text
        doc = json.loads(text)
        assert sorted(n["name"] for n in doc["cluster"]["nodes"]) == names, text
        assert all(n["running"] for n in doc["cluster"]["nodes"])
        queues = {q["name"]: q for q in doc["cluster"]["queues"]}
        # declared through the first node: led from there, replicated on all three
        assert queues[quorum]["leader"] == cluster[0].nodename
        assert sorted(queues[quorum]["members"]) == names
        assert queues[classic]["type"] == "classic"
        assert queues[classic]["leader"] == cluster[0].nodename
        rc, text = sr_status(env)
        assert rc == 0, text
        assert f"queue {quorum} (quorum): leader {cluster[0].nodename}, replicas " in text, text
        assert f"node {cluster[2].nodename}: running" in text

        cluster[2].stop_app()
        try:
            report = run.audit(env)
        finally:
            cluster[2].start_app()
        down = {(f.check, f.subject) for f in report.findings if f.severity != "info"}
        assert ("cluster_node_down", cluster[2].nodename) in down, report.to_text()
        assert ("queue_replica_down", quorum) in down, report.to_text()
        assert ("queue_replica_down", classic) not in down  # its node is up
        text = report.to_text()
        assert f"node {cluster[2].nodename}: DOWN" in text
        assert f"DOWN: {cluster[2].nodename}" in text
        assert json.loads(report.to_json())["cluster"]["queues"]
    finally:
        session = BrokerSession(url, connect_timeout=5)
        session.connect()
        for name in (quorum, classic):
            session.delete_queue(name)
        session.close()
