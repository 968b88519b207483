"""Helpers for end-to-end tests: isolated config dirs, in-process components, report capture."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from sarra.broker.base import BrokerUrl, Delivery, QueueSpec
from sarra.broker.session import BrokerSession
from sarra.codec import v02
from sarra.components.post import PostComponent
from sarra.components.subscribe import SubscribeComponent
from sarra.config.settings import load_settings
from sarra.errors import MessageError
from sarra.notice import Notice, Report, WireMessage

#: file names that need escaping (space, #), non-ASCII, and nested directories
AWKWARD = ["plain.txt", "with space.txt", "hash#mark.txt", "résumé.dat", "deep/er/nested file.bin"]


@dataclass
class Site:
    """An isolated sarra home: config and state directories, and a broker to talk to."""

    root: Path
    broker_port: int
    user: str = "guest"
    password: str = "guest"

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def broker(self) -> str:
        return f"amqp://{self.user}@127.0.0.1:{self.broker_port}/"

    @property
    def env(self) -> dict[str, str]:
        return {"SR_CONFIG_DIR": str(self.config_dir), "SR_STATE_DIR": str(self.state_dir)}

    def broker_url(self) -> BrokerUrl:
        return BrokerUrl("127.0.0.1", self.broker_port, self.user, self.password)

    def setup(self) -> Site:
        (self.config_dir / "subscribe").mkdir(parents=True, exist_ok=True)
        cred = self.config_dir / "credentials.conf"
        cred.write_text(f"amqp://{self.user}:{self.password}@127.0.0.1:{self.broker_port}/\n")
        cred.chmod(0o600)
        return self

    def write_subscribe(self, name: str, body: str) -> Path:
        """Write a subscriber config: ``broker`` and ``base_url_private on`` (the test servers
        listen on loopback, which subscribers refuse by default), then ``body``, which may
        turn it off again."""
        path = self.config_dir / "subscribe" / f"{name}.conf"
        path.write_text(f"broker {self.broker}\nbase_url_private on\n" + body)
        return path

    def mirror_subscription(self, tag: str, dest: Path, extra: str = "") -> str:
        """Write ``sub_<tag>``: what is posted under ``<tag>/`` on xs_guest, mirrored into
        ``dest`` (the tag stripped), plus ``extra`` lines; returns the config's name."""
        name = f"sub_{tag}"
        self.write_subscribe(
            name,
            f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
            f"expire 10m\n{extra}accept .*\n",
        )
        return name

    def load(self, component: str, name: str | None, options: list[tuple[str, str]] = ()) -> Any:  # type: ignore[assignment]
        return load_settings(component, name, list(options), env={**os.environ, **self.env})


def unique(prefix: str = "t") -> str:
    return f"{prefix}{secrets.token_hex(4)}"


@contextmanager
def site_env(site: Site) -> Iterator[None]:
    """Point the process at the site's config and state directories."""
    saved = {k: os.environ.get(k) for k in site.env}
    os.environ.update(site.env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def running_subscriber(site: Site, name: str) -> Iterator[threading.Event]:
    """Run instance 0 of a subscribe config in a thread; stopped (gracefully) on exit."""
    stop = threading.Event()
    errors: list[BaseException] = []
    with site_env(site):
        cfg = site.load("subscribe", name)
        component = SubscribeComponent()
        component.declare(cfg)

        def target() -> None:
            try:
                component.run(cfg, 0, stop)
            except BaseException as e:  # surfaced to the test below
                errors.append(e)

        thread = threading.Thread(target=target, name=f"subscribe-{name}", daemon=True)
        thread.start()
        try:
            yield stop
        finally:
            stop.set()
            thread.join(60)
    assert not thread.is_alive(), "subscriber did not stop within 60 s"
    if errors:
        raise errors[0]


def post(
    site: Site, base_url: str, base_dir: Path, paths: list[Path], *extra: tuple[str, str]
) -> int:
    """sr_post in-process, as the command line would run it."""
    options = [
        ("post_broker", site.broker),
        ("post_base_url", base_url),
        ("post_base_dir", str(base_dir)),
        *extra,
        *(("path", str(p)) for p in paths),
    ]
    with site_env(site):
        cfg = site.load("post", None, options)
        return PostComponent().run(cfg, 0, threading.Event())


@dataclass
class ExchangeTap:
    """Collects what is published on ``exchange`` with ``key``: a thread consumes a throw-away
    queue bound there and hands each message to :meth:`take` (what a subclass keeps), then
    acks it."""

    url: BrokerUrl
    exchange: str
    key: str = "#"
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def take(self, m: WireMessage) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        ready = threading.Event()

        def run() -> None:
            s = BrokerSession(self.url, name="tap")
            s.connect()
            s.declare_exchange(self.exchange)
            q = QueueSpec(
                f"q_{self.url.user}.tap.{secrets.token_hex(4)}",
                ((self.exchange, self.key),),
                durable=False,
                auto_delete=True,
            )
            s.declare_queue(q)

            def on(d: Delivery) -> None:
                self.take(d.message)
                s.ack(d)

            s.consume(q.name, 500, on)
            ready.set()
            while not self._stop.is_set():
                s.poll(0.1)
            s.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(30), f"{type(self).__name__} did not start"
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


@dataclass
class ReportTap(ExchangeTap):
    """Collects the reports published on an exchange (bound to ``v02.report.#``)."""

    key: str = "v02.report.#"
    reports: list[Report] = field(default_factory=list)
    raw: list[WireMessage] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)
    #: time.monotonic() at which each of ``reports`` arrived
    arrivals: list[float] = field(default_factory=list)

    def take(self, m: WireMessage) -> None:
        self.raw.append(m)
        try:
            decoded = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        except MessageError as e:
            self.undecodable.append(str(e))
        else:
            if isinstance(decoded, Report):
                self.reports.append(decoded)
                self.arrivals.append(time.monotonic())

    def codes(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for r in self.reports:
            out[r.code] = out.get(r.code, 0) + 1
        return out

    def about(self, path_suffix: str) -> list[Report]:
        return [r for r in self.reports if r.notice.path.endswith(path_suffix)]


def publish_raw(url: BrokerUrl, messages: list[WireMessage]) -> None:
    s = BrokerSession(url, name="raw-publisher")
    s.connect()
    try:
        for m in messages:
            s.declare_exchange(m.exchange)
        s.publish(messages)
    finally:
        s.close()


def notice_wire(notice: Notice) -> WireMessage:
    return v02.to_wire(notice, exchange=notice.exchange)


def wait_for(pred: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def md5_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def make_files(root: Path, names: list[str], size: int = 1000) -> list[Path]:
    out = []
    for i, name in enumerate(names):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(hashlib.sha256(f"{name}{i}".encode()).digest() * (size // 32 + 1))
        out.append(p)
    return out
