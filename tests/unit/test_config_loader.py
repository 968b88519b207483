"""Loading sr2-style configuration files: precedence, includes, variables, masks, errors."""

from __future__ import annotations

import calendar
import re
from pathlib import Path

import pytest

from sarra.config import Binding, load_config, resolve_queue_name
from sarra.config.loader import Config
from sarra.errors import ConfigError

NOW = calendar.timegm((2024, 3, 5, 7, 0, 0))  # 2024-03-05 07:00 UTC, day 065

DATAMART = """\
# Canadian datamart: SWOB observations and city pages
broker amqps://anonymous@dd.weather.gc.ca/
exchange xpublic
subtopic observations.swob-ml.#
subtopic citypage_weather.xml.#
expire 1d
instances 2

directory /data/swob
mirror on
strip 2
reject .*/hourly/.*
accept .*swob-ml.*\\.xml

directory /data/city
mirror off
accept .*citypage.*en\\.xml
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "config" / "subscribe").mkdir(parents=True)
    (tmp_path / "config" / "post").mkdir(parents=True)
    return {
        "SR_CONFIG_DIR": str(tmp_path / "config"),
        "SR_STATE_DIR": str(tmp_path / "state"),
        "HOME": str(tmp_path),
        "DATAROOT": "/srv/data",
    }


def write(env: dict[str, str], relative: str, text: str) -> Path:
    path = Path(env["SR_CONFIG_DIR"]) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(
    env: dict[str, str], name: str | None, *cmdline: tuple[str, str], component: str = "subscribe"
) -> Config:
    return load_config(component, name, cmdline, env=env, now=NOW)


def test_a_datamart_subscription_loads_with_masks_capturing_their_directory(env):
    write(env, "subscribe/dd_swob.conf", DATAMART)
    cfg = load(env, "dd_swob")
    assert cfg.component == "subscribe"
    assert cfg.name == "dd_swob"
    assert cfg.broker == "amqps://anonymous@dd.weather.gc.ca/"
    assert cfg.bindings == (
        Binding("xpublic", "v02.post", "observations.swob-ml.#"),
        Binding("xpublic", "v02.post", "citypage_weather.xml.#"),
    )
    assert cfg.bindings[0].routing_key == "v02.post.observations.swob-ml.#"
    assert cfg.expire == 86400.0
    assert cfg.instances == 2
    reject, swob, city = cfg.masks
    assert (reject.accept, reject.directory, reject.mirror, reject.strip) == (
        False,
        "/data/swob",
        True,
        2,
    )
    assert (swob.accept, swob.directory, swob.mirror) == (True, "/data/swob", True)
    assert (city.accept, city.directory, city.mirror, city.strip) == (True, "/data/city", False, 2)
    # subscribe defaults from sr2
    assert cfg.accept_unmatch is False
    assert cfg.inflight == ".tmp"
    assert cfg.report_back is True
    assert cfg.inplace is True
    assert cfg.report_exchange == "xs_anonymous"


def test_subscribe_defaults_differ_from_post_defaults(env):
    sub = load(env, None)
    post = load(env, None, ("post_broker", "amqp://alice@localhost/"), component="post")
    assert sub.mirror is False and sub.accept_unmatch is False
    assert sub.exchange == "xpublic" and sub.expire == 300.0
    assert post.accept_unmatch is True
    assert post.post_exchange == "xs_alice"
    assert post.to_clusters == "localhost"
    assert post.post_topic_prefix == "v02.post"
    assert post.blocksize == 200 * 1024 * 1024


def test_a_sarra_fetches_100_notices_ahead_by_default_and_a_prefetch_line_overrides_it(env):
    # larger batches: one durability barrier and one confirmed publication per batch
    assert load(env, None, component="sarra").prefetch == 100
    assert load(env, None).prefetch == 100  # the subscriber: one barrier and one ack per batch
    assert load(env, None, component="sender").prefetch == 25
    assert load(env, None, ("prefetch", "25")).prefetch == 25
    assert load(env, None, ("prefetch", "10"), component="sarra").prefetch == 10


def test_a_subscriber_that_reposts_has_no_inflight_suffix(env):
    cfg = load(env, None, ("post_broker", "amqp://feeder@localhost/"))
    assert cfg.inflight is None
    assert cfg.post_exchange == "xs_feeder"


def test_post_exchange_suffix_is_appended_to_the_default_post_exchange(env):
    write(env, "post/p.conf", "post_broker amqp://bob@h/\npost_exchange_suffix radar\n")
    assert load(env, "p", component="post").post_exchange == "xs_bob_radar"


def test_exchange_suffix_names_the_user_exchange(env):
    write(env, "subscribe/s.conf", "broker amqp://carol@h/\nexchange_suffix test\nsubtopic a.#\n")
    cfg = load(env, "s")
    assert cfg.exchange == "xs_carol_test"
    assert cfg.bindings == (Binding("xs_carol_test", "v02.post", "a.#"),)


def test_each_subtopic_binds_on_the_exchange_and_prefix_in_force(env):
    text = (
        "broker amqp://u@h/\nsubtopic a.#\n"
        "exchange xs_other\ntopic_prefix v02.report\nsubtopic b.*\n"
    )
    write(env, "subscribe/s.conf", text)
    cfg = load(env, "s")
    assert cfg.bindings == (
        Binding("xpublic", "v02.post", "a.#"),
        Binding("xs_other", "v02.report", "b.*"),
    )


def test_without_subtopic_one_binding_covers_everything(env):
    write(env, "subscribe/s.conf", "broker amqp://u@h/\n")
    assert load(env, "s").bindings == (Binding("xpublic", "v02.post", "#"),)


def test_later_sources_win_and_the_command_line_wins_over_the_file(env):
    write(env, "default.conf", "broker amqp://fromdefault@h/\nprefetch 5\nheartbeat 10\n")
    write(env, "subscribe.conf", "prefetch 6\nloglevel warning\n")
    write(env, "subscribe/s.conf", "prefetch 7\nbatch 50\n")
    cfg = load(env, "s", ("batch", "60"))
    assert cfg.broker == "amqp://fromdefault@h/"
    assert cfg.heartbeat == 10.0
    assert cfg.loglevel == "warning"
    assert cfg.prefetch == 7
    assert cfg.batch == 60


def test_default_conf_beats_component_defaults(env):
    write(env, "default.conf", "mirror on\n")
    assert load(env, None).mirror is True


def test_config_may_be_given_as_a_path_with_or_without_conf(env, tmp_path):
    elsewhere = tmp_path / "mine.conf"
    elsewhere.write_text("prefetch 3\n")
    assert load(env, str(elsewhere)).prefetch == 3
    write(env, "subscribe/named.conf", "prefetch 4\n")
    assert load(env, "named.conf").prefetch == 4
    assert load(env, "named").name == "named"


def test_aliases_and_sr2_spellings_set_the_canonical_option(env):
    text = (
        "b amqp://u@h/\nqueue q_u.mine\nreportback off\ncache on\nrn /renamed/\n"
        "pbd /data\npbu sftp://u@h/\npx xs_u\nto c1\nsub x.#\nptp v02.post\n"
    )
    write(env, "subscribe/s.conf", text)
    cfg = load(env, "s")
    assert cfg.queue_name == "q_u.mine"
    assert cfg.report_back is False
    assert cfg.suppress_duplicates == 300.0
    assert cfg.caching == 300.0 and cfg.get("sd") == 300.0
    assert cfg.rename == "/renamed/"
    assert (cfg.post_base_dir, cfg.post_base_url, cfg.post_exchange) == (
        "/data",
        "sftp://u@h/",
        "xs_u",
    )
    assert cfg.to_clusters == "c1"


def test_values_of_every_type_are_parsed(env):
    text = (
        "mirror yes\ndurable no\nblocksize 4M\nbufsize 2K\nheartbeat 2h\nsleep 1.5m\n"
        "chmod 644\nstrip .*/incoming/\nsuppress_duplicates 10m\ninflight 30\nmessage_ttl 1w\n"
        "header project=alpha\nheader drop=none\non_file file_log\non_file none\non_file x.py\n"
    )
    write(env, "subscribe/s.conf", text)
    cfg = load(env, "s")
    assert cfg.mirror is True and cfg.durable is False
    assert cfg.blocksize == 4 * 1024 * 1024 and cfg.bufsize == 2048
    assert cfg.heartbeat == 7200.0 and cfg.sleep == 90.0
    assert cfg.chmod == 0o644
    assert cfg.strip == ".*/incoming/"
    assert cfg.suppress_duplicates == 600.0
    assert cfg.inflight == 30.0
    assert cfg.message_ttl == 604800.0
    assert dict(cfg.headers_add) == {"project": "alpha"}
    assert cfg.headers_del == ("drop",)
    assert cfg.plugins == {"on_file": ("x.py",)}


def test_a_bool_alone_on_a_line_means_on(env):
    write(env, "subscribe/s.conf", "mirror\nlog_reject\n")
    cfg = load(env, "s")
    assert cfg.mirror is True and cfg.log_reject is True


def test_plugins_keep_their_order_per_hook(env):
    write(env, "subscribe/s.conf", "on_message a\nplugin p1\non_message b\non_file c\n")
    assert load(env, "s").plugins == {
        "on_message": ("a", "b"),
        "plugin": ("p1",),
        "on_file": ("c",),
    }


def test_include_is_relative_to_the_including_file_then_the_config_dir(env):
    write(env, "subscribe/sub/common.inc", "prefetch 9\n")
    write(env, "shared.conf", "batch 11\n")
    write(env, "subscribe/s.conf", "include sub/common.inc\ninclude shared\nprefetch 10\n")
    cfg = load(env, "s")
    assert (cfg.prefetch, cfg.batch) == (10, 11)


def test_an_include_cycle_is_refused_naming_the_chain(env):
    write(env, "subscribe/a.conf", "include b.conf\n")
    b = write(env, "subscribe/b.conf", "prefetch 1\ninclude a.conf\n")
    with pytest.raises(ConfigError) as caught:
        load(env, "a")
    assert "include cycle" in str(caught.value)
    assert caught.value.path == str(b) and caught.value.line == 2


def test_variables_are_substituted(env):
    text = (
        "broker amqp://tsub@h/\nqueue_name q_${BROKER_USER}.${PROGRAM}.${CONFIG}\n"
        "post_base_dir ${DATAROOT}/${YYYYMMDD}\nsource ${JJJ}_${HH}\n"
        "report_exchange x${YYYY}${MM}${DD}\n"
        "declare env ZONE=east\ncluster ${ZONE}\npost_base_url file:${PBD}\n"
    )
    write(env, "subscribe/v.conf", text)
    cfg = load(env, "v")
    assert cfg.queue_name == "q_tsub.sr_subscribe.v"
    assert cfg.post_base_dir == "/srv/data/20240305"
    assert cfg.source == "065_07"
    assert cfg.report_exchange == "x20240305"
    assert cfg.cluster == "east"
    assert cfg.post_base_url == "file:/srv/data/20240305"


def test_date_variables_take_offsets(env):
    write(env, "subscribe/v.conf", "source ${YYYYMMDD-1d}_${YYYYMMDD+2w}\n")
    assert load(env, "v").source == "20240304_20240319"


def test_directory_keeps_per_notice_variables_for_later(env):
    write(env, "subscribe/v.conf", "directory ${DATAROOT}/${SOURCE}/${YYYYMMDD}\naccept .*\n")
    cfg = load(env, "v")
    assert cfg.directory == "/srv/data/${SOURCE}/${YYYYMMDD}"
    assert cfg.masks[0].directory == "/srv/data/${SOURCE}/${YYYYMMDD}"


def test_an_unknown_variable_is_an_error_naming_file_line_and_option(env):
    path = write(env, "subscribe/v.conf", "\n# comment\ndirectory ${NOPE}/x\n")
    with pytest.raises(ConfigError) as caught:
        load(env, "v")
    error = caught.value
    assert (error.path, error.line, error.option) == (str(path), 3, "directory")
    assert "NOPE" in str(error)


def test_an_unknown_option_names_file_line_and_suggests_a_spelling(env):
    path = write(env, "subscribe/u.conf", "broker amqp://u@h/\nsubtopik a.#\n")
    with pytest.raises(ConfigError) as caught:
        load(env, "u")
    error = caught.value
    assert (error.path, error.line, error.option) == (str(path), 2, "subtopik")
    assert "subtopic" in str(error)


@pytest.mark.parametrize(
    ("line", "option"),
    [
        ("mirror maybe", "mirror"),
        ("prefetch lots", "prefetch"),
        ("blocksize 3X", "blocksize"),
        ("expire soon", "expire"),
        ("accept [unclosed", "accept"),
        ("chmod 999", "chmod"),
        ("broker notaurl", "broker"),
        ("loglevel loud", "loglevel"),
        ("events create|explode", "events"),
        ("header novalue", "header"),
        ("subtopic", "subtopic"),
    ],
)
def test_a_bad_value_is_an_error_naming_file_line_and_option(env, line, option):
    path = write(env, "subscribe/bad.conf", f"# first\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load(env, "bad")
    assert (caught.value.path, caught.value.line, caught.value.option) == (str(path), 2, option)


def test_a_missing_config_or_include_is_an_error(env):
    with pytest.raises(ConfigError, match="no configuration 'absent'"):
        load(env, "absent")
    path = write(env, "subscribe/i.conf", "include nowhere.conf\n")
    with pytest.raises(ConfigError) as caught:
        load(env, "i")
    assert (caught.value.path, caught.value.line) == (str(path), 1)


def test_an_unreadable_file_is_an_error_naming_it(env):
    path = write(env, "subscribe/bin.conf", "")
    path.write_bytes(b"broker \xff\xfe\n")
    with pytest.raises(ConfigError) as caught:
        load(env, "bin")
    assert caught.value.path == str(path)


def test_a_bad_command_line_value_names_the_command_line(env):
    with pytest.raises(ConfigError) as caught:
        load(env, None, ("prefetch", "x"))
    assert caught.value.path == "<command line>" and caught.value.option == "prefetch"


def test_an_option_the_component_ignores_only_warns(env):
    write(env, "subscribe/w.conf", "force_polling on\nuse_amqplib on\n")
    cfg = load(env, "w")
    assert cfg.force_polling is True
    assert len(cfg.warnings) == 2 and "force_polling" in cfg.warnings[0]


def test_a_password_in_a_config_url_is_accepted_but_never_shown(env):
    write(env, "subscribe/p.conf", "broker amqp://u:s3cret@h/\n")
    cfg = load(env, "p")
    assert cfg.broker == "amqp://u:s3cret@h/"
    assert any("password" in w for w in cfg.warnings)
    assert all("s3cret" not in w for w in cfg.warnings)
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(cfg)


def test_the_config_is_frozen(env):
    cfg = load(env, None)
    with pytest.raises(AttributeError):
        cfg.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.values["prefetch"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        _ = cfg.no_such_option


def test_the_queue_name_is_generated_once_and_shared(env):
    write(env, "subscribe/q.conf", "broker amqp://guest@h/\n")
    cfg = load(env, "q")
    first = resolve_queue_name(cfg, env)
    assert re.fullmatch(r"q_guest\.sr_subscribe\.q\.\d{8}\.\d{8}", first)
    assert resolve_queue_name(load(env, "q"), env) == first
    stored = Path(env["SR_STATE_DIR"]) / "subscribe" / "q" / "subscribe.q.guest.qname"
    assert stored.read_text().strip() == first


def test_an_explicit_queue_name_is_used_as_is(env):
    cfg = load(env, None, ("queue_name", "q_me.fixed"))
    assert resolve_queue_name(cfg, env) == "q_me.fixed"


def test_accept_unmatch_and_a_trailing_filename_keyword_are_read(env):
    write(env, "subscribe/k.conf", "accept_unmatch on\naccept .*\\.grib2 WHATFN\n")
    cfg = load(env, "k")
    assert cfg.accept_unmatch is True
    assert cfg.masks[0].pattern == ".*\\.grib2" and cfg.masks[0].filename == "WHATFN"


def test_queue_suffix_ends_the_generated_queue_name(env):
    write(env, "subscribe/qs.conf", "broker amqp://guest@h/\nqueue_suffix east\n")
    name = resolve_queue_name(load(env, "qs"), env)
    assert re.fullmatch(r"q_guest\.sr_subscribe\.qs\.\d{8}\.\d{8}\.east", name)


def test_queue_type_quorum_is_declared_and_refuses_a_queue_that_is_not_durable(env):
    write(env, "subscribe/q.conf", "broker amqp://u@h/\nqueue_type quorum\n")
    assert load(env, "q").values["queue_type"] == "quorum"
    assert load(env, None).values["queue_type"] == "classic"
    path = write(env, "subscribe/bad.conf", "broker amqp://u@h/\nqueue_type quorum\ndurable off\n")
    with pytest.raises(ConfigError, match="quorum needs a durable queue") as err:
        load(env, "bad")
    assert (err.value.path, err.value.line) == (str(path), 3)
    write(env, "subscribe/odd.conf", "broker amqp://u@h/\nqueue_type stream\n")
    with pytest.raises(ConfigError, match="classic, quorum"):
        load(env, "odd")


def test_mode_options_set_on_windows_warn_with_file_line_and_reason(env, monkeypatch):
    from sarra import osport

    path = write(
        env,
        "subscribe/m.conf",
        "broker amqp://h/\nchmod 644\nchmod_dir 755\ndefault_log_mode 640\n",
    )
    write(env, "subscribe/quiet.conf", "broker amqp://h/\n")
    monkeypatch.setattr(osport, "WINDOWS", False)
    assert load(env, "m").warnings == ()  # on Linux they are applied, nothing to say
    monkeypatch.setattr(osport, "WINDOWS", True)
    assert load(env, "quiet").warnings == ()  # the defaults in force: nothing to say
    cfg = load(env, "m", ("chmod", "600"))
    assert (cfg.chmod, cfg.chmod_dir, cfg.chmod_log) == (0o600, 0o755, 0o640)  # still parsed
    assert [w.split(": option ")[0] for w in cfg.warnings] == [
        f"{path}:2",
        f"{path}:3",
        f"{path}:4",
    ]  # once per option: the command line's chmod repeats line 2's
    for word, w in zip(("'chmod'", "'chmod_dir'", "'default_log_mode'"), cfg.warnings, strict=True):
        assert f"option {word} has no effect on Windows" in w
        assert "ACL" in w and "icacls" in w
    with pytest.raises(ConfigError):  # a bad value is still refused, not just warned about
        load(env, "m", ("chmod", "rwx"))


def test_list_options_gather_every_occurrence_in_order_file_then_command_line(env):
    write(env, "post/many.conf", "path /a /b\npath /c\ncluster_aliases x\n")
    given = [("path", f"/p{i}") for i in range(3000)]
    cfg = load(
        env,
        "many",
        *given,
        ("path", "/q"),
        ("path", "/r"),
        ("cluster_aliases", "y z"),
        component="post",
    )
    assert cfg.get("path") == ("/a", "/b", "/c", *(f"/p{i}" for i in range(3000)), "/q", "/r")
    assert cfg.cluster_aliases == ("x", "y", "z")
    assert load(env, None, component="post").get("path") == ()


def test_a_command_line_path_is_one_path_spaces_included_a_file_line_lists_words(env):
    write(env, "post/two.conf", "path /a /b\n")
    cfg = load(env, "two", ("path", "/data/two words.txt"), ("path", "/c"), component="post")
    assert cfg.get("path") == ("/a", "/b", "/data/two words.txt", "/c")
