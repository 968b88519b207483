"""The ack rule (spec 1.4), checked the same way for every consuming component.

A delivery is acked only once its outcome is durable: the outgoing notice confirmed, then the
report published, then the ack; a failure sent to the disk retry queue is fsync'd before the
ack; a publish that fails leaves the delivery unacked (redelivered, or held until the publish
succeeds). :class:`Recorder` wraps every broker session a component opens, and the retry
queue's sync point, and writes down the ordered events; :func:`run_scenario` runs one
:class:`Scenario` and checks its events.

The scenarios run against the in-memory broker (tests/unit/test_ack_rule.py) and against a
real RabbitMQ node (tests/integration/test_ack_rule_rabbitmq.py), both parametrized over
:data:`SCENARIOS`, so the two cannot drift. Only the :class:`Backend` differs.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pytest

from sarra.broker.base import Broker, BrokerUrl, Delivery, QueueSpec
from sarra.codec import v02
from sarra.codec.timestamps import now_timestamp
from sarra.components import sender as sender_module
from sarra.components.runner import ConsumerComponent
from sarra.components.sarra import SarraComponent
from sarra.components.sender import SenderComponent
from sarra.components.shovel import ShovelComponent
from sarra.components.subscribe import SubscribeComponent
from sarra.components.winnow import WinnowComponent
from sarra.config.settings import Settings
from sarra.errors import BrokerError, MessageError
from sarra.flow.retryqueue import RetryItem, RetryQueue
from sarra.notice import Checksum, Notice, PartSpec, Report, WireMessage
from tests.integration.flowkit import Site, site_env, unique

# -- events --------------------------------------------------------------------------------

DELIVER = "deliver"  # a delivery of the notice reached the component
PUBLISH = "publish-confirmed"  # an outgoing notice about the file, confirmed by the broker
REPORT = "report-published"  # a report about the file, confirmed by the broker
PUBLISH_FAILED = "publish-failed"  # a publish about the file raised (injected)
RETRY_FSYNC = "retry-fsynced"  # a retry queue entry about the file, written and fsync'd
ACK = "ack"  # the delivery of the notice acked (on the connection it came from)


@dataclass(frozen=True)
class Event:
    kind: str
    name: str  # the file's base name
    redelivered: bool = False


def _name_of(m: WireMessage) -> tuple[str, str] | None:
    """(kind, file name) of a published message, or None when it is not about a file."""
    try:
        decoded = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
    except MessageError:
        return None
    if isinstance(decoded, Report):
        return REPORT, os.path.basename(decoded.notice.path)
    if isinstance(decoded, Notice):
        return PUBLISH, os.path.basename(decoded.path)
    return None


class Recorder:
    """Ordered events of one run, from every session it wrapped and the retry queue."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[Event] = []
        self._fail: set[tuple[str, str]] = set()  # (kind, name): fail the next such publish
        #: notices in the component's queue once it stopped (unacked ones are requeued)
        self.left_in_queue = -1

    def record(self, kind: str, name: str, redelivered: bool = False) -> None:
        with self._lock:
            self.events.append(Event(kind, name, redelivered))

    def of(self, name: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.name == name]

    def kinds(self, name: str) -> list[str]:
        return [e.kind for e in self.of(name)]

    def fail_next_publish(self, kind: str, name: str) -> None:
        """The next publish carrying a ``kind`` message about ``name`` raises BrokerError
        (nothing of it is sent: as a nack, the whole batch is unconfirmed)."""
        with self._lock:
            self._fail.add((kind, name))

    def _take_fault(self, found: list[tuple[str, str]]) -> tuple[str, str] | None:
        with self._lock:
            for key in found:
                if key in self._fail:
                    self._fail.discard(key)
                    return key
        return None

    def wrap(self, session: Broker) -> RecordingSession:
        return RecordingSession(session, self)

    @contextmanager
    def watching_retry_queue(self) -> Iterator[None]:
        """Record each retry queue entry added, once its write was fsync'd."""
        real_append = RetryQueue._append
        real_fsync = os.fsync
        synced = threading.local()

        def fsync(fd: int) -> None:
            real_fsync(fd)
            fds: set[int] | None = getattr(synced, "fds", None)
            if fds is not None:
                fds.add(fd)

        def append(rq: RetryQueue, line: bytes) -> None:
            synced.fds = set()
            try:
                real_append(rq, line)
                was_synced = rq._fd in synced.fds
            finally:
                synced.fds = None
            record = json.loads(line)
            if was_synced and record.get("op") == "put":
                wire = RetryItem._from_record(record).to_wire()
                found = _name_of(wire)
                if found is not None:
                    self.record(RETRY_FSYNC, found[1])

        mp = pytest.MonkeyPatch()
        mp.setattr(os, "fsync", fsync)
        mp.setattr(RetryQueue, "_append", append)
        try:
            yield
        finally:
            mp.undo()


