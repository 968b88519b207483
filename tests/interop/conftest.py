"""Shared by the interop tests: the peers installed (once a session) and a site of ours on the
suite's RabbitMQ."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.flowkit import Site
from tests.interop.peers import REPO_ROOT, peer_bin


@pytest.fixture(scope="session", autouse=True)
def peers_installed() -> None:
    """Install the peers if they are missing (a no-op taking < 1 s when present); a peer
    command the tests run that is still missing fails here, saying what to run."""
    subprocess.run([str(REPO_ROOT / "scripts" / "install-peers")], check=True, timeout=900)
    for command in ("sr_post", "sr_poll", "sr3"):
        peer_bin(command)


@pytest.fixture
def site(tmp_path: Path, rabbitmq: Any) -> Site:
    return Site(tmp_path / "site", rabbitmq.port).setup()
