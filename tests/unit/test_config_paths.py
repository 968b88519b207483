"""Platform directories and their overrides."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sarra.config import paths


def test_overrides_win():
    env = {"SR_CONFIG_DIR": "/c", "SR_STATE_DIR": "/s"}
    assert paths.config_dir(env) == Path("/c")
    assert paths.state_dir("subscribe", "dd", env) == Path("/s/subscribe/dd")
    assert paths.log_dir(env) == Path("/s/log")
    assert paths.credentials_path(env) == Path("/c/credentials.conf")
    assert paths.default_conf_path(env) == Path("/c/default.conf")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG is the Linux convention")
def test_xdg_variables_are_honoured_on_linux(monkeypatch, tmp_path):
    monkeypatch.delenv("SR_CONFIG_DIR", raising=False)
    monkeypatch.delenv("SR_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "st"))
    assert paths.config_dir() == tmp_path / "cfg" / "sarra"
    assert paths.state_dir() == tmp_path / "st" / "sarra"


def test_root_and_the_sarra_account_use_the_system_tree_when_it_exists(monkeypatch, tmp_path):
    system_config, system_state = tmp_path / "etc-sarra", tmp_path / "var-lib-sarra"
    monkeypatch.setattr(paths, "SYSTEM_CONFIG_DIR", system_config)
    monkeypatch.setattr(paths, "SYSTEM_STATE_DIR", system_state)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "st"))
    empty: dict[str, str] = {}
    for account in ("root", "sarra"):
        monkeypatch.setattr(paths, "_account", lambda account=account: account)
        # no system tree installed: the account's own directories
        assert paths.config_dir(empty) == tmp_path / "cfg" / "sarra"
        system_config.mkdir(exist_ok=True)
        assert paths.config_dir(empty) == system_config
        assert paths.state_dir("subscribe", "obs", empty) == system_state / "subscribe" / "obs"
        assert paths.credentials_path(empty) == system_config / "credentials.conf"
        # the variables still win
        assert paths.config_dir({"SR_CONFIG_DIR": "/c"}) == Path("/c")
        assert paths.state_dir(env={"SR_STATE_DIR": "/s"}) == Path("/s")
        system_config.rmdir()
    system_config.mkdir()
    monkeypatch.setattr(paths, "_account", lambda: "alice")  # anyone else: their own
    assert paths.config_dir(empty) == tmp_path / "cfg" / "sarra"
    assert paths.state_dir(env=empty) == tmp_path / "st" / "sarra"


def test_where_platformdirs_gives_one_directory_the_state_goes_below_it(monkeypatch, tmp_path):
    # Windows: user_config_dir and user_state_dir are both %LOCALAPPDATA%\sarra
    one = str(tmp_path / "AppData" / "Local" / "sarra")
    monkeypatch.delenv("SR_CONFIG_DIR", raising=False)
    monkeypatch.delenv("SR_STATE_DIR", raising=False)
    monkeypatch.setattr(paths, "uses_system_tree", lambda *a: False)
    monkeypatch.setattr(paths.platformdirs, "user_config_dir", lambda *a, **k: one)
    monkeypatch.setattr(paths.platformdirs, "user_state_dir", lambda *a, **k: one)
    assert paths.config_dir() == Path(one)
    assert paths.state_dir() == Path(one) / "state"
    assert paths.log_dir() == Path(one) / "state" / "log"
    assert paths.state_dir("log", "mine") == Path(one) / "state" / "log" / "mine"
