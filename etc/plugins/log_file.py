"""Example plugin: log every file placed, and drop notices about temporary names.

Use it with ``on_file etc/plugins/log_file.py`` and/or ``on_message etc/plugins/log_file.py``
in a subscribe configuration. See docs/plugins.md for the contract.
"""

import logging

log = logging.getLogger("sarra.plugin.log_file")


def on_message(work):
    """Drop notices about editor backup files; accept everything else."""
    return not work.notice.path.endswith("~")


def on_file(work):
    """Called once per file, after it is verified and under its final name."""
    log.info("new file %s (%d bytes, sum %s)", work.local_path, work.size,
             work.notice.checksum.wire())
