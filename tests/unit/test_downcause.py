"""Why an instance is down: exit notes, the log's last complaint, and their precedence."""

from __future__ import annotations

import json
from pathlib import Path

from sarra.cli.downcause import (
    clear_exit_note,
    last_complaint,
    read_exit_note,
    reason_of,
    why_down,
    write_exit_note,
)
from sarra.cli.instances import Instance, State
from sarra.errors import AccessRefused, BrokerError, ConfigError


def _inst(tmp_path: Path) -> Instance:
    (tmp_path / "log").mkdir(exist_ok=True)
    return Instance("subscribe", "flow", 1, tmp_path / "state", tmp_path / "log")


def test_reasons_name_the_cause_and_never_a_password() -> None:
    url = "amqp://bob:Secr3t@broker.example/"
    assert reason_of(AccessRefused(f"ACCESS_REFUSED at {url}")).startswith(
        "the broker refused access (bad credentials or permissions): ACCESS_REFUSED"
    )
    assert reason_of(BrokerError("Connection refused")) == (
        "cannot connect to the broker: Connection refused"
    )
    assert reason_of(ConfigError("x.conf:3: unknown option")).startswith("configuration error")
    crash = reason_of(ZeroDivisionError(f"division by zero {url}"))
    assert crash.startswith("crashed: ZeroDivisionError: division by zero")
    assert "Secr3t" not in crash and "bob:***@" in crash


def test_an_exit_note_is_the_reason_of_a_stopped_or_stale_instance(tmp_path: Path) -> None:
    inst = _inst(tmp_path)
    assert why_down(inst, State.STOPPED) is None  # never ran: nothing to tell
    write_exit_note(inst, 1, "the broker refused access (bad credentials or permissions): x")
    assert read_exit_note(inst)["status"] == 1  # type: ignore[index]
    assert why_down(inst, State.STALE) == (
        "the broker refused access (bad credentials or permissions): x (exit status 1)"
    )
    write_exit_note(inst, 0, "stopped on request")
    assert why_down(inst, State.STOPPED) == "stopped on request"
    assert why_down(inst, State.RUNNING, "connected") is None
    clear_exit_note(inst)
    assert read_exit_note(inst) is None


def test_a_killed_instance_is_told_by_its_stale_pid_and_its_last_error(tmp_path: Path) -> None:
    inst = _inst(tmp_path)
    inst.log_path.write_text(
        "2026-12-07 01:00:00,001 [INFO] subscribe/flow/001 sarra.x: started\n"
        "2026-12-07 01:00:01,002 [ERROR] subscribe/flow/001 sarra.flow: 499 a/b: timed out\n"
        "2026-12-07 01:00:02,003 [INFO] subscribe/flow/001 sarra.x: still going\n"
    )
    assert why_down(inst, State.STALE) == (
        "process gone without a clean exit (killed or crashed); "
        "last error: 2026-12-07 01:00:01 499 a/b: timed out"
    )
    inst.log_path.write_text("")
    assert why_down(inst, State.STALE) == "process gone without a clean exit (killed or crashed)"


def test_a_running_instance_not_connected_shows_its_last_warning_json_or_text(
    tmp_path: Path,
) -> None:
    inst = _inst(tmp_path)
    lines = [
        {"time": "2026-12-07T01:00:00.000Z", "level": "INFO", "message": "started"},
        {
            "time": "2026-12-07T01:00:01.000Z",
            "level": "WARNING",
            "message": "broker connection failed (amqp://u:pw@h/: refused); retrying in 1.0s",
        },
    ]
    inst.log_path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    why = why_down(inst, State.RUNNING, "disconnected")
    assert why == (
        "not connected: 2026-12-07T01:00:01.000Z broker connection failed "
        "(amqp://u:***@h/: refused); retrying in 1.0s"
    )
    assert last_complaint(inst.log_path) is None  # a warning is not an error
    assert why_down(inst, State.RUNNING, "connected") is None
    inst.log_path.unlink()
    assert why_down(inst, State.RUNNING, "disconnected") == "not connected to its broker yet"
