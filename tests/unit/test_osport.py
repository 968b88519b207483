"""The portable OS layer, POSIX side (the Windows side runs under Wine: tests/wine)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sarra import osport


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | osport.O_CLOEXEC, 0o600)


def test_exclusive_lock_excludes_another_descriptor(tmp_path: Path) -> None:
    a, b = _open(tmp_path / "l"), _open(tmp_path / "l")
    try:
        osport.lock(a, exclusive=True)
        with pytest.raises(BlockingIOError):
            osport.lock(b, exclusive=True, blocking=False)
        with pytest.raises(BlockingIOError):
            osport.lock(b, exclusive=False, blocking=False)
        osport.unlock(a)
        osport.lock(b, exclusive=True, blocking=False)
    finally:
        os.close(a)
        os.close(b)


def test_shared_locks_coexist_and_closing_releases(tmp_path: Path) -> None:
    a, b, c = (_open(tmp_path / "l") for _ in range(3))
    try:
        osport.lock(a, exclusive=False)
        osport.lock(b, exclusive=False, blocking=False)
        with pytest.raises(BlockingIOError):
            osport.lock(c, exclusive=True, blocking=False)
        os.close(a)
        os.close(b)
        a = b = -1
        osport.lock(c, exclusive=True, blocking=False)
    finally:
        for fd in (a, b, c):
            if fd >= 0:
                os.close(fd)


def test_positional_io_leaves_the_position_alone(tmp_path: Path) -> None:
    fd = _open(tmp_path / "f")
    try:
        os.write(fd, b"0123456789")
        assert osport.pwrite(fd, b"ab", 3) == 2
        assert osport.pread(fd, 4, 2) == b"2ab5"
        assert os.lseek(fd, 0, os.SEEK_CUR) == 10
    finally:
        os.close(fd)


def test_futime_sets_the_mtime(tmp_path: Path) -> None:
    fd = _open(tmp_path / "f")
    try:
        osport.futime(fd, 1_000_000_000.5)
    finally:
        os.close(fd)
    assert (tmp_path / "f").stat().st_mtime == pytest.approx(1_000_000_000.5)


def test_pid_alive_never_signals() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert osport.pid_alive(child.pid)
        assert osport.pid_alive(child.pid)  # still there after being probed
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
    assert not osport.pid_alive(child.pid)


def test_wakeup_wakes_a_select_from_another_thread() -> None:
    w = osport.Wakeup()
    try:
        assert select.select([w.fileno()], [], [], 0)[0] == []
        threading.Thread(target=w.wake).start()
        assert select.select([w.fileno()], [], [], 5)[0] == [w.fileno()]
        for _ in range(10000):  # never blocks, even when the pipe is full
            w.wake()
        w.drain()
        w.drain()
    finally:
        w.close()
