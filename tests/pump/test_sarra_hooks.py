"""sr_sarra's on_post against a real broker and nginx: a plugin that returns False keeps a
placed file from being re-announced; the others are announced as usual."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.flowkit import make_files, unique, wait_for
from tests.pump.pumpkit import Home, Tap, post_files, pump_nginx, running


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rabbitmq: Any) -> Home:
    h = Home(tmp_path / "home")
    for k, v in h.env.items():
        monkeypatch.setenv(k, v)
    h.credentials(rabbitmq.url())
    return h


def test_on_post_false_keeps_sarra_from_announcing_a_placed_file(
    home: Home, rabbitmq: Any, tmp_path: Path
) -> None:
    tag = unique("")
    broker = f"amqp://guest@127.0.0.1:{rabbitmq.port}/"
    log = tmp_path / "on_post.log"
    plugin = tmp_path / "hold_back.py"
    plugin.write_text(
        "def on_post(work):\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(f'{work.code} {work.notice.path} {work.local_path}\\n')\n"
        "    return not work.notice.path.endswith('.skip')\n"
    )
    with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:
        src = web.root / "src"
        files = make_files(src, ["a.skip", "b.txt"], size=800)
        tree = web.root / "pub"
        home.write(
            "sarra",
            "feed",
            f"broker {broker}\ndeclare source alice{tag}\ncluster pump{tag}\n"
            f"exchange xs_alice{tag}\nsubtopic #\nexpire 10m\ndirectory {tree}\n"
            f"post_broker {broker}\npost_exchange xpub{tag}\n"
            f"post_base_url {web.base_url}/pub\npost_base_dir {tree}\non_post {plugin}\n",
        )
        tap = Tap(rabbitmq.broker_url(), f"xpub{tag}").start()
        try:
            with running(home, "sarra", "feed"):
                base = f"{web.base_url}/src"
                assert (
                    post_files(
                        home,
                        broker,
                        f"xs_alice{tag}",
                        base,
                        src,
                        files,
                        ("to_clusters", f"pump{tag}"),
                    )
                    == 0
                )
                wait_for(lambda: len(tap.notices) >= 1, 60, "the announcement of b.txt")
                wait_for(lambda: (tree / "a.skip").exists(), 60, "a.skip placed")
                time.sleep(1)  # a.skip's announcement, had there been one, was published first
        finally:
            tap.stop()
        assert tap.paths() == ["b.txt"]
        assert (tree / "a.skip").read_bytes() == (src / "a.skip").read_bytes()
        lines = sorted(log.read_text().splitlines())
        assert lines == [f"201 a.skip {tree}/a.skip", f"201 b.txt {tree}/b.txt"]
