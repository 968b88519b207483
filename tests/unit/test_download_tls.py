"""How a downloader's https checking is fed from the settings (``tls_rigour``)."""

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
