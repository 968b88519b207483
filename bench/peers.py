"""Benchmark baselines: time and peak memory of the reference peers (sr2, sr3).

Run from the repo root (``python -m bench.<script>``) so that ``tests.interop.peers`` imports;
the peers are installed by ``scripts/install-peers``. Measurements:

* ``run_measured(cmd, env)``: wall seconds and peak resident memory (KiB) of a command and
  every process it forks, for one-shot commands such as ``sr_post`` of N files.
* ``TreeSampler``: the same peak for a long-running process tree (a subscriber), sampled.
* ``bench_post`` / ``bench_subscribe``: N files announced, or downloaded until N arrived,
  by either peer; rates come from wall time and from the peer's own log timestamps.

Peak RSS is the larger of (a) the highest sum of VmRSS over the process tree seen by polling
/proc every ``interval`` s and (b) ru_maxrss from ``os.wait4`` (the exact peak of the single
largest waited-for process). Polling can miss short spikes; (b) bounds them from below.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.interop.peers import (
    SR2_POSTED_LINE,
    SR3_POSTED_LINE,
    BindingLister,
    Sr2Subscriber,
    Sr3Subscriber,
    _split_broker,
    _write_config,
    count_lines,
    peer_bin,
    peer_env,
    write_credentials,
)


def log_timestamps(text: str, marker: str) -> list[float]:
    """Epoch seconds of the log lines containing ``marker`` (both peers log
    ``YYYY-MM-DD HH:MM:SS,mmm`` in local time at the start of each line)."""
    stamps = []
    pattern = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})")
    for line in text.splitlines():
        if marker not in line:
            continue
        m = pattern.match(line.lstrip("."))
        if m:
            base = time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S"))
            stamps.append(base + int(m[2]) / 1000)
    return stamps


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(_children(p))
    return seen


def tree_rss_kib(pid: int) -> int:
    """Sum of VmRSS (KiB) over ``pid``'s process tree now."""
    return sum(_status_kib(p, "VmRSS") for p in process_tree(pid))


class TreeSampler:
    """Polls a process tree's total RSS in a thread; ``peak_kib`` is the highest seen.

    Also tracks the highest single-process VmHWM (its kernel-recorded peak) seen.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.peak_hwm_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = process_tree(self.pid)
            self.peak_kib = max(self.peak_kib, sum(_status_kib(p, "VmRSS") for p in pids))
            for p in pids:
                self.peak_hwm_kib = max(self.peak_hwm_kib, _status_kib(p, "VmHWM"))
            self._stop.wait(self.interval)

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop sampling; return the peak in KiB (max of tree sum and single VmHWM)."""
        self._stop.set()
        self._thread.join(timeout=5)
        return max(self.peak_kib, self.peak_hwm_kib)


def run_measured(
    cmd: Sequence[str],
    env: dict[str, str] | None = None,
    *,
    cwd: Path | None = None,
    timeout: float = 600.0,
    output: Path | None = None,
) -> tuple[float, int]:
    """Run ``cmd`` to completion; return (wall seconds, peak RSS KiB of its process tree).

    stdout and stderr go to ``output`` (or are discarded). Raises subprocess.CalledProcessError
    on a non-zero exit and subprocess.TimeoutExpired (after killing it) on timeout.
    """
    sink = output.open("wb") if output else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=sink,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        sampler = TreeSampler(proc.pid).start()
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, 9)
                os.wait4(proc.pid, 0)
                sampler.stop()
                raise subprocess.TimeoutExpired(list(cmd), timeout)
            time.sleep(0.01)
        seconds = time.perf_counter() - t0
        peak = max(sampler.stop(), usage.ru_maxrss)  # ru_maxrss is in KiB on Linux
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if output:
            sink.close()  # type: ignore[union-attr]
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, list(cmd))
    return seconds, peak


