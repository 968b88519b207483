"""sr3's option names load as synonyms of sarra's, with sr3's meaning (issue 11, item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarra.config import load_config, options_table
from sarra.config.cmdline import format_help
from sarra.config.settings import Settings
from sarra.errors import ConfigError


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    for component in ("subscribe", "sender", "watch", "sarra"):
        (tmp_path / "config" / component).mkdir(parents=True)
    return {"SR_CONFIG_DIR": str(tmp_path / "config"), "SR_STATE_DIR": str(tmp_path / "state")}


def _load(env: dict[str, str], component: str, body: str) -> Settings:
    file = Path(env["SR_CONFIG_DIR"]) / component / "c.conf"
    file.write_text(body, encoding="utf-8")
    return Settings.from_config(load_config(component, str(file), env=env))


def test_an_sr3_subscription_loads_with_sr3_names(env: dict[str, str]) -> None:
    s = _load(
        env,
        "subscribe",
        "broker amqps://anonymous@dd.weather.gc.ca/\n"
        "topicPrefix v02.post\n"
        "subtopic observations.swob-ml.#\n"
        "nodupe_ttl 10m\n"
        "nodupe_basis name\n"
        "logLevel warning\n"
        "acceptUnmatched off\n"
        "timeCopy off\n"
        "permDefault 644\n"
        "queueName q_anonymous.sr_subscribe.swob.test\n"
        "directory /tmp/swob\n"
        "accept .*\n",
    )
    assert s.topic_prefix == "v02.post"
    assert [b.routing_key for b in s.bindings] == ["v02.post.observations.swob-ml.#"]
    assert s.suppress_duplicates == 600.0
    assert s.cache_basis == "name"
    assert s.loglevel == "warning"
    assert s.accept_unmatch is False
    assert s.preserve_time is False
    assert s.chmod == 0o644
    assert s.queue_name == "q_anonymous.sr_subscribe.swob.test"


def test_nodupe_ttl_on_means_the_sr3_default_of_five_minutes(env: dict[str, str]) -> None:
    s = _load(env, "subscribe", "broker amqp://u@h/\nnodupe_ttl on\n")
    assert s.suppress_duplicates == 300.0


def test_an_sr3_watch_loads_post_names_and_file_events(env: dict[str, str]) -> None:
    s = _load(
        env,
        "watch",
        "post_broker amqp://feeder@localhost/\n"
        "post_exchange xs_feeder\n"
        "post_topicPrefix v02.post\n"
        "post_baseUrl sftp://feeder@localhost/\n"
        "post_baseDir /var/data/outgoing\n"
        "post_format v02\n"
        "fileEvents create,modify,delete\n"
        "path /var/data/outgoing\n",
    )
    assert s.post_topic_prefix == "v02.post"
    assert s.post_base_url == "sftp://feeder@localhost/"
    assert s.post_base_dir == "/var/data/outgoing"
    assert s.events == "create,modify,delete"
    assert s.post_format == "v02"


def test_post_format_v03_and_its_sr3_spelling_reach_the_settings(env: dict[str, str]) -> None:
    assert _load(env, "watch", "post_broker amqp://u@h/\npost_format v03\n").post_format == "v03"
    assert _load(env, "sarra", "post_broker amqp://u@h/\npostFormat v03\n").post_format == "v03"


def test_an_unknown_post_format_is_refused_naming_line_and_option(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"c\.conf:2: option 'post_format'.*v02, v03"):
        _load(env, "watch", "post_broker amqp://u@h/\npost_format wis\n")


def test_post_format_v02_loads_without_a_warning(env: dict[str, str]) -> None:
    file = Path(env["SR_CONFIG_DIR"]) / "watch" / "c.conf"
    file.write_text("post_broker amqp://u@h/\npost_format v02\n", encoding="utf-8")
    cfg = load_config("watch", str(file), env=env)
    assert cfg.post_format == "v02"
    assert [w for w in cfg.warnings if "post_format" in w] == []


def test_an_sr3_name_takes_the_status_of_the_option_it_names(env: dict[str, str]) -> None:
    # implemented: the value reaches the settings
    assert _load(env, "subscribe", "broker amqp://u@h/\nqueueBind off\n").bind_queue is False
    # refused: the error names the sr3 spelling written
    with pytest.raises(ConfigError, match=r"c\.conf:2: option 'baseUrl': not supported"):
        _load(env, "subscribe", "broker amqp://u@h/\nbaseUrl https://dd.weather.gc.ca/\n")


def test_sr3_baseurl_is_refused_pointing_at_post_base_url(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"c\.conf:1: option 'baseUrl'.*post_baseUrl"):
        _load(env, "subscribe", "baseUrl https://dd.weather.gc.ca/\n")


def test_sr3_send_to_is_the_sender_destination(env: dict[str, str]) -> None:
    s = _load(
        env,
        "sender",
        "broker amqp://u@h/\nsendTo sftp://me@remote.example.com/\nbaseDir /data\n",
    )
    assert s.destination == "sftp://me@remote.example.com/"
    assert s.base_dir == "/data"


@pytest.mark.parametrize(
    ("sr3", "ours"),
    [
        ("topicPrefix", "topic_prefix"),
        ("post_topicPrefix", "post_topic_prefix"),
        ("post_baseUrl", "post_base_url"),
        ("baseUrl", "base_url"),
        ("nodupe_ttl", "suppress_duplicates"),
        ("fileEvents", "events"),
        ("logLevel", "loglevel"),
        ("post_format", "post_format"),
        ("callback", "plugin"),
        ("flowcb", "plugin"),
    ],
)
def test_help_and_table_show_the_sr3_name(sr3: str, ours: str) -> None:
    option = options_table().resolve(sr3)
    assert option is not None and option.name == ours
    component = "watch" if ours in ("events", "post_format") else "subscribe"
    assert sr3 in format_help(component)


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        ("blockSize 1M", "blocksize", 1_000_000),
        ("blockSize 10Mi", "blocksize", 10 * 1024**2),
        ("blockSize 500kB", "blocksize", 512_000),
        ("blockSize 500k", "blocksize", 500_000),
        ("blockSize 2MiB", "blocksize", 2 * 1024**2),
        ("blockSize 0", "blocksize", 50 * 1024**2),
        ("blockSize 1", "blocksize", 1),
        ("blocksize 1M", "blocksize", 1024**2),
        ("identity sha512", "sum", "s"),
        ("identity md5", "sum", "d"),
        ("identity cod,sha512", "sum", "z,s"),
        ("identity random", "sum", "0"),
    ],
)
def test_sr3_units_and_words_are_converted_under_the_sr3_spelling_only(
    env: dict[str, str], line: str, field: str, value: object
) -> None:
    s = _load(env, "watch", f"post_broker amqp://u@h/\n{line}\n")
    assert getattr(s, field) == value


def test_sr3_file_size_max_is_decimal(env: dict[str, str]) -> None:
    assert (
        _load(env, "subscribe", "broker amqp://u@h/\nfileSizeMax 2G\n").file_size_max == 2 * 10**9
    )
    assert (
        _load(env, "subscribe", "broker amqp://u@h/\nfile_size_max 2G\n").file_size_max
        == 2 * 1024**3
    )


def test_a_bad_sr3_value_is_refused_with_file_and_line(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"c\.conf:2: option 'identity'.*sr3 identity method"):
        _load(env, "watch", "post_broker amqp://u@h/\nidentity crc32\n")
    with pytest.raises(ConfigError, match=r"c\.conf:2: option 'blockSize'.*sr3 size"):
        _load(env, "watch", "post_broker amqp://u@h/\nblockSize lots\n")


def test_the_command_line_converts_sr3_values_too() -> None:
    from sarra.config.cmdline import parse_command_line

    line = parse_command_line("watch", ["--blockSize", "2M", "-identity", "md5name", "start"])
    assert line.options == (("blocksize", "2000000"), ("sum", "n"))
    with pytest.raises(ConfigError, match="sr3 identity method"):
        parse_command_line("watch", ["--identity", "crc32", "start"])


def test_convert_writes_the_converted_value() -> None:
    from sarra.config.convert import convert_text

    assert convert_text("watch", "blockSize 1M\nidentity sha512\n") == "blocksize 1000000\nsum s\n"
