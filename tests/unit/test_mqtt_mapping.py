"""MQTT URLs, credentials and the topic mapping (docs/mqtt.md); the session itself runs against
a real Mosquitto in tests/integration/test_mqtt_session.py and test_mqtt_flow.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sarra.broker.base import BrokerUrl
from sarra.broker.mqtt import MqttSession, from_mqtt_topic, mqtt_filter, mqtt_topic
from sarra.components.common import session_for
from sarra.config.credentials import CredentialStore, to_broker_url
from sarra.config.settings import load_settings
from sarra.errors import ConfigError


def test_the_topic_mapping_keeps_wildcard_characters_out_of_levels() -> None:
    assert mqtt_topic("xpublic", "v03.a%23b.c+d") == "xpublic/v03/a%23b/c%2Bd"
    assert from_mqtt_topic("xpublic/v03/a%23b/c%2Bd") == ("xpublic", "v03.a%23b.c+d")
    assert mqtt_filter("xs_u", "v03.*.obs.#") == "xs_u/v03/+/obs/#"
    assert mqtt_filter("x", "v03.a+b") == "x/v03/a%2Bb"
    assert from_mqtt_topic(mqtt_topic("x", "v03")) == ("x", "v03")


def test_mqtt_urls_take_their_password_from_the_credentials_file(tmp_path: Path) -> None:
    cred = tmp_path / "credentials.conf"
    cred.write_text("mqtts://dave:s3cret@mqtt.example.com/\nmqtt://erin:pw@127.0.0.1:1999/\n")
    cred.chmod(0o600)
    store = CredentialStore.load(str(cred))
    url = to_broker_url("mqtts://dave@mqtt.example.com/", store)
    assert (url.protocol, url.tls, url.port, url.password) == ("mqtt", True, 8883, "s3cret")
    assert str(url) == "mqtts://dave@mqtt.example.com:8883/"
    assert "s3cret" not in repr(url)
    plain = to_broker_url("mqtt://erin@127.0.0.1:1999/", store)
    assert (plain.protocol, plain.tls, plain.port, plain.password) == ("mqtt", False, 1999, "pw")
    with pytest.raises(ConfigError, match="mqtt:// or mqtts://"):
        to_broker_url("stomp://x@h/", store)


def _cfg(tmp_path: Path, body: str):  # type: ignore[no-untyped-def]
    conf = tmp_path / "config" / "subscribe"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "m.conf").write_text(body)
    env = {"SR_CONFIG_DIR": str(tmp_path / "config"), "SR_STATE_DIR": str(tmp_path / "state")}
    return load_settings("subscribe", "m", [], env=env)


def test_an_mqtt_session_is_made_for_mqtt_urls_only_with_v03(tmp_path: Path) -> None:
    url = BrokerUrl("127.0.0.1", 1883, "u", "p", protocol="mqtt")
    v03 = _cfg(tmp_path, "broker mqtt://u@127.0.0.1/\ntopic_prefix v03\npost_format v03\n")
    assert isinstance(session_for(url, v03, "t"), MqttSession)
    v02 = _cfg(tmp_path, "broker mqtt://u@127.0.0.1/\n")
    with pytest.raises(ConfigError, match="v03 messages only"):
        session_for(url, v02, "t")


def test_the_winnow_refuses_an_mqtt_broker(tmp_path: Path) -> None:
    from sarra.components.winnow import WinnowComponent

    conf = tmp_path / "config" / "winnow"
    conf.mkdir(parents=True)
    (conf / "w.conf").write_text(
        "broker mqtt://u@127.0.0.1/\nexchange xw\npost_exchange xp\npost_format v03\n"
    )
    env = {"SR_CONFIG_DIR": str(tmp_path / "config"), "SR_STATE_DIR": str(tmp_path / "state")}
    cfg = load_settings("winnow", "w", [], env=env)
    with pytest.raises(ConfigError, match="AMQP brokers only") as caught:
        WinnowComponent().check(cfg)
    assert caught.value.option == "broker"


def test_one_instance_subscribes_plainly_several_share(tmp_path: Path) -> None:
    url = BrokerUrl("127.0.0.1", 1883, "u", "p", protocol="mqtt")
    base = "broker mqtt://u@127.0.0.1/\ntopic_prefix v03\npost_format v03\n"
    one = session_for(url, _cfg(tmp_path, base), "t")
    two = session_for(url, _cfg(tmp_path, base + "instances 2\n"), "t")
    assert isinstance(one, MqttSession) and isinstance(two, MqttSession)
    assert one.subscription_filters("q", ["x/v03/#"]) == (["x/v03/#"], ["$share/q/x/v03/#"])
    assert two.subscription_filters("q", ["x/v03/#"]) == (["$share/q/x/v03/#"], ["x/v03/#"])


class _RefusingClient:
    """Stands for paho's client: SUBACK answered by the test (the real broker's refusals
    need an ACL that Mosquitto 2.0 applies at delivery, not at SUBSCRIBE)."""

    def __init__(self, session: MqttSession, answer: object | None) -> None:
        self.session, self.answer = session, answer
        self.asked: list[str] = []

    def subscribe(self, topic: str, qos: int) -> tuple[int, int]:
        self.asked.append(topic)
        if self.answer is not None:
            self.session._replies[7] = [self.answer]
        return 0, 7


def _with_client(answer: object | None) -> tuple[MqttSession, _RefusingClient]:
    s = MqttSession(BrokerUrl("127.0.0.1", 1883, "u", "p", protocol="mqtt"), connect_timeout=0.3)
    client = _RefusingClient(s, answer)
    s._client, s._connected = client, True
    return s, client


def test_a_refused_subscription_stops_the_consumer_with_the_broker_reason() -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    from sarra.errors import AccessRefused, BrokerError

    s, client = _with_client(ReasonCode(PacketTypes.SUBACK, identifier=0x80))
    refused = re.escape("refused the subscription to $share/q/x/v03/#")
    with pytest.raises(AccessRefused, match=refused):
        s._subscribe("q", ["x/v03/#"])
    s, client = _with_client(ReasonCode(PacketTypes.SUBACK, identifier=1))
    s._subscribe("q", ["x/v03/#"])  # granted QoS 1
    assert client.asked == ["$share/q/x/v03/#"]
    s, client = _with_client(None)
    with pytest.raises(BrokerError, match=re.escape("no SUBACK for $share/q/x/v03/# within 0.3s")):
        s._subscribe("q", ["x/v03/#"])
