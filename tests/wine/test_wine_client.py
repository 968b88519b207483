"""The client commands as a Windows user runs them: Windows CPython under Wine, against the
suite's throwaway RabbitMQ and nginx on loopback (see conftest.py)."""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sarra.broker.base import Delivery, QueueSpec
from sarra.broker.session import BrokerSession
from sarra.codec import v02
from sarra.codec.timestamps import now_timestamp
from sarra.notice import Notice, WireMessage
from tests.integration.flowkit import (
    ReportTap,
    Site,
    make_files,
    post,
    publish_raw,
    site_env,
    unique,
    wait_for,
)
from tests.wine.conftest import WinPython, winpath

pytestmark = [pytest.mark.wine, pytest.mark.servers]


@pytest.fixture
def site(tmp_path: Path, rabbitmq) -> Site:  # type: ignore[no-untyped-def]
    return Site(tmp_path / "site", rabbitmq.port).setup()


def win_env(site: Site) -> dict[str, str]:
    return {"SR_CONFIG_DIR": winpath(site.config_dir), "SR_STATE_DIR": winpath(site.state_dir)}


def _capture(site: Site, exchange: str, key: str) -> tuple[BrokerSession, str, list[Notice]]:
    session = BrokerSession(site.broker_url())
    session.connect()
    session.declare_exchange(exchange)
    queue = f"q_guest.wine.{secrets.token_hex(4)}"
    session.declare_queue(QueueSpec(queue, ((exchange, key),), durable=False, auto_delete=True))
    got: list[Notice] = []

    def on(d: Delivery) -> None:
        m = d.message
        n = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        assert isinstance(n, Notice)
        got.append(n)
        session.ack(d)

    session.consume(queue, 1000, on)
    return session, queue, got


