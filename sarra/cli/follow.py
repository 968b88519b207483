"""``sr log component/config``: one configuration's log, across its instances, as it grows.

``sr [--sr3] log [-n LINES] [--no-follow] component/config``

Contract: the current log file of every instance of the configuration
(``<log_dir>/sr_<component>_<config>_<NNN>.log``) is read; first the last ``LINES`` lines of
them all (default 10), merged in time order (each line starts with its time stamp), then, unless
``--no-follow``, every line appended to any of them, until SIGINT or SIGTERM. Instances that
appear later are picked up; a file rotated (renamed, a new one created) is read to its end
before the new one is followed, and a file truncated is read again from its start. A line is
printed only once complete (ends with a newline). Each line passes through
:func:`sarra.cli.logs.redact`, as every line sarra shows does.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from sarra.cli.logs import redact
from sarra.cli.runtime import Runtime
from sarra.errors import ConfigError

USAGE = "usage: sr [--sr3] log [-n LINES] [--no-follow] component/config"


def log_files(log_dir: Path, component: str, config: str) -> list[Path]:
    """The current log files of every instance of ``component/config``, by instance."""
    pattern = re.compile(rf"sr_{re.escape(component)}_{re.escape(config)}_(\d{{3,}})\.log")
    try:
        names = os.listdir(log_dir)
    except OSError:
        return []
    found = [(int(m.group(1)), n) for n in names if (m := pattern.fullmatch(n))]
    return [log_dir / n for _, n in sorted(found)]


def last_lines(paths: list[Path], count: int) -> list[str]:
    """The last ``count`` complete lines of the files together, in time-stamp order (a line
    without one keeps its place after the line before it in its file)."""
    tagged: list[tuple[str, int, int, str]] = []
    for number, path in enumerate(paths):
        try:
            with open(path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 256 * 1024))
                data = fh.read()
        except OSError:
            continue
        lines = data.decode("utf-8", "replace").split("\n")[:-1]  # complete lines only
        if size > 256 * 1024:
            lines = lines[1:]  # the first may be cut
        stamp = ""
        for index, line in enumerate(lines[-count:] if count else []):
            stamp = line[:23] if line[:4].isdigit() else stamp
            tagged.append((stamp, number, index, line))
    tagged.sort()
    return [line for *_, line in tagged[-count:]] if count else []


@dataclass
class _Tail:
    path: Path
    fh: BinaryIO | None = None
    ident: tuple[int, int] | None = None
    pending: bytes = b""
    rotated: list[BinaryIO] = field(default_factory=list)


class Follower:
    """Reads what is appended to a changing set of files (:func:`log_files` each poll)."""

    def __init__(self, paths: Callable[[], list[Path]], emit: Callable[[str], None]) -> None:
        self.paths = paths
        self.emit = emit
        self.tails: dict[Path, _Tail] = {}

    def start_at_end(self) -> None:
        """Skip what the files hold now (it was shown by :func:`last_lines`)."""
        for path in self.paths():
            tail = self.tails.setdefault(path, _Tail(path))
            self._open(tail, at_end=True)

    def poll(self) -> None:
        """Emit every complete line appended since the last poll."""
        for path in self.paths():
            self.tails.setdefault(path, _Tail(path))
        for tail in self.tails.values():
            self._check(tail)
            for old in tail.rotated:  # the rest of a rotated file, then the new one
                self._drain(tail, old)
                old.close()
                if tail.pending:  # its last line, never ended
                    self.emit(tail.pending.decode("utf-8", "replace"))
                tail.pending = b""
            tail.rotated.clear()
            if tail.fh is not None:
                self._drain(tail, tail.fh)

    def close(self) -> None:
        for tail in self.tails.values():
            for fh in [*tail.rotated, tail.fh]:
                if fh is not None:
                    fh.close()

    def _open(self, tail: _Tail, at_end: bool = False) -> None:
        try:
            fh = open(tail.path, "rb")  # noqa: SIM115 - kept open across polls
        except OSError:
            return
        st = os.fstat(fh.fileno())
        tail.fh, tail.ident = fh, (st.st_dev, st.st_ino)
        if at_end:
            fh.seek(0, os.SEEK_END)

    def _check(self, tail: _Tail) -> None:
        try:
            st = os.stat(tail.path)
        except OSError:
            return  # renamed and not yet created again: read on at the next poll
        if tail.fh is None:
            self._open(tail)
            return
        if (st.st_dev, st.st_ino) != tail.ident:  # rotated: finish the old file first
            tail.rotated.append(tail.fh)
            tail.fh = None
            self._open(tail)
        elif st.st_size < tail.fh.tell():  # truncated: from the start again
            tail.fh.seek(0)
            tail.pending = b""

    def _drain(self, tail: _Tail, fh: BinaryIO) -> None:
        data = fh.read()
        if not data:
            return
        data = tail.pending + data
        *lines, tail.pending = data.split(b"\n")
        for line in lines:
            self.emit(line.decode("utf-8", "replace"))


def main(argv: list[str], rt: Runtime, out: TextIO, err: TextIO) -> int:
    """``sr log``; the exit status.

    Raises:
        ConfigError: usage errors, an unknown component or configuration.
    """
    parser = argparse.ArgumentParser(prog="sr log", add_help=False)
    parser.add_argument("-n", "--lines", type=int, default=10)
    parser.add_argument("--no-follow", action="store_true")
    parser.add_argument("--every", type=float, default=0.25, help=argparse.SUPPRESS)
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("flow", nargs="?")
    try:
        args, rest = parser.parse_known_args(argv)
    except SystemExit as exc:  # argparse's own message is on stderr already
        raise ConfigError(USAGE) from exc
    if args.help:
        print(
            f"{USAGE}\n\nThe last LINES (default 10) lines of every instance's log of "
            "component/config, in time order, then each new line until Ctrl-C.",
            file=out,
        )
        return 0
    if rest or not args.flow or args.lines < 0:
        raise ConfigError(USAGE)
    component, _, config = args.flow.partition("/")
    if component not in rt.registry:
        raise ConfigError(f"{args.flow}: unknown component {component!r}; {USAGE}")
    if not config:
        raise ConfigError(f"{args.flow}: name a configuration, {component}/CONFIG")
    log_dir = rt.log_dir()

    def paths() -> list[Path]:
        return log_files(log_dir, component, config)

    def emit(line: str) -> None:
        print(redact(line), file=out, flush=True)

    if not paths() and args.no_follow:
        print(f"sr log: no log file of {component}/{config} in {log_dir}", file=err)
        return 1
    for line in last_lines(paths(), args.lines):
        emit(line)
    if args.no_follow:
        return 0
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    follower = Follower(paths, emit)
    follower.start_at_end()
    try:
        while not stop.wait(args.every):
            follower.poll()
    finally:
        with contextlib.suppress(BrokenPipeError):
            follower.poll()
        follower.close()
    return 0
