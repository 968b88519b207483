"""sr_poll against real servers: nginx autoindex pages, the suite's sshd (SFTP) and pyftpdlib
(FTP), announcing to a real RabbitMQ; the notices are decoded from the broker, and a
subscriber downloads what a poll announced."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sarra.codec import v02
from sarra.components.poll import PollComponent
from sarra.flow.metrics import read_metrics
from sarra.notice import Notice, WireMessage
from tests.integration.flowkit import (
    ExchangeTap,
    Site,
    make_files,
    md5_tree,
    running_subscriber,
    site_env,
    unique,
    wait_for,
)
from tests.servers.ftpd import Ftpd
from tests.servers.nginx import Nginx
from tests.servers.sshd import Sshd

pytestmark = pytest.mark.servers

NAMES = ["plain.txt", "with space.txt", "hash#mark.txt", "résumé.dat", "sub/inner.bin"]


@dataclass
class NoticeTap(ExchangeTap):
    """Collects the notices posted on an exchange (bound to ``v02.post.#``)."""

    key: str = "v02.post.#"
    notices: list[Notice] = field(default_factory=list)

    def take(self, m: WireMessage) -> None:
        decoded = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        assert isinstance(decoded, Notice)
        self.notices.append(decoded)

    def paths(self) -> list[str]:
        return sorted(n.path for n in self.notices)


@dataclass
class Source:
    """A polled server: where its files are on disk, and the poll's view of them."""

    kind: str
    destination: str
    #: on disk: the directory polled
    local: Path
    #: the ``directory`` option naming it on the server
    directory: str


@pytest.fixture
def site(tmp_path: Path, rabbitmq) -> Site:  # type: ignore[no-untyped-def]
    site = Site(tmp_path / "site", rabbitmq.port).setup()
    (site.config_dir / "poll").mkdir(parents=True)
    return site


def _source(kind: str, request: pytest.FixtureRequest, site: Site) -> Source:
    tag = unique("poll")
    if kind == "http":
        nginx: Nginx = request.getfixturevalue("nginx")
        local = nginx.root / "listing" / tag
        return Source(kind, nginx.base_url, local, f"/listing/{tag}")
    creds = site.config_dir / "credentials.conf"
    if kind == "sftp":
        sshd: Sshd = request.getfixturevalue("sshd")
        with open(creds, "a") as f:
            f.write(f"{sshd.url} ssh_keyfile={sshd.key_path}\n")
        local = sshd.root_dir / tag
        return Source(kind, sshd.url, local, str(local))
    ftpd: Ftpd = request.getfixturevalue("ftpd")
    with open(creds, "a") as f:
        f.write(f"{ftpd.credentials_line}\n")
    return Source(kind, ftpd.url, ftpd.root / tag, f"/{tag}")


@pytest.fixture(params=["http", "sftp", "ftp"])
def source(request: pytest.FixtureRequest, site: Site) -> Source:
    src = _source(request.param, request, site)
    src.local.mkdir(parents=True)
    return src


@pytest.fixture
def http_source(request: pytest.FixtureRequest, site: Site) -> Source:
    src = _source("http", request, site)
    src.local.mkdir(parents=True)
    return src


def write_poll(site: Site, name: str, src: Source, extra: str = "") -> None:
    (site.config_dir / "poll" / f"{name}.conf").write_text(
        f"post_broker {site.broker}\npost_exchange xs_guest\ndestination {src.destination}\n"
        f"sleep 0.3\ndirectory {src.directory}\naccept .*\n{extra}"
    )


@contextmanager
def running_poll(site: Site, name: str, instance: int = 0) -> Iterator[threading.Event]:
    """Run one instance of a poll configuration in a thread; stopped on exit."""
    stop = threading.Event()
    errors: list[BaseException] = []
    with site_env(site):
        cfg = site.load("poll", name)
        component = PollComponent()
        component.declare(cfg)

        def target() -> None:
            try:
                component.run(cfg, instance, stop)
            except BaseException as e:  # surfaced to the test below
                errors.append(e)

        thread = threading.Thread(target=target, name=f"poll-{name}-{instance}", daemon=True)
        thread.start()
        try:
            yield stop
        finally:
            stop.set()
            thread.join(30)
    assert not thread.is_alive(), "poll did not stop within 30 s"
    if errors:
        raise errors[0]


def passes(site: Site, name: str, count: int = 3) -> None:
    """Wait until the poll holding the lock has written its state ``count`` more times."""
    state = site.state_dir / "poll" / name / "poll_seen.json"

    def stamp() -> int:
        return state.stat().st_mtime_ns if state.exists() else 0

    for _ in range(count):
        before = stamp()
        wait_for(lambda: stamp() not in (0, before), what="a poll pass")  # noqa: B023


def rel(src: Source, name: str) -> str:
    return f"{src.directory.strip('/')}/{name}"


def test_poll_announces_each_file_once_and_changes_again(site: Site, source: Source) -> None:
    make_files(source.local, NAMES, size=3000)
    name = unique("p")
    write_poll(site, name, source)
    tap = NoticeTap(site.broker_url(), "xs_guest").start()
    try:
        with running_poll(site, name):
            wait_for(lambda: len(tap.notices) >= len(NAMES), what="one notice per file")
            passes(site, name)
            assert tap.paths() == sorted(rel(source, n) for n in NAMES)
            for notice in tap.notices:
                assert notice.base_url == source.destination
                assert notice.checksum.wire() == "z,d"
                on_disk = source.local / notice.path[len(rel(source, "")) :]
                assert notice.parts is not None
                assert notice.parts.wire() == f"1,{on_disk.stat().st_size},1,0,0"
            # a size change and a time change are announced again; the rest is not
            with open(source.local / "plain.txt", "ab") as f:
                f.write(b"more")
            old = time.time() - 7200
            os.utime(source.local / "with space.txt", (old, old))
            wait_for(lambda: len(tap.notices) >= len(NAMES) + 2, what="two re-announcements")
            passes(site, name)
        again = sorted(n.path for n in tap.notices[len(NAMES) :])
        assert again == [rel(source, "plain.txt"), rel(source, "with space.txt")]
        # the poll's metrics file: what it announced, as a subscriber's says what it placed
        doc = read_metrics(site.state_dir / "poll" / name / f"sr_poll_{name}_000.metrics.json")
        assert doc is not None and doc["state"] == "stopped"
        assert doc["notices"]["out"] == len(tap.notices) == doc["files"]
        assert doc["retry"]["depth"] == 0
        latest = [n for n in tap.notices if n.path == rel(source, "plain.txt")][-1]
        assert latest.parts is not None and latest.parts.wire() == "1,3012,1,0,0"
    finally:
        tap.stop()


def test_a_restart_does_not_announce_again(site: Site, http_source: Source) -> None:
    src = http_source
    make_files(src.local, ["a.txt", "b.txt"])
    name = unique("p")
    write_poll(site, name, src)
    tap = NoticeTap(site.broker_url(), "xs_guest").start()
    try:
        with running_poll(site, name):
            wait_for(lambda: len(tap.notices) >= 2, what="two notices")
            passes(site, name)
        make_files(src.local, ["c.txt"])
        with running_poll(site, name):
            wait_for(lambda: len(tap.notices) >= 3, what="the new file's notice")
            passes(site, name)
        assert tap.paths() == [rel(src, "a.txt"), rel(src, "b.txt"), rel(src, "c.txt")]
    finally:
        tap.stop()


def test_two_instances_announce_once_and_the_second_takes_over(
    site: Site, http_source: Source
) -> None:
    src = http_source
    make_files(src.local, ["a.txt"])
    name = unique("p")
    write_poll(site, name, src)
    tap = NoticeTap(site.broker_url(), "xs_guest").start()
    try:
        with running_poll(site, name, 1) as second:
            with running_poll(site, name, 0):
                wait_for(lambda: len(tap.notices) >= 1, what="a notice")
                make_files(src.local, ["b.txt"])
                wait_for(lambda: len(tap.notices) >= 2, what="the second file's notice")
                passes(site, name)
            # whichever held the lock, one instance is left; it announces what is new only
            assert not second.is_set()
            make_files(src.local, ["c.txt"])
            wait_for(lambda: len(tap.notices) >= 3, what="the third file's notice")
            passes(site, name)
        assert tap.paths() == [rel(src, "a.txt"), rel(src, "b.txt"), rel(src, "c.txt")]
    finally:
        tap.stop()


HOSTILE_INDEX = """<html><body><pre>
<a href="good.txt">good.txt</a>  06-Dec-2026 22:41  5
<a href="..%2F..%2Fetc%2Fpasswd">x</a>  06-Dec-2026 22:41  5
<a href="a%2F..%2F..%2Fb">x</a>  06-Dec-2026 22:41  5
<a href="%2e%2e">x</a>  06-Dec-2026 22:41  5
<a href="nul%00x">x</a>  06-Dec-2026 22:41  5
<a href="line%0Abreak">x</a>  06-Dec-2026 22:41  5
<a href="/etc/">x</a>  06-Dec-2026 22:41  -
<a href="http://127.0.0.1:1/x">x</a>  06-Dec-2026 22:41  5
</pre></body></html>
"""


def test_hostile_names_in_a_listing_are_never_announced(site: Site, source: Source) -> None:
    make_files(source.local, ["good.txt"])
    if source.kind == "http":
        # a page of our own making in place of nginx's (nginx serves index.html first)
        (source.local / "index.html").write_text(HOSTILE_INDEX)
        expected = [rel(source, "good.txt")]
    else:
        # names a file system allows but a listing must not pass on
        make_files(source.local, ["line\nbreak.txt", "cr\rname", "...", "-rf"])
        expected = sorted(rel(source, n) for n in ["good.txt", "...", "-rf"])
    name = unique("p")
    write_poll(site, name, source)
    tap = NoticeTap(site.broker_url(), "xs_guest").start()
    try:
        with running_poll(site, name):
            wait_for(lambda: len(tap.notices) >= len(expected), what="the good names")
            passes(site, name)
        assert tap.paths() == expected
        prefix = source.directory.strip("/") + "/"
        for notice in tap.notices:
            tail = notice.path[len(prefix) :]
            assert notice.path.startswith(prefix) and "/" not in tail and tail not in ("", "..")
    finally:
        tap.stop()


def test_directories_named_with_url_delimiters_are_listed_and_a_failing_one_skipped(
    site: Site, http_source: Source, caplog: pytest.LogCaptureFixture
) -> None:
    src = http_source
    names = ["top.txt", "q?mark/a.txt", "h#ash/b.txt", "pct%41/c.txt", "z/deeper/d.txt"]
    make_files(src.local, names)
    # a subdirectory nginx cannot list: its index.html is a symlink loop (500)
    (src.local / "broken").mkdir()
    (src.local / "broken" / "index.html").symlink_to("index.html")
    name = unique("p")
    write_poll(site, name, src)
    tap = NoticeTap(site.broker_url(), "xs_guest").start()
    try:
        with caplog.at_level(logging.ERROR), running_poll(site, name):
            wait_for(lambda: len(tap.notices) >= len(names), what="one notice per file")
            passes(site, name)
        assert tap.paths() == sorted(rel(src, n) for n in names)
        failed = [r.getMessage() for r in caplog.records if "listing" in r.getMessage()]
        assert failed and all(f"{src.directory}/broken/" in m for m in failed)
    finally:
        tap.stop()


def test_what_a_poll_announces_a_subscriber_downloads(
    site: Site, source: Source, tmp_path: Path
) -> None:
    make_files(source.local, NAMES, size=70000)
    name = unique("p")
    write_poll(site, name, source)
    dest = tmp_path / "dest"
    topic = source.directory.strip("/").replace("/", ".")
    site.write_subscribe(
        f"s{name}",
        f"exchange xs_guest\nsubtopic {topic}.#\ndirectory {dest}\nmirror on\nexpire 10m\n"
        "accept .*\n",
    )
    with running_subscriber(site, f"s{name}"), running_poll(site, name):
        wanted = md5_tree(source.local)
        got = dest / source.directory.strip("/")
        wait_for(lambda: got.exists() and md5_tree(got) == wanted, 60, what="every file")
    assert sorted(wanted) == sorted(NAMES)


def test_sum_d_is_computed_by_reading_each_file(site: Site, source: Source) -> None:
    make_files(source.local, ["a.txt", "with space.txt"], size=5000)
    name = unique("p")
    write_poll(site, name, source, "sum d\n")
    tap = NoticeTap(site.broker_url(), "xs_guest").start()
    try:
        with running_poll(site, name):
            wait_for(lambda: len(tap.notices) >= 2, what="two notices")
            passes(site, name)
    finally:
        tap.stop()
    assert tap.paths() == [rel(source, "a.txt"), rel(source, "with space.txt")]
    wanted = md5_tree(source.local)
    for notice in tap.notices:
        local_name = notice.path.rsplit("/", 1)[1]
        assert notice.checksum.wire() == f"d,{wanted[local_name]}"
        size = (source.local / local_name).stat().st_size
        assert notice.parts is not None and notice.parts.wire() == f"1,{size},1,0,0"


def test_sr_poll_start_with_two_instance_processes_announces_once(
    site: Site, http_source: Source
) -> None:
    """The command as an operator runs it: ``sr_poll start`` spawns two instance processes;
    one polls, the other stands by; ``stop`` ends both."""
    src = http_source
    make_files(src.local, ["a.txt", "b.txt"])
    name = unique("p")
    write_poll(site, name, src, "instances 2\n")
    command = str(Path(sys.executable).parent / "sr_poll")
    env = {**os.environ, **site.env}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [command, *argv], env=env, capture_output=True, text=True, timeout=120
        )

    tap = NoticeTap(site.broker_url(), "xs_guest").start()
    try:
        started = run("start", name)
        assert started.returncode == 0, started.stdout + started.stderr
        try:
            wait_for(lambda: len(tap.notices) >= 2, what="two notices")
            make_files(src.local, ["c.txt"])
            wait_for(lambda: len(tap.notices) >= 3, what="the third notice")
            passes(site, name)
            status = run("status", name)
            states = [line.split()[3] for line in status.stdout.splitlines()[1:3]]
            assert sorted(states) == ["running", "stand-by"], status.stdout
        finally:
            stopped = run("stop", name)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    finally:
        tap.stop()
    assert tap.paths() == [rel(src, "a.txt"), rel(src, "b.txt"), rel(src, "c.txt")]


