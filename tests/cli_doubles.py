"""Fast doubles for the front end's collaborators, for tests.

A stand-in command-line parser and config loader (``key value`` lines, enough for
``instances``, ``sleep``, ``logrotate``...), and :class:`HeartbeatComponent`, which touches its
heartbeat file every 0.1 s until its stop event is set and then records that it saw it.
Directories come from ``SR_CONFIG_DIR`` and ``SR_STATE_DIR`` as in the real layout.

``python -m tests.cli_doubles <component> ...`` runs the CLI with these doubles; it is the
instance launcher of :func:`standin_runtime`, so lifecycle tests run real processes.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sarra.cli import configs as cf
from sarra.cli.logs import instance_tag
from sarra.cli.runtime import Runtime
from sarra.components.base import Component, InstanceStatus
from sarra.config.options import options_table, parse_value
from sarra.config.settings import Settings
from sarra.errors import ConfigError

_ACTIONS = frozenset(
    {
        *("start", "stop", "restart", "status", "sanity", "foreground", "supervise", "cleanup"),
        *("declare", "list", "convert", "edit", "add", "remove", "enable", "disable"),
    }
)


@dataclass(frozen=True, slots=True)
class StandInCommandLine:
    action: str | None
    configs: Sequence[str]
    options: tuple[tuple[str, str], ...]
    paths: Sequence[str]


def parse_standin(component: str, argv: Sequence[str]) -> StandInCommandLine:
    """``[--key value | -k value]... [action] [config|path ...]``; ``-h`` prints help, exits 0."""
    options: dict[str, str] = {}
    words: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print(f"usage: sr_{component} [options] {{{'|'.join(sorted(_ACTIONS))}}} [config ...]")
            raise SystemExit(0)
        if arg.startswith("-"):
            if not args:
                raise ConfigError("needs a value", option=arg.lstrip("-"))
            options[arg.lstrip("-")] = args.pop(0)
        else:
            words.append(arg)
    action = words.pop(0) if words and words[0] in _ACTIONS else None
    configs = words if action is not None else []
    paths = words if action is None else []
    return StandInCommandLine(action, configs, tuple(options.items()), paths)


@dataclass(slots=True)
class StandInConfig:
    """A loaded configuration: ``key value`` lines over command-line options."""

    component: str
    name: str
    path: Path | None
    state_dir: Path
    values: dict[str, str] = field(default_factory=dict)

    def get(self, option: str) -> Any:
        """The value given for ``option``, parsed as the option table says (the stand-in's own
        knobs, such as ``fail_status``, stay text); None when not given."""
        text = self.values.get(option)
        known = options_table().resolve(option)
        if text is None or known is None:
            return text
        return parse_value(known, text)

    def __getattr__(self, name: str) -> Any:
        """A typed option the front end reads (``cfg.instances``, ``cfg.sleep``...): the
        value given, else the option table's default for this component, as in Settings."""
        if name not in Settings.__dataclass_fields__:
            raise AttributeError(name)
        value = self.get(name)
        return options_table()[name].default_for(self.component) if value is None else value

    @property
    def config_path(self) -> Path | None:
        return self.path


def load_standin(component: str, config: str | None, options: Any) -> StandInConfig:
    """Load ``<SR_CONFIG_DIR>/<component>/<config>.conf`` (or ``config`` as a path).

    Raises:
        ConfigError: missing file, or a line that is not ``key value`` (names file and line).
    """
    values: dict[str, str] = dict(options or {})
    if config is None:
        return StandInConfig(component, "-", None, _state_dir(component, "-"), values)
    name = cf.config_name(config)
    path = Path(config) if os.sep in config else _config_dir() / component / f"{name}.conf"
    if not path.is_file() and (path.parent / f"{name}{cf.DISABLED}").is_file():
        path = path.parent / f"{name}{cf.DISABLED}"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(path)) from exc
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        key, _, value = text.partition(" ")
        if not value.strip():
            raise ConfigError("option needs a value", path=str(path), line=number, option=key)
        if key in ("instances", "logrotate") and not value.strip().isdigit():
            raise ConfigError("not an integer", path=str(path), line=number, option=key)
        values.setdefault(key, value.strip())
    return StandInConfig(component, name, path, _state_dir(component, name), values)


def _config_dir() -> Path:
    return Path(os.environ["SR_CONFIG_DIR"])


def _state_dir(component: str, config: str) -> Path:
    return Path(os.environ["SR_STATE_DIR"]) / component / config


def _log_dir() -> Path:
    return Path(os.environ["SR_STATE_DIR"]) / "log"


class HeartbeatComponent:
    """Touches ``<state_dir>/sr_<c>_<cfg>_<NNN>.heart`` every 0.1 s until stopped.

    On its stop event it writes ``<stem>.stopped`` (so tests can tell a graceful stop from a
    kill) and returns the config's ``exit_status`` (default 0). The option ``fail_status``
    makes ``status`` raise, as if the broker were unreachable.
    """

    def __init__(self, name: str, one_shot: bool = False) -> None:
        self.name = name
        self.one_shot = one_shot
        self.declared: list[str] = []
        self.cleaned: list[str] = []

    def _stem(self, cfg: StandInConfig, instance: int) -> Path:
        return cfg.state_dir / f"sr_{self.name}_{cfg.name}_{instance_tag(instance)}"

    def run(self, cfg: StandInConfig, instance: int, stop: threading.Event) -> int:
        stem = self._stem(cfg, instance)
        stem.parent.mkdir(parents=True, exist_ok=True)
        heart = stem.with_name(stem.name + ".heart")
        # Both lines name the broker with its password: the front end must mask them.
        print(f"printed broker {cfg.get('broker')}", file=sys.stderr)
        logging.getLogger(__name__).info("logged broker %s", cfg.get("broker"))
        while not stop.wait(0.1):
            heart.touch()
            if cfg.get("run_once"):
                break
        if stop.is_set():
            stem.with_name(stem.name + ".stopped").write_text(str(os.getpid()))
        return int(cfg.get("exit_status") or 0)

    def declare(self, cfg: StandInConfig) -> None:
        self.declared.append(cfg.name)

    def cleanup(self, cfg: StandInConfig) -> None:
        self.cleaned.append(cfg.name)

    def status(self, cfg: StandInConfig) -> InstanceStatus:
        if cfg.get("fail_status"):
            raise ConnectionRefusedError(f"cannot reach {cfg.get('fail_status')}")
        return InstanceStatus(queue=f"q_test.{self.name}.{cfg.name}", backlog=7, consumers=3)


def standin_runtime(stop_timeout: float = 10.0) -> Runtime:
    """A runtime over the doubles; instances are launched with ``python -m tests.cli_doubles``."""
    registry: dict[str, Component] = {
        "subscribe": HeartbeatComponent("subscribe"),
        "post": HeartbeatComponent("post", one_shot=True),
    }
    root = Path(__file__).resolve().parents[1]
    python_path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    return Runtime(
        registry=registry,
        parse_command_line=parse_standin,
        load_config=load_standin,
        config_dir=_config_dir,
        state_dir=_state_dir,
        log_dir=_log_dir,
        launcher=(sys.executable, "-m", "tests.cli_doubles"),
        extra_env={"PYTHONPATH": python_path},
        stop_timeout=stop_timeout,
    )


if __name__ == "__main__":
    from sarra.cli.main import module_main

    sys.exit(module_main(sys.argv[1:], standin_runtime()))
