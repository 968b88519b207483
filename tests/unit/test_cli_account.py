"""Root on a packaged pump acts as the ``sarra`` account (sarra.cli.account)."""

from __future__ import annotations

import os
import types

import pytest

from sarra.cli import account
from sarra.config import paths


@pytest.fixture
def switches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(paths, "uses_system_tree", lambda system_config=None: True)
    monkeypatch.setattr(os, "setgroups", lambda groups: calls.append(("setgroups", groups)))
    monkeypatch.setattr(os, "setgid", lambda gid: calls.append(("setgid", gid)))
    monkeypatch.setattr(os, "setuid", lambda uid: calls.append(("setuid", uid)))
    fake = types.SimpleNamespace(pw_uid=997, pw_gid=996, pw_dir="/var/lib/sarra")
    import pwd

    monkeypatch.setattr(
        pwd, "getpwnam", lambda name: fake if name == "sarra" else pwd.getpwnam(name)
    )
    return calls


def test_root_on_the_system_tree_becomes_sarra_groups_first(
    switches, monkeypatch: pytest.MonkeyPatch
) -> None:
    env: dict[str, str] = {"HOME": "/root"}
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a cwd closed to sarra
    monkeypatch.setattr(os, "chdir", lambda path: switches.append(("chdir", path)))
    assert account.become_system_account(env) is True
    # groups and gid before uid: once the uid is dropped they could not be changed
    assert switches == [
        ("setgroups", []),
        ("setgid", 996),
        ("setuid", 997),
        ("chdir", "/var/lib/sarra"),
    ]
    assert env["HOME"] == "/var/lib/sarra"


@pytest.mark.parametrize(
    "env", [{"SR_CONFIG_DIR": "/c"}, {"SR_STATE_DIR": "/s"}], ids=["config", "state"]
)
def test_an_explicit_tree_is_left_as_it_is(switches, env) -> None:
    assert account.become_system_account(dict(env)) is False
    assert switches == []


def test_nothing_changes_without_root_the_system_tree_or_the_account(
    switches, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert account.become_system_account({}) is False
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(paths, "uses_system_tree", lambda system_config=None: False)
    assert account.become_system_account({}) is False
    monkeypatch.setattr(paths, "uses_system_tree", lambda system_config=None: True)
    import pwd

    def missing(name: str) -> object:
        raise KeyError(name)

    monkeypatch.setattr(pwd, "getpwnam", missing)
    assert account.become_system_account({}) is False
    assert switches == []