def make_files(root: Path, count: int, size: int, subdir: str = "bench") -> list[Path]:
    """``count`` files of ``size`` distinct bytes under ``root/subdir`` (100 per directory)."""
    paths = []
    for i in range(count):
        d = root / subdir / f"d{i // 100:04d}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"f{i:06d}.bin"
        head = f"{i:012d}".encode()
        p.write_bytes((head * (size // len(head) + 1))[:size])
        paths.append(p)
    return paths


@dataclass(frozen=True)
class PostResult:
    peer: str
    posted: int  # messages announced, from the peer's log
    seconds: float  # wall time of the whole command, start-up included
    peak_rss_kib: int

    @property
    def files_per_second(self) -> float:
        return self.posted / self.seconds if self.seconds else 0.0


def bench_post(
    peer: str,
    home: Path,
    broker_url: str,
    post_base_url: str,
    post_base_dir: Path,
    paths: Sequence[Path],
    *,
    exchange: str | None = None,
    extra_options: Sequence[str] = (),
) -> PostResult:
    """Announce ``paths`` (files or directories) with ``peer`` ("sr2" or "sr3") in v02,
    measured. Same configs as tests.interop.peers.sr2_post / sr3_post."""
    bare, full, user = _split_broker(broker_url)
    exchange = exchange or f"xs_{user}"
    if peer == "sr2":
        cfg_dir = home / ".config" / "sarra"
        lines = [f"post_broker {bare}", f"post_exchange {exchange}",
                 f"post_base_url {post_base_url}", f"post_base_dir {post_base_dir}"]  # fmt: skip
        marker, flag, cmd = SR2_POSTED_LINE, "-c", "sr_post"
    elif peer == "sr3":
        cfg_dir = home / ".config" / "sr3"
        lines = [f"post_broker {bare}", f"post_exchange {exchange}",
                 f"post_baseUrl {post_base_url}", f"post_baseDir {post_base_dir}",
                 "post_format v02", "post_topicPrefix v02.post"]  # fmt: skip
        marker, flag, cmd = SR3_POSTED_LINE, "--config", "sr3_post"
    else:
        raise ValueError(f"unknown peer {peer!r}")
    write_credentials(cfg_dir, [full])
    cfg = _write_config(cfg_dir / "post" / "bench.conf", [*lines, *extra_options])
    out = home / f"bench_post_{peer}.log"
    argv = [str(peer_bin(cmd)), flag, str(cfg), *(str(p) for p in paths)]
    seconds, peak = run_measured(argv, peer_env(home), cwd=home, output=out)
    posted = count_lines(out.read_text(errors="replace"), marker)
    return PostResult(peer, posted, seconds, peak)


@dataclass(frozen=True)
class SubscribeResult:
    peer: str
    downloaded: int
    startup_seconds: float  # spawn until the queue was bound
    seconds: float  # spawn (or, for a live feed, first post) until `count` files arrived
    log_span_seconds: float  # first to last download line in the peer's log
    peak_rss_kib: int

    @property
    def files_per_second(self) -> float:
        """Steady rate from the peer's log (first to last download), start-up excluded."""
        if self.downloaded < 2 or self.log_span_seconds <= 0:
            return 0.0
        return (self.downloaded - 1) / self.log_span_seconds


def bench_subscribe(
    peer: str,
    home: Path,
    broker_url: str,
    exchange: str,
    directory: Path,
    count: int,
    *,
    queue: str,
    bindings: BindingLister | None = None,
    timeout: float = 600.0,
    extra: Sequence[str] = (),
) -> SubscribeResult:
    """Start a ``peer`` subscriber on ``queue`` and wait until ``count`` files arrived.

    For a download-only figure, fill the queue first: call ``declare_queue`` (runs the same
    subscriber until bound, then stops it), post the files, then call this. The queue name
    must be the same in both calls. ``report_back False`` is set for sr2 so reports do not
    cost it extra publishes (sr3 does not report by default).
    """
    cls = {"sr2": Sr2Subscriber, "sr3": Sr3Subscriber}[peer]
    extra = (*(["report_back False"] if peer == "sr2" else []), *extra)
    sub = cls(home, broker_url, exchange, directory, queue=queue, bindings=bindings, extra=extra)
    t0 = time.monotonic()
    sub.start()
    sampler = TreeSampler(sub.pid).start()
    try:
        sub.wait_downloaded(count, timeout)
        seconds = time.monotonic() - t0
    finally:
        peak = sampler.stop()
        sub.stop()
    stamps = log_timestamps(sub.log_text(), sub.downloaded_line)
    span = stamps[-1] - stamps[0] if len(stamps) >= 2 else 0.0
    return SubscribeResult(peer, sub.downloaded(), sub.ready_after, seconds, span, peak)


def declare_queue(
    peer: str,
    home: Path,
    broker_url: str,
    exchange: str,
    directory: Path,
    *,
    queue: str,
    bindings: BindingLister | None = None,
) -> float:
    """Run the peer's subscriber until its queue is bound, then stop it; return the start-up
    seconds. The queue outlives it (expire 1h), so posts made now wait in the queue."""
    cls = {"sr2": Sr2Subscriber, "sr3": Sr3Subscriber}[peer]
    sub = cls(home, broker_url, exchange, directory, queue=queue, bindings=bindings)
    try:
        sub.start()
        return sub.ready_after
    finally:
        sub.stop()
