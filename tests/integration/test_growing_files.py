"""Growing files end to end (issue 19 item 4): files appended to 50 times over 30 s are
announced block by block while they grow, by sr_watch and by sr_post (``growing on``), through
RabbitMQ; a subscriber fetches the blocks from nginx as they complete and places each file,
identical, only once it is complete."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from sarra.components.watch import WatchComponent
from tests.integration.flowkit import Site, post, running_subscriber, site_env, unique, wait_for

BLOCK = 64 * 1024
APPENDS = 50
GROWTH_SECONDS = 30.0  # the "grown over 30 s in 50 appends"


@pytest.fixture
def site(tmp_path: Path, rabbitmq) -> Site:  # type: ignore[no-untyped-def]
    return Site(tmp_path / "site", rabbitmq.port).setup()


def _on_file_plugin(tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "on_file.log"
    plugin = tmp_path / "count_on_file.py"
    plugin.write_text(
        "def on_file(work):\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(work.local_path + '\\n')\n"
    )
    return plugin, log


def _inflight(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and "sr-part" in p.name]


def test_files_grown_over_30s_in_50_appends_arrive_identical_and_only_once_complete(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path
):
    tag = unique("grow")
    src = nginx.root / tag
    watched_dir = src / "watched"
    watched_dir.mkdir(parents=True)
    watched = watched_dir / "radar.vol"  # announced by sr_watch
    followed = src / "app.log"  # announced by sr_post --growing
    rng = random.Random(19)
    # appends of 1 to 90 KiB: blocks complete now and then, some appends complete none
    chunks = [rng.randbytes(rng.randrange(1024, 90 * 1024)) for _ in range(APPENDS)]
    data = b"".join(chunks)
    assert len(data) % BLOCK != 0

    dest = tmp_path / "dest"
    plugin, on_file_log = _on_file_plugin(tmp_path)
    site.write_subscribe(
        "sub_grow",
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        f"expire 10m\nreport_back off\non_file {plugin}\naccept .*\n",
    )
    common = [("blocksize", str(BLOCK)), ("growing", "on"), ("sum", "d")]
    stop_watch = threading.Event()
    statuses: dict[str, int] = {}

    def watch() -> None:
        options = [
            ("post_broker", site.broker),
            ("post_base_url", nginx.base_url),
            ("post_base_dir", str(nginx.root)),
            ("path", str(watched_dir)),
            ("sleep", "3"),  # settled after 3 s without a write (appends come every 0.6 s)
            *common,
        ]
        with site_env(site):
            cfg = site.load("watch", None, options)
        statuses["watch"] = WatchComponent().run(cfg, 0, stop_watch)

    def post_growing() -> None:
        statuses["post"] = post(
            site, nginx.base_url, nginx.root, [followed], *common, ("growing_idle", "3")
        )

    followed.write_bytes(b"")
    with running_subscriber(site, "sub_grow"):
        watcher = threading.Thread(target=watch, name="sr_watch", daemon=True)
        watcher.start()
        (watched_dir / "ready.txt").write_text("ready\n")
        wait_for(
            lambda: (dest / "watched" / "ready.txt").exists(), timeout=30, what="sr_watch ready"
        )
        poster = threading.Thread(target=post_growing, name="sr_post", daemon=True)
        poster.start()

        partial_seen = {"radar.vol": 0, "app.log": 0}
        final_seen_early = []
        started = time.monotonic()
        with watched.open("ab") as w, followed.open("ab") as p:
            for i, chunk in enumerate(chunks):
                for f in (w, p):
                    f.write(chunk)
                    f.flush()
                time.sleep(
                    max(0.0, started + (i + 1) * GROWTH_SECONDS / APPENDS - time.monotonic())
                )
                # while the files grow, blocks arrive into in-flight files only
                for name in ("watched/radar.vol", "app.log"):
                    if (dest / name).exists():
                        final_seen_early.append((i, name))
                for q in _inflight(dest):
                    for name in partial_seen:
                        if q.name.startswith(f".{name}.") and q.stat().st_size > 0:
                            partial_seen[name] += 1
        assert time.monotonic() - started >= GROWTH_SECONDS - 0.5

        wait_for(
            lambda: (dest / "watched/radar.vol").exists() and (dest / "app.log").exists(),
            timeout=40,
            what="both grown files",
        )
        poster.join(timeout=30)
        wait_for(
            lambda: on_file_log.exists() and len(on_file_log.read_text().splitlines()) >= 3,
            what="on_file",
        )
        stop_watch.set()
        watcher.join(timeout=30)

    assert final_seen_early == []  # never under the final name before it was complete
    # blocks arrived while the files were growing, from both posters
    assert min(partial_seen.values()) >= APPENDS // 2, partial_seen
    assert (dest / "watched" / "radar.vol").read_bytes() == data
    assert (dest / "app.log").read_bytes() == data
    # with the time the final notices gave (that of the source once it settled)
    for got, source in ((dest / "watched" / "radar.vol", watched), (dest / "app.log", followed)):
        assert abs(got.stat().st_mtime - source.stat().st_mtime) < 0.01
    assert statuses == {"watch": 0, "post": 0}
    calls = on_file_log.read_text().splitlines()
    assert sorted(Path(c).name for c in calls) == ["app.log", "radar.vol", "ready.txt"]
    assert _inflight(dest) == []
