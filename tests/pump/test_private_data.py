"""Private data from Alice to Bob on a real pump: RabbitMQ with the permissions sr_police
declares from admin.conf, nginx running etc/nginx/sarra.conf, and the authorizer
(``sr_police authorize``) it asks.

Alice posts on ``xs_alice_private``; the pump's sarra places the file under
``/private/alice/`` and announces it on ``xp_alice``, which only Alice's readers may bind to.
Bob (a reader) downloads it with his credentials; Carol (not a reader) cannot bind to the
exchange, gets 403 from nginx, and her subscriber reports the 403 when handed the URL;
without credentials nginx answers 401.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from sarra.broker.base import QueueSpec
from sarra.broker.session import BrokerSession
from sarra.errors import AccessRefused
from sarra.police import cli
from tests.integration.flowkit import unique, wait_for
from tests.pump.pumpkit import Home, Tap, foreground, kill, post_files, pump_nginx, running
from tests.servers.nginx import free_port, wait_for_port


def _get(url: str, user: str | None = None, password: str = "") -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_alice_private_file_reaches_bob_and_carol_is_refused_by_broker_and_nginx(
    rabbitmq: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = unique("")
    admin, feeder = f"padm{tag}", f"pfeed{tag}"
    alice, bob, carol = f"alice{tag}", f"bob{tag}", f"carol{tag}"
    pw = {u: f"{u}-secret" for u in (admin, feeder, alice, bob, carol)}
    host = f"127.0.0.1:{rabbitmq.port}"

    def amqp(user: str, secret: bool = False) -> str:
        return f"amqp://{user}{':' + pw[user] if secret else ''}@{host}/"

    # the pump: admin.conf with the private line, declared by sr_police
    pump = Home(tmp_path / "pump")
    pump.credentials(*(amqp(u, True) for u in pw))
    (pump.root / "config" / "admin.conf").write_text(
        f"admin {amqp(admin)}\nfeeder {amqp(feeder)}\nmgmt_port {rabbitmq.mgmt_port}\n"
        f"declare source {alice}\ndeclare subscriber {bob} {carol}\n"
        f"declare group readers{tag}:{bob}\n"
        f"declare private {alice}:@readers{tag}\n"
    )
    rabbitmq.add_user(admin, pw[admin], tags=["administrator"])
    out = io.StringIO()
    assert cli.main(["declare"], env=pump.env, out=out) == 0, out.getvalue()
    assert f"xp_{alice}" in out.getvalue()
    # the audit agrees with what declare did: nothing about these users or xp_alice is wrong
    out = io.StringIO()
    cli.main(["--json", "audit"], env=pump.env, out=out)
    findings = json.loads(out.getvalue())["findings"]
    wrong = [f for f in findings if tag in f["subject"] and f["severity"] != "info"]
    assert wrong == [], wrong

    procs: list[subprocess.Popen[bytes]] = []
    auth_port = free_port()
    auth_log = tmp_path / "authorize.log"
    with auth_log.open("wb") as log_out:
        authorizer = subprocess.Popen(
            [str(Path(sys.executable).parent / "sr_police"), "--loglevel", "info",
             "--listen", f"127.0.0.1:{auth_port}", "authorize"],
            env={**pump.env, "PATH": "/usr/bin:/bin"},
            stdout=log_out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_port(auth_port, authorizer, auth_log)
        with pump_nginx(tmp_path / "nginx", tmp_path / "www", auth_port) as web:
            _exercise(rabbitmq, tmp_path, monkeypatch, web, pump, amqp, pw, tag, procs)
        # the audit reports carol's refusals and bob's wrong password (security events)
        out = io.StringIO()
        cli.main(["--json", "audit"], env=pump.env, out=out)
        events = {
            f["subject"]: f["detail"]
            for f in json.loads(out.getvalue())["findings"]
            if f["check"] == "security_event"
        }
        assert f"private_refused:{carol}" in events, events
        assert f"private_bad_password:{bob}" in events, events
        assert all(pw[u] not in str(events) for u in pw)
    finally:
        for proc in procs:
            kill(proc)
        authorizer.terminate()
        authorizer.wait(20)
        for user in pw:
            rabbitmq.ctl("delete_user", user)
    log = auth_log.read_text()
    assert f"403 '{carol}' is not a reader of '{alice}'" in log
    assert pw[bob] not in log and pw[carol] not in log  # no secret in the authorizer's log


def _exercise(
    rabbitmq: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    web: Any,
    pump: Home,
    amqp: Any,
    pw: dict[str, str],
    tag: str,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    admin, feeder = f"padm{tag}", f"pfeed{tag}"
    alice, bob, carol = f"alice{tag}", f"bob{tag}", f"carol{tag}"
    src = web.root / "src"
    src.mkdir(parents=True)
    secret = src / "for_bob.txt"
    secret.write_bytes(b"only for bob's eyes\n" * 500)

    # Carol cannot bind a queue to alice's private exchange: the broker refuses
    s = BrokerSession(rabbitmq.broker_url(carol, pw[carol]), name="carol")
    s.connect()
    try:
        q = QueueSpec(f"q_{carol}.peek", ((f"xp_{alice}", "#"),), durable=False, auto_delete=True)
        with pytest.raises(AccessRefused):
            s.declare_queue(q)
        # the queue itself is hers (declared before the binding was refused): tidy it away
        s.delete_queue(q.name)
    finally:
        s.close()

    def user_home(user: str) -> Home:
        h = Home(tmp_path / user)
        h.credentials(amqp(user, True), f"http://{user}:{pw[user]}@127.0.0.1:{web.port}/")
        return h

    # Bob subscribes to xp_alice, with his credentials for the pump's web server
    bob_home, bob_dl = user_home(bob), tmp_path / "bob_dl"
    bob_home.write(
        "subscribe",
        "priv",
        f"broker {amqp(bob)}\nexchange xp_{alice}\nsubtopic #\nexpire 10m\n"
        f"directory {bob_dl}\naccept .*\n",
    )
    procs.append(foreground(bob_home, "subscribe", "priv", tmp_path / "bob.log"))

    def bound(user: str, config: str) -> bool:
        prefix = f"q_{user}.sr_subscribe.{config}."
        return any(q["name"].startswith(prefix) for q in rabbitmq.mgmt_get("queues/%2F"))

    wait_for(lambda: bound(bob, "priv"), 60, "bob's queue")

    # the pump's sarra (feeder account) takes alice's private posts into /private/alice/
    for k, v in pump.env.items():
        monkeypatch.setenv(k, v)
    pump.write(
        "sarra",
        "private_alice",
        f"broker {amqp(feeder)}\nexchange xs_{alice}_private\nsubtopic #\nexpire 10m\n"
        f"directory {web.root / 'private' / alice}\naccept .*\n"
        f"post_broker {amqp(feeder)}\npost_exchange xp_{alice}\n"
        f"post_base_url {web.base_url}/\npost_base_dir {web.root}\n",
    )
    alice_home = user_home(alice)
    placed = web.root / "private" / alice / secret.name
    url = f"{web.base_url}/private/{alice}/{secret.name}"
    with running(pump, "sarra", "private_alice"):
        sent = post_files(
            alice_home, amqp(alice), f"xs_{alice}_private", f"{web.base_url}/src", src, [secret]
        )
        assert sent == 0
        wait_for(placed.is_file, 60, "the pump's copy")
        wait_for((bob_dl / secret.name).is_file, 60, "bob's download")
    assert (bob_dl / secret.name).read_bytes() == secret.read_bytes()

    # straight at nginx: the reader gets it, everyone else is refused
    assert _get(url, bob, pw[bob]) == (200, secret.read_bytes())
    assert _get(url, alice, pw[alice]) == (200, secret.read_bytes())
    assert _get(url, carol, pw[carol])[0] == 403
    assert _get(url, bob, "not bob's password")[0] == 401
    assert _get(url)[0] == 401
    assert _get(f"{web.base_url}/src/../private/{alice}/{secret.name}", carol, pw[carol])[0] == 403
    assert _get(f"{web.base_url}/private/", bob, pw[bob])[0] == 403  # no listing of sources

    # Carol learned the URL and posts it to her own exchange: her subscriber reports the 403
    carol_home, carol_dl = user_home(carol), tmp_path / "carol_dl"
    carol_home.write(
        "subscribe",
        "leak",
        f"broker {amqp(carol)}\nexchange xs_{carol}\nsubtopic #\nexpire 10m\n"
        f"directory {carol_dl}\naccept .*\n",
    )
    tap = Tap(rabbitmq.broker_url(admin, pw[admin]), f"xs_{carol}").start()
    carol_log = tmp_path / "carol.log"
    try:
        procs.append(foreground(carol_home, "subscribe", "leak", carol_log))
        wait_for(lambda: bound(carol, "leak"), 60, "carol's queue")
        assert (
            post_files(carol_home, amqp(carol), f"xs_{carol}", web.base_url, web.root, [placed])
            == 0
        )
        wait_for(
            lambda: bool(tap.reports), 60, f"carol's report (seen {tap.notices} {tap.reports})"
        )
    finally:
        tap.stop()
    report = tap.reports[0]
    assert report.code == 499, report
    assert "403" in report.message, report
    line = "HTTP 403 Forbidden (not authorized to read it)"
    assert line in report.message, report
    wait_for(lambda: line in carol_log.read_text(errors="replace"), 30, "carol's log line")
    text = carol_log.read_text(errors="replace")
    assert pw[carol] not in text
    assert pw[bob] not in (tmp_path / "bob.log").read_text(errors="replace")  # sent, not logged
    assert not (carol_dl / secret.name).exists()
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    assert hashlib.sha256(placed.read_bytes()).hexdigest() == digest


def test_without_the_authorizer_nginx_serves_nothing_private_and_the_rest_as_before(
    tmp_path: Path,
) -> None:
    with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:  # nobody on its port
        (web.root / "private" / "alice").mkdir(parents=True)
        (web.root / "private" / "alice" / "f.txt").write_bytes(b"private")
        (web.root / "pub").mkdir()
        (web.root / "pub" / "f.txt").write_bytes(b"public")
        assert _get(f"{web.base_url}/private/alice/f.txt", "alice", "x")[0] == 500
        assert _get(f"{web.base_url}/private/alice/f.txt")[0] == 500
        assert _get(f"{web.base_url}/pub/f.txt") == (200, b"public")
