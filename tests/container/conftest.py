"""Fixtures of the container tests: the package built from this tree and a booted Debian 12
container (see :mod:`tests.container.nspawn`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.nspawn import Container, base_tree

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.container)


@pytest.fixture(scope="session")
def sarra_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``scripts/build-deb``'s package (lintian errors fail the build)."""
    out = tmp_path_factory.mktemp("deb")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-deb"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (deb,) = out.glob("sarra_*_all.deb")
    return deb


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory, sarra_deb: Path) -> Iterator[Container]:
    """A booted container holding the package file in /root (not installed yet)."""
    box = Container.from_base(base_tree(), tmp_path_factory.mktemp("container"))
    (box.root / "root" / sarra_deb.name).write_bytes(sarra_deb.read_bytes())
    box.boot()
    try:
        yield box
    finally:
        box.stop()
