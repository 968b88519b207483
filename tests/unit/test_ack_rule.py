"""The ack rule for every consuming component, against the in-memory broker.

The same scenarios run against a real RabbitMQ node in
tests/integration/test_ack_rule_rabbitmq.py (see tests/ackrule.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sarra.broker.base import Broker, BrokerUrl
from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.config.settings import Settings
from tests.ackrule import SCENARIOS, Scenario, check_scenario, run_scenario


class MemoryBackend:
    broker_port = 5672  # only written into the configs: every session is on the double

    def __init__(self) -> None:
        self.broker = MemoryBroker()

    def session(self, url: BrokerUrl, s: Settings, name: str) -> Broker:
        return MemorySession(self.broker, url, name=name)

    def publisher(self, url: BrokerUrl) -> Broker:
        return MemorySession(self.broker, url, name="publisher")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
def test_the_ack_rule_holds_on_the_memory_broker(scenario: Scenario, tmp_path: Path) -> None:
    backend = MemoryBackend()
    recorder = run_scenario(scenario, backend, tmp_path)
    check_scenario(scenario, recorder)
    assert backend.broker.unacked() == 0
