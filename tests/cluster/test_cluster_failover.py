"""Failover over a three-node RabbitMQ cluster: a multi-host broker URL, quorum queues, the
node a client is connected to (and the queue's leader) stopped and brought back.

- real ``sr_subscribe`` processes consume a quorum queue over
  ``amqp://guest@n1,n2,n3/``: every file arrives verified, none lost, duplicates bounded;
- real ``sr_post`` publishes over the same URL while its node stops: every notice reaches
  the queue at least once (unconfirmed publishes are published again on the next node).
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sarra.broker import BrokerSession, Delivery, QueueSpec
from sarra.config.credentials import CredentialStore, to_broker_url
from sarra.errors import BrokerError
from tests.chaos import chaoskit as ck
from tests.integration.flowkit import Site, unique
from tests.servers.rabbitmq import RabbitNode

pytestmark = [pytest.mark.timeout(240)]

INSTANCES = 2
PREFETCH = 10


@dataclass
class ClusterSite(Site):
    """A site whose broker is every node of the cluster, one credentials line per node."""

    ports: tuple[int, ...] = ()

    @property
    def broker(self) -> str:
        return "amqp://guest@" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/"

    def setup(self) -> ClusterSite:
        (self.config_dir / "subscribe").mkdir(parents=True, exist_ok=True)
        cred = self.config_dir / "credentials.conf"
        cred.write_text("".join(f"amqp://guest:guest@127.0.0.1:{p}/\n" for p in self.ports))
        cred.chmod(0o600)
        return self


def cluster_site(root: Path, nodes: list[RabbitNode]) -> ClusterSite:
    return ClusterSite(root, nodes[0].port, ports=tuple(n.port for n in nodes)).setup()


def leader(node: RabbitNode, queue: str) -> str:
    out = node.ctl("list_queues", "-q", "--no-table-headers", "name", "type", "leader")
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == queue:
            assert parts[1] == "quorum", f"{queue} is not a quorum queue: {line}"
            return parts[2]
    raise AssertionError(f"queue {queue} not found: {out}")


def test_the_url_reaches_a_live_node_when_the_first_is_down(cluster, tmp_path):  # type: ignore[no-untyped-def]
    site = cluster_site(tmp_path, cluster)
    store = CredentialStore.load(site.config_dir / "credentials.conf")
    url = to_broker_url(site.broker, store)
    cluster[0].stop_app()
    try:
        session = BrokerSession(url, connect_timeout=5)
        session.connect()
        assert session.node.port == cluster[1].port
        session.close()
    finally:
        cluster[0].start_app()


def test_a_subscriber_on_a_quorum_queue_survives_the_stop_of_its_node_and_leader(
    cluster, broken_http, tmp_path
):  # type: ignore[no-untyped-def]
    tag = unique("clsub")
    site = cluster_site(tmp_path / "site", cluster)
    batch = ck.make_batch(broken_http.root, tag, 400, size=4000)
    dest = tmp_path / "dest"
    broken_http.slow_seconds = 0.2  # about 20 s of flow: the stop lands mid-flow
    try:
        with ck.fleet(
            site,
            tag,
            dest,
            tmp_path / "logs",
            count=INSTANCES,
            prefetch=PREFETCH,
            extra="transfer_threads 2\nqueue_type quorum\n",
        ) as f:
            # declared through the first node: the leader is there, where clients connect
            assert leader(cluster[1], f.queue) == cluster[0].nodename
            f.start()
            assert ck.post_batch(site, f"{broken_http.base_url}/slow", broken_http.root, batch) == 0
            ck.wait_until(lambda: ck.count_verified(dest, batch) >= 20, 60, "20 files")
            assert ck.count_verified(dest, batch) < batch.announced, "flow ended before the stop"
            cluster[0].stop_app()
            try:
                before = ck.count_verified(dest, batch)
                assert before < batch.announced, "the flow ended before the node stopped"
                ck.wait_until(
                    lambda: ck.count_verified(dest, batch) >= min(before + 20, batch.announced),
                    90,
                    f"progress with the leader's node down\n{f.tail(1500)}",
                )
                assert leader(cluster[1], f.queue) != cluster[0].nodename
            finally:
                cluster[0].start_app()
            broken_http.slow_seconds = 0.0
            tally = ck.settle("cluster: leader node stopped", f, batch, cluster[1], timeout=120)
            tally.assert_clean(2 * PREFETCH * INSTANCES)
            assert re.search(
                r"trying the next node|connected to amqp://guest@127\.0\.0\.1:"
                rf"({cluster[1].port}|{cluster[2].port})",
                f.log_text(),
            )
    finally:
        broken_http.slow_seconds = 0.0


def test_a_poster_loses_no_notice_when_its_node_stops(cluster, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("clpost")
    site = cluster_site(tmp_path / "site", cluster)
    www = tmp_path / "www"
    batch = ck.make_batch(www, tag, 6000, size=64)
    store = CredentialStore.load(site.config_dir / "credentials.conf")
    queue = f"q_guest.cluster.{tag}"
    # the watcher reads through the third node, which stays up
    watcher_url = to_broker_url(f"amqp://guest@127.0.0.1:{cluster[2].port}/", store)
    watcher = BrokerSession(watcher_url, connect_timeout=5)
    watcher.connect()
    watcher.declare_exchange("xs_guest")
    watcher.declare_queue(
        QueueSpec(queue, (("xs_guest", f"v02.post.{tag}.#"),), queue_type="quorum")
    )
    seen: dict[str, int] = {}

    def on_delivery(d: Delivery) -> None:
        rel = d.message.body.decode().split()[2]
        seen[rel] = seen.get(rel, 0) + 1
        watcher.ack(d)

    watcher.consume(queue, 500, on_delivery)
    proc = ck.post_process(site, "http://127.0.0.1/", www, batch.paths, tmp_path / "post.log")
    stopped = False
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (
            proc.poll() is None or len(seen) < len(batch.expected)
        ):
            try:
                watcher.poll(0.2)
            except BrokerError:
                watcher.connect()
            if not stopped and len(seen) >= 100:
                # the poster is frozen while its node stops (it posts thousands a second,
                # faster than stop_app takes), so the node dies with the post half done
                os.kill(proc.pid, signal.SIGSTOP)
                try:
                    assert proc.poll() is None, "sr_post ended before the node stopped"
                    cluster[0].stop_app()
                finally:
                    os.kill(proc.pid, signal.SIGCONT)
                stopped = True
        assert stopped, f"sr_post never got going: {(tmp_path / 'post.log').read_text()[-2000:]}"
        assert proc.wait(60) == 0, (tmp_path / "post.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster[0].start_app()
    log = (tmp_path / "post.log").read_text()
    expected = {f"{tag}/{rel}" for rel in batch.expected}
    got = {rel.lstrip("/") for rel in seen}
    missing = expected - got
    moved = rf"connected to amqp://guest@127\.0\.0\.1:({cluster[1].port}|{cluster[2].port})/"
    assert re.search(moved, log), f"sr_post never moved to another node\n{log[-3000:]}"
    assert not missing, f"{len(missing)} notices lost, e.g. {sorted(missing)[:3]}\n{log[-2000:]}"
    dups = sum(n - 1 for n in seen.values())
    print(f"poster over a node stop: {len(expected)} announced, {len(got)} queued, {dups} dup")
    watcher.close()
