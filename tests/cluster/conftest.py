"""A three-node RabbitMQ cluster on loopback for tests/cluster/ (marker ``cluster``, its own
CI group: ``scripts/test`` runs it alone and leaves it out of core).

Each node is a throwaway node of :mod:`tests.servers.rabbitmq` (own name, ports and
directories); the second and third leave their fresh state (``reset``) and
``join_cluster`` the first. All share the rabbitmq user's Erlang cookie.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.servers.lifecycle import discard
from tests.servers.rabbitmq import RabbitNode, start_rabbitmq

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.servers)


def start_cluster(size: int = 3) -> list[RabbitNode]:
    """``size`` nodes started side by side, then joined to the first; stop them when done."""
    with ThreadPoolExecutor(size) as pool:
        futures = [pool.submit(start_rabbitmq) for _ in range(size)]
    nodes = [f.result() for f in futures]  # an exception here leaves started nodes: stop them
    try:
        for node in nodes[1:]:
            node.ctl("stop_app")
            node.ctl("reset")
            node.ctl("join_cluster", nodes[0].nodename)
            node.start_app()
        running = json.loads(nodes[0].ctl("cluster_status", "--formatter", "json"))
        running = running["running_nodes"]
        for node in nodes:
            assert node.nodename in running, f"{node.nodename} not in the cluster: {running}"
    except BaseException:
        stop_cluster(nodes)
        raise
    return nodes


def stop_cluster(nodes: list[RabbitNode]) -> None:
    for node in reversed(nodes):
        discard(node)


@pytest.fixture(scope="session")
def cluster() -> Iterator[list[RabbitNode]]:
    """Three clustered nodes (guest/guest on loopback), for the whole group."""
    try:
        nodes = start_cluster()
    except RuntimeError as e:
        pytest.fail(f"the cluster tests need real nodes: {e}", pytrace=False)
    try:
        yield nodes
    finally:
        stop_cluster(nodes)
