"""The broker cluster section of ``sr status``: the nodes, and each ``q_`` queue's leader and
replicas (:mod:`sarra.broker.cluster`), read through the management API as the pump's
``admin`` (``admin.conf``; ``management_url``, or the admin's host on ``mgmt_port``).

A configuration without ``admin`` has no section: an ordinary user's ``sr status`` reports its
own instances only (the management API's ``/api/nodes`` needs a monitoring account).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sarra.broker.cluster import read_cluster
from sarra.cli.logs import redact
from sarra.config.credentials import CredentialStore, ParsedUrl, parse_url
from sarra.config.loader import load_pump_config
from sarra.config.paths import credentials_path
from sarra.errors import BrokerError, SarraError


def cluster_section(config_dir: Path) -> tuple[dict[str, Any] | None, list[str]]:
    """(JSON value, text lines) of the section; (None, []) without an ``admin`` line. A
    broker that cannot be asked is reported in both, never raised."""
    env = {**os.environ, "SR_CONFIG_DIR": str(config_dir)}
    try:
        cfg = load_pump_config(env)
        admin_text = cfg.get("admin")
        if not admin_text:
            return None, []
        admin = parse_url(admin_text)
        password = admin.password
        if password is None:
            found = CredentialStore.load(credentials_path(env)).find(admin)
            password = found.password if found is not None else None
        if password is None or not admin.user:
            raise SarraError(f"no password for the admin account {admin.user} in credentials.conf")
        given = cfg.get("management_url")
        urls = [str(given)] if given else [_default_management(n, cfg) for n in admin.nodes()]
        view = None
        for url in urls:  # any node answers for the cluster: the first that is up
            try:
                view = read_cluster(url, admin.user, password, timeout=5.0)
                break
            except BrokerError:
                if url == urls[-1]:
                    raise
        assert view is not None
    except SarraError as exc:
        text = redact(str(exc))
        return {"error": text}, [f"broker cluster: cannot tell: {text}"]
    return view.to_dict(), view.lines()


def _default_management(node: ParsedUrl, cfg: Any) -> str:
    port = cfg.get("mgmt_port")
    host = node.host if ":" not in node.host or node.host.startswith("[") else f"[{node.host}]"
    web = "https" if node.scheme == "amqps" else "http"
    return f"{web}://{host}:{int(port) if isinstance(port, int) else 15672}/"
