"""sr_sender against a real broker and a real sshd: delivery, announcements and faults."""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sarra.broker.base import Delivery, QueueSpec
from sarra.broker.session import BrokerSession
from sarra.codec import v02
from sarra.components.sender import SenderComponent
from sarra.notice import Notice
from sarra.transfer.url import retrieval_url
from tests.integration.flowkit import (
    ReportTap,
    Site,
    make_files,
    md5_tree,
    post,
    site_env,
    unique,
    wait_for,
)
from tests.servers.sshd import Sshd


@pytest.fixture
def tap(site: Site) -> Iterator[ReportTap]:
    t = ReportTap(site.broker_url(), "xs_guest").start()
    yield t
    t.stop()


@contextmanager
def running_sender(site: Site, name: str) -> Iterator[None]:
    """Run instance 0 of a sender config in a thread; stopped gracefully on exit."""
    stop = threading.Event()
    errors: list[BaseException] = []
    with site_env(site):
        cfg = site.load("sender", name)
        component = SenderComponent()
        component.declare(cfg)

        def target() -> None:
            try:
                component.run(cfg, 0, stop)
            except BaseException as e:  # surfaced below
                errors.append(e)

        thread = threading.Thread(target=target, name=f"sender-{name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(60)
    assert not thread.is_alive(), "sender did not stop within 60 s"
    if errors:
        raise errors[0]


class Setup:
    """Local tree, remote directory, sender config and the exchange it reads."""

    def __init__(self, site: Site, sshd: Sshd, tmp_path: Path, key: Path | None = None) -> None:
        self.site = site
        self.tag = unique("s")
        self.exchange = f"x_send_{self.tag}"
        self.local = tmp_path / "local"
        self.remote = sshd.root_dir / self.tag
        self.remote.mkdir()
        self.name = f"snd_{self.tag}"
        self.destination = f"sftp://{sshd.user}@127.0.0.1:{sshd.port}/"
        with open(site.config_dir / "credentials.conf", "a") as f:
            f.write(f"{self.destination} ssh_keyfile={key or sshd.key_path}\n")

    def write(self, extra: str = "") -> None:
        d = self.site.config_dir / "sender"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{self.name}.conf").write_text(
            f"broker {self.site.broker}\nexchange {self.exchange}\n"
            f"destination {self.destination}\n"
            f"base_dir {self.local}\ndirectory {self.remote}\nexpire 10m\n"
            f"{extra}accept .*\n"
        )

    def post(self, files: list[Path], *extra: tuple[str, str]) -> None:
        options = (("post_exchange", self.exchange), *extra)
        assert post(self.site, "http://localhost", self.local, files, *options) == 0

    def leftovers(self) -> list[str]:
        return [str(p) for p in self.remote.rglob("*") if p.is_file() and p.name.endswith(".tmp")]


def _codes(tap: ReportTap, tag: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in tap.reports:
        if tag in r.notice.path:
            out[r.code] = out.get(r.code, 0) + 1
    return out


def test_files_are_delivered_under_their_final_names_and_announced(
    site: Site, sshd: Sshd, tmp_path: Path, tap: ReportTap
) -> None:
    s = Setup(site, sshd, tmp_path)
    announced_on = f"x_sent_{s.tag}"
    s.write(f"post_broker {site.broker}\npost_exchange {announced_on}\n")
    watcher = BrokerSession(site.broker_url(), name="announcements")
    watcher.connect()
    watcher.declare_exchange(announced_on)
    queue = QueueSpec(f"q_guest.ann.{s.tag}", ((announced_on, "#"),), durable=False)
    watcher.declare_queue(queue)
    names = [f"{s.tag}/a.txt", f"{s.tag}/sub/b.bin", f"{s.tag}/sub/deeper/c-name.txt"]
    files = make_files(s.local, names, size=70_000)
    with running_sender(site, s.name):
        s.post(files)
        wait_for(lambda: _codes(tap, s.tag).get(201) == 3, 60, "three 201 reports")
    assert md5_tree(s.remote) == md5_tree(s.local)
    assert s.leftovers() == []
    assert {r.message for r in tap.reports if s.tag in r.notice.path} == {"Delivered"}
    got: list[Delivery] = []
    watcher.consume(queue.name, 100, got.append)
    wait_for(lambda: watcher.poll(0.1) >= 0 and len(got) == 3, 30, "three announcements")
    notices = [
        v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        for m in (d.message for d in got)
    ]
    assert all(isinstance(n, Notice) for n in notices)
    urls = sorted(n.url for n in notices if isinstance(n, Notice))
    base = f"sftp://root@127.0.0.1:{sshd.port}/{str(s.remote).lstrip('/')}"
    assert urls == sorted(f"{base}/{n}" for n in names)
    watcher.delete_queue(queue.name)
    watcher.close()


def test_a_server_that_refuses_the_key_gets_a_failure_report_and_no_remote_file(
    site: Site, sshd: Sshd, tmp_path: Path, tap: ReportTap
) -> None:
    wrong = tmp_path / "wrong_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)],
        check=True,
        capture_output=True,
    )
    s = Setup(site, sshd, tmp_path, key=wrong)
    s.write("attempts 2\n")
    files = make_files(s.local, [f"{s.tag}/refused.txt"])
    with running_sender(site, s.name):
        s.post(files)
        wait_for(lambda: _codes(tap, s.tag).get(499) == 1, 60, "a 499 report")
    assert list(s.remote.rglob("*")) == []
    (report,) = [r for r in tap.reports if s.tag in r.notice.path]
    assert "authentication failed" in report.message


