"""``sr`` over real instance processes of two components: the heartbeat doubles of
tests.cli_doubles (launched detached as ``sr_<component> start`` launches them), then the
real subscribe and winnow components on the suite's RabbitMQ."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarra.cli import pump
from sarra.cli.instances import process_matches, read_pid_file
from tests.cli_doubles import standin_runtime
from tests.integration.flowkit import Site, unique


class Sr:
    def __init__(self, root: Path) -> None:
        self.runtime = standin_runtime(stop_timeout=5.0)
        self.config_dir = root / "config"
        self.state_dir = root / "state"
        self.out = ""

    def __call__(self, *argv: str) -> int:
        out, err = io.StringIO(), io.StringIO()
        rc = pump.main(argv, runtime=self.runtime, out=out, err=err)
        self.out = out.getvalue() + err.getvalue()
        return rc

    def pids(self) -> dict[str, int]:
        """``component/config/NNN`` -> pid, from the pid files."""
        found = {}
        for path in sorted(self.state_dir.glob("*/*/*.pid")):
            pid = read_pid_file(path)
            if pid is not None:
                number = path.stem.rsplit("_", 1)[1]
                found[f"{path.parent.parent.name}/{path.parent.name}/{number}"] = pid
        return found


@pytest.fixture
def sr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sr]:
    monkeypatch.setenv("SR_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SR_STATE_DIR", str(tmp_path / "state"))
    sr = Sr(tmp_path)
    (sr.config_dir / "subscribe").mkdir(parents=True)
    (sr.config_dir / "post").mkdir(parents=True)
    (sr.config_dir / "subscribe" / "feed.conf").write_text(
        "instances 2\nbroker amqps://feeder:TopSecret@broker.example/\n"
    )
    (sr.config_dir / "subscribe" / "idle.conf.off").write_text("instances 1\n")
    (sr.config_dir / "post" / "poll.conf").write_text("sleep 5\n")
    yield sr
    for label, pid in sr.pids().items():  # never leave daemons behind, even if a test failed
        if process_matches(pid, label.split("/")[:2]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def wait_until_gone(pid: int, words: list[str]) -> None:
    for _ in range(200):
        if not process_matches(pid, words):
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still alive")


def test_sr_starts_shows_reloads_and_stops_every_component(sr: Sr) -> None:
    assert sr("start") == 0, sr.out
    pids = sr.pids()
    assert sorted(pids) == ["post/poll/001", "subscribe/feed/001", "subscribe/feed/002"]
    for label, pid in pids.items():
        assert process_matches(pid, label.split("/")[:2])
    assert "subscribe/feed: instance 002 started" in sr.out
    assert "post/poll: instance 001 started" in sr.out
    assert "idle" not in sr.out  # disabled: not started, not an error

    assert sr("status", "--json") == 0, sr.out
    document = json.loads(sr.out)
    assert document["ok"] is True
    records = {f"{r['component']}/{r['config']}": r for r in document["configs"]}
    assert sorted(records) == ["post/poll", "subscribe/feed", "subscribe/idle"]
    feed = records["subscribe/feed"]["instances"]
    assert (feed["expected"], feed["running"]) == (2, 2)
    assert sorted(feed["pids"]) == sorted([pids["subscribe/feed/001"], pids["subscribe/feed/002"]])
    assert records["post/poll"]["instances"]["pids"] == [pids["post/poll/001"]]
    assert records["subscribe/idle"]["instances"]["running"] == 0
    assert "TopSecret" not in sr.out

    # reload restarts only the config whose file changed after its instances started
    later = time.time() + 5
    os.utime(sr.config_dir / "post" / "poll.conf", (later, later))
    assert sr("reload") == 0, sr.out
    assert "subscribe/feed: unchanged since started" in sr.out
    assert "post/poll: configuration changed, restarting" in sr.out
    reloaded = sr.pids()
    assert reloaded["subscribe/feed/001"] == pids["subscribe/feed/001"]
    assert reloaded["post/poll/001"] != pids["post/poll/001"]
    wait_until_gone(pids["post/poll/001"], ["post", "poll"])

    assert sr("stop") == 0, sr.out
    assert sr.out.count("stopped") == 3
    assert "subscribe/idle: not running" in sr.out
    assert sr.pids() == {}
    for label, pid in reloaded.items():
        wait_until_gone(pid, label.split("/")[:2])
    assert sr("status", "--json") == 1
    assert all(r["instances"]["running"] == 0 for r in json.loads(sr.out)["configs"])


def test_sr_manages_real_subscribe_and_winnow_instances_on_the_broker(
    tmp_path: Path,
    rabbitmq,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The installed runtime: real components, real instance processes, the suite's broker."""
    site = Site(tmp_path / "site", rabbitmq.port).setup()
    for key, value in site.env.items():
        monkeypatch.setenv(key, value)
    tag = unique("sr")
    site.write_subscribe(
        "obs",
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {tmp_path / 'dest'}\n"
        "expire 10m\nreport_back off\naccept .*\n",
    )
    (site.config_dir / "winnow").mkdir()
    (site.config_dir / "winnow" / "w.conf").write_text(
        f"broker {site.broker}\nexchange x{tag}in\npost_exchange x{tag}out\nexpire 10m\n"
    )

    def sr(*argv: str) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        rc = pump.main(argv, out=out, err=err)
        return rc, out.getvalue() + err.getvalue()

    def pids() -> dict[str, int]:
        found = {}
        for path in site.state_dir.glob("*/*/*.pid"):
            pid = read_pid_file(path)
            if pid is not None:
                found[f"{path.parent.parent.name}/{path.parent.name}"] = pid
        return found

    try:
        rc, said = sr("start")
        assert rc == 0, said
        assert sorted(pids()) == ["subscribe/obs", "winnow/w"]

        document: dict[str, object] = {}
        for _ in range(100):  # until both consume from their queues
            rc, said = sr("status", "--json")
            document = json.loads(said)
            records = document["configs"]
            assert isinstance(records, list)
            if rc == 0 and all(r["queue"].get("consumers") for r in records):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"not all running and consuming: {document}")
        by_label = {f"{r['component']}/{r['config']}": r for r in records}
        assert sorted(by_label) == ["subscribe/obs", "winnow/w"]
        for label, record in by_label.items():
            assert record["instances"]["pids"] == [pids()[label]]
            assert record["queue"]["name"].startswith("q_guest.")
        assert ":guest@" not in said  # the password (from credentials.conf) never shows

        started = pids()
        rc, said = sr("stop")
        assert rc == 0, said
        assert said.count("stopped") == 2, said
        assert pids() == {}
        for label, pid in started.items():
            wait_until_gone(pid, label.split("/"))
        rc, said = sr("status", "--json")
        assert rc == 1
        assert all(r["instances"]["running"] == 0 for r in json.loads(said)["configs"])
    finally:
        for label, pid in pids().items():
            if process_matches(pid, label.split("/")):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
