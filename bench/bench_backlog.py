"""Backlog benchmark: a deep queue (default 100,000 notices) drained by ours and by the floor.

Run through ``bench/run backlog [ARGS]`` from the repo root. One throwaway RabbitMQ node and one
nginx serve both sides and the same files (``bench_core``'s environment). For each side, in
the same run: a **small** run (``--small`` files, default 2000) then the **backlog** run
(``--files``): the side's queue is filled by our ``sr_post`` (in chunks of paths) before the
subscriber starts, and the subscriber drains it into an empty destination.

Measured per run, from the side's own clock (ours: its ``downloaded code=201`` log lines;
the floor: the per-1000-files marks it prints at exit):

* the rate of the **first half** and of the **second half** of the files, and their ratio
  (``2nd/1st``: 1.00 means no slowdown over the run);
* the peak RSS of the subscriber's process tree, and its ratio to the same side's small-run
  peak (``peak/small``: the issue asks for at most 1.10);
* RSS sampled every 0.5 s, printed at 10 %, 50 % and 90 % of the backlog drained.

The floor slowing by the same fraction as ours says the machine, the broker or the file
system slows, not our code. A benchmark, not a test: it prints, writes
``bench/out/backlog-<timestamp>.json``, and asserts no timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_core import (  # noqa: E402
    OURS_DOWNLOADED,
    Ctx,
    OurSite,
    Runner,
    count_done,
    environment,
    fs_type,
    make_tree,
    mib,
    ours_post_cmd,
    verify,
    warm_up,
)
from bench.peers import _status_kib, log_timestamps, process_tree  # noqa: E402
from tests.interop.peers import PeerError  # noqa: E402

SIDES = ("ours", "floor")
CHUNK = 5000  # paths per sr_post command (the whole backlog would pass ARG_MAX)


class RssTimeline:
    """The process tree's summed VmRSS every ``interval`` s with the fraction drained, and the
    peak (the larger of any sample and any process's VmHWM)."""

    def __init__(self, runner: Runner, left: Any, want: int, broker_pid: int,
                 interval: float = 0.5) -> None:  # fmt: skip
        self.runner, self.left, self.want, self.interval = runner, left, want, interval
        self.broker_pid = broker_pid
        # (fraction drained, KiB, CPU s, the broker's CPU s, system CPU s of the tree)
        self.samples: list[tuple[float, int, float, float, float]] = []
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-timeline", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for root in self.runner.roots():
                pids = process_tree(root)
                rss = sum(_status_kib(p, "VmRSS") for p in pids)
                hwm = max((_status_kib(p, "VmHWM") for p in pids), default=0)
                self.peak = max(self.peak, rss, hwm)
                if rss:
                    cpu = sum(cpu_seconds(p) for p in pids)
                    sys_cpu = sum(cpu_seconds(p, system_only=True) for p in pids)
                    broker = sum(cpu_seconds(p) for p in process_tree(self.broker_pid))
                    frac = 1 - self.left() / self.want
                    self.samples.append((frac, rss, cpu, broker, sys_cpu))
            self._stop.wait(self.interval)

    def start(self) -> RssTimeline:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def at(self, frac: float) -> int:
        return next((s[1] for s in self.samples if s[0] >= frac), 0)

    def cpu_ms_per_file(
        self, lo: float, hi: float, broker: bool = False, system: bool = False
    ) -> float:
        """The tree's (or the broker's) CPU time (user + system) per file from ``lo`` to
        ``hi`` of the backlog drained: less sensitive to the machine's load than a rate."""
        i = 3 if broker else 4 if system else 2
        a = next(((s[0], s[i]) for s in self.samples if s[0] >= lo), None)
        b = next(((s[0], s[i]) for s in self.samples if s[0] >= hi), None)
        if a is None or b is None or b[0] <= a[0]:
            return 0.0
        return 1000 * (b[1] - a[1]) / ((b[0] - a[0]) * self.want)


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, system_only: bool = False) -> float:
    """User + system (or system only) CPU seconds of one process (all its threads) so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[12]) + (0 if system_only else int(fields[11]))) / TICK
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass
class Drain:
    side: str
    kind: str  # small | backlog
    files: int  # verified
    seconds: float  # spawn until all files were there
    first_half_rate: float
    second_half_rate: float
    peak_rss_kib: int
    rss_at_kib: dict[str, int] = field(default_factory=dict)
    marks: list[float] = field(default_factory=list)  # seconds since the first file, per 10 %
    cpu_ms_first: float = 0.0  # CPU ms per file from 10 % to 50 % drained
    cpu_ms_second: float = 0.0  # from 50 % to 90 %
    broker_ms_first: float = 0.0  # the broker's CPU ms per file, the same spans
    broker_ms_second: float = 0.0
    sys_ms_first: float = 0.0  # the subscriber's system CPU ms per file (the kernel's part)
    sys_ms_second: float = 0.0

    @property
    def slowdown(self) -> float:
        return self.second_half_rate / self.first_half_rate if self.first_half_rate else 0.0


def stamps_of(runner: Runner) -> list[float]:
    """Epoch seconds at which each file was done, from the side's own record."""
    text = runner.log_text()
    if runner.side == "floor":
        lines = text.strip().splitlines()
        done = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
        return [float(t) for t in done.get("marks", [])]
    return sorted(log_timestamps(text, OURS_DOWNLOADED))


