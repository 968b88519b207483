"""Two pumps chained (two RabbitMQ nodes, two nginx running etc/nginx/sarra.conf):

source --xs_alice--> [pump A: sarra] --xpub--> [pump B: sarra] --xpublic--> subscriber on B
subscriber's reports: xs_guest(B) -> router B -> xreport(B) -> xs_guest(A) -> router A
-> xreport(A) -> xr_alice(A) -> sr_log run by alice on A.
"""

from __future__ import annotations

import io
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from sarra.broker.session import BrokerSession
from sarra.components.log import LogComponent
from sarra.errors import ConfigError
from sarra.flow.metrics import read_metrics
from tests.integration.flowkit import make_files, md5_tree, unique, wait_for
from tests.pump.pumpkit import Home, Tap, post_files, pump_nginx, running
from tests.servers.rabbitmq import start_rabbitmq


@pytest.fixture
def pump_b() -> Any:
    node = start_rabbitmq()
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(node.base_dir, ignore_errors=True)


def test_files_cross_two_pumps_byte_identical_and_reports_reach_the_source_through_sr_log(
    rabbitmq: Any, pump_b: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = unique("")
    alice = f"alice{tag}"
    a, b = rabbitmq, pump_b
    ba = f"amqp://guest@127.0.0.1:{a.port}/"
    bb = f"amqp://guest@127.0.0.1:{b.port}/"
    a.add_user(alice, "secret")
    a.set_permissions(
        alice,
        rf"^q_{alice}\..*|^xs_{alice}(_.*)?$",
        rf"^q_{alice}\..*|^xs_{alice}(_.*)?$",
        rf"^q_{alice}\..*|^x[lrs]_{alice}(_.*)?$|^x.*public$",
    )
    home = Home(tmp_path / "home")
    for k, v in home.env.items():
        monkeypatch.setenv(k, v)
    home.credentials(a.url(), b.url(), a.url(alice, "secret"))
    # what sr_police declare would have created on pump A
    admin = BrokerSession(a.broker_url(), name="setup")
    admin.connect()
    admin.declare_exchange(f"xr_{alice}")
    admin.close()

    with (
        pump_nginx(tmp_path / "nginxA", tmp_path / "wwwA") as web_a,
        pump_nginx(tmp_path / "nginxB", tmp_path / "wwwB") as web_b,
    ):
        src = web_a.root / "incoming" / alice
        files = make_files(src, [f"obs/{i % 4}/file{i}.dat" for i in range(16)], size=20_000)
        tree_a, tree_b, dl = web_a.root / "pub", web_b.root, tmp_path / "dl"
        home.write(
            "sarra",
            "a_from_sources",
            f"broker {ba}\ndeclare source {alice}\ncluster pumpA{tag}\ngateway_for pumpB{tag}\n"
            f"exchange xs_{alice}\nsubtopic #\nexpire 10m\n"
            f"directory {tree_a}\npost_exchange xpub{tag}\n"
            f"post_base_url {web_a.base_url}/pub\npost_base_dir {tree_a}\n",
        )
        home.write(
            "sarra",
            "b_from_a",
            f"broker {ba}\ncluster pumpB{tag}\nexchange xpub{tag}\nsubtopic #\nexpire 10m\n"
            f"base_url_accept http://127\\.0\\.0\\.1:{web_a.port}/.*\n"
            f"directory {tree_b}\npost_broker {bb}\npost_exchange xpublic\n"
            f"post_base_url {web_b.base_url}\npost_base_dir {tree_b}\n",
        )
        home.write(
            "subscribe",
            "on_b",
            f"broker {bb}\ncluster pumpB{tag}\nexchange xpublic\nsubtopic #\n"
            f"directory {dl}\nmirror on\naccept .*\n",
        )
        home.write(
            "report",
            "router_a",
            f"broker {ba}\ncluster pumpA{tag}\ndeclare source {alice}\npeer_accounts guest\n",
        )
        home.write(
            "report",
            "router_b",
            f"broker {bb}\ncluster pumpB{tag}\ndeclare subscriber guest\n"
            f"cluster_route pumpA{tag} {ba}\n",
        )
        home.write("log", "mine", f"broker amqp://{alice}@127.0.0.1:{a.port}/\nexpire 10m\n")
        log_cfg = home.load("log", "mine")
        LogComponent().declare(log_cfg)  # the queue exists before any report is routed
        tap_b = Tap(b.broker_url(), "xpublic").start()
        try:
            with (
                running(home, "report", "router_a"),
                running(home, "report", "router_b"),
                running(home, "sarra", "a_from_sources"),
                running(home, "sarra", "b_from_a"),
                running(home, "subscribe", "on_b"),
            ):
                assert (
                    post_files(
                        home,
                        f"amqp://{alice}@127.0.0.1:{a.port}/",
                        f"xs_{alice}",
                        f"{web_a.base_url}/incoming/{alice}",
                        src,
                        files,
                        ("to_clusters", f"pumpB{tag}"),
                    )
                    == 0
                )
                wait_for(
                    lambda: len(md5_tree(dl)) >= len(files), 90, "files on pump B's subscriber"
                )
                out = io.StringIO()
                seen: dict[str, Any] = {}

                mine = Path(home.env["SR_STATE_DIR"]) / "log" / "mine"
                counted_201 = []  # per sr_log run, the 201 reports its metrics file counted

                def summary_has_every_file() -> bool:
                    stop = threading.Event()
                    LogComponent(out=out).run(_with_summary(home), 0, stop)
                    doc = read_metrics(mine / "sr_log_mine_000.metrics.json")
                    assert doc is not None and doc["state"] == "stopped"
                    assert sum(doc["codes"].values()) + doc["rejects"] == doc["notices"]["in"]
                    counted_201.append(doc["codes"].get("201", 0))
                    for line in out.getvalue().splitlines():
                        if line.startswith("  obs/") and " 201" in line:
                            seen[line.split(":")[0].strip()] = line
                    return len(seen) >= len(files)

                wait_for(summary_has_every_file, 90, "every report back at the source on pump A")
        finally:
            tap_b.stop()
    assert md5_tree(dl) == md5_tree(src)
    assert md5_tree(tree_b) == md5_tree(src)
    assert sorted(seen) == sorted(str(p.relative_to(src)) for p in files)
    # sr_report and sr_log keep the same per-instance metrics file as a subscriber
    state = Path(home.env["SR_STATE_DIR"])
    router_a = read_metrics(state / "report" / "router_a" / "sr_report_router_a_000.metrics.json")
    assert router_a is not None and router_a["state"] == "stopped"
    # each file's report: admitted from xs_guest (the link), then delivered to xr_alice
    assert router_a["reports"]["delivered"] >= len(files)
    assert router_a["notices"]["in"] >= 2 * len(files)
    assert router_a["notices"]["out"] == sum(
        router_a["reports"][k] for k in ("forwarded", "delivered", "relayed")
    )
    router_b = read_metrics(state / "report" / "router_b" / "sr_report_router_b_000.metrics.json")
    assert router_b is not None and router_b["reports"]["relayed"] >= len(files)
    assert sum(counted_201) >= len(files)
    for n in tap_b.notices:
        assert n.header("source") == alice
        assert n.header("from_cluster") == f"pumpA{tag}"
        assert n.base_url.rstrip("/") == web_b.base_url
    assert "guest@" in next(iter(seen.values()))
    with pytest.raises(ConfigError):
        LogComponent().run(_other_exchange(home, alice, a.port), 0, threading.Event())


def _with_summary(home: Home) -> Any:
    import os

    from sarra.config.settings import load_settings

    return load_settings("log", "mine", [("log_summary", "on")], env={**os.environ, **home.env})


def _other_exchange(home: Home, alice: str, port: int) -> Any:
    home.write("log", "theirs", f"broker amqp://{alice}@127.0.0.1:{port}/\nexchange xr_guest\n")
    return home.load("log", "theirs")
