"""sr_police against a real throwaway RabbitMQ: declare a pump, prove every refusal, audit.

The pump: admin ``bunnymaster`` (bootstrapped with rabbitmqctl, as an installer would),
feeder ``tfeed``, sources ``alice`` and ``al`` (a prefix of alice), subscriber ``bob``.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sarra.broker.base import QueueSpec
from sarra.broker.session import BrokerSession
from sarra.errors import AccessRefused
from sarra.notice import WireMessage
from sarra.police import cli
from sarra.police.pump import permission_for
from sarra.security_events import record_event
from tests.servers.rabbitmq import RabbitNode

PASSWORDS = {"bunnymaster": "bm-pw", "tfeed": "tf-pw", "alice": "al1ce", "al": "a1", "bob": "b0b"}


@dataclass
class PumpSite:
    node: RabbitNode
    env: dict[str, str]
    cfg: Path

    def police(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        rc = cli.main(list(argv), env=self.env, out=out)
        return rc, out.getvalue()

    def session(self, user: str) -> BrokerSession:
        s = BrokerSession(self.node.broker_url(user, PASSWORDS[user]), name=f"police-{user}")
        s.connect()
        return s

    def audit(self, *extra: str) -> dict[str, Any]:
        _, text = self.police("--json", "audit", *extra)
        doc: dict[str, Any] = json.loads(text)
        return doc


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def pump(rabbitmq: RabbitNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PumpSite]:
    base = tmp_path_factory.mktemp("police")
    cfg = base / "cfg"
    cfg.mkdir()
    host = f"{rabbitmq.host}:{rabbitmq.port}"
    (cfg / "admin.conf").write_text(
        f"cluster pumpA\n"
        f"admin amqp://bunnymaster@{host}/\n"
        f"feeder amqp://tfeed@{host}/\n"
        f"mgmt_port {rabbitmq.mgmt_port}\n"
        "declare source alice al\n"
        "declare subscriber bob\n"
    )
    creds = cfg / "credentials.conf"
    creds.write_text("".join(f"amqp://{u}:{p}@{host}/\n" for u, p in PASSWORDS.items()))
    creds.chmod(0o600)
    rabbitmq.add_user("bunnymaster", PASSWORDS["bunnymaster"], tags=["administrator"])
    site = PumpSite(rabbitmq, {"SR_CONFIG_DIR": str(cfg), "SR_STATE_DIR": str(base / "st")}, cfg)
    rc, text = site.police("declare")
    assert rc == 0, text
    yield site
    for user in PASSWORDS:
        rabbitmq.ctl("delete_user", user)


def _refused(action: Callable[[], object]) -> None:
    with pytest.raises(AccessRefused):
        action()


def _msg(exchange: str, key: str = "v02.post.a") -> list[WireMessage]:
    return [WireMessage(exchange, key, b"20260101000000.0 http://h/ a/f", {})]


def test_declare_sets_the_spec_permissions_tags_and_exchanges(pump: PumpSite) -> None:
    perms = {p["user"]: p for p in pump.node.mgmt_get("vhosts/%2F/permissions")}
    roles = {
        "bunnymaster": "admin",
        "tfeed": "feeder",
        "alice": "source",
        "al": "source",
        "bob": "subscriber",
    }
    for user, role in roles.items():
        want = permission_for(role, user)
        got = perms[user]
        assert (got["configure"], got["write"], got["read"]) == (
            want.configure,
            want.write,
            want.read,
        )
    users = {u["name"]: u for u in pump.node.mgmt_get("users")}
    assert "administrator" in str(users["bunnymaster"]["tags"])
    assert "administrator" not in str(users["tfeed"]["tags"])
    exchanges = {x["name"]: x for x in pump.node.mgmt_get("exchanges/%2F")}
    for name in ("xpublic", "xreport", "xs_alice", "xr_alice", "xs_al", "xr_al", "xs_bob"):
        assert exchanges[name]["type"] == "topic" and exchanges[name]["durable"]
    assert "xr_bob" not in exchanges


def test_declare_again_changes_nothing(pump: PumpSite) -> None:
    rc, text = pump.police("--json", "declare")
    actions = json.loads(text)["actions"]
    assert rc == 0
    assert {a["outcome"] for a in actions} == {"unchanged"}
    assert len([a for a in actions if a["kind"] == "exchange"]) == 7


def test_a_source_writes_only_its_own_exchanges(pump: PumpSite) -> None:
    al, alice = pump.session("al"), pump.session("alice")
    try:
        al.publish(_msg("xs_al"))
        _refused(lambda: al.publish(_msg("xs_alice")))  # anchored: al is not alice
        _refused(lambda: alice.publish(_msg("xs_bob")))
        _refused(lambda: alice.publish(_msg("xpublic")))
        _refused(lambda: alice.publish(_msg("xr_alice")))  # reports come from the router
        alice.declare_exchange("xs_alice_extra")  # a source may add suffixed exchanges
        alice.publish(_msg("xs_alice_extra"))
        _refused(lambda: al.declare_exchange("xs_alice_x"))
        alice.delete_exchange("xs_alice_extra")
    finally:
        al.close()
        alice.close()


def test_a_subscriber_cannot_declare_exchanges_nor_write_others(pump: PumpSite) -> None:
    bob = pump.session("bob")
    try:
        bob.publish(_msg("xs_bob", "v02.report.a"))  # its reports
        _refused(lambda: bob.declare_exchange("xs_bob_x"))
        _refused(lambda: bob.publish(_msg("xs_bob_x")))
        _refused(lambda: bob.publish(_msg("xs_alice")))
        _refused(lambda: bob.declare_exchange("xpublic_bob"))
    finally:
        bob.close()


def test_a_source_cannot_bind_to_another_users_report_exchange(pump: PumpSite) -> None:
    alice = pump.session("alice")
    try:
        _refused(lambda: alice.declare_queue(QueueSpec("q_alice.spy", (("xr_al", "#"),))))
        _refused(lambda: alice.declare_queue(QueueSpec("q_alice.spy2", (("xs_bob", "#"),))))
    finally:
        alice.close()
        pump.node.ctl("delete_queue", "q_alice.spy")
        pump.node.ctl("delete_queue", "q_alice.spy2")


def test_queues_must_be_named_after_their_owner(pump: PumpSite) -> None:
    alice, al = pump.session("alice"), pump.session("al")
    try:
        _refused(lambda: alice.declare_queue(QueueSpec("q_bob.x")))
        _refused(lambda: alice.declare_queue(QueueSpec("myqueue")))
        _refused(lambda: al.declare_queue(QueueSpec("q_alice.x")))  # anchored on the dot
        _refused(lambda: al.declare_queue(QueueSpec("q_alice")))
    finally:
        alice.close()
        al.close()


def test_a_source_reads_xpublic_and_its_own_report_exchange(pump: PumpSite) -> None:
    alice, feeder = pump.session("alice"), pump.session("tfeed")
    spec = QueueSpec("q_alice.reads", (("xpublic", "v02.#"), ("xr_alice", "v02.#")))
    try:
        alice.declare_queue(spec)
        feeder.publish(_msg("xpublic") + _msg("xr_alice", "v02.report.a") + _msg("xr_al"))
        _wait_for(lambda: alice.queue_counts(spec.name)[0] == 2, "two messages for alice")
    finally:
        alice.delete_queue(spec.name)
        alice.close()
        feeder.close()


def test_audit_flags_names_consumers_users_credentials_and_events(pump: PumpSite) -> None:
    node = pump.node
    guest = BrokerSession(node.broker_url())
    guest.connect()
    alice = pump.session("alice")
    try:
        guest.declare_queue(QueueSpec("badqueue_police"))
        alice.declare_queue(QueueSpec("q_alice.idle"))
        # alice's configure regex cannot tell an exchange from a queue (facts 6.1)
        alice.declare_exchange("q_alice.sneaky")
        node.add_user("mallory_police", "pw")
        record_event(
            "forged_source",
            env=pump.env,
            user="alice",
            exchange="xs_alice",
            detail="source header claimed bob",
        )
        creds = pump.cfg / "credentials.conf"
        creds.chmod(0o644)
        _refused(lambda: alice.publish(_msg("xs_bob")))

        def flagged() -> set[tuple[str, str]]:
            doc = pump.audit()
            return {(f["check"], f["subject"]) for f in doc["findings"]}

        expected = {
            ("queue_name", "badqueue_police"),
            ("queue_no_consumer", "q_alice.idle"),
            ("exchange_name", "q_alice.sneaky"),
            ("user_undeclared", "mallory_police"),
            ("user_undeclared", "guest"),
            ("user_prefix", "al/alice"),
            ("credentials_mode", str(creds)),
            ("security_event", "forged_source:alice"),
        }
        _wait_for(lambda: expected <= flagged(), "every finding")
        doc = pump.audit()
        assert doc["status"] == "error"
        assert not {f["check"] for f in doc["findings"]} & {
            "user_missing",
            "permissions_wrong",
            "exchange_missing",
            "queue_name:q_alice.idle",
        }
        text = pump.police("audit")[1]
        assert "ERROR   credentials_mode" in text and "mallory_police" in text

        logs = sorted(node.base_dir.glob("log/*.log"))
        found = set()
        for log in logs:
            doc = pump.audit("--broker-log", str(log))
            found |= {f["subject"] for f in doc["findings"] if f["check"] == "access_refused"}
        assert "alice:xs_bob" in found

        # fix without --force: chmod only; the misnamed queue and exchange stay
        rc, text = pump.police("--json", "fix")
        doc = json.loads(text)
        assert rc == 2  # the misnamed queue and exchange remain errors
        assert f"chmod 600 {creds}" in doc["fixed"]
        assert creds.stat().st_mode & 0o777 == 0o600
        queues = {q["name"] for q in node.mgmt_get("queues/%2F")}
        assert "badqueue_police" in queues
        # with --force they go
        _, text = pump.police("--json", "fix", "--force")
        doc = json.loads(text)
        assert "deleted queue badqueue_police" in doc["fixed"]
        assert "deleted exchange q_alice.sneaky" in doc["fixed"]
        names = {x["name"] for x in node.mgmt_get("exchanges/%2F")}
        assert "q_alice.sneaky" not in names
    finally:
        alice.close()
        guest.close()
        node.ctl("delete_user", "mallory_police")
        node.ctl("delete_queue", "q_alice.idle")


def test_fix_restores_broken_permissions_and_a_deleted_exchange(pump: PumpSite) -> None:
    pump.node.set_permissions("al", ".*", ".*", ".*")
    guest = BrokerSession(pump.node.broker_url())
    guest.connect()
    guest.delete_exchange("xr_al")
    guest.close()
    doc = pump.audit()
    flagged = {(f["check"], f["subject"]) for f in doc["findings"]}
    assert {("permissions_wrong", "al"), ("exchange_missing", "xr_al")} <= flagged
    _, text = pump.police("--json", "fix")
    doc = json.loads(text)
    assert "declared exchange xr_al" in doc["fixed"]
    remaining = {(f["check"], f["subject"]) for f in doc["findings"]}
    assert not remaining & {("permissions_wrong", "al"), ("exchange_missing", "xr_al")}
    al = pump.session("al")
    try:
        _refused(lambda: al.publish(_msg("xs_alice")))
    finally:
        al.close()
