"""Configuration files of a component: naming, listing, add/remove/enable/disable.

``<config_dir>/<component>/<name>.conf`` is an enabled configuration; ``<name>.conf.off`` a
disabled one (sr2 convention). Users may name a configuration as ``name``, ``name.conf`` or a
path to a file; :func:`config_name` reduces all of them to ``name``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sarra.errors import ConfigError

ENABLED = ".conf"
DISABLED = ".conf.off"


def config_name(arg: str) -> str:
    """``/x/foo.conf``, ``foo.conf``, ``foo.conf.off`` and ``foo`` all name ``foo``."""
    base = os.path.basename(arg.rstrip("/"))
    for suffix in (DISABLED, ENABLED):
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A configuration file found in the component's directory."""

    name: str
    path: Path
    enabled: bool


def component_dir(config_dir: Path, component: str) -> Path:
    """Directory of the component's configurations."""
    return config_dir / component


def list_configs(config_dir: Path, component: str) -> list[ConfigFile]:
    """Enabled and disabled configurations of ``component``, sorted by name."""
    folder = component_dir(config_dir, component)
    if not folder.is_dir():
        return []
    found: list[ConfigFile] = []
    for path in folder.iterdir():
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.name.endswith(DISABLED):
            found.append(ConfigFile(config_name(path.name), path, enabled=False))
        elif path.name.endswith(ENABLED):
            found.append(ConfigFile(config_name(path.name), path, enabled=True))
    return sorted(found, key=lambda c: c.name)


def find_config(config_dir: Path, component: str, arg: str) -> ConfigFile:
    """The configuration named by ``arg`` (enabled or disabled).

    Raises:
        ConfigError: no such configuration in the component's directory.
    """
    name = config_name(arg)
    folder = component_dir(config_dir, component)
    for suffix, enabled in ((ENABLED, True), (DISABLED, False)):
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return ConfigFile(name, path, enabled)
    raise ConfigError(f"no configuration {name!r} in {folder}")


def add_config(config_dir: Path, component: str, source: Path) -> ConfigFile:
    """Copy ``source`` into the component's directory as ``<name>.conf``.

    Raises:
        ConfigError: ``source`` is unreadable, or a configuration of that name exists.
    """
    name = config_name(str(source))
    if not source.is_file():
        raise ConfigError(f"cannot add {source}: not a readable file")
    folder = component_dir(config_dir, component)
    for suffix in (ENABLED, DISABLED):
        if (folder / f"{name}{suffix}").exists():
            raise ConfigError(f"configuration {name!r} already exists in {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}{ENABLED}"
    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        raise ConfigError(f"cannot add {source}: {exc.strerror}") from exc
    return ConfigFile(name, target, enabled=True)


def set_enabled(config_dir: Path, component: str, arg: str, enabled: bool) -> ConfigFile:
    """Rename the configuration to ``.conf`` (enabled) or ``.conf.off`` (disabled).

    Idempotent: enabling an enabled configuration changes nothing.

    Raises:
        ConfigError: no such configuration.
    """
    current = find_config(config_dir, component, arg)
    if current.enabled == enabled:
        return current
    target = current.path.with_name(current.name + (ENABLED if enabled else DISABLED))
    os.replace(current.path, target)
    return ConfigFile(current.name, target, enabled)
