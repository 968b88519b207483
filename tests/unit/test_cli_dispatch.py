"""Argument dispatch and the in-process verbs of the CLI, over the doubles of tests.cli_doubles."""

from __future__ import annotations

import io
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sarra.cli.main import main
from sarra.cli.runtime import Runtime
from tests.cli_doubles import HeartbeatComponent, standin_runtime


@dataclass
class Cli:
    runtime: Runtime
    config_dir: Path
    state_dir: Path
    out: io.StringIO = field(default_factory=io.StringIO)
    err: io.StringIO = field(default_factory=io.StringIO)

    def __call__(self, component: str, *argv: str) -> int:
        self.out, self.err = io.StringIO(), io.StringIO()
        return main(component, argv, runtime=self.runtime, out=self.out, err=self.err)

    def write(self, name: str, text: str, component: str = "subscribe") -> Path:
        path = self.config_dir / component / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("SR_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SR_STATE_DIR", str(tmp_path / "state"))
    return Cli(standin_runtime(), tmp_path / "config", tmp_path / "state")


def test_a_missing_action_or_bad_option_is_a_usage_error_with_exit_2(cli: Cli) -> None:
    assert cli("subscribe", "status", "--instances") == 2
    assert "needs a value" in cli.err.getvalue()
    assert cli("subscribe") == 2
    assert "no action given" in cli.err.getvalue()


def test_a_config_error_prints_one_line_with_file_line_and_option_and_exits_2(cli: Cli) -> None:
    path = cli.write("bad.conf", "instances 2\ninstances many\n")
    assert cli("subscribe", "start", "bad") == 2
    message = cli.err.getvalue()
    assert message.count("\n") == 1
    assert f"{path}:2: option 'instances'" in message
    assert "Traceback" not in message


