"""The pump examples (etc/sarra, etc/report, etc/log) load and mean what they say."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarra.components.log import LogComponent
from sarra.components.report_router import ReportRouterComponent
from sarra.components.sarra import pump_identity, republish_settings, sarra_bindings
from sarra.config.settings import load_settings
from sarra.flow.reportrouting import router_bindings

ETC = Path(__file__).resolve().parents[2] / "etc"
EXAMPLES = sorted(p for d in ("sarra", "report", "log") for p in (ETC / d).glob("*.conf"))


@pytest.fixture(autouse=True)
def _credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords for the example brokers, as a pump's credentials.conf would hold them."""
    cred = tmp_path / "credentials.conf"
    cred.write_text(
        "amqp://tfeed:x@localhost/\namqp://pumpb:x@pumpa.example.com/\n"
        "amqp://alice:x@pumpa.example.com/\n"
    )
    cred.chmod(0o600)
    monkeypatch.setenv("SR_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("SR_STATE_DIR", str(tmp_path))


def _load(path: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {"SR_CONFIG_DIR": str(tmp_path), "SR_STATE_DIR": str(tmp_path), "HOME": "/home/u"}
    return load_settings(path.parent.name, str(path), env=env)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_pump_example_loads_without_warnings(path: Path, tmp_path: Path) -> None:
    cfg = _load(path, tmp_path)
    assert cfg.get("broker")
    assert cfg.warnings == ()


def test_the_source_facing_sarra_binds_each_declared_source_and_polices_by_default(
    tmp_path: Path,
) -> None:
    cfg = _load(ETC / "sarra" / "from_sources.conf", tmp_path)
    assert sarra_bindings(cfg) == (("xs_alice", "v02.post.#"), ("xs_bob", "v02.post.#"))
    assert cfg.get("source_from_exchange") is True
    assert cfg.get("report_back") is False
    assert cfg.get("mirror") is True
    assert cfg.get("directory") == "/var/www/sarra/${YYYYMMDD}/${SOURCE}"
    settings = republish_settings(cfg)
    assert settings.post_exchange == "xpublic" and settings.post_base_dir == "/var/www/sarra"
    assert pump_identity(cfg).accepts("pumpb")


def test_without_read_sources_the_same_sarra_reads_only_its_exchange(tmp_path: Path) -> None:
    env = {"SR_CONFIG_DIR": str(tmp_path), "SR_STATE_DIR": str(tmp_path), "HOME": "/home/u"}
    path = str(ETC / "sarra" / "from_sources.conf")
    off = load_settings("sarra", path, [("read_sources", "off")], env=env)
    assert sarra_bindings(off) == (("xpublic", "v02.post.#"),)


def test_the_downstream_sarra_reads_the_upstream_xpublic(tmp_path: Path) -> None:
    cfg = _load(ETC / "sarra" / "from_pump_a.conf", tmp_path)
    assert sarra_bindings(cfg) == (("xpublic", "v02.post.#"),)


def test_the_router_example_routes_pumpa_reports_to_its_link_account(tmp_path: Path) -> None:
    cfg = _load(ETC / "report" / "routing.conf", tmp_path)
    router = ReportRouterComponent().router(cfg)
    assert router.routes["pumpa"].exchange == "xs_pumpb"
    assert ("xs_carol", "v02.report.#") in router_bindings(router.pump.users)


def test_the_log_example_reads_only_xr_of_its_user(tmp_path: Path) -> None:
    cfg = _load(ETC / "log" / "mine.conf", tmp_path)
    assert LogComponent()._bindings(cfg, "alice") == (("xr_alice", "v02.report.obs.#"),)
