"""``sr``, the pump-wide command, over the doubles of tests.cli_doubles (no instance started)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sarra.cli import pump
from sarra.cli.runtime import Runtime
from tests.cli_doubles import standin_runtime


@dataclass
class Sr:
    runtime: Runtime
    config_dir: Path
    state_dir: Path
    out: io.StringIO = field(default_factory=io.StringIO)
    err: io.StringIO = field(default_factory=io.StringIO)

    def __call__(self, *argv: str) -> int:
        self.out, self.err = io.StringIO(), io.StringIO()
        return pump.main(argv, runtime=self.runtime, out=self.out, err=self.err)

    def write(self, component: str, name: str, text: str) -> Path:
        path = self.config_dir / component / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


@pytest.fixture
def sr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sr:
    monkeypatch.setenv("SR_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SR_STATE_DIR", str(tmp_path / "state"))
    sr = Sr(standin_runtime(), tmp_path / "config", tmp_path / "state")
    sr.write("subscribe", "feed.conf", "instances 2\nbroker amqps://feeder:TopSecret@b.example/\n")
    sr.write("subscribe", "old.conf.off", "instances 1\n")
    sr.write("post", "poll.conf", "sleep 5\n")
    sr.write("post", "once.conf", "sleep 0\n")  # one-shot: not a daemon, never selected
    return sr


def test_list_names_every_config_of_every_component_with_disabled_ones_marked(sr: Sr) -> None:
    assert sr("list") == 0
    assert sr.out.getvalue().splitlines() == [
        "subscribe/feed",
        "subscribe/old  (disabled)",
        "post/once",
        "post/poll",
    ]


def test_status_json_has_the_documented_schema_and_no_secret(sr: Sr) -> None:
    assert sr("status", "--json") == 1  # nothing runs
    document = json.loads(sr.out.getvalue())
    assert document["schema"] == pump.JSON_SCHEMA
    assert document["ok"] is False
    by_label = {f"{r['component']}/{r['config']}": r for r in document["configs"]}
    assert sorted(by_label) == ["post/poll", "subscribe/feed", "subscribe/old"]
    feed = by_label["subscribe/feed"]
    assert set(feed) == {
        "component",
        "config",
        "enabled",
        "error",
        "instances",
        "queue",
        "names",
        "ok",
    }
    assert set(feed["names"]) == {"users", "exchanges", "source"}
    assert all(
        set(i) >= {"number", "state", "pid", "extra", "why"} for i in feed["instances"]["each"]
    )
    assert feed["enabled"] is True
    assert feed["ok"] is False
    assert feed["instances"]["expected"] == 2
    assert feed["instances"]["running"] == 0
    assert feed["instances"]["pids"] == []
    assert [(i["number"], i["state"], i["pid"]) for i in feed["instances"]["each"]] == [
        (1, "stopped", None),
        (2, "stopped", None),
    ]
    assert feed["queue"] == {
        "name": "q_test.subscribe.feed",
        "backlog": 7,
        "consumers": 3,
        "extra": {},
    }
    old = by_label["subscribe/old"]
    assert (old["enabled"], old["ok"], old["queue"], old["instances"]["expected"]) == (
        False,
        True,
        None,
        0,
    )
    assert "TopSecret" not in sr.out.getvalue()


def test_status_json_reports_an_unreachable_broker_redacted(sr: Sr) -> None:
    sr.write("subscribe", "feed.conf", "fail_status amqp://u:Hidden@nowhere/\n")
    assert sr("status", "--json", "subscribe/feed") == 1
    (record,) = json.loads(sr.out.getvalue())["configs"]
    assert record["queue"]["error"].startswith("cannot reach")
    assert "Hidden" not in sr.out.getvalue()


def test_text_status_prints_one_header_and_every_line_names_component_and_config(
    sr: Sr,
) -> None:
    assert sr("status") == 1
    lines = sr.out.getvalue().splitlines()
    assert sum(line.startswith("config ") for line in lines) == 1
    body = lines[1:]
    assert any(line.startswith("subscribe/feed ") for line in body)
    assert any(line.startswith("post/poll ") for line in body)
    assert all(line.split()[0] in {"subscribe/feed", "subscribe/old", "post/poll"} for line in body)


def test_an_unknown_selection_is_an_error_naming_it_and_nothing_is_done(sr: Sr) -> None:
    assert sr("start", "subscribe/feed", "subscribe/nosuch") == 2
    assert sr.err.getvalue().startswith("sr: subscribe/nosuch: no configuration 'nosuch'")
    assert sr("start", "subscribe/feed", "bogus/feed") == 2
    assert "bogus" in sr.err.getvalue()
    assert sr("start", "subscribe/x/feed") == 2
    assert "subscribe/x/feed: a selection is component/config" in sr.err.getvalue()
    assert sr.out.getvalue() == ""
    assert not (sr.state_dir / "subscribe").exists()  # no instance was started


def test_usage_errors_exit_2(sr: Sr) -> None:
    assert sr() == 2
    assert "no action given" in sr.err.getvalue()
    assert sr("foreground") == 2
    assert "unknown action 'foreground'" in sr.err.getvalue()
    assert sr("--verbose", "status") == 2
    assert sr("start", "--json") == 2
    assert sr("--help") == 0
    assert "reload" in sr.out.getvalue()


def test_stop_goes_over_every_config_and_prefixes_its_output(sr: Sr) -> None:
    assert sr("stop") == 0
    assert sr.out.getvalue().splitlines() == [
        "subscribe/feed: not running",
        "subscribe/old: not running",
        "post/poll: not running",
    ]


def test_a_failing_pair_makes_the_exit_status_nonzero_but_the_others_still_run(sr: Sr) -> None:
    # a disabled config is refused by start (status 1); a broken one is a config error (2)
    sr.write("subscribe", "broken.conf", "instances many\n")
    assert sr("stop", "subscribe/old", "subscribe/feed") == 0
    assert sr("reload", "subscribe/broken", "subscribe/feed") == 0  # nothing runs: untouched
    assert "subscribe/feed: not running, left alone" in sr.out.getvalue()
    assert sr("start", "subscribe/old") == 1
    assert "old: disabled, not started" in sr.err.getvalue()
    assert sr("sanity", "subscribe/broken", "subscribe/old") == 2
    assert "broken.conf:1: option 'instances'" in sr.err.getvalue()


def test_a_one_shot_config_without_sleep_is_refused_when_selected(sr: Sr) -> None:
    assert sr("start", "post/once") == 2
    assert "one-shot" in sr.err.getvalue()


def test_a_bare_component_selects_all_its_configs(sr: Sr) -> None:
    assert sr("stop", "subscribe") == 0
    assert sr.out.getvalue().splitlines() == [
        "subscribe/feed: not running",
        "subscribe/old: not running",
    ]
