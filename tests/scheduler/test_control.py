"""The control endpoint locked down, and bad input refused: real scheduler processes, real HTTP."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sarra.scheduler import cli
from tests.scheduler.conftest import ROOT, SLEEPER, Proc, spec_text, status_of, wait_for
from tests.scheduler.fake_master import Cluster

WRONG = "not-the-token-0123456789abcdefghijklmnopqrstuvwxyz"


def call(url: str, token: str | None = None, post: bool = False) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    req = urllib.request.Request(
        url, method="POST" if post else "GET", data=b"" if post else None, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def sr_scheduler(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "sarra.scheduler.cli", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def start(cluster: Cluster, tmp_path: Path, extra: str = "") -> tuple[Proc, Path, Path]:
    state = tmp_path / "st"
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text(cluster.masters[0].url, state, SLEEPER.format(count=1), extra))
    proc = Proc(spec, tmp_path / "run.log")
    wait_for(lambda: (state / "leader.addr").exists(), 30, "the leader's address")
    wait_for(lambda: len(cluster.running_tasks()) == 1, 30, "the worker running")
    token = (state / "control.token").read_text().strip()
    base = "http://" + (state / "leader.addr").read_text().strip()
    wait_for(
        lambda: json.loads(call(base + "/status.json", token)[1]).get("allocated") == 1,
        10, "the status document to show the worker",
    )  # fmt: skip
    return proc, spec, state


def test_on_loopback_changes_need_the_token_that_sr_scheduler_finds_by_itself(
    cluster: Cluster, tmp_path: Path
) -> None:
    proc, spec, state = start(cluster, tmp_path)
    try:
        token_file = state / "control.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        base = "http://" + (state / "leader.addr").read_text().strip()
        assert base.startswith("http://127.0.0.1:")  # loopback when status_listen is not set
        code, body = call(base + "/status.json")  # reading on loopback needs no token
        assert code == 200 and json.loads(body)["leader"] and token not in body.decode()
        for token_sent in (None, WRONG, ""):
            for path in ("/stop?force=1&teardown=1", "/reload"):
                code, body = call(base + path, token_sent, post=True)
                assert code == 401 and b"control token" in body, (path, token_sent)
        assert proc.p.poll() is None and len(cluster.running_tasks()) == 1
        assert "TEARDOWN" not in [k for _, k in cluster.calls]
        wait_for(lambda: proc.text().count("refused POST /stop from 127.0.0.1") == 3, 5, "log")
        assert "(no token)" in proc.text() and "(wrong token)" in proc.text()
        # the operator's commands find the leader and the token by themselves
        done = sr_scheduler("status", str(spec))
        assert done.returncode == 0 and "plan deployment: " in done.stdout, done.stderr
        assert "phase feed: " in done.stdout and "feed-0  " in done.stdout
        done = sr_scheduler("--json", "status", str(spec))
        assert done.returncode == 0 and json.loads(done.stdout)["leader"], done.stderr
        done = sr_scheduler("reload", str(spec))
        assert done.returncode == 0 and "no change" in done.stdout, done.stderr
        done = sr_scheduler("--force", "stop", str(spec))
        assert done.returncode == 0 and "stopping" in done.stdout, done.stderr
        assert proc.p.wait(20) == 0
        assert len(cluster.running_tasks()) == 1  # stopped without teardown: workers kept
        text = proc.text()
        assert token not in text and WRONG not in text
        assert token not in (state / "state.json").read_text()
    finally:
        proc.kill()


def test_off_loopback_status_needs_the_token_too(cluster: Cluster, tmp_path: Path) -> None:
    proc, spec, state = start(cluster, tmp_path, 'status_listen = "0.0.0.0:0"\n')
    try:
        token_file = state / "control.token"
        token = token_file.read_text().strip()
        base = "http://" + (state / "leader.addr").read_text().strip()
        assert call(base + "/status.json")[0] == 401
        assert call(base + "/health") == (200, b"ok\n")  # for health checks: says nothing else
        assert call(base + "/", WRONG)[0] == 401
        code, body = call(base + "/status.json", token)
        assert code == 200 and json.loads(body)["allocated"] == 1
        out = io.StringIO()
        assert cli.main(["--json", "status", str(spec)], out=out) == 0
        assert json.loads(out.getvalue())["leader"]
        token_file.write_text(WRONG + "\n")  # still mode 600, but not what the copy uses
        done = sr_scheduler("status", str(spec))
        assert done.returncode == cli.UNAUTHORIZED and "control token" in done.stderr
        assert WRONG not in done.stderr
        token_file.chmod(0o644)
        done = sr_scheduler("--force", "stop", str(spec))
        assert done.returncode == 1 and "readable by other users" in done.stderr
        assert "Traceback" not in done.stderr and proc.p.poll() is None
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        assert sr_scheduler("--force", "stop", str(spec)).returncode == 0
        assert proc.p.wait(20) == 0
        assert token not in proc.text()
    finally:
        proc.kill()


# -- bad input: a clear message and an exit code, never a traceback ------------------------


def refused(spec: Path, *args: str) -> tuple[int, str]:
    done = sr_scheduler(*args, "run", str(spec))
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done.returncode, done.stderr


@pytest.mark.parametrize(
    "listen", ["nonsense", "127.0.0.1", "127.0.0.1:http", ":8088", "127.0.0.1:70000"]
)
def test_a_bad_status_listen_is_refused_at_spec_load(tmp_path: Path, listen: str) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(
        spec_text("http://127.0.0.1:1", tmp_path / "st", SLEEPER.format(count=1),
                  f'status_listen = "{listen}"\n')
    )  # fmt: skip
    code, err = refused(spec)
    assert code == 2
    assert f"status_listen must be host:port (e.g. 127.0.0.1:8088), not '{listen}'" in err
    assert not (tmp_path / "st").exists()  # refused before anything was made


def test_a_misspelled_component_is_refused_and_nothing_is_launched(
    cluster: Cluster, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.toml"
    workers = SLEEPER.format(count=2).replace(
        'config = "feed"', 'component = "subscrbe"\nconfig = "feed"'
    )
    spec.write_text(spec_text(cluster.masters[0].url, tmp_path / "st", workers))
    code, err = refused(spec)
    assert code == 2
    assert "[workers.feed]: component 'subscrbe' is not an sr_* daemon; one of poll," in err
    assert not cluster.launches and not cluster.calls  # never subscribed, never launched
    done = sr_scheduler("reload", str(spec))  # the reload verb checks the file first, too
    assert done.returncode == 2 and "subscrbe" in done.stderr


def test_a_corrupt_state_file_is_refused_before_serving(cluster: Cluster, tmp_path: Path) -> None:
    state = tmp_path / "st"
    state.mkdir()
    (state / "state.json").write_text('{"framework_id": "x", "tasks": {"t": {"bogus": 1}}')
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text(cluster.masters[0].url, state, SLEEPER.format(count=1)))
    code, err = refused(spec)
    assert code == 1 and f"scheduler state {state / 'state.json'} is corrupt" in err
    assert not (state / "leader.addr").exists() and not cluster.calls


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_an_unusable_state_dir_is_named_as_such(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    # /sys/kernel is a directory that cannot be written, even by root (sysfs)
    state: Any = blocker / "st" if where == "under-a-file" else Path("/sys/kernel")
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text("http://127.0.0.1:1", state, SLEEPER.format(count=1)))
    code, err = refused(spec)
    assert code == 1 and f"state_dir {state} " in err, err
    assert ("cannot be created" if where == "under-a-file" else "is not writable") in err
    assert "cannot reach" not in err


def test_the_client_verbs_say_why_when_no_scheduler_runs(tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text("http://127.0.0.1:1", tmp_path / "st", SLEEPER.format(count=1)))
    for verb in ("status", "reload", "stop"):
        done = sr_scheduler(verb, str(spec))
        assert done.returncode == 1 and "no running leader known" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_help_explains_verbs_mesos_and_exit_codes() -> None:
    done = sr_scheduler("--help")
    assert done.returncode == 0
    text = done.stdout
    assert text.startswith("usage: sr_scheduler")
    for needle in (
        "Mesos",
        "verbs:",
        "exit codes:",
        "control.token",
        "leader.addr",
        "--new-framework",
        "ZooKeeper",
        "relayed to the leader",
    ):
        assert needle in text, needle
    for verb in ("run", "status", "reload", "stop"):
        assert f"\n  {verb} " in text, verb
    codes = text.split("exit codes:")[1]
    for code in range(7):
        assert f"\n  {code}  " in codes, code
    assert "``" not in text  # not a raw docstring
    assert "--json" in text and "deployment plan" in text and "waiting-for-offer" in text
    assert (
        "usage: sr_scheduler [-h] [--version] [--force] [--teardown] [--new-framework] [--json]"
        " [--debug] VERB SPEC" in " ".join(text.split())
    )


def test_every_worker_component_is_an_installed_command() -> None:
    from sarra.scheduler.spec import WORKER_COMPONENTS

    scripts = (ROOT / "pyproject.toml").read_text()
    for name in WORKER_COMPONENTS:
        assert f'\nsr_{name} = "sarra.cli.main:sr_{name}"' in scripts, name


# -- framework authentication to the master -------------------------------------------------


def auth_spec(cluster: Cluster, tmp_path: Path, secret: str) -> tuple[Path, Path]:
    secret_file = tmp_path / "mesos.secret"
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, (secret + "\n").encode())
    os.close(fd)
    spec = tmp_path / "spec.toml"
    extra = f'principal = "sarra-pump"\nsecret_file = "{secret_file}"\n'
    spec.write_text(
        spec_text(cluster.masters[0].url, tmp_path / "st", SLEEPER.format(count=1), extra)
    )
    return spec, secret_file


def test_the_framework_authenticates_to_a_master_that_requires_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    secret = "s3cret-Framework-Pass"
    cluster.credentials = {"sarra-pump": secret}
    spec, _ = auth_spec(cluster, tmp_path, secret)
    proc = Proc(spec, tmp_path / "run.log")
    try:
        wait_for(lambda: len(cluster.running_tasks()) == 1, 30, "the worker launched")
        assert cluster.unauthorized == 0 and "ACCEPT" in [k for _, k in cluster.calls]
        doc = wait_for(
            lambda: (d := status_of(tmp_path / "st")).get("framework_id") and d, 10, "status"
        )
        assert secret not in json.dumps(doc)
        assert sr_scheduler("--force", "stop", str(spec)).returncode == 0
        assert proc.p.wait(20) == 0
        assert secret not in proc.text()
    finally:
        proc.kill()


def test_a_401_from_the_master_is_an_authentication_failure_not_retried(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.credentials = {"sarra-pump": "the-right-one"}
    spec, _ = auth_spec(cluster, tmp_path, "a-wrong-secret")
    proc = Proc(spec, tmp_path / "run.log")
    try:
        assert proc.p.wait(30) == 6
        text = proc.text()
        assert "authentication to the Mesos master failed as principal 'sarra-pump'" in text
        assert "not retrying" in text and "Traceback" not in text
        assert cluster.unauthorized == 1 and not cluster.calls and not cluster.launches
        assert "a-wrong-secret" not in text
    finally:
        proc.kill()


def test_without_credentials_the_master_refuses_with_401(cluster: Cluster, tmp_path: Path) -> None:
    cluster.credentials = {"sarra-pump": "x"}
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text(cluster.masters[0].url, tmp_path / "st", SLEEPER.format(count=1)))
    proc = Proc(spec, tmp_path / "run.log")
    try:
        assert proc.p.wait(30) == 6
        assert "authentication to the Mesos master failed" in proc.text()
        assert cluster.unauthorized == 1 and not cluster.launches
    finally:
        proc.kill()


def test_a_secret_file_readable_by_others_or_missing_is_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    spec, secret_file = auth_spec(cluster, tmp_path, "whatever")
    secret_file.chmod(0o644)
    code, err = refused(spec)
    assert code == 1 and f"secret_file {secret_file} is readable by other users" in err
    secret_file.unlink()
    code, err = refused(spec)
    assert code == 1 and f"cannot read secret_file {secret_file}" in err
    assert not cluster.calls
    text = spec.read_text().replace('principal = "sarra-pump"\n', "")
    spec.write_text(text)
    code, err = refused(spec)
    assert code == 2 and "secret_file needs principal" in err
