"""Where a subscriber's time goes, in counts that do not depend on the machine's load.

Against one throwaway RabbitMQ and nginx (as ``bench_core.py``), for each side (``ours``: one
``sr_subscribe foreground`` instance; ``floor``: ``bench/floor.py subscribe``) and each file
count, the same notices are queued and the subscriber is run under one of:

* ``perf``: ``perf stat -e instructions:u,task-clock,context-switches,cpu-migrations``
  (user-space instructions where the machine has the hardware counter, CPU time, and the
  thread switches, of the whole process tree, every thread; the last three are software
  events, counted on any machine);
* ``strace``: ``strace -c -f`` (system calls by name, every thread);
* ``cprofile`` (ours only): cProfile in every thread (``bench/profwrap.py``), the merged
  stats written to the output directory.

With two file counts the per-file figures are marginal ones, (big - small) / (big - small
files), so that start-up (imports, connecting) cancels out. A benchmark tool, not a test.

    .venv/bin/python bench/profile_sub.py --how perf --counts 200,2000 --dest-fs tmpfs
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pstats
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench.bench_core as core


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
                out.extend(kids)
                todo.extend(kids)
    return out


def prefix_for(how: str, out: Path) -> list[str]:
    if how == "perf":
        events = "instructions:u,task-clock,context-switches,cpu-migrations"
        return ["perf", "stat", "-x,", "-e", events, "-o", str(out), "--"]
    if how == "strace":
        return ["strace", "-c", "-f", "-o", str(out), "--"]
    if how == "callgrind":
        return ["valgrind", "--tool=callgrind", f"--log-file={out}",
                f"--callgrind-out-file={out}.cg"]  # fmt: skip
    if how == "cprofile":
        return []
    raise ValueError(how)


def one(side: str, how: str, ctx: core.Ctx, paths: list[Path], out: Path) -> float:
    """Run ``side`` over ``paths`` under ``how``; returns the wall seconds."""
    exchange = f"x_prof_{side}_{len(paths)}_{how}"
    ctx.amqp.exchange(exchange)
    dest = ctx.fresh_state(f"dest_{side}") / "dest"
    runner = core.Runner(side, ctx, exchange, dest, len(paths))
    runner.declare()
    poster = core.OurSite(ctx.fresh(f"post_{side}"), ctx.node.port)
    subprocess.run(core.ours_post_cmd(poster, ctx.base_url, ctx.www, exchange, paths),
                   env=poster.env, check=True, capture_output=True)  # fmt: skip
    if ctx.amqp.settled_depth(runner.queue, len(paths)) != len(paths):
        raise SystemExit("queue not filled")
    spawn = runner._spawn
    pre = prefix_for(how, out)

    def spawn_prefixed(cmd: list[str], env: dict[str, str]) -> int:
        if how == "cprofile":
            env = dict(env, PROFWRAP_OUT=str(out))
            if Path(cmd[0]).name.startswith("python"):
                cmd = cmd[1:]  # the floor: profwrap runs the script itself
            cmd = [sys.executable, str(Path(__file__).parent / "profwrap.py"), *cmd]
        return spawn([*pre, *cmd], env)

    runner._spawn = spawn_prefixed  # type: ignore[method-assign]
    t0 = time.monotonic()
    runner.start()
    while core.count_done(dest) < len(paths) if dest.exists() else True:
        if runner.proc is not None and runner.proc.poll() is not None and side != "floor":
            raise SystemExit(f"{side} exited early: {runner.log_text()[-2000:]}")
        if time.monotonic() - t0 > 1800:
            raise SystemExit("timeout")
        time.sleep(0.02)
    seconds = time.monotonic() - t0
    assert runner.proc is not None
    if side != "floor":
        time.sleep(0.3)  # the last batch's acks
        for pid in descendants(runner.proc.pid) or [runner.proc.pid]:
            with contextlib.suppress(OSError):
                if "sr_subscribe" in Path(f"/proc/{pid}/cmdline").read_text():
                    os.kill(pid, signal.SIGTERM)
    runner.proc.wait(120)
    good = core.verify(ctx.www, dest, paths)
    if good != len(paths):
        raise SystemExit(f"{side}: only {good} of {len(paths)} files verified")
    return seconds


def perf_figures(path: Path) -> dict[str, float]:
    got: dict[str, float] = {}
    for line in path.read_text().splitlines():
        cells = line.split(",")
        if len(cells) > 3 and cells[0].replace(".", "").isdigit():
            got[cells[2].split(":")[0]] = float(cells[0])
    return got


def strace_figures(path: Path) -> dict[str, float]:
    got: dict[str, float] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if m:
            got[m[2]] = float(m[1])
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--how", choices=("perf", "strace", "callgrind", "cprofile"), default="perf")
    ap.add_argument("--sides", default="ours,floor")
    ap.add_argument("--counts", default="200,2000", help="one or two file counts")
    ap.add_argument("--dest-fs", choices=("disk", "tmpfs"), default="tmpfs")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "profile"))
    ap.add_argument("--top", type=int, default=35)
    ap.add_argument("--threads", type=int, default=None, help="ours: transfer_threads")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    env_args = argparse.Namespace(dest_fs=args.dest_fs, keep=False, threads=args.threads,
                                  timeout=600, instances=1, ceiling_mode="frames")  # fmt: skip
    core.warm_up()
    results: dict[tuple[str, int], dict[str, float]] = {}
    with core.environment(env_args) as ctx:
        paths = core.make_tree(ctx.www, max(counts), 2048, 4)
        for side in args.sides.split(","):
            for n in counts:
                out = outdir / f"{side}-{args.how}-{n}.txt"
                secs = one(side, args.how, ctx, paths[:n], out)
                if args.how == "perf":
                    figs = perf_figures(out)
                elif args.how == "strace":
                    figs = strace_figures(out)
                elif args.how == "callgrind":
                    m = re.search(r"Collected : (\d+)", out.read_text())
                    figs = {"instructions": float(m[1]) if m else 0.0}
                else:
                    figs = {}
                results[side, n] = figs
                print(f"{side} {n} files: {secs:.2f} s wall under {args.how}; {out}", flush=True)
                if args.how == "cprofile":
                    st = pstats.Stats(str(out))
                    print(f"--- {side} {n} files: cumulative")
                    st.sort_stats("cumulative").print_stats(args.top)
                    print(f"--- {side} {n} files: own time")
                    st.sort_stats("tottime").print_stats(args.top)
                    print(f"--- {side} {n} files: calls")
                    st.sort_stats("ncalls").print_stats(args.top)
    if args.how in ("perf", "strace", "callgrind"):
        lo, hi = min(counts), max(counts)
        for side in args.sides.split(","):
            big, small = results[side, hi], results.get((side, lo), {})
            span = hi - lo if lo != hi else hi
            keys = sorted(big, key=lambda k: -big[k])
            how = f"marginal {lo}->{hi}" if lo != hi else str(hi)
            print(f"== {side}: per file ({how})")
            for k in keys:
                per = (big[k] - (small.get(k, 0.0) if lo != hi else 0.0)) / span
                print(f"  {k:24s} {per:12.3f}   (total at {hi}: {big[k]:.0f}, "
                      f"at {lo}: {small.get(k, 0):.0f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
