"""sr_shovel on the in-memory broker: what is copied, where, in which format; what is refused.

The same component runs against real RabbitMQ nodes (two of them, one restarted mid-stream) in
tests/integration/test_shovel.py; the ack rule is checked for it in tests/ackrule.py.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sarra.broker.base import Broker, BrokerUrl, Delivery, QueueSpec
from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.codec import v02
from sarra.codec.timestamps import now_timestamp
from sarra.components import REGISTRY
from sarra.components.shovel import ShovelComponent
from sarra.config.settings import Settings, load_settings
from sarra.errors import ConfigError
from sarra.flow.shovel import rewrite_topic
from sarra.notice import Checksum, Notice, PartSpec, WireMessage

URL = BrokerUrl("127.0.0.1", 5672, "guest", "guest")


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The credentials are read from SR_CONFIG_DIR when a session is made."""
    monkeypatch.setenv("SR_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SR_STATE_DIR", str(tmp_path / "state"))


def _settings(tmp_path: Path, body: str) -> Settings:
    conf = tmp_path / "config" / "shovel"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "t.conf").write_text("broker amqp://guest@127.0.0.1/\nexchange xin\n" + body)
    cred = tmp_path / "config" / "credentials.conf"
    cred.write_text("amqp://guest:guest@127.0.0.1/\n")
    cred.chmod(0o600)
    env = {"SR_CONFIG_DIR": str(tmp_path / "config"), "SR_STATE_DIR": str(tmp_path / "state")}
    return load_settings("shovel", "t", [], env=env)


def _notice(path: str, topic_prefix: str = "v02.post", **headers: str) -> Notice:
    data = path.encode()
    return v02.make_notice(
        exchange="xin",
        topic_prefix=topic_prefix,
        pubtime=now_timestamp(),
        base_url="https://origin.example.com/data",
        path=path,
        checksum=Checksum("d", hashlib.md5(data).hexdigest()),
        parts=PartSpec("1", len(data), 1, 0, 0),
        headers=headers,
    )


class Run:
    def __init__(self, broker: MemoryBroker, tap: MemorySession) -> None:
        self.broker = broker
        self.tap = tap

    def publish(self, *wires: WireMessage) -> None:
        pub = self.broker.session("pub")
        pub.connect()
        pub.publish(list(wires))
        pub.close()


@contextmanager
def shovelling(
    tmp_path: Path, body: str, out: str = "xout", key: str = "#"
) -> Iterator[tuple[Run, list[WireMessage]]]:
    """Run the shovel on a memory broker; yields the runner and the list of copies read from
    a queue bound to ``out``."""
    broker = MemoryBroker()
    cfg = _settings(tmp_path, body)

    def factory(url: BrokerUrl, s: Settings, name: str) -> Broker:
        return MemorySession(broker, url, name=name)

    component = ShovelComponent(factory)
    tap = broker.session("tap")
    tap.connect()
    tap.declare_exchange(out)
    tap.declare_queue(QueueSpec("q_tap", ((out, key),)))
    copies: list[WireMessage] = []

    def on(d: Delivery) -> None:
        copies.append(d.message)
        tap.ack(d)

    tap.consume("q_tap", 100, on)
    component.declare(cfg)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            component.run(cfg, 0, stop)
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    run = Run(broker, tap)
    try:
        yield run, copies
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and broker.unacked() + len(
            broker.ready(component.queue_name(cfg))
        ):
            tap.poll(0.05)
            time.sleep(0.02)
        tap.poll(0.1)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    if errors:
        raise errors[0]
    assert broker.unacked() == 0


def _wait_copies(copies: list[WireMessage], n: int, run: Run) -> None:
    deadline = time.monotonic() + 10
    while len(copies) < n and time.monotonic() < deadline:
        run.tap.poll(0.05)


def test_the_registry_and_the_entry_point_know_the_shovel() -> None:
    assert isinstance(REGISTRY["shovel"], ShovelComponent)
    text = Path(__file__).resolve().parents[2].joinpath("pyproject.toml").read_text()
    assert 'sr_shovel = "sarra.cli.main:sr_shovel"' in text


def test_a_v02_notice_is_copied_as_v03_with_the_topic_prefix_rewritten(tmp_path: Path) -> None:
    n = _notice("radar/CASBV/a file.h5", extra_header="kept")
    body = "post_exchange xout\npost_topic_prefix v03\npost_format v03\n"
    with shovelling(tmp_path, body) as (run, copies):
        run.publish(v02.to_wire(n, exchange="xin"))
        _wait_copies(copies, 1, run)
    assert len(copies) == 1
    m = copies[0]
    assert m.exchange == "xout"
    assert m.routing_key == "v03.radar.CASBV"
    assert m.content_type == "application/json"
    obj = json.loads(m.body)
    assert obj["relPath"].lstrip("/") == n.path  # sr3 form: not %-escaped
    assert obj["extra_header"] == "kept"
    back = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
    assert isinstance(back, Notice)
    assert (back.path, back.base_url, back.checksum) == (n.path, n.base_url, n.checksum)


