"""sr_sender's ``do_put`` hook: a plugin is asked first for every file to push, with the local
path and the URL of the final remote name; True replaces the built-in transport, None falls
back to it, False or an exception is a retryable failure (docs/plugins.md). The real sftp run
is tests/integration/test_plugin_hooks_sender.py."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sarra.flow.send as send
from sarra.codec import v02
from sarra.errors import TransportUnavailable
from sarra.flow.hooks import Plugins
from sarra.flow.send import RemoteTarget, Sender, SendSettings, remote_url
from sarra.flow.work import WorkItem
from sarra.notice import Checksum, Notice, PartSpec
from sarra.transfer.base import Features, RemoteStat, Transport


class Recorder(Transport):
    """The built-in transport, recording what it is asked to do at the destination."""

    features = Features(put=True, rename=True, delete=True, mkdirs=True)

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.sizes: dict[str, int] = {}

    def get(self, url: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        raise AssertionError("a sender does not download")

    def stat(self, url: str) -> RemoteStat:
        return RemoteStat(self.sizes[url])

    def put(
        self, local_path: str, remote_path: str, offset: int = 0, length: int | None = None
    ) -> int:
        self.calls.append(("put", local_path, remote_path))
        self.sizes[remote_path] = Path(local_path).stat().st_size
        return self.sizes[remote_path]

    def rename(self, old: str, new: str) -> None:
        self.calls.append(("rename", old, new))

    def delete(self, remote_path: str) -> None:
        self.calls.append(("delete", remote_path))

    def mkdirs(self, remote_path: str) -> None:
        self.calls.append(("mkdirs", remote_path))

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class Putter:
    """A do_put plugin answering ``answer`` (or raising) and recording what it was asked."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str]] = []

    def do_put(self, local_path: str, url: str) -> bool | None:
        self.asked.append((local_path, url))
        if self.answer == "raise":
            raise OSError("scp: connection refused")
        return self.answer  # type: ignore[no-any-return]


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[Recorder]:
    """Every built-in transport the sender opens."""
    made: list[Recorder] = []

    def fake_open(destination: str, **_kw: Any) -> Recorder:
        made.append(Recorder())
        return made[-1]

    monkeypatch.setattr(send, "open_transport", fake_open)
    return made


def _notice(path: str, data: bytes, letter: str = "d", parts: PartSpec | None = None) -> Notice:
    digest = (hashlib.sha512 if letter == "R" else hashlib.md5)(data).hexdigest()
    return v02.make_notice(
        exchange="xs_u", topic_prefix="v02.post", pubtime="20260101000000",
        base_url="file:", path=path,
        checksum=Checksum(letter, digest),
        parts=parts or PartSpec("1", len(data), 1, 0, 0), headers={},
    )  # fmt: skip


def _send(tmp_path: Path, plugin: object | None, notice: Notice) -> WorkItem:
    plugins = Plugins()
    if plugin is not None:
        plugins.register("putter", plugin)
    settings = SendSettings(destination="sftp://u@h:2222/", base_dir=str(tmp_path / "local"))
    sender = Sender(settings, lambda n: RemoteTarget("/data/in", n.path), plugins)
    item = WorkItem(notice)
    assert sender.select(item)
    sender.work(item)
    return item


@pytest.fixture
def local(tmp_path: Path) -> Path:
    f = tmp_path / "local" / "sub" / "a.bin"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"payload!")
    return f


def test_a_do_put_plugin_sends_the_file_instead_of_the_builtin_transport(
    tmp_path: Path, local: Path, opened: list[Recorder]
) -> None:
    putter = Putter(True)
    item = _send(tmp_path, putter, _notice("sub/a.bin", b"payload!"))
    assert (item.code, item.message, item.size) == (201, "Delivered", 8)
    assert putter.asked == [(str(local), "sftp://u@h:2222/data/in/sub/a.bin")]
    assert opened == []  # no connection, no directory, no in-flight name, no rename


def test_a_do_put_plugin_returning_none_leaves_the_file_to_sarra(
    tmp_path: Path, local: Path, opened: list[Recorder]
) -> None:
    putter = Putter(None)
    item = _send(tmp_path, putter, _notice("sub/a.bin", b"payload!"))
    assert item.code == 201 and len(putter.asked) == 1
    assert opened[0].calls == [
        ("mkdirs", "/data/in/sub"),
        ("put", str(local), "/data/in/sub/a.bin.tmp"),
        ("rename", "/data/in/sub/a.bin.tmp", "/data/in/sub/a.bin"),
    ]


