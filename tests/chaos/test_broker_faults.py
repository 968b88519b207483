"""Broker faults under load: two real ``sr_subscribe`` processes share a queue on a
throwaway RabbitMQ node of this module while the broker restarts, freezes, drops
connections, goes silent, raises a resource alarm or times consumers out, and while the
instances are killed or stopped. Each scenario ends with the counts table row and
``assert_clean``: 0 lost, 0 corrupt, 0 leftovers, 0 crashes, duplicates bounded by
prefetch x instances per fault.

The origin is ``broken_http``'s ``/slow/`` mode, so the flow is still running when the
fault comes; the scenario sets it to no delay once the fault is over, to finish quickly.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import random
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.chaos import chaoskit as ck
from tests.integration.flowkit import Site, unique
from tests.servers.nginx import BrokenHttp
from tests.servers.rabbitmq import RabbitNode, start_rabbitmq

pytestmark = [pytest.mark.timeout(180)]

INSTANCES = 2
PREFETCH = 10
#: one redelivery wave: every unacked notice of every instance
WAVE = PREFETCH * INSTANCES


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    """This module's own node: the scenarios restart, freeze and reconfigure it."""
    with ck.own_node() as n:
        yield n


@dataclass
class Run:
    """One scenario's flow: a batch on the slow origin, a fleet of subscribers."""

    name: str
    node: RabbitNode
    origin: BrokenHttp
    site: Site
    batch: ck.Batch
    fleet: ck.Fleet
    dest: Path
    posted: list[ck.Batch] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"{self.origin.base_url}/slow"

    def post(self, batch: ck.Batch | None = None) -> None:
        b = batch or self.batch
        rc = ck.post_batch(self.site, self.base_url, self.origin.root, b)
        assert rc == 0, f"sr_post exited with {rc}"

    def verified(self) -> int:
        return ck.count_verified(self.dest, self.batch)

    def progress(self, more: int, timeout: float = 60.0) -> None:
        """Wait for ``more`` files to be verified beyond what is there now."""
        target = min(self.verified() + more, self.batch.announced)
        ck.wait_until(
            lambda: self.verified() >= target,
            timeout,
            f"{target} verified files ({self.name})\n{self.fleet.tail(1500)}",
        )

    def mid_flow(self) -> None:
        """Fail unless the flow is still running (the fault must land mid-flow)."""
        done = self.verified()
        assert done < self.batch.announced, f"{self.name}: the flow ended before the fault"

    def finish(self, dup_bound: int, timeout: float = 120.0) -> ck.Tally:
        self.origin.slow_seconds = 0.0
        tally = ck.settle(self.name, self.fleet, self.batch, self.node, timeout=timeout)
        tally.assert_clean(dup_bound)
        return tally