def halves(stamps: list[float], n: int) -> tuple[float, float]:
    """Files/s over the first and the second half of ``n`` files done at ``stamps`` (one per
    file, or one per ``n // len(stamps)`` files for the floor's marks)."""
    if len(stamps) < 3:
        return 0.0, 0.0
    mid = len(stamps) // 2
    step = n / len(stamps)
    first = (mid * step) / (stamps[mid] - stamps[0]) if stamps[mid] > stamps[0] else 0.0
    second = ((len(stamps) - 1 - mid) * step) / (stamps[-1] - stamps[mid])
    return first, second


def post_all(ctx: Ctx, exchange: str, paths: list[Path]) -> None:
    poster = OurSite(ctx.fresh("b_post"), ctx.node.port)
    for i in range(0, len(paths), CHUNK):
        cmd = ours_post_cmd(poster, ctx.base_url, ctx.www, exchange, paths[i : i + CHUNK])
        subprocess.run(cmd, env=poster.env, check=True, capture_output=True)


def drain(side: str, kind: str, ctx: Ctx, paths: list[Path]) -> Drain:
    exchange = f"x_backlog_{side}_{kind}_{os.urandom(3).hex()}"
    ctx.amqp.exchange(exchange)
    dest = ctx.fresh_state(f"dest_{side}") / "dest"
    want = len(paths)
    runner = Runner(side, ctx, exchange, dest, want)
    runner.declare()
    post_all(ctx, exchange, paths)
    queued = ctx.amqp.settled_depth(runner.queue, want, timeout=60)
    if queued != want:
        raise PeerError(f"{side}: the queue holds {queued} of {want}")
    # a cheap poll: the queue depth (no walk of a 100k-file tree every 50 ms)
    depth = {"left": want}
    timeline = RssTimeline(runner, lambda: depth["left"], want, ctx.node.process.pid)
    t0 = time.monotonic()
    try:
        runner.start()
        timeline.start()
        deadline = t0 + ctx.timeout
        while True:
            depth["left"] = ctx.amqp.depth(runner.queue)
            if depth["left"] == 0 and count_done(dest) >= want:
                break
            if not runner.alive():
                raise PeerError(f"{side} subscriber exited early\n{runner.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise PeerError(f"{side}: not done after {ctx.timeout:.0f}s")
            time.sleep(0.5)
        seconds = time.monotonic() - t0
    finally:
        timeline.stop()
        runner.stop()
    stamps = stamps_of(runner)
    first, second = halves(stamps, want)
    marks = [stamps[min(len(stamps) - 1, len(stamps) * k // 10)] - stamps[0] for k in range(11)]
    good = verify(ctx.www, dest, paths)
    ctx.amqp.delete(runner.queue)
    # the destination stays until the end: removing 100k files takes minutes on a file system
    # mounted with discard, and would load the disk under the next side's run
    shutil.rmtree(runner.root, ignore_errors=True)
    at = {f"{int(f * 100)}%": timeline.at(f) for f in (0.1, 0.5, 0.9)}
    return Drain(
        side,
        kind,
        good,
        seconds,
        first,
        second,
        timeline.peak,
        at,
        marks,
        timeline.cpu_ms_per_file(0.1, 0.5),
        timeline.cpu_ms_per_file(0.5, 0.9),
        timeline.cpu_ms_per_file(0.1, 0.5, True),
        timeline.cpu_ms_per_file(0.5, 0.9, True),
        timeline.cpu_ms_per_file(0.1, 0.5, system=True),
        timeline.cpu_ms_per_file(0.5, 0.9, system=True),
    )


def report(args: argparse.Namespace, runs: list[Drain], problems: list[str], state_fs: str,
           started: float) -> None:  # fmt: skip
    """Print the table and the ratios, write the JSON."""
    print()
    print(f"{args.files} files x {args.size} B in {args.dirs} dirs (small run {args.small}); "
          f"destinations on {args.dest_fs} ({state_fs}); host {platform.node()}, "
          f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; "
          f"total {time.time() - started:.0f}s")  # fmt: skip
    print(f"{'side':6} {'run':8} {'files':>7} {'wall s':>7} {'1st/s':>7} {'2nd/s':>7} "
          f"{'2nd/1st':>7} {'MiB pk':>7} {'pk/small':>8} {'cpu1 ms':>7} {'cpu2 ms':>7} "
          f"{'cpu2/1':>6}  RSS MiB at 10/50/90 %")  # fmt: skip
    small_peak = {d.side: d.peak_rss_kib for d in runs if d.kind == "small"}
    for d in runs:
        pk = d.peak_rss_kib / small_peak[d.side] if small_peak.get(d.side) else 0.0
        at = "/".join(f"{mib(v):.1f}" for v in d.rss_at_kib.values())
        cr = d.cpu_ms_second / d.cpu_ms_first if d.cpu_ms_first else 0.0
        print(f"{d.side:6} {d.kind:8} {d.files:7} {d.seconds:7.1f} {d.first_half_rate:7.0f} "
              f"{d.second_half_rate:7.0f} {d.slowdown:7.3f} {mib(d.peak_rss_kib):7.1f} "
              f"{pk:8.3f} {d.cpu_ms_first:7.3f} {d.cpu_ms_second:7.3f} "
              f"{cr:6.3f}  {at}")  # fmt: skip
    for d in runs:
        print(f"  {d.side} {d.kind}: broker CPU ms per file {d.broker_ms_first:.3f} (10-50 %), "
              f"{d.broker_ms_second:.3f} (50-90 %); of the subscriber's, system "
              f"{d.sys_ms_first:.3f}, {d.sys_ms_second:.3f}")  # fmt: skip
        print(f"  {d.side} {d.kind}: seconds at each 10 % of files "
              f"{' '.join(f'{m:.1f}' for m in d.marks)}")  # fmt: skip
    backlog = {d.side: d for d in runs if d.kind == "backlog"}
    if "ours" in backlog and "floor" in backlog and backlog["floor"].slowdown:
        o, f = backlog["ours"], backlog["floor"]
        print(f"ratios: 2nd/1st half ours {o.slowdown:.3f}, floor {f.slowdown:.3f}; "
              f"ours' over the floor's {o.slowdown / f.slowdown:.3f}")  # fmt: skip
    for p in problems:
        print(f"PROBLEM: {p.splitlines()[0]}")
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"backlog-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({
        "files": args.files, "small": args.small, "size": args.size, "dirs": args.dirs,
        "dest_fs": args.dest_fs, "dest_fs_type": state_fs, "host": platform.node(),
        "loadavg": os.getloadavg(),
        "runs": [asdict(d) | {"slowdown": d.slowdown} for d in runs], "problems": problems,
    }, indent=2))  # fmt: skip
    print(f"results: {out.relative_to(ROOT)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000, help="the backlog's notices")
    ap.add_argument("--small", type=int, default=2000, help="the small run's notices")
    ap.add_argument("--size", type=int, default=2048, help="bytes per file")
    ap.add_argument("--dirs", type=int, default=4, help="subdirectories the files are spread over")
    ap.add_argument("--sides", default=",".join(SIDES), help="comma-separated: ours,floor")
    ap.add_argument("--repeat", type=int, default=1, help="runs per side")
    ap.add_argument("--threads", type=int, default=None, help="our transfer_threads")
    ap.add_argument("--dest-fs", choices=("disk", "tmpfs"), default="disk")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per drain, seconds")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    args.instances = 1
    args.ceiling_mode = "frames"  # bench_core.environment's post ceiling: unused here
    sides = [s for s in args.sides.split(",") if s]
    if any(s not in SIDES for s in sides):
        ap.error(f"known sides: {', '.join(SIDES)}")
    started = time.time()
    runs: list[Drain] = []
    problems: list[str] = []
    with environment(args) as ctx:
        paths = make_tree(ctx.www, args.files, args.size, args.dirs)
        warm_up()
        print(f"{len(paths)} files of {args.size} B in {args.dirs} directories; small run "
              f"{args.small}; sides {', '.join(sides)}", flush=True)  # fmt: skip
        for rep in range(args.repeat):
            for kind, subset in (("small", paths[: args.small]), ("backlog", paths)):
                for side in sides:
                    print(f"[{rep + 1}] {kind:7} {side:5} ...", end=" ", flush=True)
                    try:
                        d = drain(side, kind, ctx, subset)
                    except (PeerError, subprocess.SubprocessError, OSError, ValueError) as e:
                        problems.append(f"{kind} {side}: {str(e)[:2000]}")
                        print("FAILED")
                        continue
                    runs.append(d)
                    print(f"{d.seconds:.1f}s, {d.files} verified; 1st half "
                          f"{d.first_half_rate:.0f}/s, 2nd half {d.second_half_rate:.0f}/s "
                          f"(x{d.slowdown:.3f}); peak {mib(d.peak_rss_kib):.1f} MiB",
                          flush=True)  # fmt: skip
                    if d.files != len(subset):
                        problems.append(f"{kind} {side}: {d.files} of {len(subset)} verified")
        state_fs = fs_type(ctx.state_dir)
        # before the environment's files go: removing them can take minutes
        report(args, runs, problems, state_fs, started)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
