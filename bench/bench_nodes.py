"""Pump benchmark "2 pump nodes vs 1": files/s through post -> sarra -> subscribe, with the
pump's work done by one node, then by two nodes sharing the queues and the data tree.

Run through ``bench/run nodes`` (from the repo root). One throwaway RabbitMQ node and one
nginx (running the shipped ``etc/nginx/sarra.conf``) serve both sides. A *node* is what one
host of a pump cluster runs: one ``sr_sarra`` and one ``sr_subscribe`` (foreground
processes), each with its own config and state directories. Both nodes' sarras consume one
queue and place into one shared tree (the nginx root's ``pub_<tag>/``), and announce it on one
exchange; both nodes' subscribers consume one queue into their own directory.

For each side (1 node, 2 nodes) and each repetition, on fresh exchanges and queues: the
processes start and the bench waits until each logs that it consumes (not counted); the clock
starts; ``sr_post`` announces the N files; the clock stops when N distinct files are in the
subscribers' directories with their source's md5. Printed: seconds and files/s per side, and
the ratio 2 nodes / 1 node.

On one machine the two nodes share its cores: the figure shows what sharing the queues and the
tree costs, not a speed-up (on a 2-core machine none is expected). A benchmark, not a test: it
asserts no timing, and exits non-zero only when a side could not do the work.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_core import make_tree, ours_bin, ours_env, start_broker  # noqa: E402
from tests.pump.pumpkit import pump_nginx  # noqa: E402


def _consuming(log: Path) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return "consuming from" in log.read_text(errors="replace")
    return False


def _arrived(dests: list[Path], want: dict[str, str]) -> int:
    """Distinct files (relative path) with their source's md5 in any of ``dests``."""
    seen = set()
    for dest in dests:
        for dirpath, _dirs, files in os.walk(dest):
            for name in files:
                p = Path(dirpath, name)
                rel = str(p.relative_to(dest))
                if rel in seen or want.get(rel) is None:
                    continue
                with contextlib.suppress(OSError):
                    if hashlib.md5(p.read_bytes()).hexdigest() == want[rel]:
                        seen.add(rel)
    return len(seen)


def run_side(
    nodes: int, port: int, base_url: str, www: Path, paths: list[Path], work: Path, timeout: float
) -> float | None:
    """Seconds from the start of posting until every file arrived (None: it never did)."""
    tag = secrets.token_hex(4)
    broker = f"amqp://guest@127.0.0.1:{port}/"
    tree = www / f"pub_{tag}"
    want = {str(p.relative_to(www)): hashlib.md5(p.read_bytes()).hexdigest() for p in paths}
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    dests = []
    env = ours_env()
    try:
        for n in range(nodes):
            home = work / f"{tag}_node{n}"
            conf = home / "config"
            for c in ("sarra", "subscribe", "post"):
                (conf / c).mkdir(parents=True, exist_ok=True)
            cred = conf / "credentials.conf"
            cred.write_text(f"amqp://guest:guest@127.0.0.1:{port}/\n")
            cred.chmod(0o600)
            dest = home / "dest"
            dests.append(dest)
            (conf / "sarra" / "node.conf").write_text(
                f"broker {broker}\ndeclare source guest\ncluster benchnodes\n"
                f"exchange xs_guest_{tag}\nsubtopic #\nqueue_name q_guest.nodes.sarra.{tag}\n"
                f"expire 1h\ndirectory {tree}\npost_broker {broker}\n"
                f"post_exchange xpublic_{tag}\npost_base_url {base_url}/pub_{tag}\n"
                f"post_base_dir {tree}\n"
            )
            (conf / "subscribe" / "node.conf").write_text(
                f"broker {broker}\nexchange xpublic_{tag}\nsubtopic #\n"
                f"queue_name q_guest.nodes.sub.{tag}\nexpire 1h\nreport_back off\n"
                f"mirror on\nbase_url_private on\ndirectory {dest}\naccept .*\n"
            )
            penv = {**env, "SR_CONFIG_DIR": str(conf), "SR_STATE_DIR": str(home / "state")}
            for c in ("sarra", "subscribe"):
                log = home / f"{c}.log"
                logs.append(log)
                with log.open("ab") as out:
                    procs.append(
                        subprocess.Popen(
                            [ours_bin(f"sr_{c}"), "foreground", "node"],
                            env=penv,
                            stdin=subprocess.DEVNULL,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
        deadline = time.monotonic() + 60
        while not all(_consuming(log) for log in logs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                print(f"  {nodes} node(s): did not start; see {work}", file=sys.stderr)
                return None
            time.sleep(0.2)
        post_env = {
            **env,
            "SR_CONFIG_DIR": str(work / f"{tag}_node0" / "config"),
            "SR_STATE_DIR": str(work / f"{tag}_node0" / "state"),
        }
        start = time.monotonic()
        with (work / f"{tag}_post.log").open("ab") as out:
            rc = subprocess.call(
                [
                    ours_bin("sr_post"),
                    "-post_broker",
                    broker,
                    "-post_exchange",
                    f"xs_guest_{tag}",
                    "-post_base_url",
                    base_url,
                    "-post_base_dir",
                    str(www),
                    "-to_clusters",
                    "benchnodes",
                    str(www / "bench"),
                ],
                env=post_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if rc != 0:
            print(f"  {nodes} node(s): sr_post exited with {rc}", file=sys.stderr)
            return None
        deadline = start + timeout
        while time.monotonic() < deadline:
            if _arrived(dests, want) >= len(want):
                return time.monotonic() - start
            if any(p.poll() is not None for p in procs):
                print(f"  {nodes} node(s): a process died; see {work}", file=sys.stderr)
                return None
            time.sleep(0.5)
        print(f"  {nodes} node(s): {_arrived(dests, want)} of {len(want)} files", file=sys.stderr)
        return None
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    node = start_broker()
    failed = False
    times: dict[int, list[float]] = {1: [], 2: []}
    try:
        with pump_nginx(work / "nginx", work / "www") as web:
            paths = make_tree(web.root, args.files, args.size, 20)
            for r in range(args.repeat):
                for nodes in (1, 2):
                    t = run_side(
                        nodes, node.port, web.base_url, web.root, paths, work, args.timeout
                    )
                    if t is None:
                        failed = True
                        continue
                    times[nodes].append(t)
                    print(
                        f"run {r + 1}: {nodes} node(s): {args.files / t:.0f} files/s ({t:.1f} s)",
                        flush=True,
                    )
    finally:
        node.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(node.base_dir, ignore_errors=True)
    print(
        f"\npost -> sarra -> subscribe, {args.files} files x {args.size} B, "
        f"{os.cpu_count()} cores, median of {args.repeat}"
    )
    rates = {}
    for nodes in (1, 2):
        if times[nodes]:
            rates[nodes] = args.files / statistics.median(times[nodes])
            label = "1 pump node " if nodes == 1 else "2 pump nodes"
            print(f"  {label}: {rates[nodes]:8.0f} files/s")
    if len(rates) == 2:
        print(f"2 pump nodes vs 1: {rates[2] / rates[1]:.2f}x")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
