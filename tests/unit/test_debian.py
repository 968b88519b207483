"""The Debian packaging and its systemd units, read as files (the container test in
tests/container/ builds the package and runs the units for real)."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

from sarra.components import REGISTRY

DEBIAN = Path(__file__).resolve().parents[2] / "debian"
UNITS = [*sorted(DEBIAN.glob("sarra.*.service")), DEBIAN / "sarra.service"]


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def test_every_component_has_a_template_and_the_rules_install_each() -> None:
    templates = {p.name.split(".")[1].removesuffix("@") for p in DEBIAN.glob("sarra.sr_*@.service")}
    assert templates == {f"sr_{name}" for name in REGISTRY}
    rules = (DEBIAN / "rules").read_text()
    listed = re.search(r"^TEMPLATES = (.*)$", rules, re.M)
    assert listed is not None
    assert set(listed.group(1).split()) == templates


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_units_run_a_foreground_supervisor_systemd_can_watch(path: Path) -> None:
    service = unit(path)["Service"]
    assert service["Type"] == "exec"  # a main PID, so Restart= works
    if path.name == "sarra.service":
        assert service["ExecStart"] == "/usr/bin/sr supervise"
    else:
        name = path.name.split(".")[1].removesuffix("@")
        assert service["ExecStart"] == f"/usr/bin/{name} supervise %i"
        assert unit(path)["Unit"]["ConditionPathExists"] == f"/etc/sarra/{name[3:]}/%i.conf"
    assert service["User"] == "sarra"
    assert service["Environment"] == "SR_CONFIG_DIR=/etc/sarra SR_STATE_DIR=/var/lib/sarra"
    assert service["KillMode"] == "mixed"  # SIGTERM to the supervisor, which stops the rest
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"  # a configuration error
    assert "HUP" in service["ExecReload"] and "$MAINPID" in service["ExecReload"]
    assert unit(path)["Install"]["WantedBy"] == "multi-user.target"


def test_the_maintainer_scripts_create_and_purge_the_same_config_directories() -> None:
    made = re.findall(r"/etc/sarra(?:/\w+)?", (DEBIAN / "sarra.postinst").read_text())
    purged = re.findall(r"/etc/sarra(?:/\w+)?", (DEBIAN / "sarra.postrm").read_text())
    expected = {"/etc/sarra", "/etc/sarra/plugins"} | {f"/etc/sarra/{c}" for c in REGISTRY}
    assert set(made) - {"/etc/sarra/credentials"} == expected
    assert set(purged) - {"/etc/sarra/credentials"} == expected
    assert (
        "install -m 0600 -o sarra -g sarra /dev/null /etc/sarra/credentials.conf"
        in (DEBIAN / "sarra.postinst").read_text()
    )


def test_the_package_version_is_the_one_version() -> None:
    from sarra import __version__

    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"sarra ({__version__}) ")
