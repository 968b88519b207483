"""sr2's bundled plugins and sr3's built-in callbacks: mapped to sarra's plugins or refused at
load with file, line and reason; docs/plugins.md shows the table (issue 11, item 5)."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sarra.codec.timestamps import format_timestamp_ns
from sarra.config import load_config
from sarra.config.plugin_names import PLUGIN_NAMES, lookup
from sarra.config.settings import Settings
from sarra.errors import ConfigError
from sarra.flow.hooks import Plugins, load_module
from sarra.flow.work import WorkItem
from sarra.notice import Checksum, Notice, PartSpec, frozen_headers
from sarra.plugins import file_rxpipe, msg_delay, msg_fdelay

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "config" / "subscribe").mkdir(parents=True)
    return {"SR_CONFIG_DIR": str(tmp_path / "config"), "SR_STATE_DIR": str(tmp_path / "state")}


def _load(env: dict[str, str], body: str) -> Settings:
    file = Path(env["SR_CONFIG_DIR"]) / "subscribe" / "c.conf"
    file.write_text(body, encoding="utf-8")
    return Settings.from_config(load_config("subscribe", str(file), env=env))


def _notice(path: str, *, age: float = 0.0, letter: str = "d") -> Notice:
    pubtime = format_timestamp_ns(int((time.time() - age) * 1e9))
    return Notice(
        exchange="xpublic", topic="v02.post." + path.rpartition("/")[0].replace("/", "."),
        pubtime=pubtime, base_url="https://dd.weather.gc.ca/", rel_path="/" + path, path=path,
        headers=frozen_headers({}), checksum=Checksum(letter, "0" * 32),
        parts=PartSpec("1", 10, 1, 0, 0),
    )  # fmt: skip


def _work(tmp_path: Path, path: str, **kw: Any) -> WorkItem:
    item = WorkItem(_notice(path, **kw))
    item.dest_root, item.dest_rel = str(tmp_path), path
    return item


def test_docs_show_exactly_the_table() -> None:
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)` \| (sr[23]) \| (`[\w.]+`|refused) \| (.+) \|$", text, re.M)
    shown = [(n, o, None if b == "refused" else b.strip("`"), note) for n, o, b, note in rows]
    assert shown == [(p.name, p.origin, p.builtin, p.note) for p in PLUGIN_NAMES]


@pytest.mark.parametrize("entry", [p for p in PLUGIN_NAMES if p.builtin], ids=lambda p: p.name)
def test_every_builtin_loads_as_a_plugin_with_valid_hooks(entry: Any) -> None:
    plugins = Plugins()
    plugins.register(entry.name, load_module(entry.builtin))
    assert not plugins.empty


@pytest.mark.parametrize(
    ("line", "hook", "module"),
    [
        ("on_message msg_log", "on_message", "sarra.plugins.msg_log"),
        ("on_message msg_log.py", "on_message", "sarra.plugins.msg_log"),
        ("on_file file_log", "on_file", "sarra.plugins.file_log"),
        ("plugin post_log", "plugin", "sarra.plugins.post_log"),
        ("plugin msg_delay", "plugin", "sarra.plugins.msg_delay"),
        ("on_message msg_rename_dmf", "on_message", "sarra.plugins.msg_renamer"),
        ("callback log", "plugin", "sarra.plugins.log"),
        ("flowcb sarracenia.flowcb.log.Log", "plugin", "sarra.plugins.log"),
        ("callback_prepend filter.fdelay", "plugin", "sarra.plugins.msg_fdelay"),
        ("flowcb sarracenia.flowcb.work.rxpipe.RxPipe", "plugin", "sarra.plugins.file_rxpipe"),
    ],
)
def test_a_known_name_loads_the_builtin(env: dict[str, str], line: str, hook: str, module: str):
    s = _load(env, f"broker amqp://u@h/\n{line}\n")
    assert s.plugins[hook] == (module,)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("plugin hb_memory", "does not restart an instance whose memory grows"),
        ("plugin accel_wget", "sarra downloads http, https, sftp, ftp and ftps itself"),
        ("plugin accel_scp.py", "sarra downloads http, https, sftp, ftp and ftps itself"),
        ("on_message msg_total", "remove the line, or log per notice with msg_log"),
        ("on_message msg_speedo", "sr_subscribe status"),
        ("callback nodupe", "set nodupe_ttl"),
        ("flowcb sarracenia.flowcb.nodupe.NoDupe", "set nodupe_ttl"),
        ("flowcb sarracenia.flowcb.pclean.Pclean", "Python code sarra cannot run"),
        ("on_message msg_rename4jicc", "rename option"),
    ],
)
def test_a_name_sarra_does_not_provide_is_refused_with_line_and_reason(
    env: dict[str, str], line: str, reason: str
) -> None:
    word = line.split()[0]
    with pytest.raises(ConfigError, match=rf"c\.conf:2: option '{word}': sr[23] plugin") as err:
        _load(env, f"broker amqp://u@h/\n{line}\n")
    assert reason in str(err.value)


def test_own_plugins_are_not_looked_up() -> None:
    assert lookup("/etc/sarra/plugins/msg_log.py") is None
    assert lookup("mysite.sarra_hooks") is None


def test_msg_log_and_file_log_log_the_notice_and_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = Plugins.from_config(
        {"on_message": ("sarra.plugins.msg_log",), "on_file": ("sarra.plugins.file_log",)}
    )
    item = _work(tmp_path, "obs/swob/a.xml", age=2.0)
    with caplog.at_level(logging.INFO, logger="sarra.plugins"):
        assert plugins.on_message(item)
        plugins.on_file(item)
    text = caplog.text
    assert "msg_log received:" in text
    assert "https://dd.weather.gc.ca//obs/swob/a.xml topic=v02.post.obs.swob lag=2." in text
    assert f"file_log downloaded to: {tmp_path}/obs/swob/a.xml" in text


def test_sr3_log_logs_both(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plugins = Plugins.from_config({"plugin": ("sarra.plugins.log",)})
    item = _work(tmp_path, "a/b.txt")
    with caplog.at_level(logging.INFO, logger="sarra.plugins"):
        plugins.on_message(item)
        plugins.on_file(item)
    assert "accepted: " in caplog.text and f"downloaded: {tmp_path}/a/b.txt" in caplog.text


def test_the_renamers(tmp_path: Path) -> None:
    renamer = load_module("sarra.plugins.msg_renamer")
    item = _work(tmp_path, "bulletins/CACN00_CWAO_081900__WZS_14623:pxatx:CWAO")
    renamer.on_message(item)
    assert re.fullmatch(r"bulletins/CACN00_CWAO_081900__WZS_14623:pxatx:CWAO:\d{14}", item.dest_rel)
    whatfn = load_module("sarra.plugins.msg_rename_whatfn")
    item = _work(tmp_path, "import/mdicp4d:pull-international-metadata:CMC:DICTIONARY:4")
    whatfn.on_message(item)
    assert item.dest_rel == "import/mdicp4d"
    item = _work(tmp_path, "import/plain.txt")
    whatfn.on_message(item)
    assert item.dest_rel == "import/plain.txt"


def test_msg_delay_holds_a_young_notice_for_the_time_it_still_needs(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(msg_delay, "sleep", slept.append)
    msg_delay.on_start(_load(env, "broker amqp://u@h/\nmsg_delay 30\nplugin msg_delay\n"))
    msg_delay.on_message(_work(tmp_path, "a/young.txt", age=10.0))
    msg_delay.on_message(_work(tmp_path, "a/old.txt", age=45.0))
    assert len(slept) == 1 and 19.0 < slept[0] <= 20.0


def test_msg_fdelay_drops_removals_and_waits_for_a_fresh_local_file(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(msg_delay, "sleep", slept.append)
    msg_fdelay.on_start(_load(env, "broker amqp://u@h/\nfdelay 1m\n"))
    assert msg_fdelay.on_message(_work(tmp_path, "a/gone.txt", age=100.0, letter="R")) is False
    local = tmp_path / "a" / "f.txt"
    local.parent.mkdir()
    local.write_text("x")
    os.utime(local, (time.time() - 20.0, time.time() - 20.0))
    assert msg_fdelay.on_message(_work(tmp_path, "a/f.txt", age=100.0)) is True
    assert len(slept) == 1 and 39.0 < slept[0] <= 40.0


def test_file_rxpipe_writes_each_path_to_the_named_pipe(env: dict[str, str], tmp_path: Path):
    pipe = tmp_path / "rx.pipe"
    s = _load(env, f"broker amqp://u@h/\nrxpipe_name {pipe}\non_file file_rxpipe\n")
    assert s.file_rxpipe_name == str(pipe)
    os.mkfifo(pipe)
    lines: list[str] = []

    def read() -> None:
        with open(pipe, encoding="utf-8") as reader:
            lines.extend(reader.read().splitlines())

    reader = threading.Thread(target=read)
    reader.start()
    file_rxpipe.on_start(s)
    file_rxpipe.on_file(_work(tmp_path, "a/one.txt"))
    file_rxpipe.on_file(_work(tmp_path, "b/two.txt"))
    file_rxpipe.on_stop(s)
    reader.join(timeout=10)
    assert lines == [f"{tmp_path}/a/one.txt", f"{tmp_path}/b/two.txt"]


def test_file_rxpipe_needs_a_pipe_name(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="file_rxpipe needs the path of the named pipe"):
        file_rxpipe.on_start(_load(env, "broker amqp://u@h/\non_file file_rxpipe\n"))


def test_file_rxpipe_refuses_a_path_that_is_not_a_pipe(env: dict[str, str], tmp_path: Path):
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(ConfigError, match=r"'file_rxpipe_name': .* is not a named pipe"):
        file_rxpipe.on_start(_load(env, f"broker amqp://u@h/\nfile_rxpipe_name {plain}\n"))


def test_post_log_logs_the_notice_it_is_given(caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from sarra.plugins import post_log

    notice = SimpleNamespace(
        pubtime="20261206120000.5", base_url="http://h/", rel_path="a/b.txt", topic="v02.post.a"
    )
    with caplog.at_level("INFO", logger="sarra.plugins.post_log"):
        assert post_log.on_post(SimpleNamespace(notice=notice)) is None  # never suppresses
    assert "post_log posting: 20261206120000.5 http://h/a/b.txt topic=v02.post.a" in caplog.text


def test_an_sr2_plugin_file_is_refused_saying_what_it_is(tmp_path: Path) -> None:
    from sarra.errors import ConfigError
    from sarra.flow.hooks import load_module

    v2 = tmp_path / "msg_mine.py"
    v2.write_text(
        "class Msg_Mine(object):\n"
        "    def on_message(self, parent):\n"
        "        return True\n\n"
        "msg_mine = Msg_Mine()\n"
        "self.on_message = msg_mine.on_message\n"
    )
    with pytest.raises(ConfigError, match=r"is an sr2 plugin .*'Porting your own sr2 plugins'"):
        load_module(str(v2))
    broken = tmp_path / "broken.py"
    broken.write_text("def on_message(work):\n    return True\n\nundefined_name\n")
    with pytest.raises(ConfigError, match="failed to load: name 'undefined_name'"):
        load_module(str(broken))
