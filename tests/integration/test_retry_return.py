"""Disk retry entries outlive their node: handed back to the broker at a clean stop (and by
``retry-return`` from a dead node's state), restored by another node as they were.

Real RabbitMQ and nginx; accounts with the pump's permissions (``permission_for``): a feeder,
which may write the default exchange, and a subscriber, which may not.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import amqp

from sarra.broker.admin import declare_exchanges
from sarra.broker.session import BrokerSession
from sarra.cli.main import main
from sarra.codec.timestamps import now_timestamp
from sarra.components import REGISTRY
from sarra.notice import WireMessage
from sarra.police.pump import FEEDER, SUBSCRIBER, permission_for
from tests.integration.flowkit import (
    Site,
    publish_raw,
    running_subscriber,
    site_env,
    unique,
    wait_for,
)

EXCHANGE = "xpublic"


def _account(rabbitmq, role: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    user = f"{role[:3]}{secrets.token_hex(3)}"
    password = secrets.token_hex(8)
    rabbitmq.add_user(user, password)
    p = permission_for(role, user)
    rabbitmq.set_permissions(user, p.configure, p.write, p.read)
    return user, password


def _site(root: Path, rabbitmq, user: str, password: str) -> Site:  # type: ignore[no-untyped-def]
    site = Site(root, rabbitmq.port, user=user, password=password).setup()
    guest = _guest(rabbitmq)
    try:
        declare_exchanges(guest, [EXCHANGE])
    finally:
        guest.close()
    return site


def _config(site: Site, name: str, tag: str, dest: Path, queue: str = "") -> None:
    site.write_subscribe(
        name,
        f"exchange {EXCHANGE}\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        "report_back off\nexpire 10m\nattempts 1\nretry_delay 1s\nretry_delay_max 2s\n"
        "retry_ttl 10m\non_failure not_found queue\n"
        + (f"queue_name {queue}\n" if queue else "")
        + "accept .*\n",
    )


def _notice(tag: str, base_url: str, name: str, content: bytes) -> WireMessage:
    return WireMessage(
        exchange=EXCHANGE,
        routing_key=f"v02.post.{tag}",
        body=f"{now_timestamp()} {base_url} /{tag}/{name}".encode(),
        headers={
            "parts": f"1,{len(content)},1,0,0",
            "sum": "d," + hashlib.md5(content).hexdigest(),
        },
    )


def _entries(site: Site) -> dict[str, dict]:  # type: ignore[type-arg]
    """The live retry entries of every instance of the site, by id (the log replayed,
    read only: the running instance owns the file)."""
    live: dict[str, dict] = {}  # type: ignore[type-arg]
    for path in site.state_dir.rglob("retry_*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line being written
            if rec["op"] == "put":
                live[rec["id"]] = rec
            else:
                live.pop(rec["id"], None)
    return live


def _by_path(entries: dict[str, dict]) -> dict[str, dict]:  # type: ignore[type-arg]
    return {e["body"].split()[2]: e for e in entries.values()}


def _guest(rabbitmq) -> BrokerSession:  # type: ignore[no-untyped-def]
    s = BrokerSession(Site(Path("/"), rabbitmq.port).broker_url())
    s.connect()
    return s


@contextmanager
def another_consumer(port: int, queue: str) -> Iterator[Callable[[int], list[amqp.Message]]]:
    """A second consumer on ``queue`` (guest, a stand-in for another node), which takes what
    it is given without acking: closed at the end, the broker requeues it. Yields
    ``take(n)``: wait for ``n`` messages and return them."""
    conn = amqp.Connection(f"127.0.0.1:{port}", userid="guest", password="guest")
    conn.connect()
    got: list[amqp.Message] = []
    try:
        ch = conn.channel()
        ch.basic_qos(0, 100, False)
        ch.basic_consume(queue, callback=got.append, no_ack=False)

        def take(n: int) -> list[amqp.Message]:
            deadline = time.monotonic() + 30
            while len(got) < n and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError, socket.timeout):
                    conn.drain_events(timeout=0.5)
            assert len(got) == n, f"{len(got)} messages, not {n}"
            return list(got)

        yield take
    finally:
        conn.close()


def test_a_stopping_feeder_hands_its_retry_entries_to_another_node(  # type: ignore[no-untyped-def]
    rabbitmq, nginx, tmp_path
):
    user, password = _account(rabbitmq, FEEDER)
    tag = unique("rr")
    queue = f"q_{user}.sr_subscribe.shared_{tag}"
    node_a = _site(tmp_path / "a", rabbitmq, user, password)
    node_b = _site(tmp_path / "b", rabbitmq, user, password)
    _config(node_a, "shared", tag, tmp_path / "dest_a", queue)
    _config(node_b, "shared", tag, tmp_path / "dest_b", queue)
    names = [f"f{i}.bin" for i in range(3)]
    contents = {n: os.urandom(3000) for n in names}

    with contextlib.ExitStack() as stack:
        with running_subscriber(node_a, "shared"):
            publish_raw(
                node_a.broker_url(), [_notice(tag, nginx.base_url, n, contents[n]) for n in names]
            )
            wait_for(lambda: len(_entries(node_a)) == 3, what="3 entries in node a's retry queue")
            before = _by_path(_entries(node_a))  # the first failures, taken before the stop
            take = stack.enter_context(another_consumer(rabbitmq.port, queue))
        assert _entries(node_a) == {}  # handed back: none left on node a
        returned = take(3)
    # the stand-in consumer gone, they wait in the queue for node b
    session = _guest(rabbitmq)
    try:
        assert session.queue_counts(queue) == (3, 0)
    finally:
        session.close()
    for msg in returned:
        assert msg.delivery_info["exchange"] == ""
        h = msg.properties["application_headers"]
        path = msg.body.decode().split()[2]
        assert h["x-sarra-retry-exchange"] == EXCHANGE
        assert h["x-sarra-retry-topic"] == f"v02.post.{tag}"
        assert float(h["x-sarra-retry-first-seen"]) == before[path]["first_seen"]
        assert int(h["x-sarra-retry-attempts"]) >= before[path]["attempts"] >= 1
        before[path]["attempts"] = int(h["x-sarra-retry-attempts"])
        assert "404" in h["x-sarra-retry-error"]

    # node b, the origin still failing: restored with the same first failure, tried again
    with running_subscriber(node_b, "shared"):
        wait_for(
            lambda: (
                len(_entries(node_b)) == 3
                and all(
                    e["attempts"] > before[p]["attempts"]
                    for p, e in _by_path(_entries(node_b)).items()
                )
            ),
            timeout=60,
            what="node b retried the restored entries",
        )
        for path, entry in _by_path(_entries(node_b)).items():
            assert entry["first_seen"] == before[path]["first_seen"]  # retry_ttl counts from it
            assert entry["exchange"] == EXCHANGE and entry["routing_key"] == f"v02.post.{tag}"
        (nginx.root / tag).mkdir(parents=True, exist_ok=True)
        for n in names:
            (nginx.root / tag / n).write_bytes(contents[n])
        wait_for(
            lambda: all((tmp_path / "dest_b" / n).exists() for n in names),
            timeout=60,
            what="node b placed the files",
        )
        wait_for(lambda: _entries(node_b) == {}, what="node b's retry queue empty")
    for n in names:
        assert (tmp_path / "dest_b" / n).read_bytes() == contents[n]
    assert not (tmp_path / "dest_a").exists() or not any((tmp_path / "dest_a").iterdir())
    session = _guest(rabbitmq)
    try:
        assert session.queue_counts(queue)[0] == 0
    finally:
        session.close()


def test_a_subscriber_keeps_its_retry_entries_and_says_so(  # type: ignore[no-untyped-def]
    rabbitmq, nginx, tmp_path, caplog
):
    user, password = _account(rabbitmq, SUBSCRIBER)
    tag = unique("rs")
    site = _site(tmp_path / "s", rabbitmq, user, password)
    _config(site, "mine", tag, tmp_path / "dest")
    with (
        contextlib.ExitStack() as stack,
        caplog.at_level(logging.INFO),
        running_subscriber(site, "mine"),
    ):
        publish_raw(
            Site(Path("/"), rabbitmq.port).broker_url(),
            [_notice(tag, nginx.base_url, f"g{i}.bin", b"x" * 100) for i in range(3)],
        )
        wait_for(lambda: len(_entries(site)) == 3, what="3 entries in the retry queue")
        queue = REGISTRY["subscribe"].queue_name(site.load("subscribe", "mine"))
        # someone to hand them to, so the stop tries
        stack.enter_context(another_consumer(rabbitmq.port, queue))
    assert len(_entries(site)) == 3
    kept = [r.getMessage() for r in caplog.records if "retry entries kept" in r.getMessage()]
    assert len(kept) == 1
    assert kept[0].startswith("3 retry entries kept on this node (not returned: ")
    assert "may not write to the default exchange" in kept[0]

    # nor can it hand them back by command: refused, the file unchanged
    out, err = io.StringIO(), io.StringIO()
    with site_env(site):
        state = next(site.state_dir.rglob("retry_*.jsonl")).parent
        rc = main("subscribe", ["retry-return", "mine", str(state)], out=out, err=err)
    assert rc == 1, err.getvalue()
    assert "3 retry entries kept (not returned: the broker user may not write" in err.getvalue()
    assert len(_entries(site)) == 3


def test_retry_return_hands_a_dead_nodes_entries_back(  # type: ignore[no-untyped-def]
    rabbitmq, nginx, tmp_path, caplog
):
    user, password = _account(rabbitmq, FEEDER)
    tag = unique("rc")
    queue = f"q_{user}.sr_subscribe.handback_{tag}"
    live = _site(tmp_path / "live", rabbitmq, user, password)
    _config(live, "hb", tag, tmp_path / "dest", queue)
    # node "dead" ran alone and stopped with three entries: kept on its disk (nobody to hand
    # them to), then it never came back
    dead_site = _site(tmp_path / "dead", rabbitmq, user, password)
    _config(dead_site, "hb", tag, tmp_path / "dest_dead", queue)
    names = [f"h{i}.bin" for i in range(3)]
    contents = {n: os.urandom(2000) for n in names}
    with caplog.at_level(logging.INFO), running_subscriber(dead_site, "hb"):
        publish_raw(
            dead_site.broker_url(), [_notice(tag, nginx.base_url, n, contents[n]) for n in names]
        )
        wait_for(lambda: len(_entries(dead_site)) == 3, what="3 entries on the dead node")
        first = {p: e["first_seen"] for p, e in _by_path(_entries(dead_site)).items()}
    assert len(_entries(dead_site)) == 3
    assert any(
        r.getMessage().startswith("3 retry entries kept on this node (not returned: no other")
        for r in caplog.records
    )
    dead = next(dead_site.state_dir.rglob("retry_*.jsonl")).parent
    (nginx.root / tag).mkdir(parents=True, exist_ok=True)
    for n in names:
        (nginx.root / tag / n).write_bytes(contents[n])

    out, err = io.StringIO(), io.StringIO()
    with site_env(live):
        rc = main("subscribe", ["retry-return", "hb", str(dead)], out=out, err=err)
    assert rc == 0, err.getvalue()
    assert "3 retry entries returned to queue " + queue in out.getvalue()
    assert _entries(dead_site) == {}
    with another_consumer(rabbitmq.port, queue) as take:
        for msg in take(3):
            h = msg.properties["application_headers"]
            assert float(h["x-sarra-retry-first-seen"]) == first[msg.body.decode().split()[2]]

    with running_subscriber(live, "hb"):
        wait_for(
            lambda: all((tmp_path / "dest" / n).exists() for n in names),
            timeout=60,
            what="the handed-back notices placed",
        )
    for n in names:
        assert (tmp_path / "dest" / n).read_bytes() == contents[n]
