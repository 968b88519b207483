"""The progress line through a real pseudo-terminal: ``sr_post`` and ``sr_subscribe
foreground`` as processes whose stderr is a pty, against the suite's RabbitMQ and nginx;
none when stderr is a pipe, or with -q."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

from tests.integration.flowkit import Site, make_files, unique, wait_for


class Pty:
    """A process with stdout and stderr on a pseudo-terminal; what it wrote, read as it goes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        # a terminal 200 columns wide (a new pty has no size, and the line fits its width)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env
        )
        os.close(slave)
        self.master = master
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: the other side is closed
                return
            if not data:
                return
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")

    def wait(self, timeout: float = 60) -> int:
        rc = self.proc.wait(timeout)
        self.reader.join(10)
        os.close(self.master)
        return rc


def _env(site: Site) -> dict[str, str]:
    return {**os.environ, **site.env}


def _post_argv(site: Site, nginx, src: Path, *extra: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        sys.executable, "-m", "sarra.cli.main", "post", *extra,
        "-post_broker", site.broker, "-post_base_url", nginx.base_url,
        "-post_base_dir", str(nginx.root), "-post_exchange", "xs_guest", str(src),
    ]  # fmt: skip


def test_sr_post_on_a_terminal_shows_the_line_and_a_summary(site, nginx) -> None:  # type: ignore[no-untyped-def]
    tag = unique("prog")
    src = nginx.root / tag
    files = make_files(src, [f"f{n}.bin" for n in range(4)], size=2048)
    total = sum(p.stat().st_size for p in files)
    run = Pty(_post_argv(site, nginx, src), _env(site))
    assert run.wait() == 0, run.text
    lines = run.text.replace("\r\n", "\n").split("\n")
    summary = [ln.rsplit("\r", 1)[-1] for ln in lines if ": 4 files, 4 notices, " in ln]
    assert summary, run.text
    assert re.search(r" \| [\d.]+k?B \[", run.text), run.text  # the live line was drawn
    assert f"{total / 1024:.2f}kB in " in summary[-1]

    quiet = Pty(_post_argv(site, nginx, src, "-q"), _env(site))
    assert quiet.wait() == 0
    assert "4 files, 4 notices" not in quiet.text and " | " not in quiet.text

    piped = subprocess.run(
        _post_argv(site, nginx, src), env=_env(site), capture_output=True, text=True, timeout=60
    )
    assert piped.returncode == 0
    assert "4 files, 4 notices" not in piped.stderr + piped.stdout


def test_sr_subscribe_foreground_on_a_terminal_counts_the_files_as_they_arrive(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path
) -> None:
    tag = unique("progsub")
    dest = tmp_path / "dest"
    site.write_subscribe(
        "feed",
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nexpire 10m\n"
        "accept .*\n",
    )
    argv = [sys.executable, "-m", "sarra.cli.main", "subscribe", "declare", "feed"]
    subprocess.run(argv, env=_env(site), check=True, capture_output=True, timeout=60)
    run = Pty([*argv[:4], "foreground", "feed"], _env(site))
    try:
        src = nginx.root / tag
        files = make_files(src, ["a.txt", "b.txt", "c.txt"], size=1500)
        posted = subprocess.run(
            _post_argv(site, nginx, src), env=_env(site), capture_output=True, timeout=60
        )
        assert posted.returncode == 0, posted.stderr
        wait_for(lambda: "3 files, 3 notices |" in run.text, timeout=30, what="the live line")
    finally:
        run.proc.send_signal(signal.SIGINT)
        rc = run.wait()
    assert rc in (0, 130), run.text
    assert sorted(p.name for p in dest.rglob("*.txt")) == ["a.txt", "b.txt", "c.txt"]
    summary = run.text.replace("\r\n", "\n").rstrip("\n").rsplit("\n", 1)[-1]
    summary = summary.rsplit("\r", 1)[-1]
    size = sum(p.stat().st_size for p in files)
    assert summary.startswith("subscribe/feed/000: 3 files, 3 notices, "), run.text
    assert f"{size / 1024:.2f}kB in " in summary
