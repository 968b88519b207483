"""The component registry and the CLI context import a component only when it is used:
``sr_subscribe start`` (load the configuration, spawn the instances) must not import the
flow code its instances import anyway, since that start-up is on the way to the first file."""

from __future__ import annotations

import json
import subprocess
import sys

from sarra.components import IMPLEMENTED, ONE_SHOT, REGISTRY, Registry


def test_the_one_shot_table_agrees_with_every_component() -> None:
    assert {name for name in IMPLEMENTED if REGISTRY[name].one_shot} == ONE_SHOT
    for name in IMPLEMENTED:
        assert REGISTRY.one_shot(name) is REGISTRY[name].one_shot


def test_membership_and_one_shot_import_nothing() -> None:
    registry = Registry({"x": "no.such.module:Nothing"}, frozenset({"x"}))
    assert "x" in registry and "y" not in registry
    assert registry.one_shot("x") is True
    assert list(registry) == ["x"]


def test_start_imports_neither_the_subscriber_nor_the_amqp_client(tmp_path) -> None:
    config = tmp_path / "config"
    (config / "subscribe").mkdir(parents=True)
    (config / "subscribe" / "s.conf").write_text(
        "broker amqp://guest@127.0.0.1:1/\nexchange x\nsubtopic #\n"
        f"directory {tmp_path / 'dest'}\ninstances 1\n"
    )
    # the ``start`` verb stubbed after configuration loading: what it imported is reported
    probe = """
import dataclasses, json, sys
from sarra.cli import main, verbs
def fake_start(ctx, configs):
    for arg in configs:
        verbs.load(ctx, arg)
    print(json.dumps(sorted(m for m in sys.modules if m.startswith(("sarra", "amqp")))))
    return 0
verbs.VERBS["start"] = dataclasses.replace(verbs.VERBS["start"], run=fake_start)
sys.exit(main.main("subscribe", ["start", "s"]))
"""
    env = {"SR_CONFIG_DIR": str(config), "SR_STATE_DIR": str(tmp_path / "state"), "PATH": ""}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, check=True)  # fmt: skip
    modules = set(json.loads(out.stdout.splitlines()[-1]))
    assert "sarra.config.settings" in modules  # the configuration was loaded
    assert "sarra.components.subscribe" not in modules
    assert "sarra.flow.download" not in modules
    assert "amqp" not in modules and "sarra.broker.session" not in modules


def test_importing_the_consumers_runs_no_child_process() -> None:
    """``ctypes.util.find_library`` runs ``ldconfig -p`` in a forked child: at every start of
    a subscriber that fork doubled the process tree's memory for a moment (seen as a 54 MiB
    peak in the bench) and cost a process start."""
    code = (
        "import ctypes.util, subprocess\n"
        "def refuse(*a, **k):\n"
        "    raise AssertionError(f'a child process at import: {a!r}')\n"
        "ctypes.util.find_library = refuse\n"
        "subprocess.Popen.__init__ = refuse\n"
        "import sarra.components.subscribe, sarra.components.sarra, sarra.flow.download\n"
        "import sarra.localfs.confined as c, sarra.localfs.groupsync as g\n"
        "assert c._SYNC_FILE_RANGE is not None and g._find_syncfs() is not None\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_the_poster_loads_no_download_machinery() -> None:
    """sr_post's start-up (``sarra.cli.main`` and its component) loads neither the download
    flow nor the file-system barriers (and their ctypes): they are the downloaders' cost."""
    probe = (
        "import json, sys\n"
        "import sarra.cli.main, sarra.components.post\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)  # fmt: skip
    modules = set(json.loads(out.stdout.splitlines()[-1]))
    assert "sarra.components.post" in modules
    for heavy in ("sarra.flow.download", "sarra.localfs.groupsync", "ctypes"):
        assert heavy not in modules, heavy
