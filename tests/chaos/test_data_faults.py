"""The fault suite, data faults: full file systems, a replaced file, a faulty origin, a deep
backlog, fuzzed notices and a secrets sweep, each against real subscriber processes.

Every scenario counts announced / arrived verified / lost / duplicated / corrupt-visible /
leftovers / crashes (:class:`~tests.chaos.chaoskit.Tally`) and ends with
``assert_clean(prefetch x instances)``. Full file systems are small tmpfs mounts (the suite
runs as root), always unmounted at the end. Nothing here hurts the broker, so the session's
shared RabbitMQ node and nginx serve every scenario. (tests/chaos/conftest.py marks them all
``chaos``.)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import random
import secrets
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sarra.broker.session import BrokerSession
from sarra.cli.instances import process_matches, read_pid_file
from sarra.codec import v02
from sarra.codec.build import build_notice
from sarra.codec.timestamps import now_timestamp
from sarra.notice import WireMessage
from tests.chaos.chaoskit import (
    BIN,
    fleet,
    make_batch,
    post_batch,
    queue_depth,
    scan,
    settle,
    subscribe_body,
    wait_until,
)
from tests.integration.flowkit import ReportTap, Site, post, publish_raw, unique
from tests.servers.tmpfs import fill, grow, tmpfs


@pytest.fixture
def site(tmp_path: Path, rabbitmq: Any) -> Site:
    return Site(tmp_path / "site", rabbitmq.port).setup()


# -- small file systems ---------------------------------------------------------------------


# -- notices made by hand -------------------------------------------------------------------


def raw_notice(
    tag: str, base_url: str, rel: str, data: bytes | None, **headers: str
) -> WireMessage:
    """A well-formed v02 notice of ``rel`` (below ``tag``) on ``xs_guest``; with ``data``
    it carries the md5 sum and size of ``data``."""
    hdrs = dict(headers)
    if data is not None:
        hdrs.setdefault("sum", "d," + hashlib.md5(data).hexdigest())
        hdrs.setdefault("parts", f"1,{len(data)},1,0,0")
    notice = build_notice(
        exchange="xs_guest",
        topic=None,
        pubtime=now_timestamp(),
        base_url=base_url,
        rel_path=f"/{tag}/{rel}",
        headers=hdrs,
        post=True,
    )
    return v02.to_wire(notice, exchange="xs_guest")


def ready_count(site: Site, queue: str) -> int:
    """Messages ready in ``queue`` (unacked ones are not counted): a quick passive declare."""
    s = BrokerSession(site.broker_url(), name="chaos-count")
    s.connect()
    try:
        return s.queue_counts(queue)[0]
    finally:
        s.close()


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS`` of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


# -- 1. destination file system full --------------------------------------------------------


def test_a_full_destination_loses_nothing_and_shows_no_partial_file_then_everything_arrives(  # type: ignore[no-untyped-def]
    site, rabbitmq, nginx, tmp_path
):
    tag = unique("dfull")
    batch = make_batch(nginx.root, tag, 30, size=200_000)  # 6 MB for a 2 MiB file system
    dest = tmp_path / "dest"
    prefetch, count = 10, 2
    seen_corrupt: set[str] = set()
    with (
        tmpfs(dest, "2m"),
        fleet(
            site,
            tag,
            dest,
            tmp_path / "logs",
            count=count,
            prefetch=prefetch,
            # a full disk goes to the disk retry queue at once, and comes back within seconds
            extra="attempts 1\nretry_delay 1s\nretry_delay_max 2s\n",
        ) as f,
    ):
        f.start()
        assert post_batch(site, nginx.base_url, nginx.root, batch) == 0
        wait_until(lambda: "No space left" in f.log_text(), 60, "a download to hit the full disk")
        # while the disk stays full, every final name visible holds the announced bytes
        until = time.monotonic() + 4
        while time.monotonic() < until:
            seen_corrupt.update(scan(dest, batch).corrupt)
            time.sleep(0.2)
        full = scan(dest, batch)
        assert full.missing, "everything fitted: the disk was never full"
        grow(dest, "64m")
        tally = settle("destination file system full", f, batch, rabbitmq, timeout=90)
        f.stop()
    assert not seen_corrupt, f"corrupt files visible while the disk was full: {seen_corrupt}"
    tally.assert_clean(prefetch * count)


# -- 3. a file replaced between announce and download ---------------------------------------


def test_a_file_replaced_after_its_announcement_is_reported_499_with_both_sums_and_the_flow_goes_on(  # type: ignore[no-untyped-def]
    site, rabbitmq, nginx, tmp_path
):
    tag = unique("repl")
    victim = nginx.root / tag / "v" / "replaced.bin"
    victim.parent.mkdir(parents=True)
    announced, replacement = os.urandom(50_000), os.urandom(50_000)
    victim.write_bytes(announced)
    batch = make_batch(nginx.root, tag, 20, size=3000)  # the notices that come next
    dest = tmp_path / "dest"
    prefetch, count = 10, 1
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with fleet(
            site,
            tag,
            dest,
            tmp_path / "logs",
            count=count,
            prefetch=prefetch,
            # sr3's default sum: two sha512 values make the longest checksum report there is
            extra="report_back on\nattempts 2\nretry_delay 10m\n",
        ) as f:
            assert post(site, nginx.base_url, nginx.root, [victim], ("sum", "s")) == 0
            victim.write_bytes(replacement)  # same size, other bytes: only the sum tells
            f.start()
            wait_until(lambda: tap.about("replaced.bin"), 60, "the report on the replaced file")
            # the batch's own directories: the replaced file is not announced again
            assert post(site, nginx.base_url, nginx.root, sorted(batch.src.glob("d*"))) == 0
            tally = settle("file replaced after announce", f, batch, rabbitmq, timeout=60)
            assert f.running() == [0], f.tail()
            f.stop()
    finally:
        tap.stop()
    reports = tap.about("replaced.bin")
    assert [r.code for r in reports] == [499], [(r.code, r.message) for r in reports]
    report = reports[0]
    want = hashlib.sha512(announced).hexdigest()
    got = hashlib.sha512(replacement).hexdigest()
    # both sums are named (shortened to fit the header's 255 bytes, never refused)
    assert want[:16] in report.message and got[:16] in report.message, report.message
    assert len(report.message.encode()) <= 255
    assert not tap.undecodable, tap.undecodable
    assert not (dest / "v" / "replaced.bin").exists()  # also a leftover for the tally
    tally.assert_clean(prefetch * count)


# -- 4. a faulty origin ---------------------------------------------------------------------


class FaultyOrigin:
    """An HTTP origin (a thread) serving ``root`` that spoils a share of its answers, drawn
    from a seeded generator: a 500, a connection reset, a body cut short after a full
    Content-Length, or the right length of wrong bytes. Files only; Range is not served (the
    subscriber asks for whole small files)."""

    FAULTS = ("500", "reset", "truncated", "wrong bytes")

    def __init__(
        self, root: Path, share: float, seed: int, auth: tuple[str, str] | None = None
    ) -> None:
        origin = self
        self.root = root
        self.share = share
        #: with ``auth`` (user, password), a request without those Basic credentials is a 401
        self.auth = auth
        self.authorized = 0
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.served: dict[str, int] = {name: 0 for name in ("ok", *self.FAULTS)}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                origin.answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _draw(self) -> str:
        with self.lock:
            r = self.rng.random()
            fault = "ok" if r >= self.share else self.FAULTS[int(r / self.share * 4)]
            self.served[fault] += 1
            return fault

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        if self.auth is not None:
            token = base64.b64encode(":".join(self.auth).encode()).decode()
            if h.headers.get("Authorization") != f"Basic {token}":
                h.send_response(401)
                h.send_header("WWW-Authenticate", 'Basic realm="origin"')
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            with self.lock:
                self.authorized += 1
        file = (self.root / h.path.split("?", 1)[0].lstrip("/")).resolve()
        if not file.is_relative_to(self.root.resolve()) or not file.is_file():
            h.send_error(404)
            return
        fault = self._draw()
        if fault == "500":
            h.send_error(500, "spoiled on purpose")
            return
        if fault == "reset":  # RST instead of an answer
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            return
        data = file.read_bytes()
        if fault == "wrong bytes":
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0x55]) + data[middle + 1 :]
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if fault == "truncated":
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_twenty_percent_faulty_origin_answers_end_with_every_file_verified_and_none_corrupt(  # type: ignore[no-untyped-def]
    site, rabbitmq, tmp_path
):
    tag = unique("flaky")
    www = tmp_path / "www"
    batch = make_batch(www, tag, 200, size=20_000)
    origin = FaultyOrigin(www, share=0.2, seed=20261206)
    dest = tmp_path / "dest"
    prefetch, count = 10, 2
    seen_corrupt: set[str] = set()
    try:
        with fleet(
            site,
            tag,
            dest,
            tmp_path / "logs",
            count=count,
            prefetch=prefetch,
            extra="attempts 3\nretry_delay 1s\nretry_delay_max 2s\n",
        ) as f:
            f.start()
            assert post_batch(site, origin.base_url, www, batch) == 0

            def done() -> bool:
                s = scan(dest, batch)
                seen_corrupt.update(s.corrupt)
                return not s.missing

            wait_until(done, 90, "every file")
            tally = settle("20% faulty origin answers", f, batch, rabbitmq, timeout=30)
            f.stop()
    finally:
        origin.close()
    assert not seen_corrupt, seen_corrupt
    # each kind of fault was served, so each was survived
    assert all(origin.served[fault] > 0 for fault in FaultyOrigin.FAULTS), origin.served
    tally.assert_clean(prefetch * count)


# -- 5. a deep backlog, flat memory ---------------------------------------------------------

BACKLOG = 100_000
#: most the subscriber's resident memory may grow from 10 % to 90 % of the backlog drained
RSS_GROWTH_MAX_KIB = 30 * 1024


def test_a_backlog_of_100000_notices_drains_with_flat_memory_and_the_files_behind_it_arrive(  # type: ignore[no-untyped-def]
    site, rabbitmq, nginx, tmp_path
):
    tag = unique("deep")
    # the backlog is rejected by a mask (cheap per notice: what is measured is the loop);
    # the batch posted behind it is accepted and must arrive
    batch = make_batch(nginx.root, tag, 20, size=2000)
    junk = raw_notice(tag, nginx.base_url, "junk/n0.bin", b"x")
    backlog = [
        WireMessage(
            junk.exchange,
            junk.routing_key,
            junk.body.replace(b"/junk/n0.bin", f"/junk/n{i}.bin".encode()),
            junk.headers,
            delivery_mode=1,  # transient: the broker confirms without a disk write each
        )
        for i in range(BACKLOG)
    ]
    dest = tmp_path / "dest"
    prefetch, count = 25, 1
    with fleet(
        site,
        tag,
        dest,
        tmp_path / "logs",
        count=count,
        prefetch=prefetch,
        extra="reject .*/junk/.*\n",
    ) as f:
        published = time.monotonic()
        publish_raw(site.broker_url(), backlog)
        published = time.monotonic() - published
        assert post_batch(site, nginx.base_url, nginx.root, batch) == 0
        assert ready_count(site, f.queue) >= BACKLOG
        f.start()
        proc = f.procs[0]
        assert proc is not None
        samples: list[tuple[float, int]] = []  # (fraction drained, RSS KiB)
        started = time.monotonic()
        while time.monotonic() - started < 120:
            left = ready_count(site, f.queue)
            samples.append((1 - left / (BACKLOG + batch.announced), rss_kib(proc.pid)))
            if left == 0:
                break
            time.sleep(0.25)
        drained = time.monotonic() - started
        tally = settle("100k-notice backlog", f, batch, rabbitmq, timeout=60)
        f.stop()
    at10 = next(rss for frac, rss in samples if frac >= 0.1)
    at90 = next(rss for frac, rss in samples if frac >= 0.9)
    print(
        f"published {BACKLOG} in {published:.1f} s, drained in {drained:.1f} s; "
        f"RSS {at10 // 1024} MiB at 10 %, {at90 // 1024} MiB at 90 %, "
        f"peak {max(r for _, r in samples) // 1024} MiB ({len(samples)} samples)"
    )
    assert at90 - at10 < RSS_GROWTH_MAX_KIB, samples
    tally.assert_clean(prefetch * count)


# -- 6. fuzzed notices at a high rate -------------------------------------------------------


def fuzzed_notices(tag: str, base_url: str) -> Any:
    """Malformed and extreme v02 notices, all routed to ``tag``'s subscription.

    Each field is drawn well-formed most of the time and odd otherwise, so that most notices
    get past the codec and reach the transfer, the report and the ack with one or two faults:
    long paths up to the 64 KiB body bound (a 404 report quoting the URL), long and sha512
    sums, bogus ``parts``, sizes past 2^63, odd unicode, missing fields and headers, headers
    of other AMQP types. Every baseUrl is on loopback (nginx, or a closed port) so that
    nothing leaves the machine."""
    from hypothesis import strategies as st

    def mostly(good: Any, odd: Any) -> Any:
        return st.integers(0, 9).flatmap(lambda n: good if n < 8 else odd)

    text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
    # no white space inside a segment: a space splits the body into more fields
    segment = st.text(
        st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=40
    )
    rel = st.one_of(
        st.lists(segment, min_size=1, max_size=6).map("/".join),
        st.integers(150, 64_000).map(lambda n: (("/" + "p" * 199) * (n // 200 + 1))[1:n]),
        st.sampled_from(
            [
                "../../../etc/passwd",
                "a b",
                "a\tb",
                "%2e%2e/%2e%2e/x",
                "\u202egnp.exe",
                "ü/ö/😀.bin",
                "a\x00b",
                "./.",
                "~/x",
                "CON/aux.txt",
                "x" * 255,
                "y" * 256,
            ]
        ),
    ).map(lambda r: f"/{tag}/{r}")
    base = mostly(
        st.just(base_url),
        st.sampled_from(
            [f"{base_url}/status", "http://127.0.0.1:1", "sftp://127.0.0.1:1/",
             "ftp://127.0.0.1:1/", "notaurl", "http://[::1", "http://127.0.0.1:1/" + "u" * 300,
             "http://127.0.0.1:99999", ""]
        ),
    )  # fmt: skip
    pubtime = mostly(
        st.just(now_timestamp()),
        st.one_of(st.sampled_from(["0", "99991231235959.999", "20261301000000", "x", ""]), text),
    )
    checksum = mostly(
        st.one_of(
            st.binary(min_size=16, max_size=16).map(lambda b: "d," + b.hex()),
            st.binary(min_size=64, max_size=64).map(lambda b: "s," + b.hex()),
        ),
        st.one_of(
            st.text(max_size=400).map(lambda t: "s," + t),
            st.sampled_from(["z,d", "z,s", "z,q", "0,1", "n,abc", "L,x", "R,", "q,1", "", "d"]),
        ),
    )
    parts = mostly(
        st.integers(0, 2**40).map(lambda n: f"1,{n},1,0,0"),
        st.one_of(
            st.sampled_from(
                [
                    "i,94371840,10,0,3", "i,0,0,0,0", "p,10,2,0,0", "1,-1,1,0,0", "x",
                    "1,9223372036854775808,1,0,0", f"i,{2**64},3,0,1", "i,1048576,9999999,0,7",
                    "i,1,1,1,1,1", "",
                ]
            ),
            st.tuples(
                st.sampled_from("1ipx"), *(st.integers(-5, 2**70) for _ in range(4))
            ).map(lambda t: ",".join(map(str, t))),
        ),
    )  # fmt: skip
    odd_value = st.one_of(
        text, st.text(max_size=300), st.integers(-(2**63), 2**63 - 1), st.booleans(),
        st.binary(max_size=40),
    )  # fmt: skip
    extra = mostly(
        st.just({}),
        st.dictionaries(
            st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=50),
            odd_value,
            max_size=4,
        ),
    )

    @st.composite
    def notice(draw: Any) -> WireMessage:
        headers: dict[str, Any] = {}
        if draw(st.integers(0, 19)):  # a few have no sum at all
            headers["sum"] = draw(checksum)
        if draw(st.integers(0, 19)):
            headers["parts"] = draw(parts)
        if draw(st.booleans()):
            headers["mtime"] = draw(pubtime)
        headers.update(draw(extra))
        fields = [draw(pubtime), draw(base), draw(rel)]
        shape = draw(st.integers(0, 29))
        if shape == 0:
            fields = fields[:2]  # relPath missing
        elif shape == 1:
            fields.append(draw(text))  # a fourth field
        body = " ".join(fields).encode("utf-8")
        if shape == 2:
            body = draw(st.binary(max_size=200))  # not even UTF-8, perhaps
        return WireMessage("xs_guest", f"v02.post.{tag}.fuzz", body, headers)

    return notice()


FUZZ_BATCHES = 100


def test_fuzzed_notices_at_a_high_rate_stop_no_instance_and_every_good_notice_arrives(  # type: ignore[no-untyped-def]
    site, rabbitmq, nginx, tmp_path
):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    tag = unique("fuzz")
    batch = make_batch(nginx.root, tag, 240, size=1500)
    good = [
        raw_notice(tag, nginx.base_url, rel, (batch.src / rel).read_bytes())
        for rel in sorted(batch.expected)
    ]
    per_batch = len(good) // FUZZ_BATCHES
    dest = tmp_path / "dest"
    prefetch, count = 25, 2
    fuzzed = 0
    # the destination is a tmpfs: a bogus reservation can fill it, never the machine's disk
    with (
        tmpfs(dest, "512m"),
        fleet(
            site,
            tag,
            dest,
            tmp_path / "logs",
            count=count,
            prefetch=prefetch,
            # transfer failures go to the disk retry queue at once and stay there
            extra="report_back on\nattempts 1\nretry_delay 10m\n",
        ) as f,
    ):
        tap = ReportTap(site.broker_url(), "xs_guest").start()
        f.start()
        publisher = BrokerSession(site.broker_url(), name="fuzzer")
        publisher.connect()
        try:

            @settings(
                max_examples=FUZZ_BATCHES,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(st.lists(fuzzed_notices(tag, nginx.base_url), min_size=20, max_size=60))
            def publish(messages: list[WireMessage]) -> None:
                nonlocal fuzzed
                publisher.publish([*messages, *good[:per_batch]])
                del good[:per_batch]
                fuzzed += len(messages)

            publish()
            publisher.publish(good)  # what the examples did not take
        finally:
            publisher.close()
        tally = settle("fuzzed notices, 2 instances", f, batch, rabbitmq, timeout=90)
        alive = f.running()
        log_text = f.log_text()
        f.stop()
        tap.stop()
    print(f"{fuzzed} fuzzed notices; reports by code {sorted(tap.codes().items())}")
    assert fuzzed >= 1000
    assert alive == [0, 1], f.crashed
    tally.assert_clean(prefetch * count)
    assert "Traceback" not in log_text, log_text[log_text.index("Traceback") - 2000 :][:6000]
    # every report was published within the protocol's bounds (sr2 refuses longer headers)
    too_long = [
        (name, len(str(value).encode()))
        for m in tap.raw
        for name, value in m.headers.items()
        if len(str(value).encode()) > v02.HEADER_VALUE_MAX
    ]
    assert not too_long, too_long[:10]
    assert not tap.undecodable, sorted({u[:60] for u in tap.undecodable})
    codes = tap.codes()
    assert codes.get(201, 0) >= batch.announced and codes.get(417, 0) and codes.get(499), codes
    # long reports (a 404 quoting a long URL) were made, shortened and sent
    assert any("bytes cut]" in r.message for r in tap.reports if r.code == 499)


# -- instances run as daemons by the CLI (pid files, status) --------------------------------


class Daemons:
    """``sr_subscribe start`` instances of one config, as an operator runs them: pid files
    and heartbeats in the config's state directory, logs in ``<state>/log``, ``status``.

    Offers what :func:`~tests.chaos.chaoskit.settle` reads of a fleet (``dest``, ``queue``,
    ``crashed``, ``check_alive``, ``log_text``, ``tail``). An instance whose process is gone
    while the test did not stop it counts as a crash.
    """

    def __init__(self, site: Site, tag: str, dest: Path, count: int, body: str) -> None:
        self.site = site
        self.dest = dest
        self.count = count
        self.name = f"daemon_{tag}"
        self.queue = f"q_{site.user}.chaos.{tag}"
        self.state = site.state_dir / "subscribe" / self.name
        self.pids: dict[int, int] = {}
        self.crashed: list[str] = []
        site.write_subscribe(self.name, f"queue_name {self.queue}\ninstances {count}\n{body}")

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "sr_subscribe"), *argv],
            env={**os.environ, **self.site.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def declare(self) -> None:
        done = self.cli("declare", self.name)
        assert done.returncode == 0, done.stdout + done.stderr

    def pid_path(self, n: int) -> Path:
        return self.state / f"sr_subscribe_{self.name}_{n:03d}.pid"

    def log_path(self, n: int) -> Path:
        return self.site.state_dir / "log" / f"sr_subscribe_{self.name}_{n:03d}.log"

    def start(self) -> None:
        done = self.cli("start", self.name)
        assert done.returncode == 0, done.stdout + done.stderr
        for n in range(1, self.count + 1):
            pid = read_pid_file(self.pid_path(n))
            assert pid is not None, f"no pid file for instance {n}"
            self.pids[n] = pid

    def check_alive(self) -> None:
        for n, pid in list(self.pids.items()):
            if not process_matches(pid, ["subscribe", self.name]):
                self.crashed.append(f"instance {n} (pid {pid}) ended on its own")
                del self.pids[n]

    def running(self) -> list[int]:
        self.check_alive()
        return sorted(self.pids)

    def stop(self) -> str:
        """``sr_subscribe stop``; its output (a crash is recorded first)."""
        self.check_alive()
        done = self.cli("stop", self.name)
        self.pids.clear()
        return done.stdout + done.stderr

    def close(self) -> None:
        """Teardown: kill what still runs (never counted)."""
        for pid in self.pids.values():
            if process_matches(pid, ["subscribe", self.name]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.pids.clear()

    def log_text(self) -> str:
        return "".join(
            self.log_path(n).read_text(errors="replace")
            for n in range(1, self.count + 1)
            if self.log_path(n).exists()
        )

    def tail(self, limit: int = 3000) -> str:
        return self.log_text()[-limit:]


@contextlib.contextmanager
def daemons(site: Site, tag: str, dest: Path, count: int, body: str) -> Iterator[Daemons]:
    d = Daemons(site, tag, dest, count, body)
    try:
        d.declare()
        yield d
    finally:
        d.close()


# -- 7. a secrets sweep ---------------------------------------------------------------------


def test_no_password_of_broker_or_origin_shows_in_logs_state_reports_status_or_ps(  # type: ignore[no-untyped-def]
    rabbitmq, tmp_path
):
    user = unique("sweep")
    broker_pw, origin_pw = f"Brk{secrets.token_hex(12)}", f"Org{secrets.token_hex(12)}"
    rabbitmq.add_user(user, broker_pw)
    rabbitmq.set_permissions(user, ".*", ".*", ".*")
    site = Site(tmp_path / "site", rabbitmq.port, user=user, password=broker_pw).setup()
    www = tmp_path / "www"
    tag = unique("swp")
    batch = make_batch(www, tag, 40, size=2000)
    origin = FaultyOrigin(www, share=0.0, seed=1, auth=("webu", origin_pw))
    creds = site.config_dir / "credentials.conf"
    creds.write_text(
        creds.read_text() + f"{origin.base_url.replace('//', f'//webu:{origin_pw}@')}/\n"
    )
    needles = {
        "broker password": broker_pw,
        "origin password": origin_pw,
        "origin Basic credentials": base64.b64encode(f"webu:{origin_pw}".encode()).decode(),
    }
    assert broker_pw in creds.read_text() and origin_pw in creds.read_text()  # the needles work
    dest = tmp_path / "dest"
    prefetch, count = 10, 2
    tap = ReportTap(site.broker_url(), f"xs_{user}").start()
    try:
        with daemons(
            site,
            tag,
            dest,
            count,
            # debug logging: the most a log ever says
            subscribe_body(
                tag, dest, f"q_{user}.chaos.{tag}", prefetch, "report_back on\nloglevel debug\n"
            ),
        ) as d:
            d.start()
            assert post_batch(site, origin.base_url, www, batch, ("post_exchange", "xs_guest")) == 0
            wait_until(lambda: len(scan(dest, batch).verified) == batch.announced, 60, "every file")
            ps = subprocess.run(
                ["ps", "-ww", "-eo", "args"], capture_output=True, text=True, check=True
            )
            status = d.cli("status", d.name)
            tally = settle("secrets sweep", d, batch, rabbitmq, timeout=30)  # type: ignore[arg-type]
            wait_until(lambda: len(tap.reports) >= batch.announced, 30, "the reports")
            d.stop()
    finally:
        tap.stop()
        origin.close()
    assert d.name in ps.stdout and "running" in status.stdout, (ps.stdout, status.stdout)
    assert origin.authorized >= batch.announced  # the origin's password was used
    places: dict[str, str] = {
        "ps -ww -eo args": ps.stdout,
        "status": status.stdout + status.stderr,
        **{
            f"report {i}": r.body.decode(errors="replace") + repr(dict(r.headers))
            for i, r in enumerate(tap.raw)
        },
        **{
            f"state file {p.relative_to(site.state_dir)}": p.read_bytes().decode(errors="replace")
            for p in site.state_dir.rglob("*")
            if p.is_file()
        },
    }
    assert any(k.startswith("state file log/") for k in places), "no log was swept"
    found = [
        f"{what} in {where}"
        for where, text in places.items()
        for what, n in needles.items()
        if n in text
    ]
    assert not found, found
    tally.assert_clean(prefetch * count)


# -- 2. state file system full --------------------------------------------------------------


def test_a_full_state_file_system_pauses_consuming_acks_nothing_undurable_and_loses_nothing(  # type: ignore[no-untyped-def]
    site, rabbitmq, nginx, tmp_path
):
    tag = unique("sfull")
    batch = make_batch(nginx.root, tag, 300, size=1000)
    dest = tmp_path / "dest"
    prefetch, count = 10, 1
    body = subscribe_body(
        tag, dest, f"q_guest.chaos.{tag}", prefetch, "retry_delay 1s\nretry_delay_max 2s\n"
    )
    # journal, retry queue, nodupe cache, pid file and heartbeat: all on a 1 MiB tmpfs
    with (
        tmpfs(site.state_dir / "subscribe" / f"daemon_{tag}", "1m"),
        daemons(site, tag, dest, count, body) as d,
    ):
        d.start()
        heart = d.state / f"sr_subscribe_{d.name}_001.heart"
        wait_until(heart.exists, 20, "the first heartbeat")
        fill(d.state)
        assert post_batch(site, nginx.base_url, nginx.root, batch) == 0
        acked: list[tuple[int, int]] = []  # (acked, placed) when they disagreed

        def acked_only_what_is_durable() -> bool:
            depth = queue_depth(rabbitmq, d.queue)
            placed = len(scan(dest, batch).verified)
            # acked means durable, and with no room for the retry queue, durable is placed
            if depth is not None and batch.announced - depth > placed:
                acked.append((batch.announced - depth, placed))
            return depth is not None

        def paused_or_wrongly_acked() -> bool:
            return bool(acked) or "PAUSED" in d.log_text()

        wait_until(
            lambda: acked_only_what_is_durable() and paused_or_wrongly_acked(),
            30,
            "consuming to pause",
            every=1.0,
        )
        shown = ""

        def paused_in_status() -> bool:
            nonlocal shown
            shown = d.cli("status", d.name).stdout
            return "paused" in shown

        if not acked:
            wait_until(paused_in_status, 20, "status to show the pause", every=1.0)
            time.sleep(2)  # anything wrongly acked would be acked by now
            acked_only_what_is_durable()
        assert not acked, f"acked but neither placed nor queued for retry (acked, placed): {acked}"
        grow(d.state, "64m")
        tally = settle("state file system full", d, batch, rabbitmq, timeout=90)  # type: ignore[arg-type]
        assert "running" in d.cli("status", d.name).stdout
        d.stop()
    tally.assert_clean(prefetch * count)
