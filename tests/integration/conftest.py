"""Shared by the integration tests: a site of ours (config, state and a broker URL) on the
suite's RabbitMQ. A module that needs more (an environment, another broker) defines its own
``site``, which takes precedence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.flowkit import Site


@pytest.fixture
def site(tmp_path: Path, rabbitmq: Any) -> Site:
    return Site(tmp_path / "site", rabbitmq.port).setup()
