"""The ack rule for every consuming component, against a real RabbitMQ node.

The same scenarios as tests/unit/test_ack_rule.py (the in-memory broker), from the one list
in tests/ackrule.py. Here the redelivery after a failed publish, and the acks, are the
broker's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sarra.broker.base import Broker, BrokerUrl
from sarra.broker.session import BrokerSession
from sarra.components.common import session_for
from sarra.config.settings import Settings
from tests.ackrule import SCENARIOS, Scenario, check_scenario, run_scenario


class RabbitBackend:
    def __init__(self, node: Any) -> None:
        self.node = node
        self.broker_port = int(node.port)

    def session(self, url: BrokerUrl, s: Settings, name: str) -> Broker:
        return session_for(url, s, name)

    def publisher(self, url: BrokerUrl) -> Broker:
        return BrokerSession(url, name="ack-rule publisher")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
def test_the_ack_rule_holds_on_rabbitmq(scenario: Scenario, rabbitmq: Any, tmp_path: Path) -> None:
    recorder = run_scenario(scenario, RabbitBackend(rabbitmq), tmp_path)
    check_scenario(scenario, recorder)
