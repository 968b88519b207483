"""The seam between the front end and the rest of sarra.

Everything the CLI needs from outside (component registry, command-line parser, config loader,
directory layout, how to launch an instance process) is one value, :class:`Runtime`. The
default one is assembled lazily from ``sarra.components`` and ``sarra.config``; tests build
their own with stand-ins, so the CLI can be exercised without brokers or real components.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sarra.components.base import Component
from sarra.config.settings import Settings


class CommandLine(Protocol):
    """What ``sarra.config.cmdline.parse_command_line`` returns."""

    @property
    def action(self) -> str | None: ...

    @property
    def configs(self) -> Sequence[str]: ...

    @property
    def options(self) -> Sequence[tuple[str, str]]: ...

    @property
    def paths(self) -> Sequence[str]: ...


ParseCommandLine = Callable[[str, Sequence[str]], CommandLine]
#: (component, config name or path or None, command-line options) -> typed settings
LoadConfig = Callable[[str, "str | None", Sequence[tuple[str, str]]], Settings]

#: Environment variable carrying the user's original argv (JSON) to an instance process.
#: The environment, unlike the command line, is not world-readable in /proc, so options such
#: as a broker URL with a password never show in a process title.
ARGV_ENV = "SARRA_CLI_ARGV"

#: Environment variable choosing the configuration tree (``sarra.config.paths.TREE_ENV``);
#: ``--sr3`` sets it to ``sr3`` for the command and the instances it starts.
CONFIG_TREE_ENV = "SR_CONFIG_TREE"

#: Internal action: run one daemon instance (never typed by users).
INSTANCE_ACTION = "_instance"


@dataclass(frozen=True, slots=True)
class Runtime:
    """Collaborators of the front end.

    ``launcher`` is the argv prefix that, followed by ``<component> _instance <n> <config>``,
    runs one instance; it must end up calling :func:`sarra.cli.main.module_main` with an
    equivalent runtime. ``stop_timeout`` is how long ``stop`` waits after SIGTERM before
    SIGKILL. ``start_timeout`` bounds how long ``start`` waits for an instance to write its
    pid file.
    """

    registry: Mapping[str, Component]
    parse_command_line: ParseCommandLine
    load_config: LoadConfig
    config_dir: Callable[[], Path]
    state_dir: Callable[[str, str], Path]
    log_dir: Callable[[], Path]
    #: (``-B`` passed on: an installed copy, e.g. from the Windows MSI, writes no bytecode
    #: into its install directory from its instances either)
    launcher: tuple[str, ...] = (
        sys.executable,
        *(("-B",) if sys.flags.dont_write_bytecode else ()),
        "-m",
        "sarra.cli.main",
    )
    extra_env: Mapping[str, str] | None = None
    format_help: Callable[[str], str] | None = None
    stop_timeout: float = 10.0
    start_timeout: float = 30.0


def _attr(module: str, name: str) -> Any:
    # Imported at call time: nothing connects or registers at import, and the CLI module
    # imports cheaply for --help.
    return getattr(importlib.import_module(module), name)


def default_runtime() -> Runtime:
    """The runtime of the installed ``sr_*`` commands.

    Raises:
        ImportError: if sarra.components or sarra.config is missing a contracted name.
    """
    config_dir = _attr("sarra.config.paths", "config_dir")
    state_dir = _attr("sarra.config.paths", "state_dir")
    log_dir = _attr("sarra.config.paths", "log_dir")
    return Runtime(
        registry=_attr("sarra.components", "REGISTRY"),
        parse_command_line=_attr("sarra.config.cmdline", "parse_command_line"),
        load_config=_attr("sarra.config.settings", "load_settings"),
        config_dir=lambda: Path(config_dir()),
        state_dir=lambda component, config: Path(state_dir(component, config)),
        log_dir=lambda: Path(log_dir()),
        format_help=_attr("sarra.config.cmdline", "format_help"),
    )
