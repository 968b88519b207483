"""The MSI (win/, scripts/build-msi): installed with msiexec into a fresh Wine prefix, its
launchers run against the suite's throwaway RabbitMQ and nginx, then uninstalled."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.flowkit import Site, make_files, unique, wait_for
from tests.wine.conftest import ROOT, WinPython, winpath
from tests.wine.test_wine_client import _capture, _queue_exists, win_env

pytestmark = [pytest.mark.wine, pytest.mark.servers]

PROGRAM_DIR = "C:\\Program Files\\sarra"


class Installed(WinPython):
    """Commands run through the installed launchers (``sr_post.cmd`` ...)."""

    def launch(
        self, command: str, *args: str, env: dict[str, str], timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.run_argv(["cmd", "/c", f"{PROGRAM_DIR}\\{command}.cmd", *args], env, timeout)

    def run_argv(
        self, argv: list[str], env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        saved = self.python
        object.__setattr__(self, "python", Path(argv[0]))
        try:
            return self.run(argv[1:], env=env, timeout=timeout)
        finally:
            object.__setattr__(self, "python", saved)


@pytest.fixture(scope="module")
def installed(
    winpy: WinPython, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Installed, Path, Path]]:
    built = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-msi")], capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stderr
    msi = Path(built.stdout.strip().splitlines()[-1])
    prefix = tmp_path_factory.mktemp("msiprefix") / "prefix"
    inst = Installed(Path("unused"), prefix)
    boot = subprocess.run(["wineboot", "--init"], env=inst.env(), capture_output=True, timeout=300)
    assert boot.returncode == 0, boot.stderr
    subprocess.run(["wineserver", "-w"], env=inst.env(), timeout=120)
    # the test-only ProcessPrng stand-in: into the prefix's system directory, never the install
    stub = winpy.prefix / "drive_c" / "windows" / "system32" / "bcryptprimitives.dll"
    (prefix / "drive_c" / "windows" / "system32" / "bcryptprimitives.dll").write_bytes(
        stub.read_bytes()
    )
    done = inst.run_argv(["msiexec", "/i", winpath(msi), "/qn"], {}, 300)
    assert done.returncode == 0, done.stdout + done.stderr
    install_dir = prefix / "drive_c" / "Program Files" / "sarra"
    assert (install_dir / "python" / "python.exe").is_file()
    assert not (install_dir / "python" / "bcryptprimitives.dll").exists()
    yield inst, install_dir, msi


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_the_installed_client_posts_subscribes_and_uninstalls_cleanly(  # type: ignore[no-untyped-def]
    installed: tuple[Installed, Path, Path], site: Site, nginx, tmp_path: Path
) -> None:
    inst, install_dir, msi = installed
    before = _listing(install_dir)
    env = win_env(site)
    helped = inst.launch("sr_subscribe", "--help", env=env)
    assert helped.returncode == 0 and "usage: sr_subscribe" in helped.stdout, (
        helped.stdout + helped.stderr
    )

    tag = unique("msi")
    data = tmp_path / "data"
    (src,) = make_files(data / tag, ["obs/a.txt"])
    session, _, got = _capture(site, "xs_guest", f"v02.post.{tag}.#")
    try:
        posted = inst.launch(
            "sr_post", "-pb", site.broker, "-pbu", "http://files.example.com/",
            "-pbd", winpath(data), winpath(src), env=env,
        )  # fmt: skip
        assert posted.returncode == 0, posted.stdout + posted.stderr
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            session.poll(0.2)
    finally:
        session.close()
    assert [n.path for n in got] == [f"{tag}/obs/a.txt"]

    files = make_files(nginx.root / tag, ["one.txt", "sub/two.txt"])
    dest = tmp_path / "dest"
    site.write_subscribe(
        "msisub",
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {winpath(dest)}\nmirror on\nstrip 1\n"
        "expire 10m\naccept .*\n",
    )
    started = inst.launch("sr_subscribe", "start", "msisub", env=env, timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        wait_for(lambda: _queue_exists(site, "msisub"), timeout=60, what="the queue")
        posted = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "sr_post"), "-pb", site.broker, "-pbu", nginx.base_url,
             "-pbd", str(nginx.root), *map(str, files)],
            env={**os.environ, **site.env}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert posted.returncode == 0, posted.stderr
        wait_for(
            lambda: all((dest / f.relative_to(nginx.root / tag)).exists() for f in files),
            timeout=60,
            what="the files",
        )
    finally:
        stopped = inst.launch("sr_subscribe", "stop", "msisub", env=env, timeout=120)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    for f in files:
        assert (dest / f.relative_to(nginx.root / tag)).read_bytes() == f.read_bytes()
    # nothing written into the install directory at run time (no __pycache__, no logs)
    assert _listing(install_dir) == before

    removed = inst.run_argv(["msiexec", "/x", winpath(msi), "/qn"], env, 300)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not install_dir.exists()
    assert (site.config_dir / "subscribe" / "msisub.conf").is_file()  # the user's files stay
    assert (site.config_dir / "credentials.conf").is_file()


@pytest.fixture
def site(tmp_path: Path, rabbitmq) -> Site:  # type: ignore[no-untyped-def]
    return Site(tmp_path / "site", rabbitmq.port).setup()
