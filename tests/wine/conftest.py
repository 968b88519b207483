"""The Windows client under Wine: the official embeddable CPython for Windows with sarra's
win_amd64 dependency wheels (built and cached by ``scripts/build-wine-python``, which
``scripts/bootstrap`` runs) and a sarra wheel built from this tree for the session.

The commands talk to the suite's throwaway RabbitMQ and nginx on the host's loopback. Host
paths are seen as ``Z:\\...`` by Windows programs. Wine 8's Windows Python cannot have a
regular file as its standard output, so commands always run with pipes.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def winpath(path: Path | str) -> str:
    """The Windows spelling of a host path (Wine maps ``/`` to drive ``Z:``)."""
    return "Z:" + str(Path(path).resolve()).replace("/", "\\")


@dataclass(frozen=True)
class WinPython:
    """A Windows python.exe under Wine with this tree's sarra installed."""

    python: Path
    prefix: Path

    def env(self, extra: Mapping[str, str] = ()) -> dict[str, str]:  # type: ignore[assignment]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SR_", "PYTHON", "VIRTUAL_ENV"))
        }
        env.update(
            WINEPREFIX=str(self.prefix),
            WINEDEBUG="-all",
            WINEDLLOVERRIDES="mscoree,mshtml=",
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONUTF8="1",
        )
        env.update(extra)
        return env

    def run(
        self,
        args: list[str],
        env: Mapping[str, str] = (),  # type: ignore[assignment]
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """``python.exe args`` under Wine, output through pipes.

        The command is done when its process exits, not at the end of its output: an
        instance that ``start`` launched under Wine holds the pipes open (Wine hands the
        Unix descriptors down to a detached process), so what was written is read after the
        exit, without waiting for EOF."""
        proc = subprocess.Popen(
            ["wine", str(self.python), *args],
            env=self.env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out: dict[int, bytearray] = {
            proc.stdout.fileno(): bytearray(),
            proc.stderr.fileno(): bytearray(),
        }  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        try:
            watched = set(out)
            while True:
                ready, _, _ = select.select(list(watched), [], [], 0.1) if watched else ([], [], [])
                for fd in ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        watched.discard(fd)
                    out[fd] += chunk
                if proc.poll() is not None and not ready:
                    break
                if not watched:
                    time.sleep(0.05)
                if time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    raise subprocess.TimeoutExpired(
                        proc.args, timeout, output=bytes(out[proc.stdout.fileno()])
                    )  # type: ignore[union-attr]
        finally:
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stderr.close()  # type: ignore[union-attr]
        stdout, stderr = (bytes(b).decode("utf-8", "replace") for b in out.values())
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def sr(
        self, component: str, *args: str, env: Mapping[str, str] = (), timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:  # type: ignore[assignment]
        """One client command (``sr_<component> args``) as the launchers run it."""
        return self.run(["-m", "sarra.cli.main", component, *args], env=env, timeout=timeout)


@pytest.fixture(scope="session")
def winpy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WinPython]:
    if shutil.which("wine") is None:
        pytest.fail("wine is not installed: run scripts/bootstrap")
    built = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-wine-python")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert built.returncode == 0, built.stderr
    cache = Path(built.stdout.strip().splitlines()[-1])
    base = tmp_path_factory.mktemp("winpy")
    tree = base / "python"
    # hard links: the cached tree is never written; its ._pth is replaced, not edited
    subprocess.run(["cp", "-al", str(cache / "python"), str(tree)], check=True)
    pth = next(tree.glob("python3*._pth"))
    stdlib_zip = next(tree.glob("python3*.zip")).name
    pth.unlink()
    pth.write_text(f"{stdlib_zip}\n.\nLib\\site-packages\n..\\sarra-site\nimport site\n")
    wheels = base / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
         str(base / "sarra-site"), *map(str, wheels.glob("sarra-*.whl"))],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    wp = WinPython(tree / "python.exe", cache / "prefix")
    probe = wp.run(["-c", "import sys, sarra, paramiko; print(sys.platform)"])
    assert probe.returncode == 0 and probe.stdout.strip() == "win32", probe.stderr
    yield wp
