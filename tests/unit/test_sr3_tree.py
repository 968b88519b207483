"""sr3's configuration tree (issue 11 item 6): ``--sr3`` / ``SR_CONFIG_TREE=sr3``.

sr3 keeps ``<component>/NAME.conf``, ``default.conf``, ``admin.conf`` and ``credentials.conf``
under ``$XDG_CONFIG_HOME/sr3`` (``~/.config/sr3``); sarra reads that tree when asked, keeps its
own state for it apart, and never reads it otherwise.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sarra.cli.main import main
from sarra.cli.runtime import CONFIG_TREE_ENV
from sarra.config import load_config, paths
from sarra.config.cmdline import parse_command_line
from sarra.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

SR3_SUBSCRIPTION = """\
# an sr3 subscription as sr3's tree holds it
broker amqps://anonymous@dd.weather.gc.ca/
topicPrefix v02.post
subtopic observations.swob-ml.#
directory /tmp/swob
acceptUnmatched off
accept .*CYUL.*
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def trees(tmp_path: Path) -> dict[str, str]:
    """A sarra tree and an sr3 tree side by side, each with a subscription named ``dd``."""
    xdg = tmp_path / "xdg"
    _write(xdg / "sr3" / "subscribe" / "dd.conf", SR3_SUBSCRIPTION)
    _write(xdg / "sr3" / "subscribe" / "swob.conf", "broker amqp://u@h/\nsubtopic a.#\n")
    _write(xdg / "sr3" / "default.conf", "logLevel debug\n")
    _write(xdg / "sr3" / "credentials.conf", "amqps://anonymous:anonymous@dd.weather.gc.ca/\n")
    _write(tmp_path / "sarra" / "subscribe" / "dd.conf", "broker amqp://other@h/\nsubtopic x\n")
    _write(tmp_path / "sarra" / "subscribe" / "mine.conf", "broker amqp://u@h/\n")
    return {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(xdg),
        "SR_CONFIG_DIR": str(tmp_path / "sarra"),
        "SR_STATE_DIR": str(tmp_path / "state"),
    }


def test_the_sr3_tree_is_where_sr3_keeps_it(tmp_path: Path) -> None:
    env = {"SR_CONFIG_TREE": "sr3", "HOME": str(tmp_path), "SR_CONFIG_DIR": "/elsewhere"}
    if sys.platform.startswith("linux"):
        assert paths.config_dir(env) == tmp_path / ".config" / "sr3"
        xdg = {**env, "XDG_CONFIG_HOME": str(tmp_path / "x")}
        assert paths.config_dir(xdg) == tmp_path / "x" / "sr3"
        assert paths.credentials_path(xdg) == tmp_path / "x" / "sr3" / "credentials.conf"
        assert paths.admin_conf_path(xdg) == tmp_path / "x" / "sr3" / "admin.conf"
        dev = {**xdg, "SR_DEV_APPNAME": "sr3dev"}
        assert paths.config_dir(dev) == tmp_path / "x" / "sr3dev"
    # sarra's own tree is untouched by the choice, and the default stays sarra's
    assert paths.config_dir({"SR_CONFIG_DIR": "/elsewhere"}) == Path("/elsewhere")
    assert paths.config_tree({}) == "sarra"


def test_state_of_sr3_configs_is_kept_apart_in_sarras_state_dir() -> None:
    env = {"SR_CONFIG_TREE": "sr3", "SR_STATE_DIR": "/s"}
    assert paths.state_dir("subscribe", "dd", env) == Path("/s/sr3/subscribe/dd")
    assert paths.log_dir(env) == Path("/s/sr3/log")
    assert paths.state_dir("subscribe", "dd", {"SR_STATE_DIR": "/s"}) == Path("/s/subscribe/dd")


def test_an_unknown_tree_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SR_CONFIG_TREE='sr4'"):
        paths.config_dir({"SR_CONFIG_TREE": "sr4"})


