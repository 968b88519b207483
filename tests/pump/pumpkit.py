"""Helpers for pump tests: a pump (broker + nginx with etc/nginx/sarra.conf), components run
in threads or as foreground processes, and a tap on an exchange."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sarra.broker.base import BrokerUrl
from sarra.broker.session import BrokerSession
from sarra.codec import v02
from sarra.components import REGISTRY
from sarra.config.settings import load_settings
from sarra.errors import MessageError
from sarra.notice import Notice, Report, WireMessage
from tests.integration.flowkit import ExchangeTap
from tests.servers.nginx import NGINX, free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
SARRA_NGINX_CONF = REPO / "etc" / "nginx" / "sarra.conf"

_MAIN_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    include {dir}/sarra.conf;
}}
"""


@dataclass(frozen=True)
class PumpWeb:
    port: int
    root: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def pump_nginx(directory: Path, root: Path, authorizer_port: int = 0) -> Iterator[PumpWeb]:
    """nginx running the shipped etc/nginx/sarra.conf, adapted to a free port and ``root``,
    and asking the private-data authorizer on ``authorizer_port`` (if given)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tmp").mkdir(exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = SARRA_NGINX_CONF.read_text()
    server, n1 = re.subn(r"(?m)^(\s*)listen\s+80;", rf"\1listen 127.0.0.1:{port};", server)
    server, n2 = re.subn(r"(?m)^(\s*)root\s+/var/www/sarra;", rf"\1root {root};", server)
    server, n3 = re.subn(
        r"proxy_pass http://127\.0\.0\.1:8091;",
        f"proxy_pass http://127.0.0.1:{authorizer_port or free_port()};",
        server,
    )
    assert n1 == n2 == n3 == 1, "etc/nginx/sarra.conf no longer has the expected lines"
    (directory / "sarra.conf").write_text(server)
    (directory / "nginx.conf").write_text(_MAIN_CONF.format(dir=directory))
    log = directory / "error.log"
    process = subprocess.Popen(
        [NGINX, "-c", str(directory / "nginx.conf"), "-p", str(directory), "-e", str(log)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, process, log)
        yield PumpWeb(port, root)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Home:
    """One config/state home shared by every component of a test (set in the environment)."""

    root: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "SR_CONFIG_DIR": str(self.root / "config"),
            "SR_STATE_DIR": str(self.root / "state"),
        }

    def credentials(self, *urls: str) -> None:
        (self.root / "config").mkdir(parents=True, exist_ok=True)
        path = self.root / "config" / "credentials.conf"
        path.write_text("".join(u + "\n" for u in urls))
        path.chmod(0o600)

    def write(self, component: str, name: str, body: str) -> str:
        """Write a config; a subscriber's starts with ``base_url_private on``: the test pump's
        web server listens on loopback, which subscribers refuse by default."""
        folder = self.root / "config" / component
        folder.mkdir(parents=True, exist_ok=True)
        if component == "subscribe":
            body = "base_url_private on\n" + body
        (folder / f"{name}.conf").write_text(body)
        return name

    def load(self, component: str, name: str) -> Any:
        return load_settings(component, name, [], env={**os.environ, **self.env})


@contextmanager
def running(home: Home, component: str, name: str) -> Iterator[Any]:
    """Run instance 0 of a component config in a thread; stopped on exit, errors re-raised."""
    cfg = home.load(component, name)
    comp = REGISTRY[component]
    comp.declare(cfg)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            comp.run(cfg, 0, stop)
        except BaseException as e:  # surfaced below
            errors.append(e)

    thread = threading.Thread(target=target, name=f"{component}-{name}", daemon=True)
    thread.start()
    try:
        yield comp
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive(), f"{component} {name} did not stop"
    if errors:
        raise errors[0]


def foreground(
    home: Home, component: str, name: str, log: Path, **env: str
) -> subprocess.Popen[bytes]:
    bindir = Path(sys.executable).parent
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(bindir / f"sr_{component}"), "foreground", name],
            env={**os.environ, **home.env, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@dataclass
class Tap(ExchangeTap):
    """Collects what is published on ``exchange`` with ``key`` (notices and reports)."""

    notices: list[Notice] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)

    def take(self, m: WireMessage) -> None:
        try:
            x = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        except MessageError:
            x = None
        if isinstance(x, Notice):
            self.notices.append(x)
        elif isinstance(x, Report):
            self.reports.append(x)

    def paths(self) -> list[str]:
        return [n.path for n in self.notices]


def post_files(
    home: Home,
    broker: str,
    exchange: str,
    base_url: str,
    base_dir: Path,
    paths: list[Path],
    *extra: tuple[str, str],
) -> int:
    """sr_post in-process, as a source would run it."""
    from sarra.components.post import PostComponent

    options = [
        ("post_broker", broker),
        ("post_exchange", exchange),
        ("post_base_url", base_url),
        ("post_base_dir", str(base_dir)),
        *extra,
        *(("path", str(p)) for p in paths),
    ]
    cfg = load_settings("post", None, options, env={**os.environ, **home.env})
    return PostComponent().run(cfg, 0, threading.Event())


def queue_depth(url: BrokerUrl, queue: str) -> int:
    s = BrokerSession(url, name="depth")
    s.connect()
    try:
        return s.queue_counts(queue)[0]
    finally:
        s.close()
