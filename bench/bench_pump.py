"""Pump benchmark: files/s through post -> sarra -> subscribe, ours against metpx-sr3, one run.

Run through ``bench/run pump`` (installs what is missing first), from the repo root. One
throwaway RabbitMQ node and one nginx (running the shipped ``etc/nginx/sarra.conf``) serve
both sides. The nginx root holds the source tree (``src/``, the N files, made once) and each
run's pump tree (``pub_<side>_<n>/``, where that side's sarra places what it downloads).

For each side and each repetition, on fresh exchanges and queues:

1. the side's sarra and subscriber are spawned together; the bench waits until the broker
   shows both queues bound (management API), which is reported as **start-up** and not
   counted in the flow;
2. the clock starts and the side's poster announces the N files to ``xs_guest_<tag>``
   (one command, N paths);
3. the sarra downloads each file from nginx into the pump tree and re-announces it on
   ``xpublic_<side>_<tag>`` with the pump's base URL; the subscriber downloads it from nginx
   again into a fresh directory;
4. the clock stops when N files carry their final names in the subscriber's directory; then
   every file's md5 is compared with its source.

Measured: that wall time, files/s, the steady rate from the subscriber's log (first to last
download line), and the peak RSS of each process tree (poster, sarra, subscriber), sampled
with ``bench.peers.TreeSampler`` (never ``ru_maxrss`` of a forked parent).

A benchmark, not a test: it prints figures and ratios and writes them as JSON to
``bench/out/pump-<timestamp>.json``; it asserts no timing. It exits non-zero only when a side
could not do the work (missing or corrupt files, a process that died).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_core import (  # noqa: E402
    OURS_DOWNLOADED,
    Amqp,
    count_done,
    make_tree,
    ours_bin,
    ours_env,
    peer_versions,
    start_broker,
)
from bench.bench_core import warm_up as core_warm_up  # noqa: E402
from bench.peers import TreeSampler, log_timestamps, process_tree  # noqa: E402
from tests.interop.peers import (  # noqa: E402
    SR3_DOWNLOADED_LINE,
    PeerError,
    _split_broker,
    _write_config,
    mgmt_bindings,
    peer_bin,
    peer_env,
    write_credentials,
)
from tests.pump.pumpkit import pump_nginx  # noqa: E402

SIDES = ("ours", "sr3")
CLUSTER = "benchpump"


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Proc:
    """A long-running component (sarra or subscriber) in its own process group."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    queue: str
    exchange: str  # the exchange its queue must be bound to before the flow starts
    downloaded_line: str
    proc: subprocess.Popen[bytes] | None = None
    sampler: TreeSampler | None = None
    peak_kib: int = 0
    profile: Path | None = None  # py-spy raw output (``--profile``), ours only
    spy: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.sampler = TreeSampler(self.proc.pid, interval=0.02).start()
        if self.profile is not None:
            self.spy = start_spy(self.proc.pid, self.profile, self.profile.suffix == ".gil")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.sampler is not None:
            self.peak_kib = self.sampler.stop()
            self.sampler = None
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(20)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)  # sr3's flow child may outlive its parent
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(10)
        if self.spy is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.spy.wait(30)  # py-spy writes its file once the target has exited


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid``'s process tree (reaped children too)."""
    ticks = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def start_spy(pid: int, out: Path, gil: bool) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` into a raw file: busy threads, or with ``gil`` only the thread
    holding the GIL (CPU spent in Python)."""
    spy = ROOT / ".venv" / "bin" / "py-spy"
    return subprocess.Popen(
        [str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
         "--nonblocking", *(["--gil"] if gil else []), "--output", str(out)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def hotspots(raw: Path, top: int = 12) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, top frames by self samples, top project frames by inclusive samples) from a
    py-spy raw file (``frame;frame;... count`` lines, frames ``func (file:line)``)."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for f in dict.fromkeys(frames):
            if "sarra/" in f:
                incl[f] = incl.get(f, 0) + count
    by = sorted(own.items(), key=lambda kv: -kv[1])[:top]
    return total, by, sorted(incl.items(), key=lambda kv: -kv[1])[:top]


@dataclass
class Plan:
    """Everything one run of one side needs: its two daemons and its post command."""

    sarra: Proc
    sub: Proc
    post_argv: list[str]
    post_env: dict[str, str]
    post_log: Path
    dest: Path


@dataclass
class Names:
    tag: str
    source_exchange: str
    public_exchange: str
    tree: Path  # the pump tree (under the nginx root)
    tree_url: str


# -- our side ----------------------------------------------------------------------------------


def ours_plan(ctx: Ctx, n: Names, home: Path, paths: list[Path]) -> Plan:
    conf = home / "config"
    for component in ("post", "sarra", "subscribe"):
        (conf / component).mkdir(parents=True, exist_ok=True)
    cred = conf / "credentials.conf"
    cred.write_text(f"amqp://guest:guest@127.0.0.1:{ctx.node.port}/\n")
    cred.chmod(0o600)
    env = ours_env()
    env.update(SR_CONFIG_DIR=str(conf), SR_STATE_DIR=str(home / "state"))
    broker = f"amqp://guest@127.0.0.1:{ctx.node.port}/"
    dest = home / "dest"
    sarra_q, sub_q = f"q_guest.pump.sarra.{n.tag}", f"q_guest.pump.sub.{n.tag}"
    threads = [f"transfer_threads {ctx.threads}"] if ctx.threads else []
    # BENCH_EXTRA: ;-separated lines added to our sarra's and subscriber's configs
    threads += [line for line in os.environ.get("BENCH_EXTRA", "").split(";") if line.strip()]

    def write(component: str, lines: list[str]) -> Path:
        path = conf / component / "bench.conf"
        path.write_text("".join(f"{line}\n" for line in lines))
        return path

    write("sarra", [
        f"broker {broker}", "declare source guest", f"cluster {CLUSTER}",
        f"exchange {n.source_exchange}", "subtopic #", f"queue_name {sarra_q}", "expire 1h",
        *threads, f"directory {n.tree}", f"post_broker {broker}",
        f"post_exchange {n.public_exchange}", f"post_base_url {n.tree_url}",
        f"post_base_dir {n.tree}",
    ])  # fmt: skip
    write("subscribe", [
        f"broker {broker}", f"exchange {n.public_exchange}", f"queue_name {sub_q}",
        "expire 1h", "subtopic #", "report_back off", *threads, "mirror on",
        "base_url_private on",  # the bench web server is on loopback
        f"directory {dest}", "accept .*",
    ])  # fmt: skip
    post_cfg = write("post", [
        f"post_broker {broker}", f"post_exchange {n.source_exchange}",
        f"post_base_url {ctx.base_url}/src", f"post_base_dir {ctx.src}",
        f"to_clusters {CLUSTER}",
    ])  # fmt: skip
    sarra = Proc("sarra", [ours_bin("sr_sarra"), "foreground", "bench"], env, home,
                 home / "sarra.log", sarra_q, n.source_exchange, OURS_DOWNLOADED)  # fmt: skip
    sub = Proc("subscriber", [ours_bin("sr_subscribe"), "foreground", "bench"], env, home,
               home / "subscribe.log", sub_q, n.public_exchange, OURS_DOWNLOADED)  # fmt: skip
    post = [ours_bin("sr_post"), "-c", str(post_cfg), *map(str, paths)]
    if ctx.profile:
        sarra.profile, sub.profile = (
            home / f"sarra.{ctx.profile}",
            home / f"subscriber.{ctx.profile}",
        )
    return Plan(sarra, sub, post, env, home / "post.log", dest)


# -- sr3 ---------------------------------------------------------------------------------------


def sr3_plan(ctx: Ctx, n: Names, home: Path, paths: list[Path]) -> Plan:
    """sr3 end to end in v02 (the same wire format as ours on both legs).

    sr3_post needs ``post_format v02`` *and* ``post_topicPrefix v02.post`` (docs/peers.md);
    the sarra reads v02 with ``topicPrefix v02.post`` and re-announces in v02 the same way, so
    the subscriber binds ``v02.post.#`` as ours does.
    """
    bare, full, _user = _split_broker(ctx.node.url())
    # One HOME per process: every `sr3` command reads every config in its HOME and rewrites
    # their queue-name files, so two `sr3 foreground` in one HOME race on those files.
    homes = {c: home / c for c in ("sarra", "subscribe", "post")}
    for c, h in homes.items():
        write_credentials(h / ".config" / "sr3", [full])
        # without it sr3 logs a harmless "[ERROR] ... subscriptions.json" at its first start
        (h / ".cache" / "sr3" / c / "bench").mkdir(parents=True, exist_ok=True)
    dest = home / "dest"
    sarra_q, sub_q = f"q_guest.pump.sarra.{n.tag}", f"q_guest.pump.sub.{n.tag}"
    v02_out = ["post_format v02", "post_topicPrefix v02.post"]

    def conf(c: str) -> Path:
        return homes[c] / ".config" / "sr3" / c / "bench.conf"

    _write_config(conf("sarra"), [
        f"broker {bare}", f"exchange {n.source_exchange}", "topicPrefix v02.post",
        f"queueName {sarra_q}", "expire 1h", "subtopic #", "mirror True",
        f"directory {n.tree}", "accept .*", f"post_broker {bare}",
        f"post_exchange {n.public_exchange}", f"post_baseUrl {n.tree_url}",
        f"post_baseDir {n.tree}", *v02_out,
    ])  # fmt: skip
    _write_config(conf("subscribe"), [
        f"broker {bare}", f"exchange {n.public_exchange}", "topicPrefix v02.post",
        f"queueName {sub_q}", "expire 1h", "subtopic #", "mirror True",
        f"directory {dest}", "accept .*",
    ])  # fmt: skip
    post_cfg = _write_config(conf("post"), [
        f"post_broker {bare}", f"post_exchange {n.source_exchange}",
        f"post_baseUrl {ctx.base_url}/src", f"post_baseDir {ctx.src}", *v02_out,
    ])  # fmt: skip
    sr3 = str(peer_bin("sr3"))
    sarra = Proc("sarra", [sr3, "foreground", "sarra/bench"], peer_env(homes["sarra"]),
                 homes["sarra"], home / "sarra.log", sarra_q, n.source_exchange,
                 SR3_DOWNLOADED_LINE)  # fmt: skip
    sub = Proc("subscriber", [sr3, "foreground", "subscribe/bench"],
               peer_env(homes["subscribe"]), homes["subscribe"], home / "subscribe.log", sub_q,
               n.public_exchange, SR3_DOWNLOADED_LINE)  # fmt: skip
    post = [str(peer_bin("sr3_post")), "--config", str(post_cfg), *map(str, paths)]
    return Plan(sarra, sub, post, peer_env(homes["post"]), home / "post.log", dest)


# -- one run -----------------------------------------------------------------------------------


@dataclass
class PumpFigures:
    side: str
    files: int  # in the subscriber's directory with the right md5
    seconds: float  # start of posting until all N files were in the subscriber's directory
    startup_seconds: float  # spawn of sarra + subscriber until both queues were bound
    post_seconds: float  # wall time of the post command alone
    first_file_seconds: float  # start of posting until the first file arrived downstream
    steady_rate: float  # files/s from the subscriber's log (first to last download line)
    sarra_steady_rate: float  # files/s from the sarra's log (first to last download line)
    peak_rss_kib: dict[str, int] = field(default_factory=dict)  # per process tree
    #: CPU seconds used during the flow (start of posting to last file), per process tree
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    @property
    def peak_total_kib(self) -> int:
        """Sum of the per-tree peaks (an upper bound of the side's simultaneous peak)."""
        return sum(self.peak_rss_kib.values())

    @property
    def cpu_ms_per_file(self) -> float:
        """CPU of poster + sarra + subscriber over the flow, per file delivered."""
        return 1000 * sum(self.cpu_seconds.values()) / self.files if self.files else 0.0


def wait_bound(ctx: Ctx, procs: list[Proc], timeout: float) -> None:
    lister = mgmt_bindings(ctx.node.mgmt_get)
    deadline = time.monotonic() + timeout
    todo = list(procs)
    while todo:
        for p in list(todo):
            if not p.alive():
                raise PeerError(f"{p.name} exited during start-up\n{p.log_text()[-3000:]}")
            if any(x == p.exchange for x, _key in lister(p.queue)):
                todo.remove(p)
        if not todo:
            return
        if time.monotonic() > deadline:
            raise PeerError(f"{', '.join(p.name for p in todo)} not bound after {timeout:.0f}s")
        time.sleep(0.05)


def nginx_log_tail(ctx: Ctx) -> str:
    try:
        return (ctx.work / "nginx" / "error.log").read_text(errors="replace")[-1500:]
    except OSError as e:
        return f"(no error log: {e})"


def verify(src: Path, dest: Path, paths: list[Path]) -> int:
    import hashlib

    ok = 0
    for p in paths:
        with contextlib.suppress(OSError):
            a = hashlib.md5((dest / p.relative_to(src)).read_bytes()).digest()
            ok += a == hashlib.md5(p.read_bytes()).digest()
    return ok


def log_rate(text: str, marker: str) -> float:
    stamps = log_timestamps(text, marker)
    span = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
    return (len(stamps) - 1) / span if span > 0 else 0.0


def run_side(side: str, rep: int, ctx: Ctx, paths: list[Path]) -> PumpFigures:
    tag = f"{side}{rep}{secrets.token_hex(3)}"
    tree = ctx.www / f"pub_{tag}"
    names = Names(tag, f"xs_guest_{tag}", f"xpublic_{tag}", tree, f"{ctx.base_url}/pub_{tag}")
    for x in (names.source_exchange, names.public_exchange):
        ctx.amqp.exchange(x)  # as sr3 declares them, so that its binds never race a declare
    home = Path(tempfile.mkdtemp(prefix=f"{side}_", dir=ctx.work))
    plan = (ours_plan if side == "ours" else sr3_plan)(ctx, names, home, paths)
    daemons = [plan.sarra, plan.sub]
    want = len(paths)
    try:
        t_spawn = time.monotonic()
        for p in daemons:
            p.spawn()
        wait_bound(ctx, daemons, 120)
        startup = time.monotonic() - t_spawn
        time.sleep(0.5)  # let both settle into their consume loops (not counted either way)
        cpu0 = {p.name: tree_cpu_seconds(p.proc.pid) for p in daemons if p.proc}
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        with plan.post_log.open("wb") as out:
            t0 = time.monotonic()
            poster = subprocess.Popen(plan.post_argv, env=plan.post_env, cwd=home,
                                      stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        post_sampler = TreeSampler(poster.pid, interval=0.02).start()
        post_seconds = 0.0
        first = 0.0
        deadline = t0 + ctx.timeout
        while True:
            if post_seconds == 0.0 and poster.poll() is not None:
                post_seconds = time.monotonic() - t0
                if poster.returncode != 0:
                    tail = plan.post_log.read_text(errors="replace")[-3000:]
                    raise PeerError(f"{side} post exited {poster.returncode}\n{tail}")
            got = count_done(plan.dest) if plan.dest.exists() else 0
            now = time.monotonic()
            if got and not first:
                first = now - t0
            if got >= want:
                break
            for p in daemons:
                if not p.alive():
                    raise PeerError(f"{side} {p.name} exited early\n{p.log_text()[-3000:]}")
            if now > deadline:
                raise PeerError(f"{side}: {got} of {want} files after {ctx.timeout:.0f}s\n"
                                f"sarra: {plan.sarra.log_text()[-1500:]}\n"
                                f"subscriber: {plan.sub.log_text()[-1500:]}\n"
                                f"nginx: {nginx_log_tail(ctx)}")  # fmt: skip
            time.sleep(0.02)
        seconds = time.monotonic() - t0
        cpu = {p.name: tree_cpu_seconds(p.proc.pid) - cpu0[p.name] for p in daemons if p.proc}
        if poster.wait(60) != 0:
            raise PeerError(f"{side} post exited {poster.returncode}")
        # the poster is the only child reaped in between (the daemons are stopped later)
        children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu["post"] = (children1.ru_utime - children0.ru_utime) + (
            children1.ru_stime - children0.ru_stime
        )
        post_seconds = post_seconds or seconds
        post_peak = post_sampler.stop()
    finally:
        for p in daemons:
            p.stop()
    good = verify(ctx.src, plan.dest, paths)
    fig = PumpFigures(
        side, good, seconds, startup, post_seconds, first,
        log_rate(plan.sub.log_text(), plan.sub.downloaded_line),
        log_rate(plan.sarra.log_text(), plan.sarra.downloaded_line),
        {"post": post_peak, "sarra": plan.sarra.peak_kib, "subscriber": plan.sub.peak_kib},
        cpu,
    )  # fmt: skip
    for p in daemons:
        ctx.amqp.delete(p.queue)
        if p.profile is not None and p.profile.exists():
            ctx.profiles.append(p.profile)
    shutil.rmtree(plan.dest, ignore_errors=True)
    shutil.rmtree(tree, ignore_errors=True)
    return fig


# -- driver ------------------------------------------------------------------------------------


@dataclass
class Ctx:
    work: Path
    node: Any
    base_url: str
    www: Path
    src: Path
    amqp: Amqp
    threads: int | None
    timeout: float
    profile: str | None = None  # None, "busy" or "gil"
    profiles: list[Path] = field(default_factory=list)


@contextlib.contextmanager
def environment(args: argparse.Namespace) -> Iterator[Ctx]:
    work = Path(tempfile.mkdtemp(prefix="sarra-bench-pump-", dir=args.dir))
    node = None
    broker = None
    try:
        print(f"bench directory {work}; starting RabbitMQ and nginx on loopback ...", flush=True)
        node = start_broker()
        www = work / "www"
        with pump_nginx(work / "nginx", www) as web:
            broker = Amqp(node.port)
            yield Ctx(work, node, web.base_url, www, www / "src", broker, args.threads,
                      args.timeout, args.profile)  # fmt: skip
    finally:
        if broker is not None:
            broker.close()
        if node is not None:
            node.stop()
            shutil.rmtree(node.base_dir, ignore_errors=True)
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def warm_up() -> None:
    """Our package byte-compiled and each command run once (see bench_core.warm_up)."""
    core_warm_up(("sr_post", "sr_sarra", "sr_subscribe"))


def med(runs: list[PumpFigures], f: Callable[[PumpFigures], float]) -> float:
    return float(statistics.median(f(r) for r in runs))


def summarize(runs: dict[str, list[PumpFigures]]) -> list[dict[str, Any]]:
    rows = []
    for side, rs in runs.items():
        if not rs:
            continue
        rows.append({
            "side": side, "runs": len(rs), "files": min(r.files for r in rs),
            "seconds": med(rs, lambda r: r.seconds), "rate": med(rs, lambda r: r.rate),
            "steady_rate": med(rs, lambda r: r.steady_rate),
            "sarra_steady_rate": med(rs, lambda r: r.sarra_steady_rate),
            "startup_seconds": med(rs, lambda r: r.startup_seconds),
            "post_seconds": med(rs, lambda r: r.post_seconds),
            "first_file_seconds": med(rs, lambda r: r.first_file_seconds),
            "peak_rss_mib": {k: max(r.peak_rss_kib[k] for r in rs) / 1024
                             for k in ("post", "sarra", "subscriber")},
            "peak_total_mib": max(r.peak_total_kib for r in rs) / 1024,
            "cpu_ms_per_file": {k: float(statistics.median(
                1000 * r.cpu_seconds[k] / max(r.files, 1) for r in rs))
                for k in ("post", "sarra", "subscriber")},
            "cpu_ms_per_file_total": med(rs, lambda r: r.cpu_ms_per_file),
        })  # fmt: skip
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'side':<5} {'files':>5} {'wall s':>7} {'files/s':>8} {'steady':>7} "
            f"{'sarra/s':>7} {'start s':>7} {'post s':>7} {'1st s':>6} "
            f"{'MiB post/sarra/sub':>19} {'total':>6} "
            f"{'CPU ms/file p/s/s':>18} {'total':>6}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in rows:
        m = r["peak_rss_mib"]
        mem = f"{m['post']:.0f}/{m['sarra']:.0f}/{m['subscriber']:.0f}"
        c = r["cpu_ms_per_file"]
        cpu = f"{c['post']:.1f}/{c['sarra']:.1f}/{c['subscriber']:.1f}"
        print(f"{r['side']:<5} {r['files']:>5} {r['seconds']:>7.2f} {r['rate']:>8.1f} "
              f"{r['steady_rate']:>7.1f} {r['sarra_steady_rate']:>7.1f} "
              f"{r['startup_seconds']:>7.2f} {r['post_seconds']:>7.2f} "
              f"{r['first_file_seconds']:>6.2f} {mem:>19} {r['peak_total_mib']:>6.0f} "
              f"{cpu:>18} {r['cpu_ms_per_file_total']:>6.2f}")  # fmt: skip
    by = {r["side"]: r for r in rows}
    print()
    if "ours" in by and "sr3" in by:
        o, s = by["ours"], by["sr3"]
        rr = o["rate"] / s["rate"] if s["rate"] else 0.0
        sr = o["steady_rate"] / s["steady_rate"] if s["steady_rate"] else 0.0
        mr = o["peak_total_mib"] / s["peak_total_mib"] if s["peak_total_mib"] else 0.0
        cr = (
            o["cpu_ms_per_file_total"] / s["cpu_ms_per_file_total"]
            if s["cpu_ms_per_file_total"]
            else 0.0
        )
        print(
            f"ratio ours / sr3: files/s x{rr:.2f} (target >= 5: "
            f"{'met' if rr >= 5 else 'NOT met'}), steady x{sr:.2f}, peak RSS total x{mr:.2f}, "
            f"CPU per file x{cr:.2f}"
        )
    else:
        print("ratio ours / sr3: no ours/sr3 pair")


def print_hotspots(raw: Path) -> None:
    total, own, incl = hotspots(raw)
    what = "threads holding the GIL" if raw.suffix == ".gil" else "busy threads"
    print(f"\npy-spy {raw.stem} ({raw}): {total} samples of {what}")
    print("  self:")
    for frame, n in own:
        print(f"    {100 * n / max(total, 1):5.1f}%  {frame}")
    print("  inclusive (sarra/ frames):")
    for frame, n in incl:
        print(f"    {100 * n / max(total, 1):5.1f}%  {frame}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--size", type=int, default=2048, help="bytes per file")
    ap.add_argument("--dirs", type=int, default=4, help="subdirectories the files are spread over")
    ap.add_argument("--sides", default=",".join(SIDES), help="comma-separated: ours,sr3")
    ap.add_argument("--repeat", type=int, default=3, help="runs per side (medians reported)")
    ap.add_argument(
        "--threads", type=int, default=None,
        help="our transfer_threads for sarra and subscriber (default: ours, 4)",
    )  # fmt: skip
    ap.add_argument("--timeout", type=float, default=300.0, help="per run, seconds")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument(
        "--profile", nargs="?", const="busy", choices=("busy", "gil"),
        help="sample our sarra and subscriber with py-spy and print their hotspots: every busy "
        "thread (default; blocking calls such as fsync count) or only threads holding the GIL",
    )  # fmt: skip
    ap.add_argument(
        "--dir", default=None, help="work directory: files, pump trees, downloads ($TMPDIR)"
    )
    args = ap.parse_args()
    sides = [s for s in args.sides.split(",") if s]
    started = time.time()
    runs: dict[str, list[PumpFigures]] = {s: [] for s in sides}
    problems: list[str] = []
    with environment(args) as ctx:
        paths = make_tree(ctx.src, args.files, args.size, args.dirs)
        warm_up()
        print(f"{len(paths)} files of {args.size} B in {args.dirs} directories; "
              f"sides {', '.join(sides)}", flush=True)  # fmt: skip
        for rep in range(args.repeat):
            for side in sides:
                print(f"[{rep + 1}] pump {side} ...", end=" ", flush=True)
                try:
                    f = run_side(side, rep, ctx, paths)
                except (PeerError, subprocess.SubprocessError, OSError) as e:
                    problems.append(f"{side}: {str(e)[:3000]}")
                    print("FAILED")
                    continue
                runs[side].append(f)
                print(f"{f.seconds:.2f}s, {f.files} files verified "
                      f"(start-up {f.startup_seconds:.2f}s)")  # fmt: skip
                if f.files != len(paths):
                    problems.append(f"{side}: {f.files} of {len(paths)} verified")
        for raw in ctx.profiles:
            print_hotspots(raw)
    rows = summarize(runs)
    print()
    print(f"{args.files} files x {args.size} B, post -> sarra -> subscribe; host "
          f"{platform.node()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; "
          f"total {time.time() - started:.0f}s")  # fmt: skip
    print_table(rows)
    print("  files/s: from the start of posting until all files are downstream (start-up "
          "excluded); steady, sarra/s: from the logs")  # fmt: skip
    for p in problems:
        print(f"PROBLEM: {p}")
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"pump-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "host": platform.node(), "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
        "python": platform.python_version(), "peers": peer_versions(),
        "files": args.files, "size": args.size, "dirs": args.dirs, "repeat": args.repeat,
        "threads": args.threads, "summary": rows,
        "runs": {s: [asdict(r) | {"rate": r.rate} for r in rs] for s, rs in runs.items()},
        "problems": problems,
    }, indent=2))  # fmt: skip
    print(f"results: {out.relative_to(ROOT)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