def test_load_config_reads_the_sr3_tree_and_its_default_conf(trees: dict[str, str]) -> None:
    cfg = load_config("subscribe", "dd", env={**trees, "SR_CONFIG_TREE": "sr3"})
    assert cfg.path == Path(trees["XDG_CONFIG_HOME"]) / "sr3" / "subscribe" / "dd.conf"
    assert cfg.get("broker") == "amqps://anonymous@dd.weather.gc.ca/"
    assert cfg.get("loglevel") == "debug"  # from sr3's default.conf
    assert [b.routing_key for b in cfg.bindings] == ["v02.post.observations.swob-ml.#"]
    assert cfg.get("accept_unmatched") is False
    # without the choice, the same name is sarra's file
    mine = load_config("subscribe", "dd", env=trees)
    assert mine.get("broker") == "amqp://other@h/"
    assert mine.get("loglevel") == "info"


def test_sr3_in_a_file_is_refused_with_the_reason(trees: dict[str, str]) -> None:
    conf = _write(
        Path(trees["SR_CONFIG_DIR"]) / "subscribe" / "bad.conf", "broker amqp://u@h/\nsr3 on\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config("subscribe", "bad", env=trees)
    assert f"{conf}:2" in str(caught.value)
    assert "command line only" in str(caught.value)


def test_the_flag_is_parsed_and_the_last_one_wins() -> None:
    assert parse_command_line("subscribe", ["--sr3", "list"]).sr3 is True
    assert parse_command_line("subscribe", ["-sr3", "on", "list"]).sr3 is True
    assert parse_command_line("subscribe", ["--sr3", "-sr3", "off", "list"]).sr3 is False
    assert parse_command_line("subscribe", ["list"]).sr3 is False


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main("subscribe", argv, out=out, err=err)
    return rc, out.getvalue(), err.getvalue()


def test_sr_subscribe_sr3_list_show_and_convert_use_the_sr3_tree(
    trees: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in trees.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(CONFIG_TREE_ENV, raising=False)
    rc, out, _ = _run("--sr3", "list")
    assert rc == 0 and out.split() == ["dd", "swob"]
    rc, out, _ = _run("list")
    assert rc == 0 and out.split() == ["dd", "mine"]
    rc, out, _ = _run("--sr3", "list", "dd")
    assert rc == 0 and out == SR3_SUBSCRIPTION
    rc, out, err = _run("--sr3", "convert", "dd")
    assert rc == 0, err
    assert "topic_prefix v02.post" in out and "accept_unmatch off" in out
    rc, _, err = _run("--sr3", "list", "mine")
    assert rc == 2 and "mine" in err
    # the choice lasts for the command only
    assert CONFIG_TREE_ENV not in os.environ


def test_the_installed_command_line_takes_the_flag(trees: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != CONFIG_TREE_ENV}
    env.update(trees)
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "sarra.cli.main", "subscribe", "--sr3", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["dd", "swob"]


def test_sr_post_finds_sr3s_cpost_configurations_after_its_own(trees: dict[str, str]) -> None:
    sr3 = Path(trees["XDG_CONFIG_HOME"]) / "sr3"
    cpost = _write(sr3 / "cpost" / "outgoing.conf", "post_broker amqp://u@h/\nsleep 5\n")
    env = {**trees, "SR_CONFIG_TREE": "sr3"}
    cfg = load_config("post", "outgoing", env=env)
    assert cfg.path == cpost and cfg.get("sleep") == 5
    own = _write(sr3 / "post" / "outgoing.conf", "post_broker amqp://u@h/\nsleep 7\n")
    assert load_config("post", "outgoing", env=env).path == own  # post/ before cpost/
    with pytest.raises(ConfigError, match="cpost"):
        load_config("post", "missing", env=env)
    # only for post, and only in sr3's tree
    assert paths.component_dir_names("subscribe", env) == ("subscribe",)
    assert paths.component_dir_names("post", trees) == ("post",)
