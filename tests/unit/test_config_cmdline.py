"""Command-line parsing and help, generated from the option table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sarra.config import load_config
from sarra.config.cmdline import ACTION_NAMES, CommandLine, format_help, parse_command_line
from sarra.config.manpage import render
from sarra.config.options import options_table
from sarra.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_a_typical_sr2_sr_post_invocation_is_understood():
    argv = "-pb amqp://u@h/ -pbu sftp://u@h/ -pbd /data -to cluster -sum d -blocksize 0 -path a b"
    line = parse_command_line("post", argv.split())
    assert line == CommandLine(
        action=None,
        configs=(),
        options=(
            ("post_broker", "amqp://u@h/"),
            ("post_base_url", "sftp://u@h/"),
            ("post_base_dir", "/data"),
            ("to_clusters", "cluster"),
            ("sum", "d"),
            ("blocksize", "0"),
        ),
        paths=("a", "b"),
    )


def test_sr_post_options_load_into_a_config(tmp_path):
    argv = "-pb amqp://u@h/ -pbu sftp://u@h/ -pbd /data -to cluster -sum d -blocksize 0 -px xs_x"
    line = parse_command_line("post", argv.split())
    env = {"SR_CONFIG_DIR": str(tmp_path), "SR_STATE_DIR": str(tmp_path)}
    cfg = load_config("post", None, line.options, env=env)
    assert (cfg.post_broker, cfg.post_base_dir, cfg.to_clusters) == (
        "amqp://u@h/",
        "/data",
        "cluster",
    )
    assert (cfg.blocksize, cfg.post_exchange, cfg.sum) == (0, "xs_x", "d")


def test_sr_post_positional_arguments_and_path_options_are_all_paths():
    line = parse_command_line("post", ["f1", "-path", "f2", "f3", "-c", "my", "f4"])
    assert line.paths == ("f1", "f4", "f2", "f3") and line.configs == ("my",)


def test_other_components_take_an_action_and_configs():
    line = parse_command_line("subscribe", ["-debug", "-caching", "10m", "foreground", "dd", "x"])
    assert line.action == "foreground" and line.configs == ("dd", "x")
    assert line.options == (("debug", ""), ("suppress_duplicates", "10m"))


def test_booleans_may_be_given_alone_or_with_a_value():
    line = parse_command_line("subscribe", ["-mirror", "off", "--reset", "-au", "start"])
    assert line.options == (("mirror", "off"), ("reset", ""), ("accept_unmatch", ""))
    assert line.action == "start"


def test_double_dash_and_equals_forms_work():
    line = parse_command_line("subscribe", ["--broker=amqp://x@h/", "--subtopic", "a.#", "status"])
    assert line.options == (("broker", "amqp://x@h/"), ("subtopic", "a.#"))


def test_short_aliases_from_sr2_scripts_resolve():
    argv = ["-rn", "r", "-sub", "s.#", "-ptp", "v02.post", "-pe", "xs_a", "-h", "list"]
    line = parse_command_line("subscribe", argv)
    assert [name for name, _ in line.options] == [
        "rename",
        "subtopic",
        "post_topic_prefix",
        "post_exchange",
        "help",
    ]
    assert line.help


def test_an_unknown_option_suggests_a_close_one():
    with pytest.raises(ConfigError) as caught:
        parse_command_line("subscribe", ["-subtopik", "a", "start"])
    assert caught.value.option == "-subtopik" and "subtopic" in str(caught.value)


def test_a_missing_value_and_an_unknown_action_are_errors():
    with pytest.raises(ConfigError, match="value is required"):
        parse_command_line("subscribe", ["-broker"])
    with pytest.raises(ConfigError, match="unknown action 'launch'"):
        parse_command_line("subscribe", ["launch", "x"])


@pytest.mark.parametrize("action", ACTION_NAMES)
def test_every_action_is_accepted(action):
    assert parse_command_line("watch", [action, "cfg"]).action == action


def test_the_parser_accepts_exactly_the_verbs_the_cli_implements():
    from sarra.cli.verbs import VERBS

    assert sorted(ACTION_NAMES) == sorted(VERBS)
    assert len(set(ACTION_NAMES)) == len(ACTION_NAMES)


def test_every_implemented_component_is_one_options_may_apply_to():
    from sarra.components import IMPLEMENTED
    from sarra.config.options import OPTION_COMPONENTS

    assert set(IMPLEMENTED) <= set(OPTION_COMPONENTS)


@pytest.mark.parametrize("component", ["subscribe", "post", "watch"])
def test_the_help_mentions_every_option_of_the_component(component):
    text = format_help(component)
    for option in options_table().for_component(component):
        assert f"-{option.name}" in text
    assert f"sr_{component}" in text


def test_every_option_the_brief_names_is_in_the_table():
    text = (
        "broker exchange exchange_suffix topic_prefix subtopic queue_name durable expire "
        "message_ttl prefetch reset declare_queue bind_queue declare_exchange accept reject "
        "accept_unmatch directory base_dir mirror strip flatten rename inflight inplace "
        "overwrite instances report_back report_exchange suppress_duplicates cache_basis "
        "on_file on_message on_post on_start on_stop plugin include post_broker "
        "post_exchange post_exchange_suffix post_exchange_split post_topic_prefix "
        "post_base_url post_base_dir path sum blocksize to_clusters cluster source events "
        "sleep file_time_limit follow_symlinks force_polling post_on_start randomize "
        "preserve_time preserve_mode chmod chmod_dir base_url_accept header_value_max "
        "header attempts retry_ttl timeout heartbeat logrotate loglevel debug log_reject "
        "delete discard notify_only caching transfer_threads persistent outlet cache config "
        "help sd nd no_duplicates reportback queue pb pbu url pbd document_root pe px to p "
        "rn c sub ptp h "
    )
    required = text.split()
    table = options_table()
    assert [word for word in required if table.resolve(word) is None] == []
    assert table["transfer_threads"].default == 4


def test_the_committed_man_page_matches_the_table():
    page = ROOT / "man" / "sarra-options.7"
    assert page.read_text() == render()
    for option in options_table():
        assert option.name.replace("_", "_") in page.read_text().replace("\\-", "-")


def test_the_man_page_generator_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "sarra.config.manpage"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert result.stdout.startswith(".TH SARRA-OPTIONS 7")
