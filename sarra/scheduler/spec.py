"""The declarative pump specification read by ``sr_scheduler``.

Format: TOML, parsed with the standard library's :mod:`tomllib`. The workers' own
configurations stay in the project's line-oriented ``option value`` style, but a pump
specification is a set of nested, typed records (per worker type: floats for cpus, lists of
URIs, tables of environment variables and agent attributes) which that style cannot express
without inventing new syntax; TOML expresses them directly and needs no extra dependency.

Layout::

    [scheduler]                 # how the scheduler itself runs (all optional but ``master``)
    name = "pump"
    master = "zk://127.0.0.1:2181/mesos"
    ...
    [workers.<type>]            # one table per worker type
    component = "subscribe"
    config = "dd_swob"
    count = 3
    cpus = 0.5
    mem = 256
    ...

Every worker type gets a ``version``: a digest of everything that, when changed, requires
the running workers to be replaced (command, resources, URIs, environment, constraints).
``count`` is not part of it: a new count scales without replacing anyone.
"""

from __future__ import annotations

import getpass
import hashlib
import ipaddress
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sarra.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
ON_REMOVED = ("stop", "register")
# The sr_* components a worker can run (``sr_<component> foreground <config>``): the daemons.
WORKER_COMPONENTS = ("poll", "report", "sarra", "sender", "shovel", "subscribe", "watch", "winnow")


def parse_listen(value: str, where: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) of ``status_listen``; port 0 picks a free one."""
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"{where}: status_listen must be host:port (e.g. 127.0.0.1:8088), not {value!r}"
        )
    if any(c.isspace() or c in "/?#@" for c in host):
        raise ConfigError(f"{where}: status_listen has an invalid host {host!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True when ``host`` (an address or ``localhost``) is reachable from this host only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything, so treat it as exposed


@dataclass(frozen=True)
class WorkerType:
    """One kind of worker: ``count`` identical Mesos tasks running one sr_* configuration."""

    name: str
    component: str
    config: str
    count: int
    cpus: float
    mem: float
    disk: float
    command: str
    uris: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    hostnames: tuple[str, ...] = ()  # allowed agent hostnames; empty = any
    attributes: tuple[tuple[str, str], ...] = ()  # required agent attributes (text equality)
    role: str = "*"
    kill_grace_seconds: float = 10.0

    @property
    def version(self) -> str:
        """A digest of what a replacement is needed for (not ``count``)."""
        doc = {
            "component": self.component,
            "config": self.config,
            "cpus": self.cpus,
            "mem": self.mem,
            "disk": self.disk,
            "command": self.command,
            "uris": list(self.uris),
            "env": [list(kv) for kv in self.env],
            "hostnames": list(self.hostnames),
            "attributes": [list(kv) for kv in self.attributes],
            "role": self.role,
        }
        raw = json.dumps(doc, sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:12]


@dataclass(frozen=True)
class SchedulerSettings:
    """How the scheduler runs: master, identity, timers, election, status endpoint."""

    name: str
    master: str
    user: str
    state_dir: Path
    zookeeper: str = ""  # "host:port,..." for leader election; empty = single copy
    election_path: str = ""
    failover_timeout: float = 604800.0
    checkpoint: bool = True
    status_listen: str = "127.0.0.1:0"
    min_running_seconds: float = 30.0
    staging_timeout: float = 120.0
    avoid_seconds: float = 300.0
    refuse_seconds: float = 3600.0
    heartbeat_misses: float = 5.0
    reconcile_interval: float = 900.0
    kill_retry_seconds: float = 5.0
    call_timeout: float = 30.0
    zk_session_timeout: float = 10.0
    on_framework_removed: str = "stop"
    watch_spec: bool = False  # reload the spec file by itself when its mtime changes
    principal: str = ""  # framework_info.principal; with secret_file, HTTP basic to the master
    secret_file: str = ""  # mode-600 file holding the principal's secret (read at start)


# Settings a running scheduler cannot take over: they name the framework, where it talks or
# what it subscribed with. A reload that changes one is refused (restart the copies instead).
RESTART_ONLY = (
    "name", "master", "user", "state_dir", "zookeeper", "election_path", "failover_timeout",
    "checkpoint", "status_listen", "call_timeout", "zk_session_timeout", "principal",
    "secret_file",
)  # fmt: skip


@dataclass(frozen=True)
class PumpSpec:
    """The whole specification: scheduler settings and worker types by name."""

    scheduler: SchedulerSettings
    workers: dict[str, WorkerType] = field(default_factory=dict)

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles the framework subscribes with (sorted, at least one)."""
        return tuple(sorted({w.role for w in self.workers.values()} or {"*"}))


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = table.get(key)
    if value is not None and not isinstance(value, kind):
        raise ConfigError(f"{where}: {key} has the wrong type ({type(value).__name__})")
    return value