class RecordingSession:
    """A :class:`Broker` that records deliveries, confirmed publishes and effective acks."""

    def __init__(self, inner: Broker, recorder: Recorder) -> None:
        self.inner = inner
        self.recorder = recorder
        #: (generation, delivery tag) -> file name, for deliveries not yet acked
        self._delivered: dict[tuple[int, int], str] = {}

    @property
    def url(self) -> BrokerUrl:
        return self.inner.url

    @property
    def generation(self) -> int:
        return self.inner.generation

    @property
    def connected(self) -> bool:
        return self.inner.connected

    def connect(self) -> None:
        self.inner.connect()

    def connect_with_backoff(self, max_wait: float | None = None) -> None:
        self.inner.connect_with_backoff(max_wait)

    def close(self) -> None:
        self.inner.close()

    def declare_exchange(self, name: str, durable: bool = True) -> None:
        self.inner.declare_exchange(name, durable)

    def declare_queue(self, spec: QueueSpec) -> tuple[int, int]:
        return self.inner.declare_queue(spec)

    def queue_exists(self, name: str) -> bool:
        return self.inner.queue_exists(name)

    def queue_counts(self, name: str) -> tuple[int, int]:
        return self.inner.queue_counts(name)

    def take_created_queues(self) -> list[str]:
        return self.inner.take_created_queues()

    def delete_queue(self, name: str) -> None:
        self.inner.delete_queue(name)

    def delete_exchange(self, name: str) -> None:
        self.inner.delete_exchange(name)

    def consume(self, queue: str, prefetch: int, on_delivery: Callable[[Delivery], None]) -> None:
        def recorded(d: Delivery) -> None:
            found = _name_of(d.message)
            name = found[1] if found is not None else f"#{d.delivery_tag}"
            self._delivered[(d.generation, d.delivery_tag)] = name
            self.recorder.record(DELIVER, name, d.redelivered)
            on_delivery(d)

        self.inner.consume(queue, prefetch, recorded)

    def cancel(self, queue: str) -> None:
        self.inner.cancel(queue)

    def fileno(self) -> int | None:
        return self.inner.fileno()

    def poll(self, timeout: float) -> int:
        return self.inner.poll(timeout)

    def _acked_by(self, d: Delivery, multiple: bool) -> list[tuple[int, int]]:
        """What an ack of ``d`` settles on the broker: nothing when it is stale."""
        if d.generation != self.inner.generation or not self.inner.connected:
            return []
        if not multiple:
            return [(d.generation, d.delivery_tag)]
        return sorted(k for k in self._delivered if k[0] == d.generation and k[1] <= d.delivery_tag)

    def ack(self, d: Delivery, multiple: bool = False) -> None:
        keys = self._acked_by(d, multiple)
        self.inner.ack(d, multiple)
        for key in keys:
            name = self._delivered.pop(key, None)
            if name is not None:
                self.recorder.record(ACK, name)

    def reject(self, d: Delivery, requeue: bool) -> None:
        keys = self._acked_by(d, False)
        self.inner.reject(d, requeue)
        for key in keys:
            self._delivered.pop(key, None)

    def publish(self, messages: Sequence[WireMessage]) -> None:
        found = [f for f in map(_name_of, messages) if f is not None]
        fault = self.recorder._take_fault(found)
        if fault is not None:
            self.recorder.record(PUBLISH_FAILED, fault[1])
            raise BrokerError(f"injected: publish of a {fault[0]} about {fault[1]} nacked")
        self.inner.publish(messages)
        for kind, name in found:
            self.recorder.record(kind, name)


# -- where the files come from -------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def http_root(root: Path) -> Iterator[str]:
    """Serve ``root`` over HTTP on loopback; yields the base URL."""
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# -- components and scenarios ----------------------------------------------------------------

SUCCESS = "success"
RETRY = "retry"
PUBLISH_FAILURE = "publish-failure"


@dataclass(frozen=True)
class Rig:
    """How a component is configured for the scenarios, and what it publishes."""

    component: str
    make: Callable[[Callable[[BrokerUrl, Settings, str], Broker]], ConsumerComponent]
    #: it publishes an outgoing notice about each file it handles (before the report)
    outgoing: bool
    #: what a failed publish does to the delivery: redelivered (the connection is dropped)
    #: or held unacked until the publish is retried and succeeds
    redelivers_after_publish_failure: bool