def test_a_dropped_session_mid_file_is_retried_and_never_shows_a_partial_final_file(
    site: Site, sshd: Sshd, tmp_path: Path, tap: ReportTap
) -> None:
    s = Setup(site, sshd, tmp_path)
    s.write()
    big = s.local / s.tag / "big.bin"
    big.parent.mkdir(parents=True)
    with open(big, "wb") as f:
        for i in range(96):
            f.write(hashlib.sha256(str(i).encode()).digest() * (1 << 15))  # 1 MiB each
    size = big.stat().st_size
    final = s.remote / s.tag / "big.bin"
    inflight = s.remote / s.tag / "big.bin.tmp"
    seen: dict[str, int] = {"dropped_at": -1, "bad_final": 0}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if final.exists() and final.stat().st_size != size:
                seen["bad_final"] += 1
            if seen["dropped_at"] < 0 and inflight.exists():
                now = inflight.stat().st_size
                if now > (4 << 20):
                    seen["dropped_at"] = now
                    sshd.drop_sessions()
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with running_sender(site, s.name):
        s.post([big])
        wait_for(lambda: _codes(tap, s.tag).get(201) == 1, 60, "a 201 report")
    done.set()
    watcher.join(5)
    assert 0 < seen["dropped_at"] < size, "the session was not dropped mid-file"
    assert seen["bad_final"] == 0
    assert hashlib.md5(final.read_bytes()).hexdigest() == hashlib.md5(big.read_bytes()).hexdigest()
    assert s.leftovers() == []


def test_a_full_remote_disk_is_retried_from_the_queue_and_completes_once_space_is_freed(
    site: Site, sshd: Sshd, tmp_path: Path, tap: ReportTap
) -> None:
    s = Setup(site, sshd, tmp_path)
    s.write("attempts 2\n")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(s.remote)], check=True)
    try:
        filler = s.remote / "filler"
        filler.write_bytes(os.urandom(900_000))
        files = make_files(s.local, [f"{s.tag}/wanted.bin"], size=400_000)
        final = s.remote / s.tag / "wanted.bin"
        with running_sender(site, s.name):
            s.post(files)
            wait_for(lambda: _codes(tap, s.tag).get(499) == 1, 60, "a 499 report")
            (failed,) = [r for r in tap.reports if s.tag in r.notice.path]
            assert "queued for retry" in failed.message
            assert not final.exists()
            assert s.leftovers() == []  # the partial in-flight file was removed
            filler.unlink()
            wait_for(lambda: _codes(tap, s.tag).get(201) == 1, 60, "a 201 after the retry")
        assert final.read_bytes() == files[0].read_bytes()
        assert s.leftovers() == []
    finally:
        subprocess.run(["umount", str(s.remote)], check=True)


def test_a_file_announced_in_blocks_is_delivered_whole_once_and_each_block_reported(
    site: Site, sshd: Sshd, tmp_path: Path, tap: ReportTap
) -> None:
    s = Setup(site, sshd, tmp_path)
    s.write("")
    (big,) = make_files(s.local, [f"{s.tag}/big.bin"], size=300_000)
    with running_sender(site, s.name):
        s.post([big], ("blocksize", "65536"), ("randomize", "on"))
        wait_for(lambda: _codes(tap, s.tag).get(201) == 5, 60, "a 201 report per block")
    assert md5_tree(s.remote) == md5_tree(s.local)
    assert s.leftovers() == []
    messages = {r.message for r in tap.reports if s.tag in r.notice.path}
    assert messages == {f"Delivered (block {n} of 5)" for n in range(1, 6)}


