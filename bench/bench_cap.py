"""Bandwidth cap benchmark: one large file downloaded by our sr_subscribe at a byte rate cap.

Run through ``bench/run cap [ARGS]`` (or ``.venv/bin/python bench/bench_cap.py``), from the
repo root. One throwaway RabbitMQ node and one nginx (tests/servers) serve the run: the file
(default 256 MiB) is announced by our sr_post (whole, or in ``--part`` blocks fetched by the
instance's transfer threads together) and fetched by one sr_subscribe instance (in-process)
configured with ``byteRateMax CAP`` (sr3 units: ``32m`` is 32,000,000 bytes/s) or with
``kbytes_ps N`` (N x 1024 bytes/s). Timed from the post until the file carries its final
name, from the moment sr_post has published (its own checksum of the file is not counted);
md5-checked against the source.

It prints the measured rate against the cap and their difference; with ``--reference`` the
same file is fetched once more without a cap first, to show what the machine does uncapped.
Exits non-zero when the file is wrong or the measured rate is more than ``--tolerance`` (per
cent, default 10) away from the cap.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sarra.config.options import parse_rate  # noqa: E402
from tests.integration.flowkit import Site, post, running_subscriber, unique  # noqa: E402
from tests.servers.nginx import start_nginx  # noqa: E402
from tests.servers.rabbitmq import start_rabbitmq  # noqa: E402

MIB = 1 << 20


def make_big(path: Path, size: int) -> str:
    """``size`` pseudo-random bytes at ``path``; returns their md5."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5()
    rng = random.Random(size)
    with path.open("wb") as f:
        left = size
        while left:
            chunk = rng.randbytes(min(left, 16 * MIB))
            f.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def md5_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def fetch(
    site: Site, web_url: str, www: Path, src: Path, limits: str, args: argparse.Namespace
) -> tuple[float, str]:
    """Seconds from the notice's publication until the file is in place, and its md5."""
    tag = src.parent.name
    dest = site.root / f"dest_{unique()}"
    name = f"cap_{unique()}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror off\nexpire 10m\n"
        f"transfer_threads {args.threads}\n{limits}accept .*\n",
    )
    extra = [("blocksize", f"{args.part}M" if args.part else "1")]
    target = dest / src.name
    with running_subscriber(site, name):
        # timed from the notice's publication: sr_post's own checksum of the file (about
        # 0.5 s for 256 MiB) is not part of the transfer
        assert post(site, web_url, www, [src], *extra) == 0
        started = time.monotonic()
        deadline = started + args.timeout
        while not target.exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out after {args.timeout:.0f} s")
            time.sleep(0.01)
        elapsed = time.monotonic() - started
    digest = md5_of(target)
    shutil.rmtree(dest, ignore_errors=True)
    return elapsed, digest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, help="file size in MiB (default 256)")
    ap.add_argument("--cap", default="32m", help="byteRateMax value, sr3 units (default 32m)")
    ap.add_argument("--kbytes-ps", type=int, default=0, help="use kbytes_ps N instead of --cap")
    ap.add_argument("--part", type=int, default=0, help="post in blocks of N MiB (0: whole)")
    ap.add_argument("--threads", type=int, default=4, help="transfer_threads (default 4)")
    ap.add_argument("--tolerance", type=float, default=10.0, help="per cent (default 10)")
    ap.add_argument("--reference", action="store_true", help="also fetch once uncapped first")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per fetch")
    ap.add_argument("--dir", default=None, help="where the work directory goes")
    args = ap.parse_args()
    if args.kbytes_ps:
        cap, limits = args.kbytes_ps * 1024, f"kbytes_ps {args.kbytes_ps}\n"
    else:
        cap, limits = parse_rate(args.cap), f"byteRateMax {args.cap}\n"
    size = args.size * MIB
    work = Path(tempfile.mkdtemp(prefix="bench-cap-", dir=args.dir))
    node = stop_web = None
    try:
        node = start_rabbitmq()
        www = work / "www"
        web, stop_web = start_nginx(work / "nginx", www)
        src = www / unique("cap") / "big.bin"
        want = make_big(src, size)
        site = Site(work / "site", node.port).setup()
        how = f"{args.part} MiB blocks" if args.part else "whole file"
        print(f"file: {args.size} MiB ({size:,} bytes), {how}, transfer_threads {args.threads}")
        ok = True
        if args.reference:
            seconds, digest = fetch(site, web.base_url, www, src, "", args)
            ok &= digest == want
            print(
                f"uncapped : {seconds:7.2f} s  {size / seconds / 1e6:9.2f} MB/s"
                f"  md5 {'ok' if digest == want else 'WRONG'}"
            )
        seconds, digest = fetch(site, web.base_url, www, src, limits, args)
        ok &= digest == want
        rate = size / seconds
        off = (rate / cap - 1) * 100
        print(f"cap      : {limits.strip()} = {cap:,} bytes/s ({cap / 1e6:.2f} MB/s)")
        print(
            f"capped   : {seconds:7.2f} s  {rate / 1e6:9.2f} MB/s  ({rate:,.0f} bytes/s)"
            f"  md5 {'ok' if digest == want else 'WRONG'}"
        )
        within = abs(off) <= args.tolerance
        verdict = "within" if within else "OUTSIDE"
        print(f"measured vs cap: {off:+.2f} % ({verdict} {args.tolerance:g} %)")
        return 0 if ok and within else 1
    finally:
        if stop_web is not None:
            stop_web()
        if node is not None:
            node.stop()
            shutil.rmtree(node.base_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
