"""Where our pump's time goes (post -> sr_sarra -> sr_subscribe), in counts that do not
depend on the machine's load.

Against one throwaway RabbitMQ and nginx (as ``bench_pump.py``, same configurations), for
each file count our flow runs once with the sarra and the subscriber each under one of:

* ``strace``: ``strace -c -f`` (system calls by name, every thread);
* ``callgrind``: ``valgrind --tool=callgrind`` (instructions of the whole process, every
  thread; the total is read from valgrind's log);
* ``perf``: ``perf stat -e instructions:u,task-clock``;
* ``cprofile``: cProfile in every thread (``bench/profwrap.py``); the merged stats are
  written to the output directory and their top entries printed.

With two file counts the per-file figures are marginal ones, (big - small) / (big - small
files), so that start-up (imports, connecting) cancels out. ``--target`` chooses which of
the two daemons runs under the tool (the other runs plain). A benchmark tool, not a test.

    .venv/bin/python bench/profile_pump.py --how callgrind --counts 200,2000 --target sarra
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pstats
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench.bench_pump as pump
import bench.profile_sub as prof
from bench.bench_core import count_done, make_tree
from bench.peers import process_tree

NAMES = {"sarra": "sr_sarra", "subscriber": "sr_subscribe"}


def wrap(p: pump.Proc, how: str, out: Path) -> None:
    """Run ``p`` under ``how``, its figures written to ``out``."""
    if how == "cprofile":
        p.env = dict(p.env, PROFWRAP_OUT=str(out))
        p.argv = [sys.executable, str(Path(__file__).parent / "profwrap.py"), *p.argv]
    else:
        p.argv = [*prof.prefix_for(how, out), *p.argv]


def stop_component(p: pump.Proc) -> None:
    """SIGTERM the component itself (not the tool around it, which then writes its file)."""
    assert p.proc is not None
    for pid in process_tree(p.proc.pid):
        with contextlib.suppress(OSError):
            if NAMES[p.name] in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGTERM)
    p.proc.wait(300)
    if p.sampler is not None:
        p.sampler.stop()
        p.sampler = None


def one(
    ctx: pump.Ctx,
    paths: list[Path],
    how: str,
    targets: set[str],
    outdir: Path,
    pythonpath: str | None = None,
) -> float:
    tag = f"prof{len(paths)}{secrets.token_hex(3)}"
    tree = ctx.www / f"pub_{tag}"
    names = pump.Names(tag, f"xs_guest_{tag}", f"xpublic_{tag}", tree, f"{ctx.base_url}/pub_{tag}")
    for x in (names.source_exchange, names.public_exchange):
        ctx.amqp.exchange(x)
    home = Path(tempfile.mkdtemp(prefix="prof_", dir=ctx.work))
    plan = pump.ours_plan(ctx, names, home, paths)
    daemons = [plan.sarra, plan.sub]
    for p in daemons:
        if pythonpath:
            p.env = dict(p.env, PYTHONPATH=pythonpath)
        if p.name in targets:
            wrap(p, how, outdir / f"{p.name}-{how}-{len(paths)}.txt")
    try:
        for p in daemons:
            p.spawn()
        pump.wait_bound(ctx, daemons, 600)
        time.sleep(1.0)
        t0 = time.monotonic()
        subprocess.run(plan.post_argv, env=plan.post_env, cwd=home, check=True,
                       capture_output=True)  # fmt: skip
        while (count_done(plan.dest) if plan.dest.exists() else 0) < len(paths):
            for p in daemons:
                if not p.alive():
                    raise SystemExit(f"{p.name} exited early\n{p.log_text()[-3000:]}")
            if time.monotonic() - t0 > 3600:
                raise SystemExit("timeout")
            time.sleep(0.05)
        seconds = time.monotonic() - t0
        time.sleep(0.5)  # the last batch's acks
        for p in daemons:
            stop_component(p)
    finally:
        for p in daemons:
            p.stop()
    good = pump.verify(ctx.src, plan.dest, paths)
    if good != len(paths):
        raise SystemExit(f"only {good} of {len(paths)} files verified")
    for p in daemons:
        ctx.amqp.delete(p.queue)
    shutil.rmtree(tree, ignore_errors=True)
    return seconds


def figures(how: str, out: Path) -> dict[str, float]:
    if how == "perf":
        return prof.perf_figures(out)
    if how == "strace":
        return prof.strace_figures(out)
    if how == "callgrind":
        m = re.search(r"Collected : (\d+)", out.read_text())
        return {"instructions": float(m[1]) if m else 0.0}
    return {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--how", choices=("perf", "strace", "callgrind", "cprofile"), default="strace")
    ap.add_argument("--counts", default="200,2000", help="one or two file counts")
    ap.add_argument("--target", default="sarra,subscriber", help="sarra, subscriber or both")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "profile"))
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="our transfer_threads")
    ap.add_argument("--dir", default=None, help="work directory ($TMPDIR)")
    ap.add_argument(
        "--pythonpath", default=None,
        help="run the daemons with this PYTHONPATH (e.g. a snapshot of sarra/ from another "
        "commit, made with git archive), to profile it while the work tree changes",
    )  # fmt: skip
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    targets = {t for t in args.target.split(",") if t}
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    env_args = argparse.Namespace(dir=args.dir, threads=args.threads, timeout=3600.0,
                                  profile=None, keep=False)  # fmt: skip
    results: dict[tuple[str, int], dict[str, float]] = {}
    with pump.environment(env_args) as ctx:
        paths = make_tree(ctx.src, max(counts), 2048, 4)
        pump.warm_up()
        for n in counts:
            secs = one(ctx, paths[:n], args.how, targets, outdir, args.pythonpath)
            print(f"{n} files: {secs:.2f} s wall under {args.how}", flush=True)
            for t in sorted(targets):
                out = outdir / f"{t}-{args.how}-{n}.txt"
                results[t, n] = figures(args.how, out)
                if args.how == "cprofile":
                    st = pstats.Stats(str(out))
                    print(f"--- {t} {n} files: cumulative")
                    st.sort_stats("cumulative").print_stats(args.top)
                    print(f"--- {t} {n} files: own time")
                    st.sort_stats("tottime").print_stats(args.top)
    if args.how != "cprofile":
        lo, hi = min(counts), max(counts)
        span = hi - lo if lo != hi else hi
        for t in sorted(targets):
            big, small = results[t, hi], results.get((t, lo), {})
            print(f"== {t}: per file ({f'marginal {lo}->{hi}' if lo != hi else hi})")
            for k in sorted(big, key=lambda k: -big[k]):
                per = (big[k] - (small.get(k, 0.0) if lo != hi else 0.0)) / span
                print(f"  {k:24s} {per:12.3f}   (total at {hi}: {big[k]:.0f}, "
                      f"at {lo}: {small.get(k, 0):.0f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
