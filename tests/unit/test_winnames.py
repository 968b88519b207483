"""Windows file-name rules, checked as a pure function (so they are tested on Linux too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarra.errors import HostilePath
from sarra.localfs.confined import SafeRoot, check_relpath
from sarra.localfs.winnames import windows_name_problem

HOSTILE = [
    "CON",
    "con",
    "NUL.txt",
    "nul.tar.gz",
    "Com1",
    "LPT9.log",
    "COM\u00b9",
    "aux ",
    "PRN .txt",
    "CONIN$",
    "a.txt:evil",
    "a.txt::$DATA",
    "C:",
    "x.",
    "x ",
    "x. .",
    'a"b',
    "a<b",
    "a>b",
    "a|b",
    "a?b",
    "a*b",
    "a\\b",
    "tab\there",
    "bell\x07",
]
FINE = ["a.txt", "CONSOLE", "nullable", "COM10", "com0x", "LPT", ".hidden", "a b.txt", "x.y.z"]


@pytest.mark.parametrize("name", HOSTILE)
def test_names_windows_would_misread_are_reported(name: str) -> None:
    problem = windows_name_problem(name)
    assert problem is not None and len(problem) > 10


@pytest.mark.parametrize("name", FINE)
def test_ordinary_names_pass(name: str) -> None:
    assert windows_name_problem(name) is None


def test_reasons_name_the_rule() -> None:
    assert "data stream" in (windows_name_problem("a.txt:evil") or "")
    assert "'NUL'" in (windows_name_problem("nul.txt") or "")
    assert "dot or a space" in (windows_name_problem("report.") or "")


@pytest.mark.parametrize(
    "rel", ["obs/CON", "obs/a.txt:evil", "obs./a", "C:/x", "d/x ", "\\\\server\\share\\x"]
)
def test_relpaths_with_a_hostile_component_are_refused_on_windows(rel: str) -> None:
    with pytest.raises(HostilePath):
        check_relpath(rel, windows=True)


def test_the_same_relpaths_are_names_like_any_other_on_posix() -> None:
    assert check_relpath("obs/CON", windows=False) == ("obs", "CON")
    assert check_relpath("d/x ", windows=False) == ("d", "x ")


def test_a_windows_saferoot_refuses_before_writing(tmp_path: Path) -> None:
    root = SafeRoot(tmp_path / "r", windows=True)
    with pytest.raises(HostilePath, match="device name"):
        root.open_inflight("obs/nul.txt")
    with pytest.raises(HostilePath, match="drive prefix"):
        root.mkdir("obs/a:b")
    with pytest.raises(HostilePath, match="dot or a space"):
        root.mkdir("obs/trailing.")
    assert list((tmp_path / "r").iterdir()) == []
