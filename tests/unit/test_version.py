"""``--version`` prints ``sarra.__version__``, the one place the version is written."""

from __future__ import annotations

import io
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import sarra
from sarra.cli.main import main
from sarra.police.cli import main as police_main
from sarra.scheduler.cli import main as scheduler_main


@pytest.mark.parametrize("component", ["subscribe", "post", "sarra"])
def test_component_version_prints_the_package_version_and_exits_0(component: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(component, ["--version"], out=out, err=err) == 0
    assert out.getvalue() == f"sr_{component} (sarra) {sarra.__version__}\n"
    assert err.getvalue() == ""


def test_version_wins_over_the_rest_of_the_command_line() -> None:
    out = io.StringIO()
    assert main("subscribe", ["-nosuchoption", "start", "--version"], out=out) == 0
    assert sarra.__version__ in out.getvalue()


def test_a_path_named_version_after_double_dash_is_not_the_flag() -> None:
    out, err = io.StringIO(), io.StringIO()
    # without the flag, the unknown component is what is reported
    assert main("nosuch", ["--", "--version"], out=out, err=err) == 2
    assert out.getvalue() == ""
    assert "unknown component" in err.getvalue()


@pytest.mark.parametrize(
    ("name", "entry"), [("sr_police", police_main), ("sr_scheduler", scheduler_main)]
)
def test_admin_tools_print_the_version(
    name: str, entry: Callable[[Sequence[str]], int], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        entry(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"{name} (sarra) {sarra.__version__}\n"


def test_installed_command_prints_the_version() -> None:
    command = Path(sys.executable).parent / "sr_subscribe"
    assert command.exists(), "sr_subscribe is not installed beside this python (bootstrap)"
    run = subprocess.run(
        [str(command), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"sr_subscribe (sarra) {sarra.__version__}\n"


def test_the_version_is_written_only_in_sarra_init() -> None:
    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    # the man pages name the package in .TH, not a version that would go stale
    written = [
        str(path.relative_to(root))
        for path in [root / "README.rst", *(root / "man").iterdir(), *(root / "docs").iterdir()]
        if path.is_file()
        and path.suffix != ".png"  # docs/sr-web.png, the README's screenshot
        and sarra.__version__ in path.read_text()
    ]
    assert written == []
