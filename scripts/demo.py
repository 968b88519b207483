"""A local pump demonstration: throwaway broker and web server, sr_post, sr_subscribe, summary.

Run through ``scripts/demo`` (which installs what is missing first). Everything runs on
loopback ports in a temporary directory that is removed at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sarra.broker.base import QueueSpec  # noqa: E402
from sarra.broker.session import BrokerSession  # noqa: E402
from sarra.codec import v02  # noqa: E402
from sarra.notice import Report  # noqa: E402
from tests.servers.nginx import start_nginx  # noqa: E402
from tests.servers.rabbitmq import start_rabbitmq  # noqa: E402

NAMES = ["report", "obs data", "résumé", "a#b", "plain"]


LARGE = "large/big archive.bin"
BLOCK = 4 << 20


def make_large(root: Path, size: int) -> None:
    """One large file, posted in 4 MiB blocks and reassembled by the subscriber."""
    path = root / LARGE
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = hashlib.sha512(b"large").digest() * (1 << 14)  # 1 MiB
    with path.open("wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(chunk[: size % len(chunk)] + b"end")


def make_tree(root: Path, count: int) -> tuple[int, int]:
    """A sample tree: nested directories, awkward names, sizes from bytes to a few MiB."""
    total = 0
    for i in range(count):
        sub = root / f"region{i % 4}" / f"hour{i % 3:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        size = [100, 4096, 65536, 262144, 1 << 20][i % 5] + i
        name = f"{NAMES[i % len(NAMES)]}_{i:04d}.dat"
        data = hashlib.sha256(str(i).encode()).digest() * (size // 32 + 1)
        (sub / name).write_bytes(data[:size])
        total += size
    return count, total


def md5s(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.md5(p.read_bytes()).hexdigest()
    return out


def _in_flight(name: str) -> bool:
    return "~sr" in name or name.endswith(".sr-part")


def bar(done: int, total: int, width: int = 40) -> str:
    filled = width * done // max(total, 1)
    return "[" + "#" * filled + "." * (width - filled) + f"] {done}/{total}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=200, help="files in the sample tree")
    ap.add_argument("--large-mb", type=int, default=48, help="size of the file sent in parts")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sarra-demo-"))
    www = work / "www"
    dest = work / "downloaded"
    www.mkdir()
    print(f"demo directory: {work}")
    print("starting a throwaway RabbitMQ node and nginx on loopback ...", flush=True)
    node = start_rabbitmq()
    server, stop_web = start_nginx(work / "nginx", www)
    web = server.base_url
    sub: subprocess.Popen[bytes] | None = None
    try:
        tree = www / "data"
        nfiles, nbytes = make_tree(tree, args.files)
        make_large(tree, args.large_mb << 20)
        large_size = (tree / LARGE).stat().st_size
        nblocks = -(-large_size // BLOCK)
        nfiles += 1
        nbytes += large_size
        print(
            f"sample tree: {nfiles} files, {nbytes / 1e6:.1f} MB under {tree} "
            f"(one of {large_size / 1e6:.0f} MB, posted in {nblocks} blocks of 4 MiB)"
        )

        conf = work / "config"
        (conf / "subscribe").mkdir(parents=True)
        cred = conf / "credentials.conf"
        cred.write_text(f"amqp://guest:guest@127.0.0.1:{node.port}/\n")
        cred.chmod(0o600)
        broker = f"amqp://guest@127.0.0.1:{node.port}/"
        (conf / "subscribe" / "demo.conf").write_text(
            f"broker {broker}\n"
            "exchange xs_guest\n"
            "subtopic #\n"
            f"directory {dest}\n"
            "mirror on\n"
            "strip 1\n"
            "accept .*\n"
            "expire 1h\n"
            # the demo's web server listens on loopback, which subscribers refuse by default
            "base_url_private on\n"
        )
        env = dict(os.environ)
        env.update(SR_CONFIG_DIR=str(conf), SR_STATE_DIR=str(work / "state"))
        bindir = Path(sys.executable).parent

        # a report listener: counts reports about our files as the subscriber sends them
        reports: dict[int, int] = {}
        large_blocks = [0]
        stop_listen = threading.Event()
        listener_ready = threading.Event()

        def listen() -> None:
            s = BrokerSession(node.broker_url(), name="demo-reports")
            s.connect()
            s.declare_exchange("xs_guest")
            q = QueueSpec(
                "q_guest.demo.reports",
                (("xs_guest", "v02.report.#"),),
                durable=False,
                auto_delete=True,
            )
            s.declare_queue(q)

            def on(d):  # type: ignore[no-untyped-def]
                m = d.message
                r = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
                if isinstance(r, Report):
                    reports[r.code] = reports.get(r.code, 0) + 1
                    if r.notice.path.endswith(LARGE):
                        large_blocks[0] += 1
                s.ack(d)

            s.consume(q.name, 200, on)
            listener_ready.set()
            while not stop_listen.is_set():
                s.poll(0.2)
            s.close()

        t = threading.Thread(target=listen, daemon=True)
        t.start()
        listener_ready.wait(30)

        subprocess.run([bindir / "sr_subscribe", "declare", "demo"], env=env, check=True)
        print("sr_subscribe foreground demo  (downloading into", dest, ")", flush=True)
        log = (work / "subscribe.log").open("wb")
        sub = subprocess.Popen(
            [bindir / "sr_subscribe", "foreground", "demo"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started = time.monotonic()
        cmd = [
            str(bindir / "sr_post"),
            "-pb",
            broker,
            "-pbu",
            web,
            "-pbd",
            str(www),
            "-blocksize",
            "4M",
            "-path",
            str(tree),
        ]
        print("$", " ".join(cmd), flush=True)
        post = subprocess.run(cmd, env=env)
        if post.returncode != 0:
            print("sr_post failed", file=sys.stderr)
            return 1
        deadline = time.monotonic() + 300
        done = 0
        while time.monotonic() < deadline:
            done = (
                sum(1 for p in dest.rglob("*") if p.is_file() and not _in_flight(p.name))
                if dest.exists()
                else 0
            )
            print(
                "\r" + bar(done, nfiles) + f"  reports: {sum(reports.values())}"
                f"  {Path(LARGE).name}: {large_blocks[0]}/{nblocks} blocks",
                end="",
                flush=True,
            )
            expected_reports = nfiles - 1 + nblocks  # one per block of the large file
            if done >= nfiles and sum(reports.values()) >= expected_reports:
                break
            if sub.poll() is not None:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        print()
        sub.send_signal(signal.SIGTERM)
        sub.wait(30)
        stop_listen.set()
        t.join(5)

        src = md5s(tree)
        got = md5s(dest)
        verified = sum(1 for k, v in src.items() if got.get(k) == v)
        got_bytes = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
        leftovers = [p for p in dest.rglob("*") if p.is_file() and _in_flight(p.name)]
        print("\nsummary")
        print(f"  files downloaded   {len(got)} of {nfiles}")
        print(f"  bytes              {got_bytes} ({got_bytes / 1e6:.1f} MB)")
        print(
            f"  elapsed            {elapsed:.2f} s  ({len(got) / elapsed:.0f} files/s, "
            f"{got_bytes / elapsed / 1e6:.1f} MB/s, post and download together)"
        )
        print(
            f"  reports received   {sum(reports.values())}  by code: "
            + ", ".join(f"{k}: {v}" for k, v in sorted(reports.items()))
        )
        print(f"  checksums verified {verified} of {nfiles} (md5 of source and copy)")
        print(
            f"  large file         {Path(LARGE).name}: {nblocks} blocks reassembled, "
            + ("identical" if got.get(LARGE) == src.get(LARGE) else "NOT identical")
        )
        print(f"  left in flight     {len(leftovers)}")
        ok = verified == nfiles and len(got) == nfiles and not leftovers
        print("  result             " + ("OK" if ok else "INCOMPLETE (see subscribe.log)"))
        if not ok:
            print((work / "subscribe.log").read_text()[-3000:])
        return 0 if ok else 1
    finally:
        if sub is not None and sub.poll() is None:
            sub.kill()
        stop_web()
        node.stop()
        shutil.rmtree(node.base_dir, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
