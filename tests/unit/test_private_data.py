"""Private data: the admin.conf lines, the permissions they give, the authorizer's decisions."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from sarra.config.loader import load_pump_config
from sarra.errors import ConfigError
from sarra.police.private import (
    Access,
    basic_credentials,
    private_readers,
    private_source,
)
from sarra.police.pump import Pump

ROLES = {"alice": "source", "bob": "subscriber", "carol": "subscriber", "dave": "source"}


def _pump(tmp_path: Path, lines: str) -> Pump:
    conf = tmp_path / "admin.conf"
    conf.write_text(
        "admin amqp://boss@localhost/\nfeeder amqp://feed@localhost/\n"
        "declare source alice dave\ndeclare subscriber bob carol\n" + lines
    )
    env = {"SR_CONFIG_DIR": str(tmp_path / "cfg"), "SR_STATE_DIR": str(tmp_path / "st")}
    return Pump.from_config(load_pump_config(env, admin_conf=conf))


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_private_line_names_users_and_groups_and_always_includes_the_source() -> None:
    declared = {"group": ["team:bob,dave"], "private": ["alice:@team", "dave:carol"]}
    assert private_readers(declared, ROLES) == {
        "alice": frozenset({"alice", "bob", "dave"}),
        "dave": frozenset({"dave", "carol"}),
    }


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"private": ["alice"]}, "NAME:MEMBER"),
        ({"private": ["alice:"]}, "NAME:MEMBER"),
        ({"private": ["bob:carol"]}, "not a declared source"),
        ({"private": ["alice:zed"]}, "no declared user 'zed'"),
        ({"private": ["alice:@nogroup"]}, "no declared group 'nogroup'"),
        ({"private": ["alice:bob", "alice:carol"]}, "declared twice"),
        ({"group": ["g:bob,zed"]}, "no declared user 'zed'"),
        ({"group": ["g:bob", "g:carol"]}, "declared twice"),
    ],
)
def test_a_bad_private_or_group_line_is_refused_with_its_reason(
    declared: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        private_readers(declared, ROLES)


def test_admin_conf_gives_readers_read_on_the_private_exchange_and_no_one_else(
    tmp_path: Path,
) -> None:
    pump = _pump(tmp_path, "declare group team:bob\ndeclare private alice:@team\n")
    assert "xp_alice" in pump.exchanges and "xp_dave" not in pump.exchanges
    by_name = {u.name: u for u in pump.users}

    def reads(user: str, exchange: str) -> bool:
        return re.fullmatch(by_name[user].permission.read, exchange) is not None

    def writes(user: str, exchange: str) -> bool:
        return re.fullmatch(by_name[user].permission.write, exchange) is not None

    assert reads("bob", "xp_alice") and reads("alice", "xp_alice")
    assert not reads("carol", "xp_alice") and not reads("dave", "xp_alice")
    assert reads("feed", "xp_alice") and reads("boss", "xp_alice")
    assert writes("alice", "xp_alice") and not writes("bob", "xp_alice")
    assert not writes("dave", "xp_alice")
    # nothing else changed: bob still reads xpublic, carol her own exchanges
    assert reads("bob", "xpublic") and reads("carol", "xs_carol")


def test_a_pump_without_private_lines_declares_no_private_exchange(tmp_path: Path) -> None:
    pump = _pump(tmp_path, "")
    assert not [x for x in pump.exchanges if x.startswith("xp_")]
    assert pump.private == {}


def test_a_bad_private_line_in_admin_conf_stops_the_pump_loading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a declared source"):
        _pump(tmp_path, "declare private bob:carol\n")


@pytest.mark.parametrize(
    ("uri", "source"),
    [
        ("/private/alice/f.txt", "alice"),
        ("/private/alice/", "alice"),
        ("//private//alice/./d/f?x=1", "alice"),
        ("/public/../private/alice/f", "alice"),
        ("/%70rivate/alice/f", "alice"),
        ("/private/../public/f", None),
        ("/private/alice/../../public/f", None),
        ("/private/", None),
        ("/private", None),
        ("/public/f", None),
        ("http://pump.example.com/private/alice/f?x", "alice"),
        ("", None),
    ],
)
def test_the_private_source_of_a_uri_is_read_after_nginx_style_normalization(
    uri: str, source: str | None
) -> None:
    assert private_source(uri) == source


def test_basic_credentials_are_read_only_from_a_well_formed_basic_header() -> None:
    assert basic_credentials(_basic("bob", "p:w")) == ("bob", "p:w")
    assert basic_credentials(None) is None
    assert basic_credentials("Bearer abc") is None
    assert basic_credentials("Basic !!!") is None
    assert basic_credentials("Basic " + base64.b64encode(b"nocolon").decode()) is None


ACCESS = Access(
    {"alice": frozenset({"alice", "bob"})},
    {"alice": "a-pw", "bob": "b-pw", "carol": "c-pw"},
)


@pytest.mark.parametrize(
    ("uri", "auth", "status"),
    [
        ("/private/alice/f", _basic("bob", "b-pw"), 200),
        ("/private/alice/f", _basic("alice", "a-pw"), 200),
        ("/private/alice/f", _basic("carol", "c-pw"), 403),
        ("/private/alice/f", _basic("bob", "wrong"), 401),
        ("/private/alice/f", _basic("mallory", "x"), 401),
        ("/private/alice/f", None, 401),
        ("/private/dave/f", _basic("bob", "b-pw"), 403),
        ("/private/", _basic("bob", "b-pw"), 403),
        ("/private/alice/../dave/f", _basic("bob", "b-pw"), 403),
        ("/elsewhere/f", _basic("bob", "b-pw"), 403),
    ],
)
def test_the_authorizer_lets_readers_in_asks_strangers_to_log_in_and_refuses_the_rest(
    uri: str, auth: str | None, status: int
) -> None:
    assert ACCESS.decide(uri, auth).status == status


def test_refusing_a_pump_user_or_a_wrong_password_is_a_security_event_and_the_rest_not() -> None:
    uri = "/private/alice/f"
    carol = ACCESS.decide(uri, _basic("carol", "c-pw"))
    assert (carol.event, carol.user) == ("private_refused", "carol")
    guess = ACCESS.decide(uri, _basic("bob", "guess"))
    assert (guess.event, guess.user) == ("private_bad_password", "bob")
    assert "guess" not in guess.why
    assert ACCESS.decide(uri, None).event is None  # a browser's first try
    assert ACCESS.decide(uri, _basic("bob", "b-pw")).event is None


ETC = Path(__file__).resolve().parents[2] / "etc"


def test_the_shipped_admin_conf_declares_a_private_source_and_its_readers(tmp_path: Path) -> None:
    env = {"SR_CONFIG_DIR": str(tmp_path / "cfg"), "SR_STATE_DIR": str(tmp_path / "st")}
    pump = Pump.from_config(load_pump_config(env, admin_conf=ETC / "admin.conf"))
    assert pump.private == {"tsource": frozenset({"tsource", "tsub"})}
    assert "xp_tsource" in pump.exchanges


def test_the_shipped_private_sarra_example_reads_the_suffixed_exchange_and_posts_privately(
    tmp_path: Path,
) -> None:
    from sarra.config.settings import load_settings

    env = {"SR_CONFIG_DIR": str(tmp_path), "SR_STATE_DIR": str(tmp_path), "HOME": "/home/u"}
    cfg = load_settings("sarra", str(ETC / "sarra" / "private_alice.conf"), env=env)
    assert cfg.get("post_exchange") == "xp_alice"
    assert [b.exchange for b in cfg.bindings] == ["xs_alice_private"]
    assert str(cfg.get("directory")).startswith("/var/www/sarra/private/alice/")


def _ask(port: int, uri: str, auth: str | None, host: str = "127.0.0.1") -> tuple[int, str | None]:
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=10)
    headers = {"X-Original-URI": uri, **({"Authorization": auth} if auth else {})}
    try:
        conn.request("GET", "/_sarra_authorize", headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("WWW-Authenticate")
    finally:
        conn.close()


def test_the_authorizer_server_reloads_admin_conf_when_it_changes_and_keeps_rules_if_broken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import os
    import threading

    from sarra.police.run import authorizer

    cfg = tmp_path / "cfg"
    cfg.mkdir()
    env = {"SR_CONFIG_DIR": str(cfg), "SR_STATE_DIR": str(tmp_path / "st")}
    base = "admin amqp://boss@h/\ndeclare source alice\ndeclare subscriber bob carol\n"
    admin = cfg / "admin.conf"
    admin.write_text(base + "declare private alice:bob\n")
    creds = cfg / "credentials.conf"
    creds.write_text("".join(f"amqp://{u}:{u}-pw@h/\n" for u in ("boss", "alice", "bob", "carol")))
    creds.chmod(0o600)
    server = authorizer(env, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    caplog.set_level(logging.INFO, logger="sarra.police.private")
    try:
        uri = "/private/alice/f.txt"
        assert _ask(server.port, uri, _basic("bob", "bob-pw")) == (200, None)
        assert _ask(server.port, uri, _basic("carol", "carol-pw"))[0] == 403
        status, challenge = _ask(server.port, uri, None)
        assert status == 401 and challenge is not None and challenge.startswith("Basic realm=")
        # carol becomes a reader: no restart needed
        admin.write_text(base + "declare private alice:bob,carol\n")
        os.utime(admin, (1, 1))  # a different mtime even within the clock's resolution
        assert _ask(server.port, uri, _basic("carol", "carol-pw"))[0] == 200
        # a broken file: the previous rules stay, the error is logged
        admin.write_text(base + "declare private alice:nobody\n")
        os.utime(admin, (2, 2))
        assert _ask(server.port, uri, _basic("carol", "carol-pw"))[0] == 200
        assert "reload failed" in caplog.text and "nobody" in caplog.text
    finally:
        server.shutdown()
        thread.join(10)
    assert "carol-pw" not in caplog.text and "bob-pw" not in caplog.text
    assert "'carol' is not a reader of 'alice'" in caplog.text
    from sarra.security_events import events_path, read_events

    events = read_events(events_path(env))
    assert [(e["kind"], e["user"]) for e in events] == [("private_refused", "carol")]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_sr_police_authorize_rereads_on_sighup_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    """What ``systemctl reload`` and ``systemctl stop`` of sarra-authorize.service do."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = tmp_path / "cfg"
    cfg.mkdir()
    env = {"SR_CONFIG_DIR": str(cfg), "SR_STATE_DIR": str(tmp_path / "st"), "PATH": "/usr/bin"}
    base = "admin amqp://boss@h/\ndeclare source alice\ndeclare subscriber bob dan\n"
    admin = cfg / "admin.conf"
    admin.write_text(base + "declare private alice:bob\n")
    creds = cfg / "credentials.conf"
    creds.write_text("".join(f"amqp://{u}:{u}-pw@h/\n" for u in ("boss", "alice", "bob", "dan")))
    creds.chmod(0o600)
    port = _free_port()
    log = tmp_path / "authorize.log"
    argv = [sys.executable, "-m", "sarra.police.cli", "--loglevel", "info"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--listen", f"127.0.0.1:{port}", "authorize"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def wait_log(text: str) -> None:
        deadline = time.monotonic() + 30
        while text not in log.read_text():
            assert proc.poll() is None or text in log.read_text(), log.read_text()
            assert time.monotonic() < deadline, f"no {text!r} in\n{log.read_text()}"
            time.sleep(0.05)

    try:
        wait_log(f"listening on 127.0.0.1:{port}")
        uri = "/private/alice/f"
        assert _ask(port, uri, _basic("dan", "dan-pw"))[0] == 403
        # dan instead of bob, written in place and stamped back: only a SIGHUP notices
        before = admin.stat()
        admin.write_text(base + "declare private alice:dan\n")
        os.utime(admin, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert admin.stat().st_ino == before.st_ino and admin.stat().st_size == before.st_size
        assert _ask(port, uri, _basic("dan", "dan-pw"))[0] == 403
        assert "reloaded" not in log.read_text()
        proc.send_signal(signal.SIGHUP)
        wait_log("authorizer: reloaded")
        assert _ask(port, uri, _basic("dan", "dan-pw"))[0] == 200
        assert _ask(port, uri, _basic("bob", "bob-pw"))[0] == 403
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "SIGTERM, stopping" in text and "authorizer: stopped" in text
    assert "Traceback" not in text and "dan-pw" not in text


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("", False),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.1", False),
        ("no-such-host.invalid", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    from sarra.police.private import is_loopback

    assert is_loopback(host) is loopback


@pytest.mark.parametrize("listen", ["0.0.0.0:8091", "192.0.2.1:8091", "[::]:8091"])
def test_sr_police_authorize_refuses_a_non_loopback_address_without_allow_remote(
    listen: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sarra.police import cli

    env = {"SR_CONFIG_DIR": str(tmp_path), "SR_STATE_DIR": str(tmp_path)}
    assert cli.main(["--listen", listen, "authorize"], env=env) == 2
    err = capsys.readouterr().err
    assert "not a loopback address" in err and "--allow-remote" in err


def test_sr_police_authorize_with_allow_remote_listens_where_told_and_a_bad_listen_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sarra.police import cli, run

    env = {"SR_CONFIG_DIR": str(tmp_path), "SR_STATE_DIR": str(tmp_path)}
    assert cli.main(["--listen", "127.0.0.1:99999", "authorize"], env=env) == 2
    assert "bad --listen" in capsys.readouterr().err
    asked: list[tuple[str, int]] = []

    def authorizer(_env: object, _admin: object, host: str, port: int) -> object:
        asked.append((host, port))
        raise OSError(99, "Cannot assign requested address")

    monkeypatch.setattr(run, "authorizer", authorizer)
    argv = ["--listen", "192.0.2.1:8091", "--allow-remote", "authorize"]
    assert cli.main(argv, env=env) == 1  # could not listen: systemd may try again
    assert asked == [("192.0.2.1", 8091)]
    assert "cannot listen on 192.0.2.1:8091" in capsys.readouterr().err


def test_the_authorizer_listens_on_ipv6_loopback_too(tmp_path: Path) -> None:
    import threading

    from sarra.police.run import authorizer

    env = {"SR_CONFIG_DIR": str(tmp_path), "SR_STATE_DIR": str(tmp_path / "st")}
    (tmp_path / "admin.conf").write_text(
        "admin amqp://boss@h/\ndeclare source alice\ndeclare subscriber bob\n"
        "declare private alice:bob\n"
    )
    creds = tmp_path / "credentials.conf"
    creds.write_text("amqp://bob:bob-pw@h/\n")
    creds.chmod(0o600)
    server = authorizer(env, host="::1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert _ask(server.port, "/private/alice/f", _basic("bob", "bob-pw"), "::1")[0] == 200
    finally:
        server.shutdown()
        thread.join(10)