RIGS = {
    "subscribe": Rig("subscribe", SubscribeComponent, False, True),
    "sarra": Rig("sarra", SarraComponent, True, True),
    "sender": Rig("sender", SenderComponent, True, True),
    # the winnow publishes in before_settle: a failed publish keeps the acks waiting, and
    # the next flush publishes again on the same connection
    "winnow": Rig("winnow", WinnowComponent, True, False),
    # the shovel's copy is the loop's outgoing notice: a failed publish drops the connection
    "shovel": Rig("shovel", ShovelComponent, True, True),
}


@dataclass(frozen=True)
class Scenario:
    component: str
    case: str

    @property
    def id(self) -> str:
        return f"{self.component}-{self.case}"


#: every consuming component, every case; the winnow and the shovel do no transfer (nothing
#: of theirs can fail into the retry queue), so they have no retry case
SCENARIOS = [
    Scenario(c, case)
    for c in RIGS
    for case in (SUCCESS, RETRY, PUBLISH_FAILURE)
    if not (c in ("winnow", "shovel") and case == RETRY)
]


class Backend(Protocol):
    """The broker the scenarios run against."""

    broker_port: int

    def session(self, url: BrokerUrl, s: Settings, name: str) -> Broker: ...

    def publisher(self, url: BrokerUrl) -> Broker: ...


@runtime_checkable
class MqttBackend(Protocol):
    """An MQTT broker (tests/integration/test_ack_rule_mqtt.py): v03 on the wire, its own URL
    and credentials, and no queue counts (what is left is read back from the session)."""

    broker_port: int
    broker: str  # the configuration's broker URL
    credentials_line: str
    publisher_url: BrokerUrl

    def session(self, url: BrokerUrl, s: Settings, name: str) -> Broker: ...

    def publisher(self, url: BrokerUrl) -> Broker: ...

    def wait_subscribed(self, queue: str) -> None: ...

    def left(self, queue: str) -> int: ...


def _config(rig: Rig, broker: str, tag: str, tmp: Path, base_url: str, v03: bool = False) -> str:
    common = f"broker {broker}\nexpire 10m\nprefetch 10\nattempts 1\naccept .*\n"
    if v03:  # MQTT: v03 in and out, reports included
        common += "topic_prefix v03\npost_format v03\npost_topic_prefix v03\n"
    reports = f"report_back on\nreport_exchange xr_{tag}\n"
    if rig.component == "subscribe":
        return (
            common + reports + f"exchange xin_{tag}\ndirectory {tmp / 'dest'}\n"
            "base_url_private on\n"
        )
    if rig.component == "sarra":
        return (
            common + reports + f"declare source alice{tag}\ncluster pump{tag}\n"
            f"exchange xs_alice{tag}\nsubtopic #\ndirectory {tmp / 'tree'}\n"
            f"post_broker {broker}\npost_exchange xout_{tag}\n"
            f"post_base_url {base_url}/pub\npost_base_dir {tmp / 'tree'}\n"
        )
    if rig.component == "sender":
        return (
            common + reports + f"exchange xin_{tag}\ndestination file:///\n"
            f"base_dir {tmp / 'src'}\ndirectory {tmp / 'remote' / 'in'}\n"
            f"post_broker {broker}\npost_exchange xout_{tag}\n"
        )
    if rig.component == "shovel":
        return (
            common + reports + f"exchange xin_{tag}\npost_broker {broker}\n"
            f"post_exchange xout_{tag}\npost_topic_prefix v03\npost_format v03\n"
        )
    assert rig.component == "winnow"
    return common + reports + f"exchange xin_{tag}\npost_exchange xout_{tag}\n"


def _input_exchange(rig: Rig, tag: str) -> str:
    return f"xs_alice{tag}" if rig.component == "sarra" else f"xin_{tag}"


def _notice(
    exchange: str, base_url: str, path: str, data: bytes, tag: str, v03: bool = False
) -> WireMessage:
    notice = v02.make_notice(
        exchange=exchange,
        topic_prefix="v02.post",
        pubtime=now_timestamp(),
        base_url=base_url,
        path=path,
        checksum=Checksum("d", hashlib.md5(data).hexdigest()),
        parts=PartSpec("1", len(data), 1, 0, 0),
        headers={"to_clusters": f"pump{tag}"},
    )
    return v02.encode(notice, exchange, post_format="v03" if v03 else "v02")


