"""The shipped examples in etc/ load with the real configuration loader and plugin loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarra.config.settings import load_settings
from sarra.errors import ConfigError
from sarra.flow.hooks import Plugins

ETC = Path(__file__).resolve().parents[2] / "etc"
EXAMPLES = sorted(p for d in ("subscribe", "post", "watch") for p in (ETC / d).glob("*.conf"))


def test_there_are_examples_for_each_command() -> None:
    assert {p.parent.name for p in EXAMPLES} == {"subscribe", "post", "watch"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_example_configuration_loads(path: Path, tmp_path: Path) -> None:
    env = {"SR_CONFIG_DIR": str(tmp_path), "SR_STATE_DIR": str(tmp_path), "HOME": "/home/u"}
    cfg = load_settings(path.parent.name, str(path), env=env)
    assert cfg.name == path.stem
    if path.parent.name == "subscribe":
        assert cfg.get("broker")
        assert cfg.masks or cfg.get("accept_unmatch")


def test_the_datamart_example_expands_home_and_keeps_its_masks_in_order(tmp_path: Path) -> None:
    env = {"SR_CONFIG_DIR": str(tmp_path), "SR_STATE_DIR": str(tmp_path), "HOME": "/home/u"}
    cfg = load_settings("subscribe", str(ETC / "subscribe" / "dd_swob.conf"), env=env)
    assert [(m.pattern, m.accept) for m in cfg.masks] == [
        (r".*CYUL.*\.xml$", True),
        (r".*CYYZ.*\.xml$", True),
        (".*", False),
    ]
    assert cfg.masks[0].directory == "/home/u/datamart/swob"
    assert cfg.get("expire") == 86400


class _Notice:
    def __init__(self, path: str) -> None:
        self.path = path


class _Work:
    def __init__(self, path: str) -> None:
        self.notice = _Notice(path)


def test_the_example_plugin_drops_backup_files_and_accepts_the_rest() -> None:
    spec = str(ETC / "plugins" / "log_file.py")
    plugins = Plugins.from_config({"on_file": (spec,), "on_message": (spec,)})
    assert plugins.on_message(_Work("a/b/report.txt~")) is False
    assert plugins.on_message(_Work("a/b/report.txt")) is True


def test_a_plugin_whose_hook_has_other_argument_names_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def on_file(parent):\n    return None\n")
    with pytest.raises(ConfigError, match="bad"):
        Plugins.from_config({"on_file": (str(bad),)})