def test_help_prints_usage_and_exits_0(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("subscribe", "-h") == 0
    assert "usage: sr_subscribe" in capsys.readouterr().out


def test_an_unknown_component_is_refused(cli: Cli) -> None:
    assert cli("nosuch", "status") == 2
    assert "unknown component" in cli.err.getvalue()


@pytest.mark.parametrize("argv", [("foreground",), ("foreground", "a", "b"), ("edit",)])
def test_single_config_verbs_need_exactly_one_config(cli: Cli, argv: tuple[str, ...]) -> None:
    assert cli("subscribe", *argv) == 2
    assert "exactly one configuration" in cli.err.getvalue()


@pytest.mark.parametrize(
    "verb", ["cleanup", "declare", "add", "remove", "enable", "disable", "convert"]
)
def test_verbs_on_named_configs_need_at_least_one(cli: Cli, verb: str) -> None:
    assert cli("subscribe", verb) == 2
    assert "at least one configuration" in cli.err.getvalue()


def test_add_list_disable_enable_remove_manage_config_files(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "feed.conf"
    source.write_text("instances 2\n")
    assert cli("subscribe", "add", str(source)) == 0
    assert (cli.config_dir / "subscribe" / "feed.conf").read_text() == "instances 2\n"
    assert cli("subscribe", "add", str(source)) == 2  # already there
    cli.write("other.conf", "")
    assert cli("subscribe", "disable", "other") == 0
    assert (cli.config_dir / "subscribe" / "other.conf.off").exists()
    assert cli("subscribe", "list") == 0
    assert cli.out.getvalue().splitlines() == ["feed", "other  (disabled)"]
    assert cli("subscribe", "list", "feed") == 0
    assert cli.out.getvalue() == "instances 2\n"
    assert cli("subscribe", "enable", "other.conf") == 0
    assert (cli.config_dir / "subscribe" / "other.conf").exists()
    assert cli("subscribe", "remove", "feed") == 0
    assert cli("subscribe", "list") == 0
    assert cli.out.getvalue().splitlines() == ["other"]
    assert cli("subscribe", "remove", "feed") == 2


def test_start_refuses_a_disabled_config(cli: Cli) -> None:
    cli.write("off.conf.off", "instances 1\n")
    assert cli("subscribe", "start", "off") == 1
    assert "disabled" in cli.err.getvalue()
    assert not (cli.state_dir / "subscribe" / "off").exists()


def test_edit_runs_the_editor_on_the_config_file(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = cli.write("e.conf", "")
    record = tmp_path / "edited"
    monkeypatch.setenv("EDITOR", f"sh -c 'echo \"$0\" > {record}'")
    assert cli("subscribe", "edit", "e") == 0
    assert record.read_text().strip() == str(path)


def test_declare_and_cleanup_call_the_component(cli: Cli) -> None:
    cli.write("q.conf", "")
    component = cli.runtime.registry["subscribe"]
    assert isinstance(component, HeartbeatComponent)
    state = cli.state_dir / "subscribe" / "q"
    state.mkdir(parents=True)
    (state / "leftover").write_text("x")
    assert cli("subscribe", "declare", "q") == 0
    assert cli("subscribe", "cleanup", "q") == 0
    assert component.declared == ["q"]
    assert component.cleaned == ["q"]
    assert not state.exists()


def test_status_of_stopped_instances_is_nonzero_and_shows_broker_errors_without_secrets(
    cli: Cli,
) -> None:
    cli.write("s.conf", "instances 2\nfail_status amqp://bob:hunter2@broker/\n")
    assert cli("subscribe", "status") == 1
    lines = cli.out.getvalue().splitlines()
    assert [line.split()[1:4] for line in lines[1:3]] == [
        ["001", "-", "stopped"],
        ["002", "-", "stopped"],
    ]
    assert "queue status unavailable: cannot reach amqp://bob:***@broker/" in lines[3]
    assert "hunter2" not in cli.out.getvalue()


def test_status_shows_a_disabled_config_as_disabled_and_does_not_fail_for_it(cli: Cli) -> None:
    cli.write("d.conf.off", "")
    assert cli("subscribe", "status") == 0
    assert "disabled" in cli.out.getvalue()


def test_foreground_runs_instance_0_until_sigterm_and_returns_its_status(cli: Cli) -> None:
    cli.write("fg.conf", "exit_status 3\n")
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert cli("subscribe", "foreground", "fg") == 3
    finally:
        timer.cancel()
    assert (cli.state_dir / "subscribe" / "fg" / "sr_subscribe_fg_000.stopped").exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored


def test_a_one_shot_component_runs_in_the_foreground_without_an_action(cli: Cli) -> None:
    assert cli("post", "--run_once", "1", "--exit_status", "4", "/some/file") == 4


def test_a_one_shot_component_refuses_daemon_verbs_without_sleep(cli: Cli) -> None:
    cli.write("p.conf", "", component="post")
    assert cli("post", "start", "p") == 2
    assert "sleep" in cli.err.getvalue()


def test_convert_prints_the_sarra_form_of_an_sr3_file_and_leaves_it_alone(
    cli: Cli, tmp_path: Path
) -> None:
    sr3 = tmp_path / "sr3" / "dd.conf"
    sr3.parent.mkdir()
    text = (
        "broker amqps://anonymous@dd.weather.gc.ca/\n"
        "topicPrefix v02.post\n"
        "# the SWOB feed\n"
        "subtopic observations.swob-ml.#\n"
        "callback log\n"
        "callback nodupe\n"
        "nodupe_ttl 5m\n"
        "logLevel debug\n"
    )
    sr3.write_text(text)
    assert cli("subscribe", "convert", str(sr3)) == 0
    assert cli.out.getvalue().splitlines() == [
        f"# sarra form of {sr3} (sr_subscribe convert)",
        "broker amqps://anonymous@dd.weather.gc.ca/",
        "topic_prefix v02.post",
        "# the SWOB feed",
        "subtopic observations.swob-ml.#",
        "plugin sarra.plugins.log",
        "# sarra: option 'callback': sr3 plugin 'nodupe' is not available in sarra: duplicate "
        "suppression is built in: remove the line and set nodupe_ttl (suppress_duplicates) and "
        "nodupe_basis (cache_basis)",
        "# callback nodupe",
        "suppress_duplicates 5m",
        "loglevel debug",
    ]
    assert sr3.read_text() == text


def test_convert_takes_a_config_name_and_notes_options_the_component_ignores(cli: Cli) -> None:
    cli.write("old.conf", "broker amqp://u@localhost/\non_msg msg_log\npost_format v02\npath /x\n")
    assert cli("subscribe", "convert", "old") == 0
    assert cli.out.getvalue().splitlines()[1:] == [
        "broker amqp://u@localhost/",
        "on_message sarra.plugins.msg_log",
        "post_format v02",
        "# sarra: option 'path' is ignored by subscribe",
        "path /x",
    ]


def test_convert_of_a_missing_file_is_a_config_error(cli: Cli) -> None:
    assert cli("subscribe", "convert", "nothere") == 2
    assert "no configuration 'nothere'" in cli.err.getvalue()