def run_scenario(scenario: Scenario, backend: Backend | MqttBackend, tmp: Path) -> Recorder:
    """Run one component on ``backend`` with one notice about ``f.bin``, the case's fault
    applied, until the notice is acked; return the events for :func:`check_scenario`."""
    rig = RIGS[scenario.component]
    tag = unique("")
    site = Site(tmp / "site", backend.broker_port).setup()
    mqtt = backend if isinstance(backend, MqttBackend) else None
    broker, publisher_url = site.broker, site.broker_url()
    if mqtt is not None:
        broker, publisher_url = mqtt.broker, mqtt.publisher_url
        cred = site.config_dir / "credentials.conf"
        cred.write_text(cred.read_text() + mqtt.credentials_line + "\n")
    (site.config_dir / rig.component).mkdir(parents=True, exist_ok=True)
    recorder = Recorder()
    name = "f.bin"
    data = hashlib.sha256(tag.encode()).digest() * 64
    src = tmp / "src"
    src.mkdir()
    if scenario.case != RETRY or scenario.component == "sender":
        (src / name).write_bytes(data)  # a retry case lacks it at the origin (a 404)
    remote = tmp / "remote"
    if scenario.component == "sender" and scenario.case == RETRY:
        # a file where the remote directory's parent should be: ENOTDIR, as a 404
        remote.write_text("not a directory\n")
    if scenario.case == PUBLISH_FAILURE:
        recorder.fail_next_publish(PUBLISH if rig.outgoing else REPORT, name)

    def factory(url: BrokerUrl, s: Settings, label: str) -> Broker:
        return recorder.wrap(backend.session(url, s, label))

    with (
        http_root(tmp) as base_url,
        recorder.watching_retry_queue(),
        pytest.MonkeyPatch.context() as mp,
    ):
        # the sender's file: destination works through FileTransport, which is tested
        mp.setattr(sender_module, "SCHEMES", ("sftp", "file"))
        conf = site.config_dir / rig.component / f"ack_{tag}.conf"
        conf.write_text(_config(rig, broker, tag, tmp, base_url, v03=mqtt is not None))
        with site_env(site):
            cfg = site.load(rig.component, f"ack_{tag}")
            component = rig.make(factory)
            component.declare(cfg)
            exchange = _input_exchange(rig, tag)
            wire = _notice(exchange, f"{base_url}/src", f"/{name}", data, tag, v03=mqtt is not None)
            with _running(component, cfg):
                if mqtt is not None:  # an MQTT session begins when the consumer subscribes
                    mqtt.wait_subscribed(component.queue_name(cfg, 0))
                pub = backend.publisher(publisher_url)
                pub.connect()
                try:
                    pub.publish([wire])
                finally:
                    pub.close()
                _wait(lambda: ACK in recorder.kinds(name), f"the ack of {name} ({scenario.id})")
            # stopped: whatever it left unacked went back to its queue
            queue = component.queue_name(cfg, 0)
            if mqtt is not None:
                recorder.left_in_queue = mqtt.left(queue)
                return recorder
            check = backend.publisher(site.broker_url())
            check.connect()
            try:
                recorder.left_in_queue = check.queue_counts(queue)[0]
            finally:
                check.close()
    return recorder


def check_scenario(scenario: Scenario, recorder: Recorder) -> None:
    """The ack rule, for what ``scenario`` did to ``f.bin``."""
    rig = RIGS[scenario.component]
    events = recorder.of("f.bin")
    kinds = [e.kind for e in events]
    assert recorder.left_in_queue == 0
    assert kinds.count(ACK) == 1, kinds
    ack = kinds.index(ACK)
    assert DELIVER not in kinds[ack:], kinds
    before = kinds[:ack]
    if scenario.case == PUBLISH_FAILURE:
        failed = kinds.index(PUBLISH_FAILED)
        assert failed < ack, kinds
        if rig.redelivers_after_publish_failure:
            # the connection was dropped, the broker delivered the notice again, and only
            # that second delivery's outcome was acked
            redeliveries = [e for e in events[failed:ack] if e.kind == DELIVER]
            assert redeliveries and all(e.redelivered for e in redeliveries), events
        else:
            assert kinds.count(DELIVER) == 1, kinds
        before = kinds[failed + 1 : ack]
    if scenario.case == RETRY:
        # the failure is durable in the retry queue before the delivery is acked, and
        # nothing was announced about a file that is not there
        assert RETRY_FSYNC in before, kinds
        assert PUBLISH not in kinds, kinds
        assert REPORT in before and before.index(RETRY_FSYNC) < before.index(REPORT), kinds
        return
    assert RETRY_FSYNC not in kinds, kinds
    assert REPORT in before, kinds
    if rig.outgoing:
        # the outgoing notice is confirmed before its report, both before the ack
        assert PUBLISH in before, kinds
        assert before.index(PUBLISH) < before.index(REPORT), kinds


@contextmanager
def _running(component: ConsumerComponent, cfg: Settings) -> Iterator[None]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            component.run(cfg, 0, stop)
        except BaseException as e:  # surfaced below
            errors.append(e)

    thread = threading.Thread(target=target, name=f"ackrule-{component.name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive(), f"{component.name} did not stop within 60 s"
    if errors:
        raise errors[0]


def _wait(pred: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
