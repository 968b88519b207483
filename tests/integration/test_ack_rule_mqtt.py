"""The ack rule over MQTT, against a real Mosquitto: the scenarios of tests/ackrule.py for the
components that run on MQTT (v03 in and out), with PUBACKs as the acks. What a component left
unacknowledged is read back by resuming its persistent session once it stopped."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from sarra.broker.base import Broker, BrokerUrl, Delivery, QueueSpec
from sarra.broker.mqtt import MqttSession
from sarra.config.settings import Settings
from sarra.notice import WireMessage, frozen_headers
from tests.ackrule import SCENARIOS, Scenario, check_scenario, run_scenario
from tests.integration.flowkit import unique
from tests.servers.mosquitto import Mosquitto

pytestmark = pytest.mark.servers

#: the winnow needs queue counts for its journal, which MQTT does not give
MQTT_SCENARIOS = [s for s in SCENARIOS if s.component != "winnow"]


class MqttAckBackend:
    def __init__(self, m: Mosquitto) -> None:
        self.m = m
        self.broker_port = m.port  # only for the unused AMQP credentials line
        self.broker = m.url()
        self.credentials_line = m.credentials_line
        self.publisher_url = BrokerUrl("127.0.0.1", m.port, m.user, m.password, protocol="mqtt")

    def session(self, url: BrokerUrl, s: Settings, name: str) -> Broker:
        return MqttSession(url, name=name)

    def publisher(self, url: BrokerUrl) -> Broker:
        return MqttSession(self.publisher_url, name="ack-rule publisher")

    def wait_subscribed(self, queue: str) -> None:
        self.m.wait_subscribed(queue)

    def left(self, queue: str) -> int:
        """Resume instance 0's session without acking: what it still holds is sent again."""
        got: list[int] = []
        ready = threading.Event()
        client = paho.Client(
            callback_api_version=paho.CallbackAPIVersion.VERSION2,
            client_id=f"{queue}_00",
            clean_session=False,
            manual_ack=True,
        )
        client.username_pw_set(self.m.user, self.m.password)
        client.on_connect = lambda *a: ready.set()
        client.on_message = lambda c, u, msg: got.append(msg.mid)
        client.connect("127.0.0.1", self.m.port)
        client.loop_start()
        try:
            assert ready.wait(10)
            time.sleep(1.5)
        finally:
            client.disconnect()
            client.loop_stop()
        MqttSession(self.publisher_url).delete_queue(queue)
        return len(got)


@pytest.mark.parametrize("scenario", MQTT_SCENARIOS, ids=lambda s: s.id)
def test_the_ack_rule_holds_on_mosquitto(
    scenario: Scenario, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    recorder = run_scenario(scenario, MqttAckBackend(mosquitto), tmp_path)
    check_scenario(scenario, recorder)


def test_left_sees_a_delivery_left_unacked(mosquitto: Mosquitto) -> None:
    """The check of what is left can fail: a delivery not acked is found by :meth:`left`."""
    backend = MqttAckBackend(mosquitto)
    queue, x = unique("q_sarra.left."), unique("x")
    got: list[Delivery] = []
    sub = MqttSession(backend.publisher_url, name="unacking consumer")
    sub.connect()
    sub.declare_queue(QueueSpec(queue, ((x, "v03.#"),)))
    sub.consume(queue, 10, got.append)
    pub = MqttSession(backend.publisher_url, name="publisher")
    pub.connect()
    pub.publish([WireMessage(x, "v03.a", b"{}", frozen_headers({}), "application/json")])
    pub.close()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        sub.poll(0.1)
    sub.close()  # not acked
    assert len(got) == 1
    assert backend.left(queue) == 1
