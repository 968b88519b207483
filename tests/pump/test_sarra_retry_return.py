"""sr_sarra's disk retry queue outlives its node: two pump "nodes" (separate state
directories and trees) on one queue; the first stops cleanly with entries waiting (its origin
failing) and hands them to the broker; the second, with the origin fixed, places them and
announces them with their source's exchange, as if the first had."""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from sarra.components import REGISTRY
from tests.integration.flowkit import make_files, unique, wait_for
from tests.integration.test_retry_return import another_consumer
from tests.pump.pumpkit import (
    Home,
    Tap,
    foreground,
    kill,
    post_files,
    pump_nginx,
    queue_depth,
    running,
)


def _broker(rabbitmq: Any) -> str:
    return f"amqp://guest@127.0.0.1:{rabbitmq.port}/"


def _conf(rabbitmq: Any, tag: str, tree: Path, base_url: str) -> str:
    return (
        f"broker {_broker(rabbitmq)}\n"
        f"declare source alice{tag}\n"
        f"cluster pump{tag}\n"
        f"exchange xs_alice{tag}\nsubtopic #\n"
        f"queue_name q_guest.sr_sarra.shared{tag}\n"
        "expire 10m\nattempts 1\nretry_delay 1s\nretry_delay_max 2s\nretry_ttl 10m\n"
        "on_failure not_found queue\n"
        f"directory {tree}\n"
        f"post_broker {_broker(rabbitmq)}\n"
        f"post_exchange xpub{tag}\n"
        f"post_base_url {base_url}/pub\n"
        f"post_base_dir {tree}\n"
    )


def _entries(state: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    """Live retry entries under ``state`` by path (the log replayed, read only)."""
    live: dict[str, dict] = {}  # type: ignore[type-arg]
    for path in state.rglob("retry_*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec["op"] == "put":
                live[rec["id"]] = rec
            else:
                live.pop(rec["id"], None)
    return {e["body"].split()[2]: e for e in live.values()}


def _home(root: Path, rabbitmq: Any) -> Home:
    h = Home(root)
    h.credentials(rabbitmq.url())
    return h


def _use(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in home.env.items():
        monkeypatch.setenv(k, v)


def test_a_stopping_sarra_hands_its_retries_to_another_node(
    rabbitmq: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = unique("")
    node_a = _home(tmp_path / "a", rabbitmq)
    node_b = _home(tmp_path / "b", rabbitmq)
    queue = f"q_guest.sr_sarra.shared{tag}"
    with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:
        src = web.root / "src"
        files = make_files(src, [f"r/f{i}.bin" for i in range(3)], size=4000)
        contents = {p.name: p.read_bytes() for p in files}
        tree_a, tree_b = web.root / "pub_a", web.root / "pub_b"
        node_a.write("sarra", "feed", _conf(rabbitmq, tag, tree_a, web.base_url))
        node_b.write("sarra", "feed", _conf(rabbitmq, tag, tree_b, web.base_url))
        _use(node_a, monkeypatch)
        REGISTRY["sarra"].declare(node_a.load("sarra", "feed"))
        broker = _broker(rabbitmq)
        base = f"{web.base_url}/src"
        to = ("to_clusters", f"pump{tag}")
        assert post_files(node_a, broker, f"xs_alice{tag}", base, src, files, to) == 0
        hidden = src.with_name("hidden")
        src.rename(hidden)  # the origin fails (404) until it is back
        tap = Tap(rabbitmq.broker_url(), f"xpub{tag}").start()
        try:
            with contextlib.ExitStack() as stack:
                with running(node_a, "sarra", "feed"):
                    wait_for(
                        lambda: len(_entries(node_a.root / "state")) == 3, 60, "3 entries on a"
                    )
                    first = {p: e["first_seen"] for p, e in _entries(node_a.root / "state").items()}
                    # another consumer on the queue (node b, as it were): a then hands back
                    take = stack.enter_context(another_consumer(rabbitmq.port, queue))
                assert _entries(node_a.root / "state") == {}
                for msg in take(3):
                    assert msg.delivery_info["exchange"] == ""
                    h = msg.properties["application_headers"]
                    assert h["x-sarra-retry-exchange"] == f"xs_alice{tag}"
            assert queue_depth(rabbitmq.broker_url(), queue) == 3
            assert not tree_a.exists() or not list(tree_a.rglob("*.bin"))

            _use(node_b, monkeypatch)
            with running(node_b, "sarra", "feed"):
                wait_for(lambda: len(_entries(node_b.root / "state")) == 3, 60, "restored on b")
                for p, e in _entries(node_b.root / "state").items():
                    assert e["first_seen"] == first[p]  # retry_ttl still from the first failure
                    assert e["exchange"] == f"xs_alice{tag}"
                hidden.rename(src)
                wait_for(lambda: len(tap.notices) >= 3, 60, "b's announcements")
                wait_for(lambda: _entries(node_b.root / "state") == {}, 30, "b's queue empty")
        finally:
            tap.stop()
        for name, data in contents.items():
            (placed,) = list(tree_b.rglob(name))
            assert placed.read_bytes() == data
        assert sorted(n.path for n in tap.notices) == sorted(f"r/{n}" for n in contents)
        for n in tap.notices:
            assert n.header("source") == f"alice{tag}"  # the exchange came back with it
        assert queue_depth(rabbitmq.broker_url(), queue) == 0


def test_sigterm_of_a_sarra_process_hands_its_retries_back(
    rabbitmq: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stop`` is SIGTERM: the same clean stop in a real ``sr_sarra foreground`` process."""
    tag = unique("")
    node = _home(tmp_path / "a", rabbitmq)
    queue = f"q_guest.sr_sarra.shared{tag}"
    with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:
        src = web.root / "src"
        files = make_files(src, [f"t/f{i}.bin" for i in range(3)], size=1000)
        node.write("sarra", "feed", _conf(rabbitmq, tag, web.root / "pub", web.base_url))
        _use(node, monkeypatch)
        REGISTRY["sarra"].declare(node.load("sarra", "feed"))
        to = ("to_clusters", f"pump{tag}")
        base = f"{web.base_url}/src"
        assert post_files(node, _broker(rabbitmq), f"xs_alice{tag}", base, src, files, to) == 0
        src.rename(src.with_name("hidden"))
        log = tmp_path / "sarra.log"
        proc = foreground(node, "sarra", "feed", log)
        try:
            wait_for(lambda: len(_entries(node.root / "state")) == 3, 60, "3 entries")
            with another_consumer(rabbitmq.port, queue) as take:  # someone to hand them to
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(30) == 0
                assert len(take(3)) == 3
        finally:
            kill(proc)
    assert _entries(node.root / "state") == {}
    assert f"3 retry entries returned to the broker (queue {queue})" in log.read_text()
