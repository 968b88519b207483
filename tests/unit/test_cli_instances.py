"""Pid files, instance naming, process verification and log formatting of the CLI."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarra.cli.instances import (
    Instance,
    State,
    instance_pid,
    pid_file_numbers,
    process_matches,
    read_pid_file,
    remove_pid_file,
    terminate,
    write_pid_file,
)
from sarra.cli.logs import RedactingFormatter, instance_tag, log_path, redact


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    code = "import time; print(1, flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, "marker-x"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()  # the child has exec'd: /proc shows its own command line
    yield proc
    proc.kill()
    proc.wait()
    proc.stdout.close()


def make_instance(tmp_path: Path, number: int = 1) -> Instance:
    return Instance("subscribe", "marker-x", number, tmp_path / "state", tmp_path / "log")


def test_instance_numbers_have_at_least_three_digits_so_100_plus_instances_work() -> None:
    assert instance_tag(7) == "007"
    assert instance_tag(100) == "100"
    assert instance_tag(1234) == "1234"


def test_file_names_follow_the_sr2_layout(tmp_path: Path) -> None:
    inst = make_instance(tmp_path, 12)
    assert inst.pid_path == tmp_path / "state" / "sr_subscribe_marker-x_012.pid"
    assert inst.log_path == tmp_path / "log" / "sr_subscribe_marker-x_012.log"
    assert log_path(tmp_path, "post", "p", 0).name == "sr_post_p_000.log"


def test_a_pid_file_is_written_atomically_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "d" / "x.pid"
    write_pid_file(path, 4242)
    assert read_pid_file(path) == 4242
    assert [p.name for p in path.parent.iterdir()] == ["x.pid"]  # no temporary left behind


@pytest.mark.parametrize("content", ["", "abc", "-5", "0", "12 34"])
def test_a_garbled_pid_file_reads_as_no_pid(tmp_path: Path, content: str) -> None:
    path = tmp_path / "x.pid"
    path.write_text(content)
    assert read_pid_file(path) is None


def test_a_missing_pid_file_reads_as_no_pid(tmp_path: Path) -> None:
    assert read_pid_file(tmp_path / "none.pid") is None


def test_a_pid_file_is_removed_only_while_it_names_the_given_pid(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    write_pid_file(path, 10)
    remove_pid_file(path, 11)
    assert path.exists()
    remove_pid_file(path, 10)
    assert not path.exists()


def test_a_process_matches_only_if_its_command_line_has_every_marker(
    sleeper: subprocess.Popen[bytes],
) -> None:
    assert process_matches(sleeper.pid, ["marker-x"])
    assert not process_matches(sleeper.pid, ["marker-x", "other-config"])


def test_a_dead_or_zombie_process_does_not_match(sleeper: subprocess.Popen[bytes]) -> None:
    sleeper.kill()
    sleeper.wait()
    assert not process_matches(sleeper.pid, ["marker-x"])


def test_a_pid_file_naming_an_unrelated_process_is_stale_and_never_signalled(
    tmp_path: Path,
) -> None:
    inst = make_instance(tmp_path)
    write_pid_file(inst.pid_path, os.getpid())  # this pytest process: not "marker-x"
    assert instance_pid(inst) == (State.STALE, os.getpid())
    assert terminate([inst], timeout=1.0) == {1: "stale pid removed"}
    assert not inst.pid_path.exists()


def test_a_live_verified_instance_is_running_and_terminate_stops_it(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    inst = Instance("-c", "marker-x", 1, tmp_path, tmp_path)
    write_pid_file(inst.pid_path, sleeper.pid)
    assert instance_pid(inst) == (State.RUNNING, sleeper.pid)
    outcome = terminate([inst], timeout=5.0)
    assert sleeper.wait(timeout=5) == -15
    assert outcome[1] in ("stopped", "killed")
    assert not inst.pid_path.exists()


def test_an_instance_ignoring_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print(1, flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, "marker-x"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"1"
        inst = Instance(code, "marker-x", 1, tmp_path, tmp_path)
        write_pid_file(inst.pid_path, proc.pid)
        assert terminate([inst], timeout=0.3) == {1: "killed"}
        assert proc.wait(timeout=5) == -9
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_pid_file_numbers_lists_only_this_configs_instances(tmp_path: Path) -> None:
    for name in (
        "sr_subscribe_a_001.pid",
        "sr_subscribe_a_120.pid",
        "sr_subscribe_ab_002.pid",
        "sr_subscribe_a_003.heart",
        "sr_subscribe_a_01.pid",
    ):
        (tmp_path / name).write_text("1")
    assert pid_file_numbers(tmp_path, "subscribe", "a") == [1, 120]
    assert pid_file_numbers(tmp_path / "missing", "subscribe", "a") == []


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("amqp://bob:s3cr3t@host:5672/", "amqp://bob:***@host:5672/"),
        ("see amqps://u:p%40ss@h and sftp://x:y@z", "see amqps://u:***@h and sftp://x:***@z"),
        ("http://host:8080/path", "http://host:8080/path"),
        ("amqp://user@host/", "amqp://user@host/"),
    ],
)
def test_passwords_in_urls_are_masked(text: str, masked: str) -> None:
    assert redact(text) == masked


def test_a_log_line_carries_time_level_context_and_no_password() -> None:
    formatter = RedactingFormatter("subscribe/foo/003")
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "to %s", ("amqp://u:pw@h",), None)
    line = formatter.format(record)
    assert "[WARNING] subscribe/foo/003 x: to amqp://u:***@h" in line
    assert line[:4].isdigit()
    assert "pw" not in line
