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
