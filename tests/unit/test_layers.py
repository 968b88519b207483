"""The import-layer contract (pyproject [tool.importlinter]) holds, and it can fail.

The contract is checked against a copy of the package with a bad import planted in it: an
upward import, a cycle between two layers, a sideways import between independent layers, an
unlisted top-level module. Each must break the contract and be named in the report; the
real tree must keep it. Separately, no module may hide a ``sarra`` import behind
``except ImportError``: a layer must not be optional, or a broken import goes unnoticed.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "sarra"
CONFIG = ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(src: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the project's contract, finding ``sarra`` under ``src`` first."""
    assert LINT_IMPORTS.exists(), "import-linter is missing: bash scripts/bootstrap (dev extra)"
    env = dict(os.environ, PYTHONPATH=str(src), COLUMNS="200")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(CONFIG)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the package under ``tmp_path/src``; returns the copied ``sarra`` directory."""
    dest = tmp_path / "src" / "sarra"
    shutil.copytree(PACKAGE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def plant(path: Path, line: str) -> int:
    """Append ``line`` to ``path``; returns its line number (as import-linter reports it)."""
    text = path.read_text()
    if not text.endswith("\n"):
        text += "\n"
    path.write_text(text + line + "\n")
    return len((text + line).splitlines())


def broken(copy: Path) -> str:
    result = lint_imports(copy.parent, cwd=copy.parent.parent)
    report = result.stdout + result.stderr
    assert result.returncode != 0, report
    assert "BROKEN" in report, report
    return report


def test_the_real_tree_keeps_the_contract() -> None:
    result = lint_imports(ROOT, cwd=ROOT)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "2 kept, 0 broken" in report, report


def test_an_unchanged_copy_keeps_the_contract(copy: Path) -> None:
    # the baseline for the tests below: the copy itself is sound, only the plant breaks it
    result = lint_imports(copy.parent, cwd=copy.parent.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_upward_import_breaks_the_contract(copy: Path) -> None:
    line = plant(copy / "errors.py", "import sarra.flow  # planted")
    report = broken(copy)
    assert f"sarra.errors -> sarra.flow (l.{line})" in report, report


def test_a_cycle_between_layers_breaks_the_contract(copy: Path) -> None:
    # codec already imports parts (codec.build); parts importing codec closes the cycle
    assert "sarra.parts" in (copy / "codec" / "build.py").read_text()
    line = plant(copy / "parts" / "arithmetic.py", "import sarra.codec.v02  # planted")
    report = broken(copy)
    assert f"sarra.parts.arithmetic -> sarra.codec.v02 (l.{line})" in report, report


def test_an_import_between_independent_layers_breaks_the_contract(copy: Path) -> None:
    line = plant(copy / "broker" / "base.py", "import sarra.transfer  # planted")
    report = broken(copy)
    assert f"sarra.broker.base -> sarra.transfer (l.{line})" in report, report


def test_an_instance_loading_the_web_server_breaks_the_web_contract(copy: Path) -> None:
    line = plant(copy / "cli" / "verbs.py", "import sarra.cli.web  # planted")
    report = broken(copy)
    assert f"sarra.cli.verbs -> sarra.cli.web (l.{line})" in report, report


def test_a_top_level_module_missing_from_the_contract_breaks_it(copy: Path) -> None:
    (copy / "unplaced.py").write_text('"""A helper nobody gave a layer yet."""\n')
    report = broken(copy)
    assert "- sarra.unplaced" in report, report
    assert "not listed as layers" in report, report


# --- no optional sarra imports ---------------------------------------------------------------

_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True  # a bare except swallows ImportError too
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(
        (isinstance(t, ast.Name) and t.id in _IMPORT_ERRORS)
        or (isinstance(t, ast.Attribute) and t.attr in _IMPORT_ERRORS)
        for t in types
    )


def _sarra_import(node: ast.AST) -> str | None:
    """The sarra module ``node`` imports, if it is such an import."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == "sarra" or alias.name.startswith("sarra."):
                return alias.name
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            return "." * node.level + (node.module or "")
        if node.module and (node.module == "sarra" or node.module.startswith("sarra.")):
            return node.module
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute | ast.Name)
        and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
        in ("import_module", "__import__")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and node.args[0].value.startswith("sarra")
    ):
        return node.args[0].value
    return None


def optional_sarra_imports(source: str, filename: str = "<string>") -> list[str]:
    """``file:line module`` for each sarra import inside a ``try`` that catches ImportError."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Try | ast.TryStar):
            continue
        if not any(_catches_import_error(h) for h in node.handlers):
            continue
        for stmt in node.body:
            for inner in ast.walk(stmt):
                module = _sarra_import(inner)
                if module is not None:
                    found.append(f"{filename}:{inner.lineno} {module}")
    return found


def test_no_module_makes_a_sarra_import_optional() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += optional_sarra_imports(path.read_text(), str(path.relative_to(ROOT)))
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        "try:\n    import sarra.flow\nexcept ImportError:\n    pass\n",
        "try:\n    from sarra.broker import base\nexcept ModuleNotFoundError:\n    base = None\n",
        "try:\n    from . import closing\nexcept (OSError, ImportError):\n    closing = None\n",
        "def f():\n    try:\n        import sarra.parts\n    except:\n        return None\n",
        "try:\n    importlib.import_module('sarra.flow.work')\nexcept ImportError:\n    pass\n",
    ],
)
def test_the_optional_import_check_finds_a_planted_one(source: str) -> None:
    assert len(optional_sarra_imports(source)) == 1


@pytest.mark.parametrize(
    "source",
    [
        "try:\n    import watchdog\nexcept ImportError:\n    watchdog = None\n",
        "try:\n    import sarra.flow\nexcept KeyError:\n    pass\n",
        "try:\n    x = 1\nexcept ImportError:\n    import sarra.errors\n",
    ],
)
def test_the_optional_import_check_leaves_other_code_alone(source: str) -> None:
    assert optional_sarra_imports(source) == []
