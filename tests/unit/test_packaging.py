"""The sdist and the wheel carry what users need, built without a deprecation warning.

Built as a Debian package or pip builds them: the sdist from a copy of the source tree, then
the wheel from the unpacked sdist (so a file the sdist forgets is missing from the wheel too),
through setuptools' PEP 517 backend, offline. Built twice: with the virtual environment's
setuptools (current PyPI, the dev extra) and, when present, with Debian's python3 and its
setuptools (bookworm ships 66), because a pyproject.toml that one of them accepts may break or
warn on the other.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import sarra

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = Path("/usr/bin/python3")
# Left out of the copy the sdist is built from: what a fresh checkout does not have.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".peers", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
    ".mypy_cache", ".ruff_cache", ".pytest_cache",
)  # fmt: skip

BUILD = """
import os, sys, tarfile
from setuptools import build_meta as backend
out = sys.argv[1]
sdist = backend.build_sdist(out)
safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # no 3.12+ warning
with tarfile.open(os.path.join(out, sdist)) as tar:
    tar.extractall(os.path.join(out, "unpacked"), **safe)
os.chdir(os.path.join(out, "unpacked", sdist[: -len(".tar.gz")]))
wheel = backend.build_wheel(out)
print("BUILT", sdist, wheel)
"""


@dataclass(frozen=True)
class Built:
    output: str
    sdist: Path
    wheel: Path
    sdist_names: frozenset[str]
    wheel_names: frozenset[str]


def can_build(python: Path) -> bool:
    if not python.exists():
        return False
    probe = subprocess.run(
        [str(python), "-c", "import setuptools, wheel"], capture_output=True, check=False
    )
    return probe.returncode == 0


def build(python: Path, tmp: Path) -> Built:
    src, out = tmp / "src", tmp / "out"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    shutil.rmtree(src / "bench" / "out", ignore_errors=True)
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONWARNINGS"] = "default"  # every warning printed, none turned into an error
    run = subprocess.run(
        [str(python), "-c", BUILD, str(out)],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    match = re.search(r"^BUILT (\S+) (\S+)$", run.stdout, re.MULTILINE)
    assert match, output[-3000:]
    sdist, wheel = out / match[1], out / match[2]
    with tarfile.open(sdist) as tar:
        top = sdist.name[: -len(".tar.gz")] + "/"
        sdist_names = frozenset(m.name.removeprefix(top) for m in tar.getmembers() if m.isfile())
    with zipfile.ZipFile(wheel) as zf:
        wheel_names = frozenset(zf.namelist())
    return Built(output, sdist, wheel, sdist_names, wheel_names)


PYTHONS = {
    "venv-setuptools": Path(sys.executable),
    "debian-setuptools": DEBIAN_PYTHON,
}


@pytest.fixture(scope="module", params=sorted(PYTHONS))
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    python = PYTHONS[request.param]
    assert can_build(python), f"{python} lacks setuptools or wheel (see scripts/bootstrap)"
    return build(python, tmp_path_factory.mktemp(request.param))


def source_files(top: str) -> list[str]:
    """The files under ``top`` in the source tree, relative to the root."""
    base = ROOT / top
    return sorted(
        str(p.relative_to(ROOT))
        for p in base.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def data_dir() -> str:
    return f"sarra-{sarra.__version__}.data/data/"


#: warnings raised by other Debian packages that setuptools loads through their entry points
#: (python3-babel, which the Debian build tools pull in, imports the deprecated ``cgi``): not
#: about this project's build configuration
FOREIGN = re.compile(r"^/usr/lib/python3/dist-packages/(?!setuptools/|pkg_resources/)\S+: ")


def test_no_deprecation_warning(built: Built) -> None:
    found = [
        line
        for line in built.output.splitlines()
        if "deprecat" in line.lower() and not FOREIGN.match(line)
    ]
    assert not found, "\n".join(found)


def test_versions_agree(built: Built) -> None:
    version = sarra.__version__
    assert built.sdist.name == f"sarra-{version}.tar.gz"
    assert built.wheel.name == f"sarra-{version}-py3-none-any.whl"
    with zipfile.ZipFile(built.wheel) as zf:
        metadata = zf.read(f"sarra-{version}.dist-info/METADATA").decode()
    assert f"\nVersion: {version}\n" in metadata
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {version}" in changelog, "CHANGELOG.md has no section for the current version"


def test_sdist_carries_sources_docs_and_tests(built: Built) -> None:
    wanted = ["LICENSE", "CHANGELOG.md", "README.rst", "pyproject.toml", "MANIFEST.in"]
    for top in ("sarra", "man", "etc", "docs", "tests"):
        wanted += source_files(top)
    missing = sorted(set(wanted) - built.sdist_names)
    assert not missing, missing
    assert not [n for n in built.sdist_names if n.endswith(".pyc")]


def test_wheel_installs_man_pages(built: Built) -> None:
    pages = source_files("man")
    assert pages, "no man page in man/"
    for page in pages:
        section = page.rsplit(".", 1)[1]
        name = Path(page).name
        assert f"{data_dir()}share/man/man{section}/{name}" in built.wheel_names, page


def test_wheel_installs_examples_docs_and_license(built: Built) -> None:
    examples = [
        f"{data_dir()}share/doc/sarra/examples/{f.removeprefix('etc/')}"
        for f in source_files("etc")
    ]
    docs = [f"{data_dir()}share/doc/sarra/{Path(f).name}" for f in source_files("docs")]
    wanted = [*examples, *docs]
    wanted += [f"{data_dir()}share/doc/sarra/{n}" for n in ("LICENSE", "CHANGELOG.md")]
    missing = sorted(set(wanted) - built.wheel_names)
    assert not missing, missing
    dist_info = f"sarra-{sarra.__version__}.dist-info/"
    # setuptools >= 77 puts license files under dist-info/licenses/, older ones in dist-info/
    assert {dist_info + "LICENSE", dist_info + "licenses/LICENSE"} & built.wheel_names


def test_man_finds_the_pages_after_a_pip_install_into_a_prefix(
    built: Built, tmp_path: Path
) -> None:
    man = shutil.which("man")
    assert man is not None, "no man command (scripts/bootstrap installs man-db)"
    prefix = tmp_path / "prefix"
    # --ignore-installed: never uninstall the sarra of the environment running the tests
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        "--ignore-installed",
    ]
    run = subprocess.run(
        [*pip, "--prefix", str(prefix), str(built.wheel)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    # man derives its search path from PATH: PREFIX/bin gives PREFIX/share/man
    env = {"PATH": f"{prefix / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    for page in ("sr_subscribe", "sr_config"):
        found = subprocess.run(
            [man, "-w", page], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert found.returncode == 0, found.stderr
        assert found.stdout.strip().startswith(str(prefix / "share" / "man")), found.stdout


def test_license_is_the_gpl() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "GPL-2.0-or-later" in text
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 2, June 1991" in text
