"""Where sarra keeps configuration, state and logs, per platform (via platformdirs).

On Linux the XDG variables are honoured (``XDG_CONFIG_HOME``, ``XDG_STATE_HOME``), giving
``~/.config/sarra`` and ``~/.local/state/sarra``. ``SR_CONFIG_DIR`` and ``SR_STATE_DIR``
override both (tests and side-by-side installations use them). The log directory is
``<state_dir>/log``. Nothing here creates a directory: callers that write do that.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import platformdirs

APPNAME = "sarra"


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """The user configuration directory (``SR_CONFIG_DIR`` or ``~/.config/sarra``)."""
    override = _env(env).get("SR_CONFIG_DIR")
    if override:
        return Path(override)
    return Path(platformdirs.user_config_dir(APPNAME, appauthor=False))


def state_dir(
    component: str | None = None,
    config: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """The state directory, or ``<state>/<component>[/<config>]`` when they are given.

    Holds queue-name files, pid files, retry queues and caches.
    """
    override = _env(env).get("SR_STATE_DIR")
    base = (
        Path(override) if override else Path(platformdirs.user_state_dir(APPNAME, appauthor=False))
    )
    if component is not None:
        base = base / component
        if config is not None:
            base = base / config
    return base


def log_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where instance logs go: ``<state_dir>/log``."""
    return state_dir(env=env) / "log"


def credentials_path(env: Mapping[str, str] | None = None) -> Path:
    """``<config_dir>/credentials.conf``."""
    return config_dir(env) / "credentials.conf"


def default_conf_path(env: Mapping[str, str] | None = None) -> Path:
    """``<config_dir>/default.conf``, read before every component's files."""
    return config_dir(env) / "default.conf"


def admin_conf_path(env: Mapping[str, str] | None = None) -> Path:
    """``<config_dir>/admin.conf``: pump roles (admin, feeder, declare), read after default.conf."""
    return config_dir(env) / "admin.conf"


def component_conf_path(component: str, env: Mapping[str, str] | None = None) -> Path:
    """``<config_dir>/<component>.conf``: defaults for one component (optional)."""
    return config_dir(env) / f"{component}.conf"
