"""Multi-part files end to end: sr_post in blocks -> RabbitMQ -> sr_subscribe -> nginx."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from sarra.codec import v02
from sarra.codec.timestamps import now_timestamp
from sarra.notice import Checksum, PartSpec
from sarra.parts.arithmetic import split
from tests.integration.flowkit import (
    ReportTap,
    Site,
    post,
    publish_raw,
    running_subscriber,
    site_env,
    unique,
    wait_for,
)

BLOCK = 64 * 1024


def _content(size: int, seed: int = 1) -> bytes:
    out = bytearray()
    block = hashlib.sha512(str(seed).encode()).digest()
    while len(out) < size:
        block = hashlib.sha512(block).digest()
        out += block
    return bytes(out[:size])


def _on_file_plugin(tmp_path: Path) -> tuple[Path, Path]:
    """A plugin that appends a line per on_file call (across processes)."""
    log = tmp_path / "on_file.log"
    plugin = tmp_path / "count_on_file.py"
    plugin.write_text(
        "import os\n"
        "def on_file(work):\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(f'{os.getpid()} {work.local_path}\\n')\n"
    )
    return plugin, log


def _subscription(site: Site, tag: str, dest: Path, plugin: Path | None, extra: str = "") -> str:
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        f"expire 10m\nreport_back off\n{extra}"
        + (f"on_file {plugin}\n" if plugin else "")
        + "accept .*\n",
    )
    return name


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and ("~sr" in p.name or "sr-part" in p.name)]


#: blocks this long take the direct I/O path (sarra.localfs.streaming.DIRECT_MIN)
BIG_BLOCK = 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("size", "block"),
    [
        (10 * BLOCK + 12345, BLOCK),  # a short last block
        (8 * BLOCK, BLOCK),  # rem 0 (sr2's Q5 case)
        (6 * BIG_BLOCK + 4097, BIG_BLOCK),  # page-aligned buffers, O_DIRECT, unaligned tail
    ],
    ids=["short-last-block", "exact-multiple", "direct-io-blocks"],
)
def test_a_file_posted_in_shuffled_blocks_is_reassembled_by_two_instances_once(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path, size, block
):
    tag = unique("parts")
    data = _content(size)
    src = nginx.root / tag / "big.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    dest = tmp_path / "dest"
    plugin, on_file_log = _on_file_plugin(tmp_path)
    name = _subscription(site, tag, dest, plugin)
    with ExitStack() as stack:
        stack.enter_context(running_subscriber(site, name))
        stack.enter_context(running_subscriber(site, name))  # a second instance, same queue
        assert (
            post(
                site,
                nginx.base_url,
                nginx.root,
                [src],
                ("blocksize", str(block)),
                ("randomize", "on"),
            )
            == 0
        )
        wait_for(lambda: (dest / "big.bin").exists(), timeout=60, what="the reassembled file")
        wait_for(lambda: on_file_log.exists(), what="on_file")
    assert (dest / "big.bin").read_bytes() == data
    assert len(on_file_log.read_text().splitlines()) == 1
    assert _leftovers(dest) == []


def _part_notices(tag: str, base_url: str, data: bytes, bs: int, sums: str = "d") -> list:  # type: ignore[type-arg]
    ts = now_timestamp()
    out = []
    for spec in split(len(data), bs):
        block = data[spec.offset : spec.offset + spec.length]
        value = hashlib.md5(block).hexdigest() if sums == "d" else hashlib.sha512(block).hexdigest()
        n = v02.make_notice(
            exchange="xs_guest", topic_prefix="v02.post", pubtime=ts, base_url=base_url,
            path=f"/{tag}/big.bin", checksum=Checksum(sums, value), parts=spec,
            headers={"mtime": ts},
        )  # fmt: skip
        out.append(v02.to_wire(n))
    return out


@pytest.mark.parametrize("block", [BLOCK, BIG_BLOCK], ids=["page-cache", "direct-io"])
def test_a_corrupt_block_is_never_placed_and_the_file_does_not_appear(
    site, broken_http, tmp_path, block
):  # type: ignore[no-untyped-def]
    tag = unique("corrupt")
    data = _content(4 * block + 100)
    target = broken_http.root / tag / "big.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    dest = tmp_path / "dest"
    # the server flips a byte in every response under /corrupt/: every block fails its sum
    messages = _part_notices(tag, f"{broken_http.base_url}/corrupt", data, block)
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    name = _subscription(site, tag, dest, None, "report_back on\nattempts 2\n")
    try:
        with running_subscriber(site, name):
            publish_raw(site.broker_url(), messages)
            wait_for(lambda: len(tap.about("big.bin")) >= len(messages), what="the reports")
    finally:
        tap.stop()
    assert {r.code for r in tap.about("big.bin")} == {499}
    assert not (dest / "big.bin").exists()


def test_a_server_that_ignores_range_is_detected_and_nothing_is_placed(site, broken_http, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("norange")
    data = _content(3 * BLOCK + 7)
    target = broken_http.root / tag / "big.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    dest = tmp_path / "dest"
    messages = _part_notices(tag, f"{broken_http.base_url}/norange", data, BLOCK)
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    name = _subscription(site, tag, dest, None, "report_back on\nattempts 2\n")
    try:
        with running_subscriber(site, name):
            publish_raw(site.broker_url(), messages)
            wait_for(lambda: len(tap.about("big.bin")) >= len(messages), what="the reports")
    finally:
        tap.stop()
    codes = [r.code for r in tap.about("big.bin")]
    assert codes.count(499) == len(messages)
    assert not (dest / "big.bin").exists()


def test_sr3_blocks_with_rem_equal_to_the_block_size_reassemble(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("sr3rem")
    data = _content(5 * BLOCK + 999)
    src = nginx.root / tag / "big.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    ts = now_timestamp()
    messages = []
    for spec in split(len(data), BLOCK):
        # sr3's quirk (spec R3): rem is this block's own length
        quirky = PartSpec("i", BLOCK, spec.block_count, spec.length, spec.block_number)
        block = data[spec.offset : spec.offset + spec.length]
        n = v02.make_notice(
            exchange="xs_guest", topic_prefix="v02.post", pubtime=ts, base_url=nginx.base_url,
            path=f"{tag}/big.bin", checksum=Checksum("d", hashlib.md5(block).hexdigest()),
            parts=quirky, headers={"mtime": ts},
        )  # fmt: skip
        messages.append(v02.to_wire(n))
    dest = tmp_path / "dest"
    with running_subscriber(site, _subscription(site, tag, dest, None)):
        publish_raw(site.broker_url(), list(reversed(messages)))
        wait_for(lambda: (dest / "big.bin").exists(), what="the reassembled file")
    assert (dest / "big.bin").read_bytes() == data


def test_with_inplace_off_blocks_are_kept_as_verified_part_files(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("inoff")
    data = _content(2 * BLOCK + 10)
    src = nginx.root / tag / "big.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    dest = tmp_path / "dest"
    with running_subscriber(site, _subscription(site, tag, dest, None, "inplace off\n")):
        post(site, nginx.base_url, nginx.root, [src], ("blocksize", str(BLOCK)))
        wait_for(lambda: len(list(dest.glob("*.Part"))) == 3, what="three .Part files")
    rem = len(data) % BLOCK
    parts = sorted(p.name for p in dest.glob("*.Part"))
    assert parts == [f"big.bin.{BLOCK}.3.{rem}.{n}.d.Part" for n in range(3)]
    joined = b"".join((dest / p).read_bytes() for p in parts)
    assert joined == data
    assert not (dest / "big.bin").exists()


def _foreground(site: Site, name: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **site.env}
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "sr_subscribe"), "foreground", name],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_an_instance_killed_midway_leaves_the_file_to_be_completed_once(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path
):
    tag = unique("pkill")
    data = _content(40 * BLOCK + 321)
    src = nginx.root / tag / "big.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    dest = tmp_path / "dest"
    plugin, on_file_log = _on_file_plugin(tmp_path)
    name = _subscription(site, tag, dest, plugin, "prefetch 4\ntransfer_threads 2\n")
    with site_env(site):
        from sarra.components.subscribe import SubscribeComponent

        SubscribeComponent().declare(site.load("subscribe", name))
    log = tmp_path / "sub.log"
    first = _foreground(site, name, log)
    second = _foreground(site, name, log)
    procs = [first, second]
    try:
        post(site, nginx.base_url, nginx.root, [src], ("blocksize", str(BLOCK)),
             ("randomize", "on"))  # fmt: skip
        wait_for(lambda: "Inserted (block 5" in log.read_text(), timeout=60, what="progress")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        third = _foreground(site, name, log)
        procs.append(third)
        wait_for(lambda: (dest / "big.bin").exists(), timeout=90, what="the file")
        wait_for(lambda: on_file_log.exists(), what="on_file")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
    assert (dest / "big.bin").read_bytes() == data, log.read_text()[-3000:]
    assert len(on_file_log.read_text().splitlines()) == 1
    assert _leftovers(dest) == []