def test_byte_rate_max_caps_what_a_sender_pushes_over_sftp(
    site: Site, sshd: Sshd, tmp_path: Path, tap: ReportTap
) -> None:
    s = Setup(site, sshd, tmp_path)
    cap = 2_000_000  # sr3 units: 2m is 2,000,000 bytes/s
    s.write("byteRateMax 2m\n")
    files = make_files(s.local, [f"{s.tag}/big.bin"], size=6 << 20)
    size = files[0].stat().st_size
    with running_sender(site, s.name):
        started = time.monotonic()
        s.post(files)
        wait_for(lambda: _codes(tap, s.tag).get(201) == 1, 60, "a 201 report")
        elapsed = time.monotonic() - started
    assert md5_tree(s.remote) == md5_tree(s.local)
    measured = size / elapsed
    assert abs(measured - cap) <= 0.15 * cap, f"measured {measured:,.0f} bytes/s, cap {cap:,}"


def test_a_send_held_past_bandwidth_wait_max_fails_499_and_leaves_nothing_remote(
    site: Site, sshd: Sshd, tmp_path: Path, tap: ReportTap
) -> None:
    # 6 MiB at 1 MB/s needs 6 s; the cap may hold the put 1 s in all: it stops, the remote
    # temporary is deleted, on_failure bandwidth drop reports 499 and acks
    s = Setup(site, sshd, tmp_path)
    s.write("byte_rate_max 1m\nbandwidth_wait_max 1s\non_failure bandwidth drop\n")
    files = make_files(s.local, [f"{s.tag}/big.bin"], size=6 << 20)
    with running_sender(site, s.name):
        s.post(files)
        wait_for(lambda: _codes(tap, s.tag) != {}, 60, "a report")
        time.sleep(2.0)  # a retry (none expected) would report again
    assert _codes(tap, s.tag) == {499: 1}
    (report,) = [r for r in tap.reports if s.tag in r.notice.path]
    assert "bandwidth_wait_max" in report.message
    assert [p for p in s.remote.rglob("*") if p.is_file()] == []


def _announced_urls(site: Site, queue: str, count: int) -> list[str]:
    watcher = BrokerSession(site.broker_url(), name="announcements")
    watcher.connect()
    got: list[Delivery] = []
    watcher.consume(queue, 100, got.append)
    wait_for(lambda: watcher.poll(0.1) >= 0 and len(got) == count, 30, "the announcements")
    notices = [
        v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        for m in (d.message for d in got)
    ]
    watcher.delete_queue(queue)
    watcher.close()
    return sorted(retrieval_url(n.base_url, n.path) for n in notices if isinstance(n, Notice))


def test_the_path_of_the_destination_is_the_remote_tree_and_directory_is_relative_to_it(
    site: Site, sshd: Sshd, tmp_path: Path, tap: ReportTap
) -> None:
    s = Setup(site, sshd, tmp_path)
    announced_on = f"x_sent_{s.tag}"
    queue = f"q_guest.ann.{s.tag}"
    watcher = BrokerSession(site.broker_url(), name="announcements")
    watcher.connect()
    watcher.declare_exchange(announced_on)
    watcher.declare_queue(QueueSpec(queue, ((announced_on, "#"),), durable=False))
    watcher.close()
    destination = f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{s.remote}"
    (site.config_dir / "sender").mkdir(parents=True, exist_ok=True)
    (site.config_dir / "sender" / f"{s.name}.conf").write_text(
        f"broker {site.broker}\nexchange {s.exchange}\ndestination {destination}\n"
        f"base_dir {s.local}\ndirectory in\nexpire 10m\n"
        f"post_broker {site.broker}\npost_exchange {announced_on}\naccept .*\n"
    )
    names = [f"{s.tag}/a.txt", f"{s.tag}/sub/b#hash.bin"]
    files = make_files(s.local, names, size=20_000)
    with running_sender(site, s.name):
        s.post(files)
        wait_for(lambda: _codes(tap, s.tag).get(201) == 2, 60, "two 201 reports")
    assert md5_tree(s.remote / "in") == md5_tree(s.local)
    assert s.leftovers() == []
    assert _announced_urls(site, queue, 2) == sorted(
        retrieval_url(destination, f"in/{n}") for n in names
    )
