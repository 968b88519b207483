"""How a downloader is fed from the settings: https checking (``tls_rigour``), times, modes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarra.components.common import download_settings
from sarra.config.settings import load_settings


@pytest.mark.parametrize(("rigour", "verify"), [("lax", False), ("normal", True), ("strict", True)])
def test_only_lax_tls_rigour_turns_certificate_checks_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rigour: str, verify: bool
) -> None:
    env = {"SR_CONFIG_DIR": str(tmp_path / "config"), "HOME": str(tmp_path)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # credential_store() reads the process environment
    s = load_settings("subscribe", None, [("tls_rigour", rigour)], env=env)
    assert download_settings(s).tls_verify is verify


def test_preserve_and_chmod_options_reach_the_downloader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"SR_CONFIG_DIR": str(tmp_path / "config"), "HOME": str(tmp_path)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    given = [("preserve_time", "off"), ("preserve_mode", "off"), ("chmod_dir", "700")]
    d = download_settings(load_settings("subscribe", None, given, env=env))
    assert (d.preserve_time, d.preserve_mode, d.chmod_dir) == (False, False, 0o700)
    default = download_settings(load_settings("subscribe", None, [], env=env))
    assert (default.preserve_time, default.preserve_mode) == (True, True)
