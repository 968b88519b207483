"""Where sarra keeps configuration, state and logs, per platform (via platformdirs).

On Linux the XDG variables are honoured (``XDG_CONFIG_HOME``, ``XDG_STATE_HOME``), giving
``~/.config/sarra`` and ``~/.local/state/sarra``; on Windows the configuration is in
``%LOCALAPPDATA%\\sarra`` and the state in ``%LOCALAPPDATA%\\sarra\\state`` (platformdirs gives
one directory for both there). ``SR_CONFIG_DIR`` and ``SR_STATE_DIR``
override both (tests and side-by-side installations use them). The log directory is
``<state_dir>/log``. Nothing here creates a directory: callers that write do that.

``SR_CONFIG_TREE=sr3`` (what the ``--sr3`` command-line flag sets) reads sr3's tree instead:
the configuration directory is sr3's, ``$XDG_CONFIG_HOME/sr3`` or ``~/.config/sr3`` on Linux
(``sr3`` replaced by ``$SR_DEV_APPNAME`` when that is set, as sr3 does), so
``<component>/NAME.conf``, ``default.conf``, ``admin.conf``, ``credentials.conf`` and
``plugins/`` all come from there, and ``SR_CONFIG_DIR`` is not consulted. sarra's state and
logs stay in sarra's state directory, under ``sr3/`` so that a configuration of the same name
in both trees has its own queue name and pid files.

A pump installed from the Debian package keeps its configuration in ``/etc/sarra`` and its
state in ``/var/lib/sarra`` (the *system tree*; its services set ``SR_CONFIG_DIR`` and
``SR_STATE_DIR`` to them). The commands run by ``root`` or by the ``sarra`` account use the
system tree too when ``/etc/sarra`` exists and the variables are unset, so that an operator's
``sr status`` or ``sudo -u sarra sr_subscribe list`` sees what the services run. Any other
account keeps its own directories.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import platformdirs

from sarra.errors import ConfigError

APPNAME = "sarra"
#: Environment variable choosing the configuration tree: ``sarra`` (default) or ``sr3``.
TREE_ENV = "SR_CONFIG_TREE"
TREES = ("sarra", "sr3")
#: sr3 directories read, after the component's own, for a sarra component in sr3's tree:
#: sr3's cpost is the C implementation of post (a daemon with sleep > 0, as sr_post is).
SR3_EXTRA_DIRS: Mapping[str, tuple[str, ...]] = {"post": ("cpost",)}


#: the system tree of a packaged pump (see the module docstring)
SYSTEM_CONFIG_DIR = Path("/etc/sarra")
SYSTEM_STATE_DIR = Path("/var/lib/sarra")
#: the account the packaged services run as
SYSTEM_USER = "sarra"


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _account() -> str | None:
    """Name of the effective user (``root`` for uid 0), None where unknown."""
    if sys.platform == "win32" or not hasattr(os, "geteuid"):
        return None
    uid = os.geteuid()
    if uid == 0:
        return "root"
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return None


def uses_system_tree(system_config: Path | None = None) -> bool:
    """True when this process, unless told otherwise by ``SR_CONFIG_DIR``/``SR_STATE_DIR``,
    uses the system tree: it runs as ``root`` or ``sarra`` on Linux and the system
    configuration directory exists."""
    if not sys.platform.startswith("linux") or _account() not in {"root", SYSTEM_USER}:
        return False
    return (system_config or SYSTEM_CONFIG_DIR).is_dir()


def config_tree(env: Mapping[str, str] | None = None) -> str:
    """``sr3`` when ``SR_CONFIG_TREE`` asks for sr3's tree, else ``sarra``.

    Raises:
        ConfigError: ``SR_CONFIG_TREE`` holds something else.
    """
    tree = _env(env).get(TREE_ENV, "").strip().lower() or "sarra"
    if tree not in TREES:
        raise ConfigError(f"{TREE_ENV}={tree!r}: expected one of {', '.join(TREES)}")
    return tree


def sr3_config_dir(env: Mapping[str, str] | None = None) -> Path:
    """sr3's configuration directory: ``$XDG_CONFIG_HOME/sr3`` or ``~/.config/sr3`` on Linux.

    sr3 names it after its application name, ``sr3`` unless ``SR_DEV_APPNAME`` says otherwise.
    On other platforms it is the platform's user configuration directory for that name.
    """
    environment = _env(env)
    appname = environment.get("SR_DEV_APPNAME") or "sr3"
    if not sys.platform.startswith("linux"):
        return Path(platformdirs.user_config_dir(appname, appauthor=False))
    xdg = environment.get("XDG_CONFIG_HOME")
    if xdg:
        return Path(xdg) / appname
    home = environment.get("HOME")
    return (Path(home) if home else Path.home()) / ".config" / appname


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """The user configuration directory (``SR_CONFIG_DIR``, the system tree's ``/etc/sarra``,
    or ``~/.config/sarra``; sr3's directory when ``SR_CONFIG_TREE`` is ``sr3``)."""
    if config_tree(env) == "sr3":
        return sr3_config_dir(env)
    override = _env(env).get("SR_CONFIG_DIR")
    if override:
        return Path(override)
    if uses_system_tree():
        return SYSTEM_CONFIG_DIR
    return Path(platformdirs.user_config_dir(APPNAME, appauthor=False))


def component_dir_names(component: str, env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The directories under the configuration directory that hold ``component``'s files,
    first one first: ``(component,)``, plus ``cpost`` for ``post`` in sr3's tree."""
    if config_tree(env) == "sr3":
        return (component, *SR3_EXTRA_DIRS.get(component, ()))
    return (component,)


def state_dir(
    component: str | None = None,
    config: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """The state directory, or ``<state>/<component>[/<config>]`` when they are given.

    Holds queue-name files, pid files, retry queues and caches. With sr3's configuration
    tree (``SR_CONFIG_TREE=sr3``) it is ``<state>/sr3[/<component>[/<config>]]``.
    """
    override = _env(env).get("SR_STATE_DIR")
    if override:
        base = Path(override)
    elif uses_system_tree():
        base = SYSTEM_STATE_DIR
    else:
        base = Path(platformdirs.user_state_dir(APPNAME, appauthor=False))
        if base == Path(platformdirs.user_config_dir(APPNAME, appauthor=False)):
            # Windows (%LOCALAPPDATA%\sarra) and macOS use one directory for both: the
            # state goes below it, apart from the configuration (log\ holds sr_log's configs)
            base = base / "state"
    if config_tree(env) == "sr3":
        base = base / "sr3"
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