def test_sr_post_announces_windows_paths_relative_to_the_base(
    winpy: WinPython, site: Site, tmp_path: Path
) -> None:
    tag = unique("wpost")
    data = tmp_path / "data"
    files = make_files(data / tag, ["obs/a.txt", "obs/deep/b.txt"])
    session, _, got = _capture(site, "xs_guest", f"v02.post.{tag}.#")
    try:
        # backslashes, a lower-case drive letter for the base: as a Windows user types them
        done = winpy.sr(
            "post", "-pb", site.broker, "-pbu", "http://files.example.com/",
            "-pbd", winpath(data).replace("Z:", "z:"), "-sum", "d",
            *(winpath(f) for f in files),
            env=win_env(site),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        deadline = time.monotonic() + 20
        while len(got) < 2 and time.monotonic() < deadline:
            session.poll(0.2)
    finally:
        session.close()
    assert sorted(n.path for n in got) == [f"{tag}/obs/a.txt", f"{tag}/obs/deep/b.txt"]
    for n in got:
        assert "\\" not in n.rel_path and ":" not in n.rel_path
        body = (data / n.path).read_bytes()
        assert n.headers["sum"] == "d," + hashlib.md5(body).hexdigest()

    outside = tmp_path / "elsewhere.txt"
    outside.write_text("x")
    refused = winpy.sr(
        "post", "-pb", site.broker, "-pbu", "http://files.example.com/",
        "-pbd", winpath(data), winpath(outside), env=win_env(site),
    )  # fmt: skip
    assert refused.returncode != 0
    assert "not under post_base_dir" in refused.stdout + refused.stderr


def _notice(tag: str, base_url: str, rel: str, data: bytes) -> WireMessage:
    return WireMessage(
        exchange="xs_guest",
        routing_key=f"v02.post.{tag}",
        body=f"{now_timestamp()} {base_url} {rel.replace(' ', '%20')}".encode(),
        headers={"parts": f"1,{len(data)},1,0,0", "sum": "d," + hashlib.md5(data).hexdigest()},
    )


HOSTILE = ["CON", "nul.txt", "a.txt:evil", "trail.", "space ", "com1.log", "q?.txt"]


def test_a_background_subscriber_downloads_a_tree_refuses_windows_names_and_stops(  # type: ignore[no-untyped-def]
    winpy: WinPython, site: Site, nginx, tmp_path: Path
) -> None:
    tag = unique("wsub")
    names = ["one.txt", "sub/two.txt", "sub/deeper/three.bin", "with space.txt"]
    files = make_files(nginx.root / tag, names, size=5000)
    dest = tmp_path / "dest"
    site.write_subscribe(
        "wsub",
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {winpath(dest)}\nmirror on\nstrip 1\n"
        "expire 10m\naccept .*\n",
    )
    env = win_env(site)
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    started = False
    try:
        done = winpy.sr("subscribe", "start", "wsub", env=env, timeout=180)
        started = True
        assert done.returncode == 0, done.stdout + done.stderr
        # probing liveness twice must leave the instance alive (os.kill(pid, 0) would not)
        for _ in range(2):
            status = winpy.sr("subscribe", "status", "wsub", env=env)
            assert "running" in status.stdout, status.stdout + status.stderr
        pids = list((site.state_dir).rglob("*.pid"))
        assert len(pids) == 1
        # the queue exists once the instance consumes: wait for it, then publish
        wait_for(lambda: _queue_exists(site, "wsub"), timeout=60, what="the instance's queue")
        good = [
            _notice(tag, nginx.base_url, f"/{tag}/{n}", p.read_bytes())
            for n, p in zip(names, files, strict=True)
        ]
        bad = [_notice(tag, nginx.base_url, f"/{tag}/bad/{n}", b"x") for n in HOSTILE]
        publish_raw(site.broker_url(), good + bad)
        wait_for(
            lambda: (
                len([r for r in tap.reports if r.notice.path.startswith(tag)])
                >= len(good) + len(bad)
            ),
            timeout=90,
            what="a report for every notice",
        )
        status = winpy.sr("subscribe", "status", "wsub", env=env)
        assert "running" in status.stdout, status.stdout
    finally:
        if started:
            stopped = winpy.sr("subscribe", "stop", "wsub", env=env, timeout=120)
        tap.stop()
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "stopped" in stopped.stdout and "killed" not in stopped.stdout, stopped.stdout
    status = winpy.sr("subscribe", "status", "wsub", env=env)
    assert "running" not in status.stdout, status.stdout
    assert not list(site.state_dir.rglob("*.pid"))

    codes = {
        r.notice.path.split("/", 1)[1]: r.code for r in tap.reports if r.notice.path.startswith(tag)
    }
    for n in names:
        assert codes[n] == 201, codes
        assert (dest / n).read_bytes() == (nginx.root / tag / n).read_bytes()
    for n in HOSTILE:
        assert codes.get(f"bad/{n}") == 417, (n, sorted(codes.items()))
    assert not (dest / "bad").exists() or not any((dest / "bad").iterdir())
    assert not [p for p in dest.rglob("*") if "~sr" in p.name]  # no in-flight leftovers
    log = "\n".join(p.read_text(errors="replace") for p in site.state_dir.rglob("*.log"))
    log += "\n".join(
        p.read_text(errors="replace") for p in tmp_path.rglob("sr_subscribe_wsub_*.log")
    )
    assert "device name" in log or "417" in log


def _queue_exists(site: Site, config: str) -> bool:
    from tests.integration.test_subscribe_flow import _queue_counts

    try:
        _queue_counts(site, config)
    except Exception:
        return False
    return True


def test_a_credentials_file_others_can_read_is_refused_with_the_fix(
    winpy: WinPython, site: Site, tmp_path: Path
) -> None:
    cred = site.config_dir / "credentials.conf"
    cred.chmod(0o644)  # Wine shows this mode as an ACL granting Everyone read access
    (tmp_path / "f.txt").write_text("x")
    done = winpy.sr(
        "post", "-pb", site.broker, "-pbu", "http://files.example.com/",
        "-pbd", winpath(tmp_path), winpath(tmp_path / "f.txt"), env=win_env(site),
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "readable by others" in out and "icacls" in out and "S-1-1-0" in out, out
    cred.chmod(0o600)
    ok = winpy.sr(
        "post", "-pb", site.broker, "-pbu", "http://files.example.com/",
        "-pbd", winpath(tmp_path), winpath(tmp_path / "f.txt"), env=win_env(site),
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr


def _content(size: int) -> bytes:
    out = bytearray()
    block = hashlib.sha512(b"wine").digest()
    while len(out) < size:
        block = hashlib.sha512(block).digest()
        out += block
    return bytes(out[:size])


def test_two_background_instances_reassemble_a_file_posted_in_blocks_once(  # type: ignore[no-untyped-def]
    winpy: WinPython, site: Site, nginx, tmp_path: Path
) -> None:
    blocks_by_two_instances(
        lambda *args, **kw: winpy.sr("subscribe", *args, **kw), site, nginx, tmp_path
    )


def blocks_by_two_instances(  # type: ignore[no-untyped-def]
    subscribe: Callable[..., subprocess.CompletedProcess[str]], site: Site, nginx, tmp_path: Path
) -> None:
    """A file posted in randomised blocks, reassembled by two background instances of
    ``subscribe`` (an ``sr_subscribe`` runner: verb, config, env=, timeout=) with one
    ``on_file`` and no leftovers."""
    tag = unique("wparts")
    block = 64 * 1024
    data = _content(12 * block + 777)
    src = nginx.root / tag / "big.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    dest = tmp_path / "dest"
    on_file_log = tmp_path / "on_file.log"
    plugin = tmp_path / "count_on_file.py"
    plugin.write_text(
        "import os\n"
        "def on_file(work):\n"
        f"    with open({winpath(on_file_log)!r}, 'a') as f:\n"
        "        f.write(f'{os.getpid()} {work.local_path}\\n')\n"
    )
    site.write_subscribe(
        "wparts",
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {winpath(dest)}\nmirror on\nstrip 1\n"
        f"expire 10m\nreport_back off\ninstances 2\non_file {winpath(plugin)}\naccept .*\n",
    )
    env = win_env(site)
    done = subscribe("start", "wparts", env=env, timeout=180)
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        assert len(list(site.state_dir.rglob("*.pid"))) == 2
        wait_for(lambda: _queue_exists(site, "wparts"), timeout=60, what="the queue")
        with site_env(site):
            assert post(
                site, nginx.base_url, nginx.root, [src],
                ("blocksize", str(block)), ("randomize", "on"),
            ) == 0  # fmt: skip
        wait_for(lambda: (dest / "big.bin").exists(), timeout=90, what="the reassembled file")
        wait_for(lambda: on_file_log.exists(), what="on_file")
        time.sleep(2)  # a second (wrong) on_file would show up by now
    finally:
        stopped = subscribe("stop", "wparts", env=env, timeout=120)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert (dest / "big.bin").read_bytes() == data
    assert len(on_file_log.read_text().splitlines()) == 1
    leftovers = [p for p in dest.rglob("*") if "~sr" in p.name or "sr-part" in p.name]
    assert leftovers == []


def test_a_background_sr_watch_announces_new_files_with_slashes(
    winpy: WinPython, site: Site, tmp_path: Path
) -> None:
    tag = unique("wwatch")
    root = tmp_path / "root"
    wdir = root / tag
    wdir.mkdir(parents=True)
    (wdir / "ready.txt").write_text("ready\n")
    (site.config_dir / "watch").mkdir()
    (site.config_dir / "watch" / "w.conf").write_text(
        f"post_broker {site.broker}\npost_exchange xs_guest\n"
        f"post_base_url http://files.example.com/\npost_base_dir {winpath(root)}\n"
        f"path {winpath(wdir)}\nsleep 1\n"
    )
    env = win_env(site)
    session, _, got = _capture(site, "xs_guest", f"v02.post.{tag}.#")

    def collect(n: int, timeout: float = 40) -> None:
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline:
            session.poll(0.2)

    try:
        started = winpy.sr("watch", "start", "w", env=env, timeout=180)
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            collect(1)  # what is there at start is announced
            assert [n.path for n in got] == [f"{tag}/ready.txt"]
            (wdir / "sub").mkdir()
            (wdir / "sub" / "new file.txt").write_text("new\n")
            collect(2)
        finally:
            stopped = winpy.sr("watch", "stop", "w", env=env, timeout=120)
    finally:
        session.close()
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout
    assert f"{tag}/sub/new file.txt" in [n.path for n in got], [n.path for n in got]
    assert all("\\" not in n.rel_path for n in got)


RETRY_SCRIPT = r"""
import sys
from sarra.flow.retryqueue import RetryItem, RetryQueue
path = sys.argv[1]
q = RetryQueue(path, ttl=1e12)
items = [
    RetryItem("xs", "v02.post.a", f"body {i}", {"sum": "d,0"}, next_at=float(i))
    for i in range(300)
]
for it in items:
    q.put(it)
for it in items[:250]:  # enough removals to compact the file while it is open
    q.done(it)
q.put(RetryItem("xs", "v02.post.a", "after compaction", {}, next_at=1000.0))
q.close()
again = RetryQueue(path, ttl=1e12)
print(sorted(i.body for i in again.due(now=10_000.0))[:2], len(again.due(now=10_000.0)))
again.close()
"""


def test_the_disk_retry_queue_compacts_and_reloads_on_windows(
    winpy: WinPython, tmp_path: Path
) -> None:
    done = winpy.run(["-c", RETRY_SCRIPT, winpath(tmp_path / "retry.jsonl")])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "['after compaction', 'body 250'] 51", done.stdout
    # compacted: 51 live records, not 300 puts + 250 removals + 1
    assert len((tmp_path / "retry.jsonl").read_bytes().splitlines()) == 51


PRIMITIVES_SCRIPT = r"""
import os, subprocess, sys, time
from pathlib import Path
from sarra import osport
from sarra.cli.instances import Instance, instance_pid, terminate, write_pid_file
d = Path(sys.argv[1])
print("fsync_dir", osport.fsync_dir(d))
(d / "a").write_text("new")
(d / "b").write_text("old")
osport.replace(d / "a", d / "b")
print("replace", (d / "b").read_text(), (d / "a").exists())
me = osport.process_started(os.getpid())
other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
try:
    time.sleep(0.3)
    theirs = osport.process_started(other.pid)
    print("distinct", None not in (me, theirs) and me != theirs)
    inst = Instance("subscribe", "reuse", 1, d / "state", d / "log")
    write_pid_file(inst.pid_path, other.pid, theirs)
    print("own", instance_pid(inst)[0])
    write_pid_file(inst.pid_path, other.pid, theirs + 1)  # the pid, another process's time
    print("reused", instance_pid(inst)[0])
    print("stop", terminate([inst], timeout=1.0)[1])
    print("alive", other.poll() is None and osport.pid_alive(other.pid))
    print("terminate, wrong time", osport.terminate_started(other.pid, theirs + 1))
    print("terminate, its time", osport.terminate_started(other.pid, theirs))
    other.wait(10)
finally:
    other.kill()
    other.wait()
print("gone", osport.pid_alive(other.pid))
"""


def test_durable_renames_directory_flush_and_a_reused_pid_under_windows_apis(
    winpy: WinPython, tmp_path: Path
) -> None:
    """MoveFileExW write-through, FlushFileBuffers on a directory, and GetProcessTimes telling
    a live process that did not write a pid file from the one that did: that process is
    read as stale and ``stop`` leaves it running."""
    done = winpy.run(["-c", PRIMITIVES_SCRIPT, winpath(tmp_path)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "fsync_dir True",
        "replace new False",
        "distinct True",
        "own running",
        "reused stale pid",
        "stop stale pid removed",
        "alive True",
        "terminate, wrong time False",
        "terminate, its time True",
        "gone False",
    ], done.stdout


STDIO_SCRIPT = r"""
import logging, sys
from pathlib import Path
from sarra.cli.logs import setup_file_logging, stdio_into_log
path = Path(sys.argv[1]) / "log" / "sr_log_live_001.log"
stdio_into_log(path)
handler = setup_file_logging(path, context="log/live/001")
print("printed before", flush=True)
logging.getLogger("t").warning("logged before")
handler.doRollover()  # Windows refuses to rename a file still open as stdout
print("printed after", flush=True)
logging.getLogger("t").warning("logged after")
sys.stderr.write("stderr after\n")
sys.stderr.flush()
"""


def test_an_instance_log_holds_its_prints_across_a_rollover_on_windows(
    winpy: WinPython, tmp_path: Path
) -> None:
    """A detached Windows instance has no output of its own: stdout and stderr are pointed
    at its log (where sr_log's report lines and start-up errors go), and let go of the file
    for the midnight rollover, which Windows would otherwise refuse."""
    done = winpy.run(["-c", STDIO_SCRIPT, winpath(tmp_path)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""  # all of it went to the log
    logs = sorted((tmp_path / "log").iterdir())
    assert len(logs) == 2 and logs[0].name == "sr_log_live_001.log", logs
    current, rotated = (p.read_text(errors="replace") for p in logs)
    assert "printed after" in current and "logged after" in current
    assert "stderr after" in current and "before" not in current
    assert "printed before" in rotated and "logged before" in rotated and "after" not in rotated