@contextlib.contextmanager
def flow(
    name: str,
    node: RabbitNode,
    origin: BrokenHttp,
    tmp_path: Path,
    count: int = 300,
    size: int = 4000,
    slow: float = 0.05,
    extra: str = "",
    broker_port: int | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[Run]:
    """Post ``count`` files and start the fleet (``broker_port``: subscribers connect there
    instead of to the node, e.g. through a proxy)."""
    tag = unique(re.sub(r"[^a-z]", "", name.lower())[:6])
    site = Site(tmp_path / "site", node.port).setup()
    sub_site = site if broker_port is None else Site(tmp_path / "subsite", broker_port).setup()
    batch = ck.make_batch(origin.root, tag, count, size=size)
    dest = tmp_path / "dest"
    origin.slow_seconds = slow
    try:
        with ck.fleet(
            sub_site,
            tag,
            dest,
            tmp_path / "logs",
            count=INSTANCES,
            prefetch=PREFETCH,
            extra="transfer_threads 2\n" + extra,
            env=env,
        ) as f:
            run = Run(name, node, origin, site, batch, f, dest)
            f.start()
            yield run
    finally:
        origin.slow_seconds = 0.0


# -- 1. restart ------------------------------------------------------------------------------


def test_broker_app_and_node_restarts_mid_flow_lose_nothing(node, broken_http, tmp_path):  # type: ignore[no-untyped-def]
    # 0.1 s a file: the flow outlasts both faults (at the default 0.05 s it could end first)
    with flow("restart: stop_app/start_app + node", node, broken_http, tmp_path, slow=0.1) as run:
        run.post()
        run.progress(20)
        run.mid_flow()
        node.stop_app()
        time.sleep(2)
        node.start_app()
        run.progress(20, timeout=90)
        run.mid_flow()
        node.restart()
        run.finish(dup_bound=2 * WAVE)


# -- 2. freeze -------------------------------------------------------------------------------


def test_a_frozen_broker_is_detected_and_the_flow_resumes(node, broken_http, tmp_path):  # type: ignore[no-untyped-def]
    with flow(
        "freeze: SIGSTOP beam 8 s", node, broken_http, tmp_path, extra="broker_heartbeat 3\n"
    ) as run:
        run.post()
        run.progress(20)
        run.mid_flow()
        beam = ck.beam_pid(node)
        assert beam is not None, "no beam.smp process for the node"
        os.kill(beam, signal.SIGSTOP)
        try:
            time.sleep(8)
        finally:
            os.kill(beam, signal.SIGCONT)
        run.finish(dup_bound=WAVE)
        log = run.fleet.log_text()
        # 8 s of silence is more than twice the 3 s heartbeat: each instance must notice
        assert log.count("broker connection lost") >= INSTANCES, run.fleet.tail()


# -- 3. connection-close storm ------------------------------------------------------------------


def test_a_connection_close_storm_loses_nothing(node, broken_http, tmp_path):  # type: ignore[no-untyped-def]
    # 0.1 s a file: the flow outlasts the first closes (at 0.05 s it could end first)
    with flow("close storm: 1/s for 10 s", node, broken_http, tmp_path, slow=0.1) as run:
        run.post()
        run.progress(20)
        closes = 0
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if closes < 3:  # the first closes must land mid-flow; later ones may find it done
                run.mid_flow()
            node.close_all_connections(f"chaos storm {closes}")
            closes += 1
            time.sleep(1.0)
        run.finish(dup_bound=closes * WAVE)


# -- 4. silent blackhole -------------------------------------------------------------------------


class Blackhole:
    """A TCP forwarder on 127.0.0.1 in front of ``upstream``; ``drop()`` makes every
    connection open now silently swallow what it gets (sockets stay open, nothing is
    forwarded, nothing refused) and new ones do the same until ``restore()``. Connections
    swallowed once stay silent, as a flow whose packets were lost would."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.dropping = threading.Event()
        self.accepted = 0
        self._closing = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="blackhole").start()

    def drop(self) -> None:
        self.dropping.set()

    def restore(self) -> None:
        self.dropping.clear()

    def close(self) -> None:
        self._closing.set()
        self.listener.close()
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, server]
            dead = threading.Event()  # this connection has swallowed traffic: silent for good
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b, dead), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, dead: threading.Event) -> None:
        while not self._closing.is_set():
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if self.dropping.is_set():
                dead.set()
            if not data:
                # an end while silent is swallowed too: the peer must find out by heartbeats
                if not dead.is_set():
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                return
            if dead.is_set():
                continue
            try:
                dst.sendall(data)
            except OSError:
                return


def test_a_silent_blackhole_is_detected_by_heartbeats_and_the_flow_resumes(  # type: ignore[no-untyped-def]
    node, broken_http, tmp_path
):
    hole = Blackhole(node.port)
    try:
        with flow(
            "blackhole: silent 15 s, hb 5 s",
            node,
            broken_http,
            tmp_path,
            extra="broker_heartbeat 5\n",
            broker_port=hole.port,
        ) as run:
            run.post()
            run.progress(20)
            run.mid_flow()
            before = hole.accepted
            hole.drop()
            time.sleep(15)  # three heartbeat intervals of silence
            # noticed while the link is still silent (two intervals), not after it returns
            noticed = run.fleet.log_text().count("broker connection lost")
            hole.restore()
            assert noticed >= INSTANCES, run.fleet.tail()
            run.finish(dup_bound=WAVE, timeout=60)
            assert hole.accepted > before, "no instance reconnected after the blackhole"
    finally:
        hole.close()


# -- 5. resource alarm -----------------------------------------------------------------------


def test_a_memory_alarm_blocking_publishers_loses_nothing(node, broken_http, tmp_path):  # type: ignore[no-untyped-def]
    with flow(
        "memory alarm: 8 s, poster + reports",
        node,
        broken_http,
        tmp_path,
        count=150,
        extra="report_back on\n",
    ) as run:
        run.post()
        run.progress(20)
        late = ck.make_batch(broken_http.root, run.batch.tag, 150, size=4000, sub="late")
        run.batch = run.batch + late
        node.ctl("set_vm_memory_high_watermark", "0.0001")
        try:
            ck.wait_until(
                lambda: "memory" in node.ctl("eval", "rabbit_alarm:get_alarms()."), 20, "the alarm"
            )
            poster = ck.post_process(
                run.site, run.base_url, broken_http.root, late.paths, tmp_path / "post.log"
            )
            time.sleep(8)
            assert poster.poll() is None, "sr_post ended while the broker blocked it"
        finally:
            node.ctl("set_vm_memory_high_watermark", "0.4")
        rc = poster.wait(90)
        assert rc == 0, (tmp_path / "post.log").read_text()[-3000:]
        run.finish(dup_bound=WAVE)


# -- 6. consumer timeout ---------------------------------------------------------------------


def test_a_consumer_timeout_leads_to_redelivery_and_no_loss(node, broken_http, tmp_path):  # type: ignore[no-untyped-def]
    node.ctl("eval", "application:set_env(rabbit, consumer_timeout, 3000).")
    node.ctl("eval", "application:set_env(rabbit, channel_tick_interval, 1000).")
    try:
        with flow(
            "consumer timeout: 3 s, 6 s transfers",
            node,
            broken_http,
            tmp_path,
            count=60,
            slow=6.0,
        ) as run:
            run.post()
            # the broker closes the channel of an instance holding a notice unacked too long
            ck.wait_until(
                lambda: "delivery acknowledgement" in run.fleet.log_text(),
                60,
                "an instance to see the broker time its consumer out\n" + run.fleet.tail(1500),
            )
            run.finish(dup_bound=2 * WAVE)
    finally:
        node.ctl("eval", "application:set_env(rabbit, consumer_timeout, 1800000).")
        node.ctl("eval", "application:set_env(rabbit, channel_tick_interval, 60000).")


# -- 7. SIGKILL storm ------------------------------------------------------------------------


def test_a_sigkill_storm_loses_nothing_and_leaves_nothing(node, broken_http, tmp_path):  # type: ignore[no-untyped-def]
    rng = random.Random(7)
    with flow(
        "SIGKILL storm: every 2 s for 15 s",
        node,
        broken_http,
        tmp_path,
        size=120_000,
        slow=0.2,
    ) as run:
        run.post()
        run.progress(10)
        kills = 0
        end = time.monotonic() + 15
        while time.monotonic() < end:
            if kills < 3:  # the first kills must land mid-flow; later ones may find it done
                run.mid_flow()
            victim = rng.randrange(INSTANCES)
            run.fleet.kill(victim)
            kills += 1
            run.fleet.start(victim)
            time.sleep(2)
        run.finish(dup_bound=kills * PREFETCH)
        # the storm must have hit transfers in flight, and each restart cleaned them up
        assert "removed leftover in-flight file" in run.fleet.log_text(), run.fleet.tail()


# -- 8. graceful stop ------------------------------------------------------------------------


def test_a_graceful_stop_under_load_leaves_no_tmp_and_the_restart_finishes(  # type: ignore[no-untyped-def]
    node, broken_http, tmp_path
):
    with flow(
        "graceful stop: SIGTERM mid-transfer",
        node,
        broken_http,
        tmp_path,
        size=120_000,
        slow=0.3,
    ) as run:
        run.post()
        run.progress(10)
        run.mid_flow()
        codes = run.fleet.stop()
        assert codes == dict.fromkeys(range(INSTANCES), 0), run.fleet.tail()
        left = ck.scan(run.dest, run.batch).leftovers
        assert left == [], f"left in flight by a graceful stop: {left[:10]}"
        run.fleet.start()
        run.finish(dup_bound=WAVE)


def test_a_graceful_stop_during_transfers_slower_than_the_stop_timeout_leaves_no_tmp(  # type: ignore[no-untyped-def]
    node, broken_http, tmp_path
):
    """``sr_subscribe stop`` sends SIGKILL 10 s after SIGTERM: transfers that would take
    longer must be given up (and their notices left for redelivery) within that time."""
    with flow(
        "graceful stop: 20 s transfers",
        node,
        broken_http,
        tmp_path,
        count=40,
        size=120_000,
        slow=20.0,
        extra="retry_delay 1\n",
    ) as run:
        run.post()
        ck.wait_until(
            lambda: len(ck.scan(run.dest, run.batch).leftovers) >= INSTANCES,
            30,
            "transfers in flight on every instance",
        )
        started = time.monotonic()
        codes = run.fleet.stop(timeout=10.0)
        took = time.monotonic() - started
        assert run.fleet.crashed == [], f"not stopped within 10 s ({took:.1f} s)"
        assert codes == dict.fromkeys(range(INSTANCES), 0), run.fleet.tail()
        left = ck.scan(run.dest, run.batch).leftovers
        assert left == [], f"left in flight by a graceful stop: {left[:10]}"
        run.origin.slow_seconds = 0.0
        run.fleet.start()
        run.finish(dup_bound=WAVE)


# -- 9. amqps with a bad certificate ------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    sans: list[x509.GeneralName],
    days: tuple[int, int],
) -> bytes:
    """A certificate valid from ``days[0]`` to ``days[1]`` days from now (negative: past)."""
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_amqps_with_an_expired_or_wrong_host_certificate_is_refused_and_retried(  # type: ignore[no-untyped-def]
    broken_http, tmp_path
):
    ca_key, server_key = _key(), _key()
    ca = _cert("chaos test CA", ca_key, None, [], (-30, 30))
    loopback = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    expired = _cert("127.0.0.1", server_key, ("chaos test CA", ca_key), loopback, (-20, -1))
    wrong_host = _cert(
        "wrong.example", server_key, ("chaos test CA", ca_key), [x509.DNSName("wrong.example")],
        (-1, 30),
    )  # fmt: skip
    (tmp_path / "ca.pem").write_bytes(ca)
    tls_node = start_rabbitmq(tls=(ca, expired, _pem_key(server_key)))
    try:
        assert tls_node.tls_port is not None
        site = Site(tmp_path / "site", tls_node.port).setup()
        tag = unique("tls")
        batch = ck.make_batch(broken_http.root, tag, 20)
        with ck.fleet(site, tag, tmp_path / "dest", tmp_path / "logs") as f:
            # declared (and posted to) over plain amqp; the subscribers only get amqps
            f.declare()
            assert ck.post_batch(site, broken_http.base_url, broken_http.root, batch) == 0
            for name in f.names:
                conf = site.config_dir / "subscribe" / f"{name}.conf"
                text = conf.read_text().replace(
                    f"amqp://guest@127.0.0.1:{tls_node.port}/",
                    f"amqps://guest@127.0.0.1:{tls_node.tls_port}/",
                )
                conf.write_text(text)
            cred = site.config_dir / "credentials.conf"
            cred.write_text(
                cred.read_text() + f"amqps://guest:guest@127.0.0.1:{tls_node.tls_port}/\n"
            )
            f.env["SSL_CERT_FILE"] = str(tmp_path / "ca.pem")
            f.start(wait=False)  # they cannot consume: the certificate is bad
            for problem, cert in (
                (r"certificate has expired", None),
                (r"mismatch|doesn't match|not valid for", wrong_host),
            ):
                if cert is not None:
                    (tls_node.base_dir / "tls" / "cert.pem").write_bytes(cert)
                    tls_node.reload_tls()
                    mark = len(f.log_text())
                else:
                    mark = 0
                ck.wait_until(
                    lambda p=problem, m=mark: (
                        len(re.findall(f"(?i){p}", f.log_text()[m:])) >= 2 * INSTANCES
                    ),
                    40,
                    f"each instance to refuse the certificate twice ({problem})\n" + f.tail(2000),
                )
            f.check_alive()
            log = f.log_text()
            assert "Traceback" not in log, f.tail(4000)
            assert ck.scan(f.dest, batch).verified == set(), "consumed over an untrusted link"
            assert ck.queue_depth(tls_node, f.queue) == batch.announced
            # a good certificate at last: the instances, still retrying, now take everything
            good = _cert("127.0.0.1", server_key, ("chaos test CA", ca_key), loopback, (-1, 30))
            (tls_node.base_dir / "tls" / "cert.pem").write_bytes(good)
            tls_node.reload_tls()
            tally = ck.settle("amqps: expired, wrong host, then good", f, batch, tls_node, 60)
            tally.assert_clean(dup_bound=0)
    finally:
        tls_node.stop()
        shutil.rmtree(tls_node.base_dir, ignore_errors=True)


# -- 10. kill during the retry-queue drain -----------------------------------------------------


def test_a_kill_during_the_retry_queue_drain_loses_nothing(node, broken_http, tmp_path):  # type: ignore[no-untyped-def]
    with flow(
        "retry drain: 404 then SIGKILL",
        node,
        broken_http,
        tmp_path,
        count=24,
        slow=0.0,
        extra="retry_delay 2\nretry_delay_max 3\n",
    ) as run:
        # announced with their sums while the origin answers 404 for them (as in the next test)
        broken_http.absent = str(run.batch.src.relative_to(broken_http.root))
        try:
            run.post()
            ck.wait_until(
                lambda: run.fleet.log_text().count("queued for retry") >= run.batch.announced,
                60,
                "every notice in the retry queue\n" + run.fleet.tail(1500),
            )
        finally:
            broken_http.slow_seconds = 0.1
            broken_http.absent = ""
        run.progress(5, timeout=60)
        run.mid_flow()
        for victim in range(INSTANCES):
            run.fleet.kill(victim)
        time.sleep(1)
        run.fleet.start()
        run.finish(dup_bound=WAVE)


def test_the_retry_queue_drains_at_the_speed_of_the_flow_once_the_origin_is_back(  # type: ignore[no-untyped-def]
    node, broken_http, tmp_path
):
    with flow(
        "retry backlog: 120 x 404, then present",
        node,
        broken_http,
        tmp_path,
        count=120,
        slow=0.0,
        extra="retry_delay 1\nretry_delay_max 1\n",
    ) as run:
        # the origin answers 404 from before the post (hiding the files after it raced with
        # subscribers that fetched them while the poster was still running)
        broken_http.absent = str(run.batch.src.relative_to(broken_http.root))
        try:
            run.post()
            ck.wait_until(
                lambda: run.fleet.log_text().count("queued for retry") >= run.batch.announced,
                60,
                "every notice in the retry queue\n" + run.fleet.tail(1500),
            )
        finally:
            broken_http.absent = ""
        # 120 small files from a local origin take well under a second when fresh; 20 s
        # leaves room for the retry delay and a slow machine
        ck.wait_until(lambda: run.verified() == run.batch.announced, 20, "the retry queue to drain")
        run.finish(dup_bound=0)
