"""Large-file benchmark: one big file in parts, our sr_subscribe against curl and metpx-sr3.

Run through ``bench/run large`` (installs what is missing first), from the repo root. One
throwaway RabbitMQ node and one nginx (tests/servers) serve every side; for each file size
(default 256 MiB and 1 GiB) every side downloads the same file from the same nginx:

* **curl**: ``curl -o FILE URL``, one HTTP stream, no fsync: the ceiling the issue compares
  with. ``curl+fsync`` adds an fsync of the result, since our subscriber fsyncs every block
  before it counts it (spec 6.8), which curl never does.
* **ours xN**: our sr_post announces the file in ``--part`` blocks (default 64 MiB, ``i``
  parts, sum ``d``) into the side's pre-declared queue; then ``sr_subscribe start`` runs N
  instances (``instances N``, default ``transfer_threads`` 4 each, so up to 4 ranges per
  instance in flight). Timed from ``start`` until the file carries its final name (it is
  renamed there only when complete).
* **sr3**: metpx-sr3 3.3.1 ``sr3 foreground subscribe/<cfg>``, given **one whole-file v02
  message** (our sr_post with ``blocksize 1``): sr3 ignores ``i`` parts and would fetch the
  whole file once per part message (spec 11 R3), i.e. 16 GiB for a 1 GiB file in 64 MiB
  parts; the whole-file message measures what sr3 can do for this file at best. Timed from
  spawn until its ``after_work downloaded ok`` log line.

Every output is md5-checked against the source, then deleted (and ``sync`` run) before the
next side starts. Peak RSS is sampled over each side's whole process tree (all instances) every
20 ms: the larger of the summed VmRSS and any process's VmHWM; never ``ru_maxrss`` of a
forked child (Linux carries the forking parent's peak across exec).

A benchmark, not a test: it prints a table and writes JSON to
``bench/out/large-<timestamp>.json``; it exits non-zero only when a side failed to produce a
correct file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_core import (  # noqa: E402
    Amqp,
    OurSite,
    ours_bin,
    peer_versions,
    start_broker,
    warm_up,
)
from bench.peers import TreeSampler, declare_queue, log_timestamps, process_tree  # noqa: E402
from sarra.cli.logs import instance_tag  # noqa: E402
from tests.interop.peers import PeerError, Sr3Subscriber, mgmt_bindings  # noqa: E402
from tests.servers.nginx import start_nginx  # noqa: E402

MIB = 1024 * 1024
SIDES = ("curl", "ours1", "ours2", "sr3")


# -- measuring ---------------------------------------------------------------------------------


def _kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class ForestSampler:
    """Peak RSS over several process trees whose roots appear over time (daemon instances).

    ``roots()`` is asked on every sample (pid files are written after ``start`` returns).
    The peak is the larger of the highest summed VmRSS and any single process's VmHWM.
    """

    def __init__(self, roots: Callable[[], list[int]], interval: float = 0.02) -> None:
        self.roots = roots
        self.interval = interval
        self.peak_kib = 0
        self.peak_hwm_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-forest", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = {p for root in self.roots() for p in process_tree(root)}
            self.peak_kib = max(self.peak_kib, sum(_kib(p, "VmRSS") for p in pids))
            for p in pids:
                self.peak_hwm_kib = max(self.peak_hwm_kib, _kib(p, "VmHWM"))
            self._stop.wait(self.interval)

    def start(self) -> ForestSampler:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return max(self.peak_kib, self.peak_hwm_kib)


def md5_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def make_big(path: Path, size: int) -> str:
    """Write ``size`` pseudo-random bytes (distinct per MiB) to ``path``; return its md5."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.md5()
    rng = random.Random(size)
    with path.open("wb") as f:
        left = size
        while left:
            chunk = rng.randbytes(min(left, 16 * MIB))
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


@dataclass
class Figures:
    side: str
    size: int
    seconds: float
    peak_rss_kib: int
    md5_ok: bool
    note: str = ""
    #: ours only: first log line of any instance (start-up done) to the completing block's line
    steady_seconds: float | None = None
    #: ours only: ``start`` spawned until the first log line of any instance (Python start-up,
    #: imports, configuration), i.e. seconds - steady_seconds
    startup_seconds: float | None = None

    @property
    def mib_per_s(self) -> float:
        return self.size / MIB / self.seconds if self.seconds else 0.0

    @property
    def steady_mib_per_s(self) -> float | None:
        if not self.steady_seconds:
            return None
        return self.size / MIB / self.steady_seconds


# -- context -------------------------------------------------------------------------------------


