"""The Debian packaging and its systemd units, read as files (the container test in
tests/container/ builds the package and runs the units for real)."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import pytest

from sarra.components import REGISTRY
from sarra.police import cli
from sarra.police.private import is_loopback, parse_listen

ROOT = Path(__file__).resolve().parents[2]
DEBIAN = ROOT / "debian"
#: the units whose main process is a supervisor (``sr_<component> supervise``, ``sr supervise``)
SUPERVISORS = [*sorted(DEBIAN.glob("sarra.sr_*@.service")), DEBIAN / "sarra.service"]
#: the private-data authorizer (``sr_police authorize``): one server process, not a supervisor
AUTHORIZE = DEBIAN / "sarra.sarra-authorize.service"


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


def test_every_unit_is_a_supervisor_or_the_authorizer() -> None:
    assert sorted(DEBIAN.glob("*.service")) == sorted([*SUPERVISORS, AUTHORIZE])


@pytest.mark.parametrize("path", SUPERVISORS, ids=lambda p: p.name)
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


def test_the_authorizer_unit_runs_sr_police_authorize_on_the_loopback_port_nginx_asks() -> None:
    whole = unit(AUTHORIZE)
    service = whole["Service"]
    assert service["Type"] == "exec"  # a main PID: Restart= works, ExecReload reaches it
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/usr/bin/sr_police"
    args = cli._parser().parse_args(argv[1:])
    assert args.verb == "authorize"
    assert not args.allow_remote
    host, port = parse_listen(args.listen)
    assert is_loopback(host)
    assert args.loglevel == "info"  # one journal line per decision
    proxy = re.search(
        r"proxy_pass http://([\d.]+):(\d+);", (ROOT / "etc/nginx/sarra.conf").read_text()
    )
    assert proxy is not None and (proxy.group(1), int(proxy.group(2))) == (host, port)
    assert service["User"] == "sarra" and service["Group"] == "sarra"
    assert service["Environment"] == "SR_CONFIG_DIR=/etc/sarra SR_STATE_DIR=/var/lib/sarra"
    # re-reads the rules now (the shell's kill: /bin/kill is procps', not always installed)
    assert service["ExecReload"] == "/bin/sh -c 'kill -HUP $MAINPID'"
    assert "KillMode" not in service  # SIGTERM to its only process, which exits 0
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"  # a configuration error
    # enabled only where admin.conf exists; started before nginx at boot
    assert whole["Unit"]["ConditionPathExists"] == "/etc/sarra/admin.conf"
    assert whole["Unit"]["Before"] == "nginx.service"
    assert whole["Install"]["WantedBy"] == "multi-user.target"


def test_the_authorizer_unit_is_confined_to_reading_config_and_answering_on_loopback() -> None:
    service = unit(AUTHORIZE)["Service"]
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"  # all read-only but its StateDirectory
    assert service["StateDirectory"] == "sarra"  # security events: /var/lib/sarra/police
    assert service["ReadOnlyPaths"] == "/etc/sarra"
    assert service["ProtectHome"] == "yes" and service["PrivateTmp"] == "yes"
    assert service["PrivateDevices"] == "yes"
    assert service["CapabilityBoundingSet"] == ""
    assert service["IPAddressDeny"] == "any" and service["IPAddressAllow"] == "localhost"
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_the_rules_install_the_authorizer_neither_enabled_nor_started() -> None:
    rules = (DEBIAN / "rules").read_text()
    assert "dh_installsystemd --no-enable --no-start --name=sarra-authorize\n" in rules


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