@pytest.mark.parametrize("answer", [False, "raise"], ids=["false", "exception"])
def test_a_failed_do_put_is_a_retryable_transfer_failure(
    tmp_path: Path, local: Path, opened: list[Recorder], answer: Any
) -> None:
    with pytest.raises(TransportUnavailable, match="do_put plugin") as caught:
        _send(tmp_path, Putter(answer), _notice("sub/a.bin", b"payload!"))
    assert caught.value.retryable and caught.value.report_code == 499
    assert opened == []  # not handed to the built-in transport behind the plugin's back


def test_without_a_do_put_plugin_the_builtin_transport_sends(
    tmp_path: Path, local: Path, opened: list[Recorder]
) -> None:
    class OnlyFiles:
        def on_file(self, work: WorkItem) -> None:
            raise AssertionError("a sender does not call on_file")

    item = _send(tmp_path, OnlyFiles(), _notice("sub/a.bin", b"payload!"))
    assert item.code == 201
    assert [c[0] for c in opened[0].calls] == ["mkdirs", "put", "rename"]


def test_the_first_plugin_that_answers_wins(
    tmp_path: Path, local: Path, opened: list[Recorder]
) -> None:
    declining, sending, unasked = Putter(None), Putter(True), Putter(True)
    plugins = Plugins()
    for name, p in reversed([("a", declining), ("b", sending), ("c", unasked)]):
        plugins.register(name, p)  # pluggy calls the last registered first
    settings = SendSettings(destination="sftp://u@h/", base_dir=str(tmp_path / "local"))
    sender = Sender(settings, lambda n: RemoteTarget("incoming", n.path), plugins)
    item = WorkItem(_notice("sub/a.bin", b"payload!"))
    assert sender.select(item)
    sender.work(item)
    assert item.code == 201
    assert declining.asked == sending.asked == [(str(local), "sftp://u@h/~/incoming/sub/a.bin")]
    assert unasked.asked == [] and opened == []


def test_a_multi_part_file_is_put_once_and_every_block_reported(
    tmp_path: Path, local: Path, opened: list[Recorder]
) -> None:
    putter = Putter(True)
    plugins = Plugins()
    plugins.register("putter", putter)
    settings = SendSettings(destination="sftp://u@h/", base_dir=str(tmp_path / "local"))
    sender = Sender(settings, lambda n: RemoteTarget("/in", n.path), plugins)
    codes = []
    for block in range(2):
        item = WorkItem(_notice("sub/a.bin", b"payl", parts=PartSpec("i", 4, 2, 0, block)))
        assert sender.select(item)
        sender.work(item)
        codes.append((item.code, item.size))
    assert codes == [(201, 4), (201, 4)]
    assert putter.asked == [(str(local), "sftp://u@h/in/sub/a.bin")]
    assert opened == []


def test_removals_use_the_builtin_transport_not_do_put(
    tmp_path: Path, opened: list[Recorder]
) -> None:
    putter = Putter(True)
    item = _send(tmp_path, putter, _notice("sub/gone.bin", b"", letter="R"))
    assert item.code == 201 and putter.asked == []
    assert opened[0].calls == [("delete", "/data/in/sub/gone.bin")]


@pytest.mark.parametrize(
    ("destination", "path", "url"),
    [
        ("sftp://u@h/", "/data/a b.txt", "sftp://u@h/data/a b.txt"),
        ("sftp://u@h:2222", "incoming/a.txt", "sftp://u@h:2222/~/incoming/a.txt"),
    ],
)
def test_the_url_given_to_do_put_names_the_final_remote_path(
    destination: str, path: str, url: str
) -> None:
    assert remote_url(destination, path) == url


def test_a_sender_config_naming_on_file_is_told_it_is_ignored(tmp_path: Path) -> None:
    from sarra.config.settings import load_settings

    plugin = tmp_path / "p.py"
    plugin.write_text("def on_file(work):\n    pass\n")
    conf = tmp_path / "sender" / "s.conf"
    conf.parent.mkdir()
    conf.write_text(f"broker amqp://u@h/\ndestination sftp://u@h/\non_file {plugin}\n")
    env = {"SR_CONFIG_DIR": str(tmp_path), "SR_STATE_DIR": str(tmp_path), "HOME": str(tmp_path)}
    loaded = load_settings("sender", str(conf), env=env)
    assert any("option 'on_file' is ignored by sender" in w for w in loaded.warnings)
