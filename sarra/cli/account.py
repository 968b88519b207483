"""Root acting on a packaged pump does so as the pump's account.

The services of the Debian package run as ``sarra`` over the system tree (``/etc/sarra``,
``/var/lib/sarra``; :mod:`sarra.config.paths`). An operator's ``sudo sr status`` or ``sudo
sr_subscribe declare obs`` uses that tree too, and anything it created there as root (a queue
name file, a state directory) would be unwritable by the services afterwards. So a command run
by root that uses the system tree first becomes the ``sarra`` account (its groups, uid and
home, which becomes the working directory if the current one is closed to it): what it
creates is the services' own. With ``SR_CONFIG_DIR`` or ``SR_STATE_DIR`` set,
or without the system tree or the account, nothing changes.
"""

from __future__ import annotations

import os
import sys

from sarra.config import paths


def become_system_account(environ: dict[str, str] | None = None) -> bool:
    """Switch a root process using the system tree to the ``sarra`` account; True if it did.

    Raises:
        PermissionError: the switch failed half-way (never expected for root).
    """
    if sys.platform == "win32":  # no system tree there
        return False
    env = os.environ if environ is None else environ
    if env.get("SR_CONFIG_DIR") or env.get("SR_STATE_DIR"):
        return False
    if os.geteuid() != 0 or not paths.uses_system_tree():
        return False
    import pwd

    try:
        account = pwd.getpwnam(paths.SYSTEM_USER)
    except KeyError:
        return False
    os.setgroups([])
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    env["HOME"] = account.pw_dir
    if not os.access(".", os.R_OK | os.X_OK):  # e.g. /root: relative names cannot resolve there
        os.chdir(account.pw_dir)
    return True
