"""What every throwaway server of tests/servers does around its own start and stop: a node
that fails to start is stopped and its directory removed; a session fixture fails (never
skips) when the server cannot start, and removes its directory when done."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import pytest


class Server(Protocol):
    base_dir: Path

    def start(self) -> None: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=Server)


def wait_listening(
    proc: subprocess.Popen[bytes], listening: Callable[[], bool], what: str,
    log_tail: Callable[[], str], timeout: float = 20.0,
) -> None:  # fmt: skip
    """Wait until ``listening()``; RuntimeError (with the server's log) when ``proc`` exits
    first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not listening():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start: {log_tail()}")
        time.sleep(0.05)


def terminate(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM ``proc`` if it runs, SIGKILL after 20 s."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def discard(node: Server) -> None:
    """Stop ``node`` and remove its directory."""
    node.stop()
    shutil.rmtree(node.base_dir, ignore_errors=True)


def started(node: S) -> S:
    """``node``, started; when that fails, it is discarded and the error raised."""
    try:
        node.start()
    except BaseException:
        discard(node)
        raise
    return node


@contextmanager
def session_server(start: Callable[[], S], needed: str) -> Iterator[S]:
    """The body of a session fixture: the server ``start()`` makes, discarded at the end; a
    RuntimeError from ``start`` (not installed, did not come up) fails the test as ``needed``
    says (``"the MQTT tests need a real Mosquitto"``)."""
    try:
        node = start()
    except RuntimeError as e:
        pytest.fail(f"{needed}: {e}", pytrace=False)
    try:
        yield node
    finally:
        discard(node)
