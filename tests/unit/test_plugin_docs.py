"""The plugin contract in sarra/flow/hooks.py documents only what exists, and its example works."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import pytest

import sarra.flow.hooks as hooks
from sarra.errors import HostilePath
from sarra.flow.download import Destination, Downloader, DownloadSettings
from sarra.flow.hooks import Plugins, load_module
from sarra.flow.work import WorkItem
from sarra.notice import Checksum, Notice, PartSpec, frozen_headers

DOC = hooks.__doc__ or ""


def _example() -> str:
    """The literal block that follows the first ``::`` of the module docstring."""
    _, sep, rest = DOC.partition("::\n\n")
    assert sep, "hooks.py shows no example plugin"
    block = re.match(r"((?:[ ]{8}.*\n|\n)+)", rest)
    assert block is not None
    return textwrap.dedent(block.group(1))


def _notice(path: str) -> Notice:
    return Notice(
        exchange="xpublic", topic="v02.post." + path.replace("/", "."), pubtime="20260101000000",
        base_url="http://cdn/", rel_path="/" + path, path=path, headers=frozen_headers({}),
        checksum=Checksum("d", "0" * 32), parts=PartSpec("1", 10, 1, 0, 0),
    )  # fmt: skip


def _downloader(tmp_path: Path, rel: str, plugin: Path) -> Downloader:
    plugins = Plugins()
    plugins.register(str(plugin), load_module(str(plugin)))
    return Downloader(
        DownloadSettings(),
        lambda _n: Destination(str(tmp_path), rel),
        plugins,
        resolver=lambda host: {"cdn": ["8.8.8.8"]}.get(host, []),
    )


def test_every_work_attribute_the_docs_name_exists_on_work_item() -> None:
    named = set(re.findall(r"(?<![\w.])work\.(\w+)", DOC))
    assert named, "the plugin docs name no WorkItem attribute"
    fields = {f.name for f in dataclasses.fields(WorkItem)}
    missing = {name for name in named if name not in fields and not hasattr(WorkItem, name)}
    assert not missing, f"hooks.py documents WorkItem attributes that do not exist: {missing}"


def test_the_documented_example_plugin_changes_where_the_file_goes(tmp_path: Path) -> None:
    plugin = tmp_path / "flatten.py"
    plugin.write_text(_example())
    dest = tmp_path / "dest"
    item = WorkItem(_notice("a/b/f.txt"))
    assert _downloader(dest, "a/b/f.txt", plugin).select(item)
    assert item.dest_rel == "f.txt"
    assert item.local_path == str(dest) + "/f.txt"


def test_a_plugin_cannot_move_the_file_out_of_the_destination(tmp_path: Path) -> None:
    plugin = tmp_path / "escape.py"
    plugin.write_text("def on_message(work):\n    work.dest_rel = '../outside.txt'\n")
    with pytest.raises(HostilePath):
        _downloader(tmp_path / "dest", "a/f.txt", plugin).select(WorkItem(_notice("a/f.txt")))


def test_on_start_and_on_stop_plugins_are_called_with_the_settings(tmp_path: Path) -> None:
    plugin = tmp_path / "lifecycle.py"
    plugin.write_text(
        "seen = []\n"
        "def on_start(config):\n    seen.append(('on_start', config))\n"
        "def on_stop(config):\n    seen.append(('on_stop', config))\n"
    )
    plugins = Plugins.from_config({"on_start": (str(plugin),), "on_stop": (str(plugin),)})
    plugins.on_start("cfg")
    plugins.on_stop("cfg")
    module = plugins._pm.get_plugin(str(plugin))
    assert module.seen == [("on_start", "cfg"), ("on_stop", "cfg")]
