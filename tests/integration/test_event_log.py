"""Per-file event lines in a real instance's log, text and ``log_format json``: one line per
event with the same fields (context component/config/instance, event, relPath, code, source)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sarra.cli import pump
from sarra.cli.instances import process_matches, read_pid_file
from tests.integration.flowkit import Site, make_files, post, unique, wait_for


@pytest.fixture
def site(tmp_path: Path, rabbitmq, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    made = Site(tmp_path / "site", rabbitmq.port).setup()
    for key, value in made.env.items():
        monkeypatch.setenv(key, value)
    yield made
    for path in made.state_dir.glob("*/*/*.pid"):  # never leave daemons behind
        pid = read_pid_file(path)
        if pid is not None and process_matches(pid, [path.parent.parent.name]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _sr(*argv: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    pump.main(argv, out=out, err=err)
    return out.getvalue() + err.getvalue()


def _log(site: Site, name: str) -> Path:
    return site.state_dir / "log" / f"sr_subscribe_{name}_001.log"


def _events(text: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [r for r in records if "event" in r]


def test_each_file_event_is_one_line_with_the_same_fields_in_text_and_json(  # type: ignore[no-untyped-def]
    site: Site, nginx, tmp_path: Path
) -> None:
    tag = unique("ev")
    for name, fmt in (("asjson", "json"), ("astext", "text")):
        site.write_subscribe(
            name,
            f"exchange xs_guest\nsubtopic {tag}{name}.#\ndirectory {tmp_path / name}\n"
            f"mirror on\nexpire 10m\nlog_format {fmt}\nlog_reject on\nreject .*skip.*\n"
            "accept .*\nretry off\nattempts 1\n",
        )
    try:
        said = _sr("start")
        assert "subscribe/asjson" in said and "subscribe/astext" in said, said
        for name in ("asjson", "astext"):
            log = _log(site, name)
            wait_for(
                lambda log=log: log.exists() and "consuming from" in log.read_text(),
                timeout=30,
                what=f"{name} consuming",
            )
            root = nginx.root / f"{tag}{name}"
            files = make_files(root, ["a.txt", "c.txt", "skip.txt"], size=1000)
            missing = make_files(tmp_path / "nowhere" / f"{tag}{name}", ["gone.txt"])
            assert post(site, nginx.base_url, nginx.root, files, ("source", "alice")) == 0
            src = tmp_path / "nowhere"
            assert post(site, nginx.base_url, src, missing, ("source", "alice")) == 0
        log_json, log_text = _log(site, "asjson"), _log(site, "astext")
        wait_for(
            lambda: (
                len(_events(log_json.read_text())) >= 4
                and log_text.read_text().count("relPath=") >= 4
            ),
            timeout=60,
            what="every file event logged",
        )
    finally:
        _sr("stop")

    logged = _events(log_json.read_text())
    assert len(logged) == 4, logged  # one line per event: 2 downloaded, 1 rejected, 1 failed
    events = {(r["event"], r["relPath"].rsplit("/", 1)[-1]): r for r in logged}
    base = f"{tag}asjson"
    downloaded = events[("downloaded", "a.txt")]
    assert downloaded["context"] == "subscribe/asjson/001"
    assert downloaded["relPath"] == f"{base}/a.txt"
    size = (nginx.root / base / "a.txt").stat().st_size
    assert (downloaded["code"], downloaded["source"], downloaded["bytes"]) == (201, "alice", size)
    assert downloaded["level"] == "INFO"
    assert events[("downloaded", "c.txt")]["code"] == 201
    rejected = events[("rejected", "skip.txt")]
    assert (rejected["code"], rejected["source"]) == (None, "alice")
    failed = events[("failed", "gone.txt")]
    assert failed["level"] == "ERROR" and failed["code"] >= 400 and failed["source"] == "alice"
    assert failed["relPath"] == f"{base}/gone.txt"

    text = log_text.read_text()
    base = f"{tag}astext"
    ctx = r"\[INFO\] subscribe/astext/001 \S+: "
    assert re.search(
        ctx + rf"downloaded code=201 relPath={base}/a.txt source=alice: .*\({size} bytes\)$",
        text,
        re.M,
    ), text
    assert re.search(ctx + rf"rejected code=- relPath={base}/skip.txt source=alice: ", text, re.M)
    assert re.search(
        rf"\[ERROR\] subscribe/astext/001 \S+: failed code=4\d\d relPath={base}/gone.txt "
        "source=alice: ",
        text,
        re.M,
    ), text
