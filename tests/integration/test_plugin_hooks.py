"""on_part, on_post, on_report and on_heartbeat in running components, against the suite's
RabbitMQ and nginx: sr_post -> RabbitMQ -> sr_subscribe -> nginx."""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path

from tests.integration.flowkit import (
    ReportTap,
    Site,
    make_files,
    post,
    running_subscriber,
    unique,
    wait_for,
)


def _plugin(tmp_path: Path, log: Path, body: str) -> Path:
    """A plugin file whose hooks append lines to ``log`` (``note(text)``)."""
    plugin = tmp_path / f"plugin_{unique()}.py"
    plugin.write_text(
        f"def note(text):\n    with open({str(log)!r}, 'a') as f:\n        f.write(text + '\\n')\n"
        + body
    )
    return plugin


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _subscription(site: Site, tag: str, dest: Path, extra: str) -> str:
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        f"expire 10m\n{extra}accept .*\n",
    )
    return name


def test_on_report_sees_each_outcome_and_false_suppresses_its_report(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("onrpt")
    src = nginx.root / tag
    make_files(src, ["quiet.txt", "loud.txt", "boom.txt"], size=1000)
    dest = tmp_path / "dest"
    log = tmp_path / "hooks.log"
    plugin = _plugin(
        tmp_path,
        log,
        "def on_report(work):\n"
        "    note(f'report {work.code} {work.notice.path}')\n"
        "    if work.notice.path.endswith('boom.txt'):\n"
        "        raise RuntimeError('a plugin bug')\n"
        "    return not work.notice.path.endswith('quiet.txt')\n",
    )
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        name = _subscription(site, tag, dest, f"on_rpt {plugin}\n")
        with running_subscriber(site, name):
            assert post(site, nginx.base_url, nginx.root, [src]) == 0
            wait_for(lambda: len(_lines(log)) >= 3, what="on_report for each file")
            wait_for(lambda: len(tap.about(f"{tag}/boom.txt")) == 1, what="boom's report")
            wait_for(lambda: len(tap.about(f"{tag}/loud.txt")) == 1, what="loud's report")
            time.sleep(1)  # quiet's report, had it been published, came in the same flush
    finally:
        tap.stop()
    assert sorted(_lines(log)) == sorted(
        f"report 201 {tag}/{n}" for n in ("quiet.txt", "loud.txt", "boom.txt")
    )
    assert tap.about(f"{tag}/quiet.txt") == []  # suppressed
    assert [r.code for r in tap.about(f"{tag}/boom.txt")] == [201]  # the plugin failed: reported
    assert (dest / "quiet.txt").read_bytes() == (src / "quiet.txt").read_bytes()


def test_on_heartbeat_is_called_about_every_heartbeat_seconds(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("onhb")
    log = tmp_path / "hooks.log"
    plugin = _plugin(
        tmp_path,
        log,
        "def on_heartbeat(config):\n    note(f'heartbeat {config.heartbeat} {config.name}')\n",
    )
    name = _subscription(site, tag, tmp_path / "dest", f"heartbeat 1\non_heartbeat {plugin}\n")
    with running_subscriber(site, name):
        wait_for(lambda: len(_lines(log)) >= 2, timeout=30, what="two heartbeats")
    assert _lines(log)[:2] == [f"heartbeat 1.0 {name}"] * 2


def test_on_part_runs_per_block_in_order_then_on_file(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("onpart")
    block = 64 * 1024
    src = nginx.root / tag / "big.bin"
    src.parent.mkdir(parents=True)
    data = bytes(range(256)) * (block * 3 // 256) + b"tail"
    src.write_bytes(data)
    dest = tmp_path / "dest"
    log = tmp_path / "hooks.log"
    plugin = _plugin(
        tmp_path,
        log,
        "import os\n"
        "def on_part(work):\n"
        "    note(f'part {work.notice.parts.block_number} {os.path.exists(work.local_path)}')\n"
        "def on_file(work):\n"
        "    note(f'file {os.path.getsize(work.local_path)}')\n",
    )
    hooks = f"on_part {plugin}\non_file {plugin}\n"
    name = _subscription(site, tag, dest, f"transfer_threads 1\nreport_back off\n{hooks}")
    with running_subscriber(site, name):
        assert post(site, nginx.base_url, nginx.root, [src], ("blocksize", str(block))) == 0
        wait_for(lambda: any(x.startswith("file") for x in _lines(log)), what="on_file")
    # one transfer thread, blocks posted in order: each block's on_part, then the file's on_file
    assert _lines(log) == [
        "part 0 False",
        "part 1 False",
        "part 2 False",
        "part 3 True",
        f"file {len(data)}",
    ]
    assert (dest / "big.bin").read_bytes() == data


def test_on_post_in_sr_post_suppresses_the_notices_it_refuses_between_start_and_stop(
    site, nginx, tmp_path
):  # type: ignore[no-untyped-def]
    tag = unique("onpost")
    src = nginx.root / tag
    make_files(src, ["a.skip", "b.txt"], size=500)
    dest = tmp_path / "dest"
    log = tmp_path / "hooks.log"
    plugin = _plugin(
        tmp_path,
        log,
        "def on_post(work):\n"
        "    note(f'post {work.notice.path}')\n"
        "    return not work.notice.path.endswith('.skip')\n"
        "def on_start(config):\n"
        "    note(f'start {type(config).__name__} {config.component}')\n"
        "def on_stop(config):\n"
        "    note(f'stop {type(config).__name__}')\n",
    )
    with running_subscriber(site, _subscription(site, tag, dest, "report_back off\n")):
        assert (
            post(site, nginx.base_url, nginx.root, [src / "a.skip", src / "b.txt"],
                 ("on_post", str(plugin)))
            == 0
        )  # fmt: skip
        wait_for(lambda: (dest / "b.txt").exists(), what="the posted file")
        time.sleep(1)  # a.skip, had it been posted, was posted first
    assert _lines(log) == [
        "start Settings post",
        f"post {tag}/a.skip",
        f"post {tag}/b.txt",
        "stop Settings",
    ]
    assert not (dest / "a.skip").exists()


def _docs_do_get_example() -> str:
    """The curl plugin shown in docs/plugins.md (the indented block after its introduction)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
    _, _, rest = text.partition("A `do_get` plugin that fetches http(s) with curl")
    block = re.match(r"[^\n]*\n\n((?:    .*\n|\n)+)", rest)
    assert block is not None, "docs/plugins.md lost its do_get example"
    return textwrap.dedent(block.group(1))


def test_a_do_get_plugin_fetches_with_curl_from_nginx(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("doget")
    src = nginx.root / tag
    make_files(src, ["one.bin", "sub/two.bin"], size=300_000)
    dest = tmp_path / "dest"
    log = tmp_path / "hooks.log"
    # the documented example, wrapped to record each URL it fetched
    plugin = _plugin(
        tmp_path,
        log,
        _docs_do_get_example().replace("def do_get(", "def _docs_do_get(")
        + "def do_get(url, path):\n"
        "    got = _docs_do_get(url, path)\n"
        "    note(f'{got} {url} {os.path.getsize(path)}')\n"
        "    return got\n",
    ).resolve()
    plugin.write_text("import os\n" + plugin.read_text())
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, _subscription(site, tag, dest, f"do_get {plugin}\n")):
            assert post(site, nginx.base_url, nginx.root, [src]) == 0
            wait_for(lambda: len(tap.about("two.bin")) + len(tap.about("one.bin")) >= 2,
                     what="both reports")  # fmt: skip
    finally:
        tap.stop()
    assert {r.code for r in tap.about(".bin") if r.notice.path.startswith(tag)} == {201}
    assert sorted(_lines(log)) == sorted(
        f"True {nginx.base_url.rstrip('/')}/{tag}/{n} 300032" for n in ("one.bin", "sub/two.bin")
    )
    for n in ("one.bin", "sub/two.bin"):
        assert (dest / n).read_bytes() == (src / n).read_bytes()


def test_on_post_in_sr_watch_suppresses_the_notices_it_refuses_between_start_and_stop(
    rabbitmq, tmp_path, monkeypatch
):  # type: ignore[no-untyped-def]
    from tests.integration.test_watch import Watching

    monkeypatch.setenv("SR_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SR_STATE_DIR", str(tmp_path / "state"))
    log = tmp_path / "hooks.log"
    plugin = _plugin(
        tmp_path,
        log,
        "def on_post(work):\n"
        "    note(f'post {work.notice.path}')\n"
        "    return not work.notice.path.endswith('.skip')\n"
        "def on_start(config):\n"
        "    note(f'start {type(config).__name__} {config.component}')\n"
        "def on_stop(config):\n"
        "    note(f'stop {type(config).__name__}')\n",
    )
    w = Watching(rabbitmq, tmp_path, {"on_post": str(plugin)})
    try:
        w.start()
        (w.wdir / "a.skip").write_bytes(b"not announced\n")
        wait_for(lambda: any(x.endswith("a.skip") for x in _lines(log)), what="on_post of a.skip")
        (w.wdir / "b.txt").write_bytes(b"announced\n")
        [n] = w.collect(1)
        w.nothing_more()
    finally:
        w.close()
    assert n.path.endswith("wdir/b.txt")
    assert [x.rsplit("/", 1)[-1] for x in _lines(log)] == [
        "start Settings watch",
        ".ready",
        "a.skip",
        "b.txt",
        "stop Settings",
    ]