def _number(table: dict[str, Any], key: str, default: float, where: str) -> float:
    value = _get(table, key, (int, float), where)
    if value is None:
        return default
    if isinstance(value, bool) or value < 0:
        raise ConfigError(f"{where}: {key} must be a non-negative number")
    return float(value)


def _worker(name: str, table: dict[str, Any], path: str) -> WorkerType:
    where = f"{path}: [workers.{name}]"
    if not _NAME.match(name):
        raise ConfigError(f"{where}: worker type names are letters, digits, '-' and '_'")
    known = {
        "component", "config", "count", "cpus", "mem", "disk", "command", "uris", "env",
        "hostnames", "attributes", "role", "kill_grace_seconds",
    }  # fmt: skip
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    component = _get(table, "component", str, where) or "subscribe"
    if component not in WORKER_COMPONENTS:
        raise ConfigError(
            f"{where}: component {component!r} is not an sr_* daemon; one of "
            f"{', '.join(WORKER_COMPONENTS)}"
        )
    config = _get(table, "config", str, where)
    if not config:
        raise ConfigError(f"{where}: config (the worker's configuration name) is required")
    count = _get(table, "count", int, where)
    if count is None or isinstance(count, bool) or count < 0:
        raise ConfigError(f"{where}: count must be a non-negative integer")
    command = _get(table, "command", str, where) or f"sr_{component} foreground {config}"
    uris = _get(table, "uris", list, where) or []
    env = _get(table, "env", dict, where) or {}
    hostnames = _get(table, "hostnames", list, where) or []
    attributes = _get(table, "attributes", dict, where) or {}
    if not all(isinstance(u, str) for u in uris):
        raise ConfigError(f"{where}: uris must be strings")
    cpus = _number(table, "cpus", 0.1, where)
    mem = _number(table, "mem", 64.0, where)
    if cpus <= 0 or mem <= 0:
        raise ConfigError(f"{where}: cpus and mem must be positive")
    return WorkerType(
        name=name,
        component=component,
        config=config,
        count=count,
        cpus=cpus,
        mem=mem,
        disk=_number(table, "disk", 0.0, where),
        command=command,
        uris=tuple(uris),
        env=tuple(sorted((str(k), str(v)) for k, v in env.items())),
        hostnames=tuple(str(h) for h in hostnames),
        attributes=tuple(sorted((str(k), str(v)) for k, v in attributes.items())),
        role=_get(table, "role", str, where) or "*",
        kill_grace_seconds=_number(table, "kill_grace_seconds", 10.0, where),
    )


