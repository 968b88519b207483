"""The hooks beyond on_message/on_file: when they are called, with what, in which order, and
what their return values and exceptions do (docs/plugins.md)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from sarra.codec import v02
from sarra.flow.download import Destination, Downloader, DownloadSettings
from sarra.flow.hooks import HeartbeatTicker, Plugins
from sarra.flow.work import WorkItem
from sarra.notice import Checksum, Notice, PartSpec
from sarra.parts.arithmetic import split


class Recording:
    """A plugin object recording every hook call in one list."""

    def __init__(self, post: bool | None = None, report: bool | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.post = post
        self.report = report

    def on_part(self, work: WorkItem) -> None:
        assert work.notice.parts is not None
        self.calls.append(("on_part", work.notice.parts.block_number))

    def on_file(self, work: WorkItem) -> None:
        self.calls.append(("on_file", work.local_path))

    def on_post(self, work: WorkItem) -> bool | None:
        self.calls.append(("on_post", work.notice.path))
        return self.post

    def on_report(self, work: WorkItem) -> bool | None:
        self.calls.append(("on_report", work.code))
        return self.report

    def on_heartbeat(self, config: object) -> None:
        self.calls.append(("on_heartbeat", config))


class Failing:
    def on_post(self, work: WorkItem) -> bool:
        raise RuntimeError("plugin bug")

    def on_report(self, work: WorkItem) -> bool:
        raise RuntimeError("plugin bug")

    def on_heartbeat(self, config: object) -> None:
        raise RuntimeError("plugin bug")

    def on_part(self, work: WorkItem) -> None:
        raise RuntimeError("plugin bug")


def _plugins(*plugins: object) -> Plugins:
    out = Plugins()
    for i, p in reversed(list(enumerate(plugins))):  # pluggy calls the last registered first
        out.register(f"p{i}", p)
    return out


def _notice(path: str) -> Notice:
    return v02.make_notice(
        exchange="xpublic", topic_prefix="v02.post", pubtime="20260101000000",
        base_url="file:", path=path, checksum=Checksum("d", "0" * 32), headers={},
        parts=PartSpec("1", 10, 1, 0, 0),
    )  # fmt: skip


# -- on_part, then on_file ------------------------------------------------------------------


def _blocks(src: Path, data: bytes, bs: int) -> list[Notice]:
    out = []
    for spec in split(len(data), bs):
        block = data[spec.offset : spec.offset + spec.length]
        n = v02.make_notice(
            exchange="xpublic", topic_prefix="v02.post", pubtime="20260101000000",
            base_url="file:", path=str(src), checksum=Checksum("d", hashlib.md5(block).hexdigest()),
            parts=spec, headers={"mtime": "20260101000000"},
        )  # fmt: skip
        out.append(n)
    return out


def _downloader(tmp_path: Path, plugins: Plugins, inplace: bool = True) -> Downloader:
    return Downloader(
        DownloadSettings(),
        lambda n: Destination(str(tmp_path / "dest"), "f.bin"),
        plugins,
        parts_state=tmp_path / "state",
        inplace=inplace,
    )


def _receive(downloader: Downloader, notices: list[Notice]) -> list[WorkItem]:
    items = []
    for n in notices:
        item = WorkItem(n)
        item.dest_root, item.dest_rel = str(downloader.resolve(n).root), "f.bin"  # type: ignore[union-attr]
        downloader.work(item)
        items.append(item)
    return items


def test_on_part_runs_after_each_verified_block_and_before_on_file(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes, 3 blocks of 4096
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    rec = Recording()
    downloader = _downloader(tmp_path, _plugins(rec))
    items = _receive(downloader, _blocks(src, data, 4096))
    final = str(tmp_path / "dest" / "f.bin")
    assert rec.calls == [("on_part", 0), ("on_part", 1), ("on_part", 2), ("on_file", final)]
    assert [i.code for i in items] == [201, 201, 201]
    assert Path(final).read_bytes() == data
    # a block that was already there (redelivered) is not a new block: no on_part
    rec.calls.clear()
    again = _receive(downloader, _blocks(src, data, 4096)[:1])
    assert again[0].code == 304 and rec.calls == []


def test_on_part_runs_for_a_block_kept_as_a_part_file(tmp_path: Path) -> None:
    data = b"x" * 5000
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    rec = Recording()
    _receive(_downloader(tmp_path, _plugins(rec), inplace=False), _blocks(src, data, 4096)[:1])
    assert rec.calls == [("on_part", 0)]


def test_a_corrupt_block_gets_no_on_part(tmp_path: Path) -> None:
    data = b"y" * 5000
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    rec = Recording()
    notices = _blocks(src, data, 4096)
    src.write_bytes(b"z" * 5000)  # the origin changed: the block's sum no longer matches
    with pytest.raises(Exception, match="checksum mismatch"):
        _receive(_downloader(tmp_path, _plugins(rec)), notices[:1])
    assert rec.calls == []


def test_a_failing_on_part_is_reported_500_and_the_block_stays(tmp_path: Path) -> None:
    data = b"w" * 5000
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    items = _receive(_downloader(tmp_path, _plugins(Failing())), _blocks(src, data, 4096))
    assert items[0].code == 500 and "on_part plugin failed: plugin bug" in items[0].message
    assert (tmp_path / "dest" / "f.bin").read_bytes() == data


# -- on_post / on_report return values and exceptions ---------------------------------------


def test_on_post_and_on_report_obey_false_and_ignore_other_returns() -> None:
    item = WorkItem(_notice("/a/f.txt"))
    item.settle(201, "Downloaded")
    assert _plugins(Recording(post=None, report=True)).on_post(item) is True
    assert _plugins(Recording(post=False)).on_post(item) is False
    assert _plugins(Recording(report=False)).on_report(item) is False
    rec = Recording(report=None)
    assert _plugins(rec, Recording(report=False)).on_report(item) is False
    assert rec.calls == [("on_report", 201)]  # the first plugin was asked too


def test_a_failing_on_post_or_on_report_is_logged_and_does_not_suppress(
    caplog: pytest.LogCaptureFixture,
) -> None:
    item = WorkItem(_notice("/a/f.txt"))
    plugins = _plugins(Failing())
    with caplog.at_level(logging.ERROR, logger="sarra.flow.hooks"):
        assert plugins.on_post(item) is True
        assert plugins.on_report(item) is True
        plugins.on_heartbeat("cfg")  # does not raise
    messages = [r.getMessage() for r in caplog.records]
    assert any("on_post plugin failed for a/f.txt" in m for m in messages), messages
    assert any("on_report plugin failed" in m for m in messages)
    assert any("on_heartbeat plugin failed" in m for m in messages)


# -- on_heartbeat -------------------------------------------------------------------------


def test_on_heartbeat_is_called_once_per_interval_from_the_first_tick() -> None:
    rec = Recording()
    ticker = HeartbeatTicker(_plugins(rec), "cfg", interval=300)
    assert ticker.tick(now=1000.0) is False  # starts the interval
    assert ticker.tick(now=1299.0) is False
    assert ticker.tick(now=1300.0) is True
    assert ticker.tick(now=1305.0) is False
    assert ticker.tick(now=1600.0) is True
    assert rec.calls == [("on_heartbeat", "cfg"), ("on_heartbeat", "cfg")]


def test_no_heartbeat_plugin_means_no_call() -> None:
    assert HeartbeatTicker(Plugins(), "cfg", interval=0).tick(now=5.0) is False


# -- do_get ---------------------------------------------------------------------------------


class Getter:
    """A do_get plugin: copies from a local directory for "fake:" URLs, else declines."""

    def __init__(self, origin: Path, answer: bool | None = True) -> None:
        self.origin = origin
        self.answer = answer
        self.asked: list[tuple[str, str]] = []

    def do_get(self, url: str, path: str) -> bool | None:
        self.asked.append((url, path))
        assert Path(path).exists() and Path(path).stat().st_size == 0
        if not url.startswith("file:") or self.answer is not True:
            return self.answer
        Path(path).write_bytes(b"from the plugin: " + Path(url[5:]).read_bytes())
        return True


def _whole(src: Path, data: bytes) -> Notice:
    return v02.make_notice(
        exchange="xpublic", topic_prefix="v02.post", pubtime="20260101000000",
        base_url="file:", path=str(src), checksum=Checksum("d", hashlib.md5(data).hexdigest()),
        parts=PartSpec("1", len(data), 1, 0, 0), headers={},
    )  # fmt: skip


def _get_whole(tmp_path: Path, plugins: Plugins, notice: Notice) -> WorkItem:
    downloader = _downloader(tmp_path, plugins)
    item = WorkItem(notice)
    item.dest_root, item.dest_rel = str(tmp_path / "dest"), "f.bin"
    try:
        downloader.work(item)
    finally:
        downloader.close()
    return item


def test_a_do_get_plugin_fetches_instead_of_the_builtin_transport(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    getter = Getter(tmp_path)
    expected = b"from the plugin: payload"  # what the plugin wrote, not what file: would read
    item = _get_whole(tmp_path, _plugins(getter), _whole(src, expected))
    assert item.code == 201
    assert (tmp_path / "dest" / "f.bin").read_bytes() == expected
    assert [u for u, _ in getter.asked] == [f"file:{src}"]
    assert not Path(getter.asked[0][1]).exists()  # its temporary file is gone


def test_a_do_get_plugin_returning_none_leaves_the_url_to_sarra(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    getter = Getter(tmp_path, answer=None)
    item = _get_whole(tmp_path, _plugins(getter), _whole(src, b"payload"))
    assert item.code == 201 and len(getter.asked) == 1
    assert (tmp_path / "dest" / "f.bin").read_bytes() == b"payload"
    assert not Path(getter.asked[0][1]).exists()


@pytest.mark.parametrize("answer", [False, "raise"], ids=["false", "exception"])
def test_a_failed_do_get_is_a_retryable_transfer_failure(tmp_path: Path, answer: Any) -> None:
    from sarra.errors import TransportUnavailable

    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")

    class Broken:
        def do_get(self, url: str, path: str) -> bool:
            self.path = path
            if answer == "raise":
                raise OSError("curl: (7) Failed to connect")
            return False

    broken = Broken()
    with pytest.raises(TransportUnavailable) as caught:
        _get_whole(tmp_path, _plugins(broken), _whole(src, b"payload"))
    assert caught.value.retryable and caught.value.report_code == 499
    assert not (tmp_path / "dest" / "f.bin").exists()
    assert not Path(broken.path).exists()


def test_a_do_get_plugin_whose_file_does_not_match_the_notice_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    with pytest.raises(Exception, match="size mismatch: expected 7 bytes"):
        _get_whole(tmp_path, _plugins(Getter(tmp_path)), _whole(src, b"payload"))
    assert not (tmp_path / "dest" / "f.bin").exists()


def test_sr2_spellings_on_hb_and_on_rpt_name_on_heartbeat_and_on_report(tmp_path: Path) -> None:
    from sarra.config import load_config

    plugin = tmp_path / "beat.py"
    plugin.write_text(
        "beats = []\n"
        "def on_heartbeat(config):\n    beats.append(config.heartbeat)\n"
        "def on_report(work):\n    return False\n"
    )
    (tmp_path / "config" / "subscribe").mkdir(parents=True)
    conf = tmp_path / "config" / "subscribe" / "c.conf"
    conf.write_text(f"heartbeat 2\non_hb {plugin}\non_rpt {plugin}\n")
    env = {"SR_CONFIG_DIR": str(tmp_path / "config"), "SR_STATE_DIR": str(tmp_path / "state")}
    cfg = load_config("subscribe", str(conf), env=env)
    assert cfg.heartbeat == 2.0
    assert dict(cfg.plugins)["on_heartbeat"] == (str(plugin),)
    assert dict(cfg.plugins)["on_report"] == (str(plugin),)
    plugins = Plugins.from_config(cfg.plugins)
    assert plugins.implements("on_heartbeat") and plugins.implements("on_report")
    assert not plugins.implements("do_get")
    plugins.on_heartbeat(cfg)
    assert plugins._pm.get_plugin(str(plugin)).beats == [2.0]
    assert plugins.on_report(WorkItem(_notice("/a/f.txt"))) is False


def test_every_hook_argument_is_declared_with_the_type_sarra_passes() -> None:
    import typing

    from sarra.config.settings import Settings
    from sarra.flow.hooks import HOOK_NAMES, HookSpecs
    from sarra.transfer.base import RemoteEntry

    expected = {
        "work": WorkItem,
        "config": Settings,
        "url": str,
        "path": str,
        "local_path": str,
        "entry": RemoteEntry,
        "directory": str,
        "page": str,
    }
    for hook in HOOK_NAMES:
        for owner in (HookSpecs, Plugins):
            hints = typing.get_type_hints(getattr(owner, hook))
            args = {name: t for name, t in hints.items() if name != "return"}
            assert args, f"{owner.__name__}.{hook} declares no argument"
            assert args == {name: expected[name] for name in args}, (owner.__name__, hook)


@pytest.mark.parametrize(
    ("component", "hook", "ignored"),
    [
        ("report", "on_start", True),
        ("log", "on_stop", True),
        ("report", "on_message", True),
        ("sender", "on_file", True),
        ("watch", "on_start", False),
        ("post", "on_stop", False),
        ("winnow", "on_message", False),
        ("sender", "do_put", False),
    ],
)
def test_a_hook_named_for_a_component_that_never_calls_it_is_said_to_be_ignored(
    tmp_path: Path, component: str, hook: str, ignored: bool
) -> None:
    from sarra.config.settings import load_settings

    plugin = tmp_path / "p.py"
    plugin.write_text(f"def {hook}(*args, **kwargs):\n    pass\n")
    conf = tmp_path / component / "c.conf"
    conf.parent.mkdir()
    conf.write_text(f"broker amqp://u@h/\nexchange xs_u\n{hook} {plugin}\n")
    env = {"SR_CONFIG_DIR": str(tmp_path), "SR_STATE_DIR": str(tmp_path), "HOME": str(tmp_path)}
    loaded = load_settings(component, str(conf), env=env)
    said = [w for w in loaded.warnings if f"option {hook!r} is ignored by {component}" in w]
    assert bool(said) is ignored, loaded.warnings
