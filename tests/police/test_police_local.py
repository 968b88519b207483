"""sr_police without a broker: pump roles, permissions, collisions, events, local checks."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sarra.config.loader import load_config, load_pump_config
from sarra.errors import ConfigError
from sarra.police import audit as au
from sarra.police import cli, run
from sarra.police.pump import Permission, Pump, permission_for
from sarra.security_events import events_path, read_events, record_event

ADMIN_CONF = """\
admin amqp://bunnymaster@127.0.0.1:1/
feeder amqp://tfeed@127.0.0.1:1/
declare source alice al
declare subscriber bob
declare exchange xcustom_public
"""


def _env(tmp_path: Path, admin_conf: str = ADMIN_CONF) -> dict[str, str]:
    (tmp_path / "cfg").mkdir(exist_ok=True)
    (tmp_path / "cfg" / "default.conf").write_text("cluster pumpA\n")
    (tmp_path / "cfg" / "admin.conf").write_text(admin_conf)
    return {"SR_CONFIG_DIR": str(tmp_path / "cfg"), "SR_STATE_DIR": str(tmp_path / "state")}


def test_the_permissions_are_the_anchored_ones_of_the_spec() -> None:
    assert permission_for("source", "alice") == Permission(
        r"^q_alice\..*|^xs_alice(_.*)?$",
        r"^q_alice\..*|^xs_alice(_.*)?$",
        r"^q_alice\..*|^x[lrs]_alice(_.*)?$|^x.*public$",
    )
    assert permission_for("subscriber", "bob") == Permission(
        r"^q_bob\..*", r"^q_bob\..*|^xs_bob$", r"^q_bob\..*|^x[lrs]_bob(_.*)?$|^x.*public$"
    )
    assert (
        permission_for("admin", "b")
        == permission_for("feeder", "f")
        == Permission(".*", ".*", ".*")
    )


def test_a_dot_in_a_user_name_is_escaped_in_the_regexes() -> None:
    assert permission_for("subscriber", "a.b").configure == r"^q_a\.b\..*"


def test_admin_conf_gives_roles_exchanges_cluster_and_management_url(tmp_path: Path) -> None:
    pump = Pump.from_config(load_pump_config(_env(tmp_path)))
    roles = {u.name: u.role for u in pump.users}
    assert roles == {
        "bunnymaster": "admin",
        "tfeed": "feeder",
        "alice": "source",
        "al": "source",
        "bob": "subscriber",
    }
    assert pump.cluster == "pumpA"
    assert pump.management_url == "http://127.0.0.1:15672/"
    assert pump.exchanges == (
        "xpublic",
        "xreport",
        "xs_alice",
        "xr_alice",
        "xs_al",
        "xr_al",
        "xs_bob",
        "xcustom_public",
    )
    assert pump.user("bunnymaster") is not None and pump.user("bunnymaster").tags == (
        "administrator"
    )


def test_components_see_the_declared_users_of_admin_conf(tmp_path: Path) -> None:
    cfg = load_config("subscribe", None, env=_env(tmp_path))
    assert cfg.declared["source"] == ("alice", "al")
    assert cfg.get("admin") == "amqp://bunnymaster@127.0.0.1:1/"


def test_mgmt_port_changes_the_default_management_url(tmp_path: Path) -> None:
    env = _env(tmp_path, ADMIN_CONF + "mgmt_port 25672\n")
    assert Pump.from_config(load_pump_config(env)).management_url == "http://127.0.0.1:25672/"


def test_a_user_declared_with_two_roles_is_refused(tmp_path: Path) -> None:
    env = _env(tmp_path, ADMIN_CONF + "declare subscriber alice\n")
    with pytest.raises(ConfigError, match="both source and subscriber"):
        Pump.from_config(load_pump_config(env))


def test_a_pump_without_admin_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="admin"):
        Pump.from_config(load_pump_config(_env(tmp_path, "declare source alice\n")))


def test_users_differing_by_an_underscore_suffix_are_an_error_and_a_prefix_is_noted(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path, ADMIN_CONF + "declare source al_ice\n")
    pump = Pump.from_config(load_pump_config(env))
    found = {(f.check, f.subject, f.severity) for f in au.check_pump_names(pump)}
    assert ("user_collision", "al/al_ice", "error") in found
    assert ("user_prefix", "al/alice", "info") in found
    assert pump.exchange_owner("xs_al_ice") == "al_ice"
    assert pump.exchange_owner("xs_al_x") == "al"
    assert pump.exchange_owner("xs_zed") is None


def test_events_are_appended_as_json_lines_and_read_back(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert record_event(
        "forged_source",
        env=env,
        user="alice",
        exchange="xs_alice",
        detail="claimed bob",
        now=1000.0,
    )
    assert record_event("forged_report", env=env, user="bob", exchange="xs_bob", now=2000.0)
    assert not record_event("Bad Kind", env=env)
    path = events_path(env)
    assert path == tmp_path / "state" / "police" / "events.jsonl"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    with path.open("a") as f:
        f.write("not json\n")
    events = read_events(path)
    assert [e["kind"] for e in events] == ["forged_source", "forged_report"]
    assert events[0] == {
        "time": 1000.0,
        "kind": "forged_source",
        "user": "alice",
        "exchange": "xs_alice",
        "detail": "claimed bob",
    }
    assert [e["kind"] for e in read_events(path, since=1500.0)] == ["forged_report"]


def test_recent_events_become_findings_per_kind_and_user(tmp_path: Path) -> None:
    env = _env(tmp_path)
    for t in (100.0, 200.0, 300.0):
        record_event("forged_source", env=env, user="alice", exchange="xs_alice", now=t)
    found = au.check_events(events_path(env), window=250.0, now=400.0)
    assert [(f.subject, f.severity) for f in found] == [("forged_source:alice", "warning")]
    assert "2 forged_source event(s) by alice" in found[0].detail


def test_a_loose_credentials_file_and_key_file_are_flagged_and_fixed(tmp_path: Path) -> None:
    env = _env(tmp_path)
    key = tmp_path / "id_key"
    key.write_text("secret")
    key.chmod(0o644)
    creds = tmp_path / "cfg" / "credentials.conf"
    creds.write_text(f"amqp://alice:pw@127.0.0.1:1/\nsftp://u@h ssh_keyfile={key}\n")
    creds.chmod(0o640)
    found = au.check_credentials(env)
    assert {f.subject for f in found} == {str(creds), str(key)}
    report = au.AuditReport(time=0.0, broker="-", findings=found)
    done = run.fix(report, env)
    assert len(done) == 2
    assert creds.stat().st_mode & 0o777 == 0o600 and key.stat().st_mode & 0o777 == 0o600
    assert au.check_credentials(env) == []


def test_a_dead_instance_is_flagged_and_its_pid_file_removed_by_fix(tmp_path: Path) -> None:
    env = _env(tmp_path)
    folder = tmp_path / "state" / "sarra" / "pump"
    folder.mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    (folder / "sr_sarra_pump_001.pid").write_text(proc.stdout)
    found = au.check_instances(env, stuck_after=450.0)
    assert [(f.check, f.subject) for f in found] == [("instance_dead", "sarra/pump/001")]
    run.fix(au.AuditReport(time=0.0, broker="-", findings=found), env)
    assert not (folder / "sr_sarra_pump_001.pid").exists()


def test_a_running_instance_with_an_old_heartbeat_is_stuck(tmp_path: Path) -> None:
    env = _env(tmp_path)
    folder = tmp_path / "state" / "sarra" / "pump"
    folder.mkdir(parents=True)
    # a pid file is trusted only for a process whose argv names component and config
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "sarra", "pump"])
    cmdline = Path(f"/proc/{child.pid}/cmdline")
    while b"pump" not in cmdline.read_bytes():  # empty until the child has exec'd
        time.sleep(0.01)
    try:
        (folder / "sr_sarra_pump_002.pid").write_text(f"{child.pid}\n")
        heart = folder / "sr_sarra_pump_002.heart"
        heart.touch()
        os.utime(heart, (1000.0, 1000.0))
        found = au.check_instances(env, stuck_after=450.0, now=2000.0)
        assert [(f.check, f.subject) for f in found] == [("instance_stuck", "sarra/pump/002")]
        assert au.check_instances(env, stuck_after=450.0, now=1100.0) == []
    finally:
        child.kill()
        child.wait()


def test_an_unreachable_broker_is_an_error_in_parsable_json(tmp_path: Path) -> None:
    env = _env(tmp_path)
    creds = tmp_path / "cfg" / "credentials.conf"
    creds.write_text("amqp://bunnymaster:pw@127.0.0.1:1/\n")
    creds.chmod(0o600)
    (tmp_path / "cfg" / "admin.conf").write_text(
        ADMIN_CONF + "management_url http://127.0.0.1:1/\n"
    )
    out = io.StringIO()
    rc = cli.main(["--json", "audit"], env=env, out=out)
    doc = json.loads(out.getvalue())
    assert rc == 2 and doc["status"] == "error"
    assert doc["counts"]["broker_unreachable"] == 1
    assert {f["check"] for f in doc["findings"]} >= {"broker_unreachable", "user_prefix"}
