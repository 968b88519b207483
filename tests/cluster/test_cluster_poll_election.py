"""sr_poll's election on a quorum queue outlives the node it lives on: two pollers (two
"hosts") over ``amqp://guest@n1,n2,n3/``; the first node, where both are connected and where
the election queue is led, stops; they reconnect to another node, the broker hands the
token (with the poll state) to one of them, and it polls on: files made before the stop are
not announced again, the file made after it is announced once."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import pytest

from tests.cluster.test_cluster_failover import cluster_site, leader
from tests.integration.flowkit import Site, make_files, unique, wait_for
from tests.integration.test_poll import NoticeTap, Source
from tests.integration.test_poll_election import Node
from tests.servers.rabbitmq import RabbitNode

pytestmark = [pytest.mark.timeout(180)]


def test_the_poll_election_and_its_state_survive_the_stop_of_the_leading_node(  # type: ignore[no-untyped-def]
    cluster: list[RabbitNode], nginx, tmp_path: Path
) -> None:
    tag = unique("clel")
    local = nginx.root / "listing" / tag
    local.mkdir(parents=True)
    src = Source("http", nginx.base_url, local, f"/listing/{tag}")
    make_files(local, [f"a{i}.txt" for i in range(3)])
    name = unique("elect")
    nodes = [
        Node(
            tmp_path / host,
            cluster[0].port,
            name,
            src,
            site=cluster_site(tmp_path / host, cluster),
            extra="queue_type quorum\n",
        )
        for host in ("a", "b")
    ]
    # the tap reads through the third node, which stays up
    tap = NoticeTap(Site(tmp_path / "tap", cluster[2].port).setup().broker_url(), "xs_guest")
    tap.start()
    queue = f"q_guest.sr_poll.{name}.election"
    try:
        for n in nodes:
            n.start()
        wait_for(lambda: any(n.active() for n in nodes), 60, "a poller elected")
        wait_for(lambda: len(tap.notices) >= 3, 30, "the first files announced")
        active = next(n for n in nodes if n.active())
        wait_for(lambda: "handed over token" in active.text(), 30, "the state handed over")
        assert leader(cluster[1], queue) == cluster[0].nodename
        for n in nodes:
            n.log.write_text("")  # what follows the stop only
        cluster[0].stop_app()
        try:
            make_files(local, ["b0.txt"])
            wait_for(
                lambda: any(n.active() for n in nodes),
                90,
                "a poller elected after the stop\n" + "\n".join(n.text()[-1500:] for n in nodes),
            )
            wait_for(lambda: len(tap.notices) >= 4, 60, "the file made after the stop")
            time.sleep(2)  # a few more passes: nothing else may come
            assert leader(cluster[1], queue) != cluster[0].nodename
        finally:
            cluster[0].start_app()
    finally:
        for n in nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait(30)
        tap.stop()
    counts = collections.Counter(n.path for n in tap.notices)
    names = ["a0.txt", "a1.txt", "a2.txt", "b0.txt"]
    assert sorted(counts) == [f"{src.directory.strip('/')}/{n}" for n in names]
    assert set(counts.values()) == {1}, f"announced twice: {counts}"
