"""A Debian 12 container booted with systemd as PID 1 (``systemd-nspawn -b``), for the tests
of the package and its services.

The base tree (debootstrap minbase with systemd, and sarra's run-time dependencies from
Debian) is made once per machine under :data:`CACHE` and copied for each container, so a run
pays for debootstrap once. The container shares the host's network namespace: it reaches the
throwaway broker and web server the suite starts on 127.0.0.1. Commands run inside it with
``nsenter`` into its mount, UTS, IPC and PID namespaces (``machinectl`` needs a registration
that ``--register=no``, required on these machines, does not make).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

#: where the base tree is kept between runs on one machine
CACHE = Path(os.environ.get("SARRA_CONTAINER_CACHE", "/var/cache/sarra-ci"))
#: what the base tree holds besides minbase: systemd, and the package's Depends from Debian
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "man-db")
DEPENDS = (
    "python3",
    "python3-amqp",
    "python3-paramiko",
    "python3-watchdog",
    "python3-xxhash",
    "python3-platformdirs",
    "python3-pluggy",
    "python3-kazoo",
    "python3-prometheus-client",
    "python3-tqdm",
    "python3-redis",
    "python3-httptools",
)
NSPAWN = ("systemd-nspawn", "-q", "--register=no", "--keep-unit")


def base_tree() -> Path:
    """The cached base tree, made if missing (about a minute); safe with parallel callers."""
    CACHE.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(repr((BASE_PACKAGES, DEPENDS)).encode()).hexdigest()[:12]
    tree = CACHE / f"bookworm-{tag}"
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (tree / ".complete").exists():
            return tree
        work = CACHE / f".{tree.name}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                "bookworm",
                str(work),
            ],
            timeout=600,
        )
        install = (
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
            f"--no-install-recommends {' '.join(DEPENDS)} >/dev/null && apt-get clean"
        )
        run([*NSPAWN, "-D", str(work), "--pipe", "sh", "-c", install], timeout=600)
        (work / ".complete").touch()
        shutil.rmtree(tree, ignore_errors=True)
        work.rename(tree)
    return tree


def run(argv: list[str], timeout: float) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-3000:]}")
    return done.stdout


class Container:
    """A copy of the base tree at ``root``, booted by :meth:`boot`, powered off by :meth:`stop`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None
        self.console = root.parent / "console.log"

    @classmethod
    def from_base(cls, base: Path, where: Path) -> Container:
        root = where / "root"
        run(["cp", "-a", "--reflink=auto", str(base), str(root)], timeout=300)
        return cls(root)

    def boot(self, timeout: float = 60.0) -> None:
        with open(self.console, "wb") as console:
            self.proc = subprocess.Popen(
                [*NSPAWN, "-b", "-D", str(self.root)],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_booted(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_booted(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.leader is None and time.monotonic() < deadline:
            self.leader = self._init_under(self.proc.pid)
            time.sleep(0.1)
        if self.leader is None:
            raise RuntimeError(f"container did not start: {self.console.read_text()[-2000:]}")
        state = None
        while time.monotonic() < deadline:  # until PID 1 answers on its bus, then until booted
            state = self.sh("systemctl is-system-running --wait", check=False, timeout=timeout)
            if state.stdout.strip() in {"running", "degraded"}:
                return
            time.sleep(0.2)
        raise RuntimeError(f"container did not boot: {state}")

    @staticmethod
    def _init_under(pid: int) -> int | None:
        """The container's PID 1 seen from the host: the process named ``systemd`` among the
        descendants of ``systemd-nspawn`` (it forks helpers on the way)."""
        parents: dict[int, int] = {}
        names: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                names[int(entry.name)] = stat[stat.index("(") + 1 : stat.rindex(")")]
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        for candidate, name in names.items():
            if name != "systemd":
                continue
            up = parents.get(candidate)
            while up is not None and up > 1:
                if up == pid:
                    return candidate
                up = parents.get(up)
        return None

    def sh(
        self, script: str, *, check: bool = True, timeout: float = 120.0, cwd: str = "/root"
    ) -> subprocess.CompletedProcess[str]:
        """Run ``script`` with ``sh -e`` inside the container, as root, from ``cwd``."""
        assert self.leader is not None, "container not booted"
        argv = ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-p", "--"]
        argv += ["/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"]
        argv += ["LANG=C.UTF-8", "/bin/sh", "-ec", f"cd {cwd}\n{script}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(
                f"in the container, exit {done.returncode}:\n{script}\n--- stdout\n"
                f"{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
            )
        return done

    def path(self, inside: str) -> Path:
        """A path of the container's file system, seen from the host (not under its tmpfs)."""
        return self.root / inside.lstrip("/")

    def processes(self, marker: str) -> list[str]:
        """Command lines of the container's processes that contain ``marker``."""
        out = self.sh(
            "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; done",
            check=False,
        ).stdout
        return [line for line in out.splitlines() if marker in line and "/proc/" not in line]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.leader is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.sh("systemctl poweroff --no-block", check=False, timeout=30)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