def test_a_v03_notice_is_copied_as_v02(tmp_path: Path) -> None:
    n = _notice("obs/x.txt", topic_prefix="v03", source="alice")
    wire = v02.encode(n, "xin", post_format="v03")
    assert wire.content_type == "application/json"
    body = "topic_prefix v03\npost_exchange xout\npost_topic_prefix v02.post\n"
    with shovelling(tmp_path, body) as (run, copies):
        run.publish(wire)
        _wait_copies(copies, 1, run)
    assert len(copies) == 1
    m = copies[0]
    assert m.routing_key == "v02.post.obs"
    assert m.content_type == "text/plain"
    assert m.body.decode().split(" ")[1:] == [n.base_url, n.rel_path]
    assert dict(m.headers)["source"] == "alice"
    assert dict(m.headers)["sum"] == n.checksum.wire()


def test_accept_and_reject_choose_what_is_copied(tmp_path: Path) -> None:
    body = "post_exchange xout\nreject .*\\.tmp$\naccept .*/keep/.*\naccept_unmatch off\n"
    wires = [
        v02.to_wire(_notice(p), exchange="xin")
        for p in ("a/keep/one.txt", "a/keep/two.tmp", "a/other/three.txt", "b/keep/four.txt")
    ]
    with shovelling(tmp_path, body) as (run, copies):
        run.publish(*wires)
        _wait_copies(copies, 2, run)
        run.tap.poll(0.3)
    paths = sorted(v02.decode(m.exchange, m.routing_key, m.body, m.headers).path for m in copies)  # type: ignore[union-attr]
    assert paths == ["a/keep/one.txt", "b/keep/four.txt"]
    # v02 to v02, same prefix: the message is the one received but for its exchange
    assert all(m.routing_key.startswith("v02.post.") for m in copies)


def test_subtopic_binds_and_post_exchange_split_spreads_by_checksum(tmp_path: Path) -> None:
    body = "subtopic a.#\npost_exchange xout\npost_exchange_split 2\n"
    notices = [_notice(f"a/f{i}.txt") for i in range(6)] + [_notice("b/not_bound.txt")]
    broker_copies: dict[str, list[str]] = {}
    with shovelling(tmp_path, body, out="xout00") as (run, copies00):
        tap = run.broker.session("tap01")
        tap.connect()
        tap.declare_exchange("xout01")
        tap.declare_queue(QueueSpec("q_tap01", (("xout01", "#"),)))
        copies01: list[WireMessage] = []
        tap.consume("q_tap01", 100, lambda d: (copies01.append(d.message), tap.ack(d)))
        run.publish(*(v02.to_wire(n, exchange="xin") for n in notices))
        deadline = time.monotonic() + 10
        while len(copies00) + len(copies01) < 6 and time.monotonic() < deadline:
            tap.poll(0.02)
            run.tap.poll(0.02)
        tap.poll(0.2)
        run.tap.poll(0.1)
    for m in [*copies00, *copies01]:
        broker_copies.setdefault(m.exchange, []).append(m.routing_key)
    expected: dict[str, int] = {}
    for n in notices[:6]:
        x = v02.split_exchange("xout", n.checksum, 2)
        expected[x] = expected.get(x, 0) + 1
    assert {x: len(v) for x, v in broker_copies.items()} == expected


def test_rewrite_topic_replaces_the_prefix_or_rebuilds_from_the_path() -> None:
    n = _notice("a/b/c.txt")
    assert rewrite_topic(n, "v02.post", "v03") == "v03.a.b"
    assert rewrite_topic(n, "v02.post", "v02.post") == "v02.post.a.b"
    assert rewrite_topic(n, "v03", "x.y") == "x.y.a.b"  # not under the prefix: from the path


@pytest.mark.parametrize(
    ("body", "option"),
    [
        ("", "post_exchange"),
        ("post_exchange xout\nsuppress_duplicates 300\n", "suppress_duplicates"),
        ("post_exchange xout\ntopic_prefix v02.report\n", "topic_prefix"),
    ],
)
def test_settings_the_shovel_cannot_honour_are_refused(
    tmp_path: Path, body: str, option: str
) -> None:
    cfg = _settings(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        ShovelComponent(lambda u, s, n: MemorySession(MemoryBroker(), u, name=n)).run(
            cfg, 0, threading.Event()
        )
    assert caught.value.option == option


def test_post_broker_gives_the_default_post_exchange(tmp_path: Path) -> None:
    cfg = _settings(tmp_path, "post_broker amqp://bob@127.0.0.1:5673/\n")
    assert cfg.post_exchange == "xs_bob"


def test_header_lines_set_and_remove_headers_on_the_copies(tmp_path: Path) -> None:
    n = _notice("h/x.txt", keep="yes", drop_me="bye")
    body = "post_exchange xout\nheader added=here\nheader drop_me=none\n"
    with shovelling(tmp_path, body) as (run, copies):
        run.publish(v02.to_wire(n, exchange="xin"))
        _wait_copies(copies, 1, run)
    assert len(copies) == 1
    headers = dict(copies[0].headers)
    assert headers["added"] == "here" and headers["keep"] == "yes"
    assert "drop_me" not in headers
    assert headers["sum"] == n.checksum.wire()


@pytest.mark.parametrize("line", ["post_base_url https://x.example.com/", "strip 2", "sum s"])
def test_options_the_shovel_has_no_use_for_are_named_in_a_warning(
    tmp_path: Path, line: str
) -> None:
    cfg = _settings(tmp_path, f"post_exchange xout\n{line}\n")
    word = line.split()[0]
    assert [w for w in cfg.warnings if f"option {word!r} is ignored by shovel" in w], cfg.warnings
    assert "t.conf:4" in next(w for w in cfg.warnings if repr(word) in w)
