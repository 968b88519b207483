"""The container tests' base tree holds exactly the package's run-time Depends, so installing
the package there needs nothing from the network."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tests.container.nspawn import DEPENDS

ROOT = Path(__file__).resolve().parents[2]


def test_the_base_tree_has_every_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0] for d in project["dependencies"]}
    debian = {"python3-" + n.lower().replace("_", "-") for n in names}
    assert debian == set(DEPENDS) - {"python3"}