@dataclass
class Ctx:
    work: Path
    node: Any
    base_url: str
    www: Path
    amqp: Amqp
    part: int
    timeout: float
    sum: str = "d"

    def fresh(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{prefix}_", dir=self.work))


def settle_disk() -> None:
    """Flush dirty pages so one side's writeback does not slow the next side down."""
    os.sync()
    time.sleep(0.5)


def post_ours(ctx: Ctx, exchange: str, src: Path, blocksize: int) -> int:
    """Announce ``src`` with our sr_post (``--sum``, default d) in blocks of ``blocksize``;
    return the number of notices."""
    site = OurSite(ctx.fresh("post"), ctx.node.port)
    cfg = site.write("post", "large", [
        f"post_broker {site.broker}", f"post_exchange {exchange}",
        f"post_base_url {ctx.base_url}", f"post_base_dir {ctx.www}", f"blocksize {blocksize}",
        f"sum {ctx.sum}",
    ])  # fmt: skip
    subprocess.run([ours_bin("sr_post"), "-c", str(cfg), str(src)], env=site.env, check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    return 1 if blocksize == 1 else -(-src.stat().st_size // blocksize)


# -- sides ----------------------------------------------------------------------------------------


def run_curl(ctx: Ctx, src: Path, want_md5: str, fsync: bool) -> Figures:
    dest = ctx.fresh("curl") / src.name
    url = f"{ctx.base_url}/{src.relative_to(ctx.www)}"
    t0 = time.perf_counter()
    proc = subprocess.Popen(["curl", "-sS", "--fail", "-o", str(dest), url],
                            stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    sampler = TreeSampler(proc.pid, interval=0.02).start()
    rc = proc.wait(ctx.timeout)
    if fsync and rc == 0:
        fd = os.open(dest, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    seconds = time.perf_counter() - t0
    peak = sampler.stop()
    if rc != 0:
        raise PeerError(f"curl exited {rc}")
    ok = md5_of(dest) == want_md5
    shutil.rmtree(dest.parent, ignore_errors=True)
    return Figures("curl+fsync" if fsync else "curl", src.stat().st_size, seconds, peak, ok,
                   "one HTTP stream" + (", then fsync" if fsync else ", no fsync"))  # fmt: skip


def run_ours(ctx: Ctx, src: Path, want_md5: str, instances: int) -> Figures:
    exchange = f"x_large_ours{instances}_{secrets.token_hex(3)}"
    ctx.amqp.exchange(exchange)
    queue = f"q_guest.large.ours.{secrets.token_hex(4)}"
    root = ctx.fresh(f"ours{instances}")
    dest = root / "dest"
    site = OurSite(root, ctx.node.port)
    site.write("subscribe", "large", [
        f"broker {site.broker}", f"exchange {exchange}", f"queue_name {queue}", "expire 1h",
        "subtopic #", "report_back off", f"instances {instances}", "mirror on",
        "base_url_private on",  # the bench web server is on loopback
        f"directory {dest}", "accept .*", *os.environ.get("BENCH_EXTRA", "").split(";"),
    ])  # fmt: skip
    env = site.env
    subprocess.run([ours_bin("sr_subscribe"), "declare", "large"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    parts = post_ours(ctx, exchange, src, ctx.part)
    queued = ctx.amqp.settled_depth(queue, parts)
    if queued != parts:
        raise PeerError(f"ours x{instances}: queue holds {queued} of {parts} notices")
    final = dest / src.relative_to(ctx.www)
    state = root / "state" / "subscribe" / "large"

    def pids() -> list[int]:
        out = []
        for p in state.glob("sr_subscribe_large_*.pid") if state.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                out.append(int(p.read_text().split()[0]))
        return out

    settle_disk()
    t0 = time.perf_counter()
    sampler = ForestSampler(pids).start()
    try:
        subprocess.run([ours_bin("sr_subscribe"), "start", "large"], env=env, check=True,
                       capture_output=True, cwd=root)  # fmt: skip
        deadline = time.monotonic() + ctx.timeout
        while not final.exists():
            if time.monotonic() > deadline:
                raise PeerError(f"ours x{instances}: no file after {ctx.timeout:.0f}s\n"
                                f"{_our_logs(root)[-3000:]}")  # fmt: skip
            time.sleep(0.02)
        seconds = time.perf_counter() - t0
    finally:
        peak = sampler.stop()
        subprocess.run([ours_bin("sr_subscribe"), "stop", "large"], env=env,
                       capture_output=True, cwd=root)  # fmt: skip
    ok = md5_of(final) == want_md5
    log = _our_logs(root)
    started = log_timestamps(log, " [")  # every line
    done = log_timestamps(log, "downloaded code=201 ")
    steady = done[-1] - min(started) if started and done else None
    startup = seconds - steady if steady is not None else None
    # one "downloaded code=201" line per block (the last one says Downloaded), by instance
    per_instance = [log.count(f"/{instance_tag(n)} sarra.components.runner: downloaded code=201 ")
                    for n in range(1, instances + 1)]  # fmt: skip
    note = (f"{parts} parts of {ctx.part // MIB} MiB, {instances} instance(s) x 4 threads "
            f"(transfer_threads default); {len(done)} blocks logged "
            f"({' + '.join(map(str, per_instance))} by instance)")  # fmt: skip
    ctx.amqp.delete(queue)
    shutil.rmtree(root, ignore_errors=True)
    return Figures(f"ours x{instances}", src.stat().st_size, seconds, peak, ok, note, steady,
                   startup)  # fmt: skip


def _our_logs(root: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(root.rglob("*.log")))


def run_sr3(ctx: Ctx, src: Path, want_md5: str) -> Figures:
    exchange = f"x_large_sr3_{secrets.token_hex(3)}"
    ctx.amqp.exchange(exchange)
    queue = f"q_guest.large.sr3.{secrets.token_hex(4)}"
    root = ctx.fresh("sr3")
    dest = root / "dest"
    probe = mgmt_bindings(ctx.node.mgmt_get)
    declare_queue("sr3", root / "declare", ctx.node.url(), exchange, root / "declare_dest",
                  queue=queue, bindings=probe)  # fmt: skip
    post_ours(ctx, exchange, src, 1)  # one whole-file message (see the module docstring)
    if ctx.amqp.settled_depth(queue, 1) != 1:
        raise PeerError("sr3: the whole-file notice is not in its queue")
    settle_disk()
    sub = Sr3Subscriber(root / "run", ctx.node.url(), exchange, dest, queue=queue,
                        bindings=probe)  # fmt: skip
    t0 = time.perf_counter()
    sampler: TreeSampler | None = None
    try:
        sub.start()
        sampler = TreeSampler(sub.pid, interval=0.02).start()
        sub.wait_downloaded(1, timeout=ctx.timeout)
        seconds = time.perf_counter() - t0
    finally:
        peak = sampler.stop() if sampler is not None else 0
        sub.stop()
    final = dest / src.relative_to(ctx.www)
    ok = final.exists() and md5_of(final) == want_md5
    ctx.amqp.delete(queue)
    shutil.rmtree(root, ignore_errors=True)
    return Figures("sr3", src.stat().st_size, seconds, peak, ok,
                   "one whole-file message (sr3 ignores i parts, spec R3)")  # fmt: skip


# -- driver ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def environment(args: argparse.Namespace) -> Iterator[Ctx]:
    work = Path(tempfile.mkdtemp(prefix="sarra-bench-large-", dir=args.dir))
    node = None
    stop_web: Callable[[], None] | None = None
    broker = None
    try:
        print(f"bench directory {work}; starting RabbitMQ and nginx on loopback ...", flush=True)
        node = start_broker()
        www = work / "www"
        web, stop_web = start_nginx(work / "nginx", www)
        broker = Amqp(node.port)
        yield Ctx(work, node, web.base_url, www, broker, args.part * MIB, args.timeout, args.sum)
    finally:
        if broker is not None:
            broker.close()
        if stop_web is not None:
            stop_web()
        if node is not None:
            node.stop()
            shutil.rmtree(node.base_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'size':>8} {'side':<11} {'runs':>4} {'wall s':>7} {'MiB/s':>7} {'% curl':>7} "
            f"{'steady':>7} {'% curl':>7} {'peak MiB':>8}  md5")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in rows:
        pct = f"{r['pct_of_curl']:.0f}%" if r["pct_of_curl"] is not None else "-"
        steady = f"{r['steady_mib_per_s']:.0f}" if r["steady_mib_per_s"] else "-"
        spct = f"{r['steady_pct_of_curl']:.0f}%" if r["steady_pct_of_curl"] else "-"
        print(f"{r['size'] // MIB:>4} MiB {r['side']:<11} {r['runs']:>4} {r['seconds']:>7.2f} "
              f"{r['mib_per_s']:>7.0f} {pct:>7} {steady:>7} {spct:>7} "
              f"{r['peak_rss_mib']:>8.1f}  {'ok' if r['md5_ok'] else 'BAD'}")  # fmt: skip


def summarize(runs: list[Figures]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for size in dict.fromkeys(r.size for r in runs):
        of_size = [r for r in runs if r.size == size]
        curl = [r.mib_per_s for r in of_size if r.side == "curl"]
        ceiling = statistics.median(curl) if curl else 0.0
        for side in dict.fromkeys(r.side for r in of_size):
            rs = [r for r in of_size if r.side == side]
            rate = statistics.median(r.mib_per_s for r in rs)
            steadies = [r.steady_mib_per_s for r in rs if r.steady_mib_per_s]
            steady = statistics.median(steadies) if steadies else None
            startups = [r.startup_seconds for r in rs if r.startup_seconds is not None]
            rows.append({
                "size": size, "side": side, "runs": len(rs),
                "seconds": statistics.median(r.seconds for r in rs), "mib_per_s": rate,
                "pct_of_curl": 100 * rate / ceiling if ceiling else None,
                "steady_mib_per_s": steady,
                "steady_pct_of_curl": 100 * steady / ceiling if ceiling and steady else None,
                "startup_seconds": statistics.median(startups) if startups else None,
                "peak_rss_mib": max(r.peak_rss_kib for r in rs) / 1024,
                "md5_ok": all(r.md5_ok for r in rs), "note": rs[0].note,
            })  # fmt: skip
    return rows


#: issue 14, item 5: one instance of ours against curl on a 1 GiB file (percent of curl's rate)
TARGET_STEADY_PCT = 90.0
TARGET_WALL_PCT = 85.0
#: two instances never slower than one (ours x2 / ours x1 on the wall clock)
TARGET_INSTANCES = 1.0

#: what is durable when each side's clock stops (printed with the results)
DURABILITY = {
    "curl": "none: the file may still be dirty pages when curl exits",
    "curl+fsync": "the whole file, by one fsync(2) after curl exits",
    "ours": "every block fsync'd before it is recorded; the complete file fsync'd, renamed to "
    "its final name and its directory fsync'd before the clock stops",
    "sr3": "none asked (sr3 does not fsync)",
}


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def target_lines(rows: list[dict[str, Any]], size: int) -> list[str]:
    """Issue 14's large-file targets for ``size``, judged on the summary ``rows``:
    ours x1's steady and wall-clock rates as percentages of curl's (the steady one too is of
    curl's wall-clock rate, curl's start-up being a few ms), the same against curl+fsync (the
    fair comparison for durability), and ours x2 / ours x1."""
    by_side = {r["side"]: r for r in rows if r["size"] == size}
    one, two = by_side.get("ours x1"), by_side.get("ours x2")
    curl, synced = by_side.get("curl"), by_side.get("curl+fsync")
    lines = []
    if one is not None and curl is not None and curl["mib_per_s"]:
        wall = 100 * one["mib_per_s"] / curl["mib_per_s"]
        text = (
            f"ours x1 / curl ({size // MIB} MiB): wall {wall:.0f} % "
            f"(target >= {TARGET_WALL_PCT:.0f} %: {_met(wall >= TARGET_WALL_PCT)})"
        )
        if one["steady_mib_per_s"]:
            steady = 100 * one["steady_mib_per_s"] / curl["mib_per_s"]
            ok = steady >= TARGET_STEADY_PCT
            text += f", steady {steady:.0f} % (target >= {TARGET_STEADY_PCT:.0f} %: {_met(ok)})"
        if one.get("startup_seconds") is not None:
            text += f"; start-up {one['startup_seconds']:.2f} s"
        lines.append(text)
    if one is not None and synced is not None and synced["mib_per_s"]:
        wall = 100 * one["mib_per_s"] / synced["mib_per_s"]
        text = f"ours x1 / curl+fsync ({size // MIB} MiB, both durable): wall {wall:.0f} %"
        if one["steady_mib_per_s"]:
            text += f", steady {100 * one['steady_mib_per_s'] / synced['mib_per_s']:.0f} %"
        lines.append(text)
    if one is not None and two is not None and one["mib_per_s"]:
        ratio = two["mib_per_s"] / one["mib_per_s"]
        text = (
            f"instances: ours x2 / ours x1 ({size // MIB} MiB): wall {ratio:.2f} "
            f"(target >= {TARGET_INSTANCES:.1f}: {_met(ratio >= TARGET_INSTANCES)})"
        )
        if one["steady_mib_per_s"] and two["steady_mib_per_s"]:
            text += f", steady {two['steady_mib_per_s'] / one['steady_mib_per_s']:.2f}"
        lines.append(text)
    return lines


def make_plan(
    ctx: Ctx, sides: list[str], src: Path, want: str
) -> list[tuple[str, Callable[[], Figures]]]:
    """(label, run) for each side, in order; curl runs twice (without and with fsync)."""
    plan: list[tuple[str, Callable[[], Figures]]] = []
    for side in sides:
        if side == "curl":
            plan.append(("curl", partial(run_curl, ctx, src, want, False)))
            plan.append(("curl+fsync", partial(run_curl, ctx, src, want, True)))
        elif side.startswith("ours"):
            plan.append((side, partial(run_ours, ctx, src, want, int(side[4:]))))
        else:
            plan.append(("sr3", partial(run_sr3, ctx, src, want)))
    return plan


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256,1024", help="file sizes in MiB, comma-separated")
    ap.add_argument("--part", type=int, default=64, help="part (block) size in MiB")
    ap.add_argument("--sides", default=",".join(SIDES), help="comma-separated: " + ",".join(SIDES))
    ap.add_argument("--repeat", type=int, default=1, help="runs per side and size (medians)")
    ap.add_argument("--timeout", type=float, default=300.0, help="per run, seconds")
    ap.add_argument("--sum", default="d", help="sum of our posts: d (md5, default), s, n (none)")
    ap.add_argument("--dir", default=None, help="where the work directory goes (default $TMPDIR)")
    args = ap.parse_args()
    sides = [s for s in args.sides.split(",") if s]
    unknown = set(sides) - set(SIDES)
    if unknown:
        ap.error(f"unknown sides {sorted(unknown)}")
    if shutil.which("curl") is None and "curl" in sides:
        ap.error("curl is missing (scripts/bootstrap installs it)")
    sizes = [int(s) * MIB for s in args.sizes.split(",") if s]
    need = 2 * max(sizes) + 256 * MIB
    free = shutil.disk_usage(args.dir or tempfile.gettempdir()).free
    if free < need:
        print(f"not enough disk: {free // MIB} MiB free, {need // MIB} MiB needed")
        return 2
    started = time.time()
    runs: list[Figures] = []
    problems: list[str] = []
    with environment(args) as ctx:
        warm_up()
        for size in sizes:
            src = ctx.www / "large" / f"big{size // MIB}M.bin"
            print(f"making {src.name} ({size // MIB} MiB) ...", flush=True)
            want = make_big(src, size)
            settle_disk()
            for rep in range(args.repeat):
                plan = make_plan(ctx, sides, src, want)
                for label, fn in plan:
                    print(f"[{rep + 1}] {size // MIB} MiB {label:<10} ...", end=" ", flush=True)
                    try:
                        fig = fn()
                    except (PeerError, subprocess.SubprocessError, OSError) as e:
                        problems.append(f"{size // MIB} MiB {label}: {str(e)[:2000]}")
                        print("FAILED")
                        continue
                    runs.append(fig)
                    print(f"{fig.seconds:.2f}s, {fig.mib_per_s:.0f} MiB/s, "
                          f"peak {fig.peak_rss_kib / 1024:.1f} MiB, "
                          f"md5 {'ok' if fig.md5_ok else 'BAD'}", flush=True)  # fmt: skip
                    if not fig.md5_ok:
                        problems.append(f"{size // MIB} MiB {label}: md5 mismatch")
            src.unlink()
    rows = summarize(runs)
    print()
    print(f"parts of {args.part} MiB; host {platform.node()}, {os.cpu_count()} cpus, "
          f"load {os.getloadavg()[0]:.1f}; total {time.time() - started:.0f}s")  # fmt: skip
    print_table(rows)
    for r in rows:
        if r["size"] == sizes[-1]:
            print(f"  {r['side']}: {r['note']}")
    for size in sizes:
        for line in target_lines(rows, size):
            print(line)
    print("durability when the clock stops:")
    for side in dict.fromkeys(r["side"].split(" x")[0] for r in rows):
        print(f"  {side}: {DURABILITY.get(side, '?')}")
    for p in problems:
        print(f"PROBLEM: {p.splitlines()[0]}")
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"large-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "host": platform.node(), "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
        "python": platform.python_version(), "peers": peer_versions(),
        "part_mib": args.part, "sum": args.sum, "sizes_mib": [s // MIB for s in sizes],
        "repeat": args.repeat,
        "summary": rows,
        "durability": DURABILITY,
        "targets": [line for size in sizes for line in target_lines(rows, size)],
        "runs": [asdict(r) | {"mib_per_s": r.mib_per_s, "steady_mib_per_s": r.steady_mib_per_s}
                 for r in runs],
        "problems": problems,
    }, indent=2))  # fmt: skip
    print(f"results: {out.relative_to(ROOT)}")
    return 1 if problems else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