def parse_spec(text: str, path: str = "<spec>") -> PumpSpec:
    """Parse a specification; :class:`ConfigError` names the file and the problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", path=path) from e
    sched = doc.get("scheduler", {})
    if not isinstance(sched, dict):
        raise ConfigError("[scheduler] must be a table", path=path)
    where = f"{path}: [scheduler]"
    unknown = set(sched) - set(SchedulerSettings.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    extra = set(doc) - {"scheduler", "workers"}
    if extra:
        raise ConfigError(f"unknown tables {sorted(extra)}", path=path)
    stem = Path(path).stem
    name = _get(sched, "name", str, where) or (stem if _NAME.match(stem) else "pump")
    if not _NAME.match(name):
        raise ConfigError(f"{where}: name must be letters, digits, '-' and '_'")
    master = _get(sched, "master", str, where)
    if not master or not master.startswith(("http://", "zk://")):
        raise ConfigError(f"{where}: master must be a zk:// or http:// URL")
    on_removed = _get(sched, "on_framework_removed", str, where) or "stop"
    if on_removed not in ON_REMOVED:
        raise ConfigError(f"{where}: on_framework_removed must be one of {ON_REMOVED}")
    state_dir = _get(sched, "state_dir", str, where) or f"~/.local/state/sarra/scheduler/{name}"
    defaults = SchedulerSettings(name=name, master=master, user="", state_dir=Path())
    numbers = {
        key: _number(sched, key, getattr(defaults, key), where)
        for key in (
            "failover_timeout", "min_running_seconds", "staging_timeout", "avoid_seconds",
            "refuse_seconds", "heartbeat_misses", "reconcile_interval", "kill_retry_seconds",
            "call_timeout", "zk_session_timeout",
        )
    }  # fmt: skip
    status_listen = _get(sched, "status_listen", str, where) or "127.0.0.1:0"
    parse_listen(status_listen, where)
    principal = _get(sched, "principal", str, where) or ""
    secret_file = _get(sched, "secret_file", str, where) or ""
    if secret_file and not principal:
        raise ConfigError(f"{where}: secret_file needs principal (the name the secret is for)")
    settings = SchedulerSettings(
        name=name,
        master=master,
        user=_get(sched, "user", str, where) or getpass.getuser(),
        state_dir=Path(state_dir).expanduser(),
        zookeeper=_get(sched, "zookeeper", str, where) or "",
        election_path=_get(sched, "election_path", str, where) or f"/sarra/scheduler/{name}",
        checkpoint=bool(_get(sched, "checkpoint", bool, where) in (None, True)),
        watch_spec=bool(_get(sched, "watch_spec", bool, where)),
        status_listen=status_listen,
        principal=principal,
        secret_file=str(Path(secret_file).expanduser()) if secret_file else "",
        on_framework_removed=on_removed,
        **numbers,
    )
    workers_doc = doc.get("workers", {})
    if not isinstance(workers_doc, dict):
        raise ConfigError("[workers] must hold one table per worker type", path=path)
    workers = {}
    for wname, table in workers_doc.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[workers.{wname}] must be a table", path=path)
        workers[wname] = _worker(wname, table, path)
    return PumpSpec(scheduler=settings, workers=workers)


def load_spec(path: str | Path) -> PumpSpec:
    """Read and parse a specification file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path=str(p)) from e
    return parse_spec(text, str(p))


def reload_changes(old: PumpSpec, new: PumpSpec) -> list[str]:
    """What replacing ``old`` by ``new`` in a running scheduler does, one line per change.

    Raises :class:`ConfigError` when ``new`` changes something only a restart can apply
    (a setting in :data:`RESTART_ONLY`, or the set of roles the framework subscribed with).
    """
    fixed = [k for k in RESTART_ONLY if getattr(old.scheduler, k) != getattr(new.scheduler, k)]
    if old.roles != new.roles:
        fixed.append("roles")
    if fixed:
        raise ConfigError(
            f"cannot change {', '.join(fixed)} in a running scheduler: restart it instead"
        )
    out = []
    for k in SchedulerSettings.__dataclass_fields__:
        a, b = getattr(old.scheduler, k), getattr(new.scheduler, k)
        if a != b:
            out.append(f"setting {k}: {a} -> {b}")
    for name in sorted(set(old.workers) | set(new.workers)):
        ow, nw = old.workers.get(name), new.workers.get(name)
        if ow is None and nw is not None:
            out.append(f"worker type {name} added: {nw.count} to launch")
        elif nw is None and ow is not None:
            out.append(f"worker type {name} removed: its {ow.count} worker(s) will be killed")
        elif ow is not None and nw is not None:
            if nw.count != ow.count:
                verb = "scale up" if nw.count > ow.count else "scale down"
                out.append(f"worker type {name} count {ow.count} -> {nw.count} ({verb})")
            if nw.version != ow.version:
                out.append(
                    f"worker type {name} changed (version {ow.version} -> {nw.version}): "
                    "rolling replacement, one worker at a time"
                )
            if nw.kill_grace_seconds != ow.kill_grace_seconds:
                out.append(
                    f"worker type {name} kill_grace_seconds {ow.kill_grace_seconds} -> "
                    f"{nw.kill_grace_seconds} (no replacement needed)"
                )
    return out