@pytest.mark.parametrize("kind", ["http", "sftp"])
def test_a_name_that_is_not_utf8_is_skipped_and_the_others_announced(
    site: Site, kind: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    # not ftp: pyftpdlib sends such a name with "?" in place of the bad bytes (the FTP
    # client's side is tested in tests/unit/test_codec_surrogates.py)
    source = _source(kind, request, site)
    source.local.mkdir(parents=True)
    make_files(source.local, ["good.txt", "sub/inner.txt"])
    with open(os.fsencode(source.local) + b"/bad\xff.txt", "wb") as f:
        f.write(b"a Latin-1 name\n")
    os.mkdir(os.fsencode(source.local) + b"/dir\xe9")
    with open(os.fsencode(source.local) + b"/dir\xe9/inside.txt", "wb") as f:
        f.write(b"under a Latin-1 directory name\n")
    caplog.set_level(logging.INFO)
    expected = sorted(rel(source, n) for n in ["good.txt", "sub/inner.txt"])
    name = unique("p")
    write_poll(site, name, source)
    tap = NoticeTap(site.broker_url(), "xs_guest").start()
    try:
        with running_poll(site, name):
            wait_for(lambda: len(tap.notices) >= len(expected), what="the good names")
            passes(site, name, 4)  # and the poll goes on, pass after pass
        assert tap.paths() == expected
    finally:
        tap.stop()
    lines = [r.getMessage() for r in caplog.records if "UTF-8" in r.getMessage()]
    # named safely: by its bytes (sftp, ftp) or as the index page escaped it (http)
    shown = "'bad%FF.txt' left out" if source.kind == "http" else "b'bad\\xff.txt'"
    assert any(shown in line for line in lines), lines
    assert "Traceback" not in caplog.text
    if source.kind == "sftp":  # logged once, not at every pass
        assert sum("b'bad\\xff.txt'" in line for line in lines) == 1, lines
