"""sr3 (metpx-sr3 3.3.1) over MQTT, against the suite's Mosquitto: sr3's MQTT publishing
fails on a missing import (``copy`` in ``sarracenia/moth/mqtt.py``): every message is logged
as crashed, queued to sr3's retry list and never published. Pinned here so that a fixed sr3
makes this test fail and docs/interop.md is brought up to date."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.flowkit import make_files, unique
from tests.integration.test_mqtt_flow import MqttTap
from tests.interop.peers import SR3_POSTED_LINE, count_lines, peers_dir, sr3_post
from tests.servers.mosquitto import Mosquitto

pytestmark = [pytest.mark.servers, pytest.mark.interop, pytest.mark.timeout(180)]


def test_sr3_has_paho_mqtt_so_its_mqtt_code_is_what_runs() -> None:
    # without paho, sr3 refuses mqtt:// outright and the crash below would not be reached
    proc = subprocess.run(
        [str(peers_dir() / "sr3" / "bin" / "python"), "-c",
         "import sarracenia, paho.mqtt; print(sarracenia.features['mqtt']['present'])"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert proc.stdout.strip() == "True"


def test_sr3_post_to_mosquitto_crashes_on_a_missing_import_and_publishes_nothing(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    tag = unique("sr3mq")
    src = tmp_path / "www" / tag
    make_files(src, ["a.txt", "b.txt"], size=500)
    exchange = f"xs_{tag}"
    tap = MqttTap(mosquitto, exchange)
    try:
        proc = sr3_post(
            tmp_path / "home",
            mosquitto.credentials_line,
            "http://127.0.0.1:1/",
            tmp_path / "www",
            [src / "a.txt", src / "b.txt"],
            exchange=exchange,
            post_format="v03",
            timeout=120,
            check=False,
        )
        out = proc.stdout + proc.stderr
        assert tap.poll(3.0) == 0, "sr3 published over MQTT: the defect is fixed"
    finally:
        tap.close()
    # sr3 connects, builds each message, then putNewMessage fails before publishing:
    # ``body = copy.copy(message)`` with no ``import copy`` in sarracenia/moth/mqtt.py. sr3
    # catches it, logs a warning per message, queues both to its retry list and exits
    assert count_lines(out, "putNewMessage crashed name 'copy' is not defined") >= 2, out[-3000:]
    failed = [line for line in out.splitlines() if "failed to post, queued to retry" in line]
    # (each of these lines appears twice in the captured stdout+stderr)
    assert {line.split("relPath: ")[1].split()[0] for line in failed} == {
        f"{tag}/a.txt",
        f"{tag}/b.txt",
    }
    assert count_lines(out, SR3_POSTED_LINE) == 0
    assert proc.returncode == 0  # and says nothing of it in its exit status
