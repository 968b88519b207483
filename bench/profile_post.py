"""Where our sr_post's instructions go, per announced file, independent of the machine's load.

Against one throwaway RabbitMQ (as ``bench_core.py``), ``sr_post`` announces N small files
(given as paths, in a few directories, so that no directory messages are added) to a fresh
exchange, run under ``valgrind --tool=callgrind`` (or ``perf stat -e instructions:u`` where
the hardware counter is available, or cProfile in every thread). With two file counts the
per-file figure is a marginal one, (big - small) / (big - small files), so that start-up
(imports, connecting) cancels out. A counting queue checks that every notice arrived.
A benchmark tool, not a test.

    .venv/bin/python bench/profile_post.py --how callgrind --counts 200,2000
"""

from __future__ import annotations

import argparse
import pstats
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench.bench_core as core
import bench.profile_sub as prof


def one(port: int, amqp: core.Amqp, work: Path, www: Path, paths: list[Path], how: str,
        out: Path, tag: str, dump: Path | None = None) -> tuple[float, float]:  # fmt: skip
    """Post ``paths`` under ``how``; returns (wall seconds, instructions or 0)."""
    exchange = f"x_prof_post_{tag}_{len(paths)}"
    amqp.exchange(exchange)
    queue = amqp.counting_queue(exchange)
    site = core.OurSite(Path(tempfile.mkdtemp(prefix="post_", dir=work)), port)
    cmd = core.ours_post_cmd(site, "http://127.0.0.1:1/www", www, exchange, paths)
    env = site.env
    if how == "cprofile":
        env = dict(env, PROFWRAP_OUT=str(out))
        cmd = [sys.executable, str(Path(__file__).parent / "profwrap.py"), *cmd]
    else:
        cmd = [*prof.prefix_for(how, out), *cmd]
    t0 = time.monotonic()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    secs = time.monotonic() - t0
    if amqp.settled_depth(queue, len(paths)) != len(paths):
        raise SystemExit(f"queue of {exchange} does not hold {len(paths)} notices")
    if dump is not None:
        dump_queue(amqp, queue, dump)
    if how == "callgrind":
        m = re.search(r"Collected : (\d+)", out.read_text())
        return secs, float(m[1]) if m else 0.0
    if how == "perf":
        return secs, prof.perf_figures(out).get("instructions", 0.0)
    return secs, 0.0


def dump_queue(amqp: core.Amqp, queue: str, path: Path) -> None:
    """Write every notice in ``queue`` (routing key, body, headers, properties) to ``path``,
    one a line, the times that change from run to run masked: to compare wire output."""
    lines = []
    while (msg := amqp.ch.basic_get(queue, no_ack=True)) is not None:
        body = msg.body.decode() if isinstance(msg.body, bytes) else msg.body
        body = re.sub(r"^\d{8}\d+(\.\d+)?", "PUBTIME", body)
        props = dict(msg.properties)
        headers = {k: v for k, v in props.pop("application_headers", {}).items()
                   if k not in ("atime", "mtime")}  # fmt: skip
        lines.append(repr((msg.delivery_info["routing_key"], body, sorted(headers.items()),
                           sorted(props.items()))))  # fmt: skip
    path.write_text("\n".join(sorted(lines)) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--how", choices=("perf", "callgrind", "cprofile"), default="callgrind")
    ap.add_argument("--counts", default="200,2000", help="two file counts")
    ap.add_argument("--dirs", type=int, default=4, help="directories the files are spread in")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each count")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "profile_post"))
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--dump", help="write the small count's notices (times masked) here")
    args = ap.parse_args()
    lo, hi = (int(c) for c in args.counts.split(","))
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    core.warm_up()
    work = Path(tempfile.mkdtemp(prefix="sarra-profpost-"))
    node = core.start_broker()
    try:
        amqp = core.Amqp(node.port)
        www = work / "www"
        paths = core.make_tree(www, hi, 2048, args.dirs)
        for r in range(args.repeat):
            got = {}
            for n in (lo, hi):
                out = outdir / f"post-{args.how}-{n}-{r}.txt"
                dump = Path(args.dump) if args.dump and n == lo and r == 0 else None
                secs, instr = one(node.port, amqp, work, www, paths[:n], args.how, out, str(r),
                                  dump)  # fmt: skip
                got[n] = instr
                print(f"run {r}: {n} files: {secs:.2f} s wall under {args.how}, "
                      f"{instr:.0f} instructions; {out}", flush=True)  # fmt: skip
                if args.how == "cprofile":
                    st = pstats.Stats(str(out))
                    st.sort_stats("tottime").print_stats(args.top)
            if args.how != "cprofile":
                print(f"run {r}: instructions per file (marginal {lo}->{hi}): "
                      f"{(got[hi] - got[lo]) / (hi - lo):.0f}", flush=True)  # fmt: skip
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
