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

import hashlib
import ipaddress
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sarra.errors import ConfigError
from sarra.scheduler.resources import parse_value, role_error

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


def _is_v6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    """True when ``host`` (an address or ``localhost``) is reachable from this host only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything, so treat it as exposed


@dataclass(frozen=True)
class HealthCheck:
    """A worker type's health check, run by the agent (Mesos ``HealthCheck``)."""

    command: str = ""  # COMMAND: a shell command in the sandbox, exit 0 = healthy
    http_port: int = 0  # HTTP: GET http://<agent>:<port><path>, 2xx/3xx = healthy
    http_path: str = "/"
    delay: float = 15.0  # seconds after start before the first check
    interval: float = 10.0
    timeout: float = 20.0
    grace_period: float = 10.0  # failures before the first success are ignored this long
    consecutive_failures: int = 3  # then the agent kills the task

    def mesos(self, env: list[dict[str, str]]) -> dict[str, Any]:
        """The ``TaskInfo.health_check`` message (JSON)."""
        doc: dict[str, Any] = {
            "delay_seconds": self.delay,
            "interval_seconds": self.interval,
            "timeout_seconds": self.timeout,
            "grace_period_seconds": self.grace_period,
            "consecutive_failures": self.consecutive_failures,
        }
        if self.command:
            doc["type"] = "COMMAND"
            doc["command"] = {
                "value": self.command, "shell": True, "environment": {"variables": env}
            }  # fmt: skip
        else:
            doc["type"] = "HTTP"
            doc["http"] = {"scheme": "http", "port": self.http_port, "path": self.http_path}
        return doc


def _health(table: Any, where: str) -> HealthCheck | None:
    if table is None:
        return None
    where = f"{where}: health_check"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table (command = ... or http_port = ...)")
    known = set(HealthCheck.__dataclass_fields__)
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    command = _get(table, "command", str, where) or ""
    port = _get(table, "http_port", int, where)
    if bool(command) == (port is not None):
        raise ConfigError(f"{where}: give either command or http_port")
    if port is not None and (isinstance(port, bool) or not 0 < port < 65536):
        raise ConfigError(f"{where}: http_port must be a port number (1-65535)")
    path = _get(table, "http_path", str, where) or "/"
    if not path.startswith("/"):
        raise ConfigError(f"{where}: http_path must start with /")
    failures = _get(table, "consecutive_failures", int, where)
    if failures is not None and (isinstance(failures, bool) or failures < 1):
        raise ConfigError(f"{where}: consecutive_failures must be a positive integer")
    d = HealthCheck()
    interval = _number(table, "interval", d.interval, where)
    timeout = _number(table, "timeout", d.timeout, where)
    if interval <= 0 or timeout <= 0:
        raise ConfigError(f"{where}: interval and timeout must be positive")
    return HealthCheck(
        command=command,
        http_port=port or 0,
        http_path=path,
        delay=_number(table, "delay", d.delay, where),
        interval=interval,
        timeout=timeout,
        grace_period=_number(table, "grace_period", d.grace_period, where),
        consecutive_failures=d.consecutive_failures if failures is None else failures,
    )


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
    attributes: tuple[tuple[str, str], ...] = ()  # required agent attributes (typed match)
    role: str = "*"
    kill_grace_seconds: float = 10.0
    volume_mb: float = 0.0  # persistent volume size (0: none)
    volume_path: str = ""  # where the volume appears, relative to the task sandbox
    health_check: HealthCheck | None = None

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
        if self.volume_mb:
            doc["volume"] = [self.volume_mb, self.volume_path]
        if self.health_check is not None:  # part of the TaskInfo: a change replaces workers
            doc["health_check"] = self.health_check.mesos([])
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
    backoff_seconds: float = 5.0  # first relaunch delay of a worker that died before started
    backoff_max_seconds: float = 300.0  # the delay doubles per failure up to this
    crash_loop_limit: int = 10  # consecutive such failures before the slot is given up; 0: never
    principal: str = ""  # framework_info.principal; with secret_file, HTTP basic to the master
    secret_file: str = ""  # mode-600 file holding the principal's secret (read at start)
    master_ca_file: str = ""  # PEM CA bundle that https:// masters are verified with
    zk_auth_file: str = ""  # mode-600 file "user:password": ZooKeeper digest auth and ACLs
    advertise: str = ""  # host other copies and sr_scheduler reach this copy's endpoint at


# Settings a running scheduler cannot take over: they name the framework, where it talks or
# what it subscribed with. A reload that changes one is refused (restart the copies instead).
RESTART_ONLY = (
    "name", "master", "user", "state_dir", "zookeeper", "election_path", "failover_timeout",
    "checkpoint", "status_listen", "call_timeout", "zk_session_timeout", "principal",
    "secret_file", "master_ca_file", "zk_auth_file", "advertise",
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


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a table"}  # fmt: skip
MAX_NUMBER = 1e9  # seconds, MB, cpus: anything larger is a typo (and overflows Mesos durations)
MAX_COUNT = 10000
# settings whose empty string would silently stand for the default: refused instead
NOT_EMPTY = (
    "name", "master", "user", "state_dir", "election_path", "status_listen",
    "on_framework_removed", "component", "config", "command", "role",
)  # fmt: skip


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = table.get(key)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    wrong = value is not None and (
        not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
    )
    if wrong:
        expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise ConfigError(
            f"{where}: {key} must be {expected}, not {type(value).__name__} {value!r}"
        )
    if isinstance(value, str) and key in NOT_EMPTY and not value.strip():
        raise ConfigError(f"{where}: {key} is empty (leave it out for the default)")
    return value


def _number(
    table: dict[str, Any], key: str, default: float, where: str, positive: bool = False
) -> float:
    value = _get(table, key, (int, float), where)
    if value is None:
        return default
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{where}: {key} must be a finite number, not {value!r}")
    if value < 0 or (positive and value == 0):
        what = "positive" if positive else "non-negative"
        raise ConfigError(f"{where}: {key} must be a {what} number, not {value!r}")
    if value > MAX_NUMBER:
        raise ConfigError(f"{where}: {key} = {value!r} is too large (at most {MAX_NUMBER:g})")
    return float(value)


def _worker(name: str, table: dict[str, Any], path: str) -> WorkerType:
    where = f"{path}: [workers.{name}]"
    if not _NAME.match(name):
        raise ConfigError(f"{where}: worker type names are letters, digits, '-' and '_'")
    known = {
        "component", "config", "count", "cpus", "mem", "disk", "command", "uris", "env",
        "hostnames", "attributes", "role", "kill_grace_seconds", "volume", "health_check",
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
    if count is None or count < 0 or count > MAX_COUNT:
        raise ConfigError(f"{where}: count must be an integer from 0 to {MAX_COUNT}, not {count!r}")
    command = _get(table, "command", str, where) or f"sr_{component} foreground {config}"
    uris = _get(table, "uris", list, where) or []
    env = _get(table, "env", dict, where) or {}
    hostnames = _get(table, "hostnames", list, where) or []
    attributes = _get(table, "attributes", dict, where) or {}
    if not all(isinstance(u, str) and u.strip() for u in uris):
        raise ConfigError(f"{where}: uris must be non-empty strings, not {uris!r}")
    if not all(isinstance(h, str) and h.strip() for h in hostnames):
        raise ConfigError(f"{where}: hostnames must be non-empty strings, not {hostnames!r}")
    for k, v in env.items():
        if not k or "=" in k or "\0" in k:
            raise ConfigError(f"{where}: env name {k!r} is not a valid variable name")
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ConfigError(
                f"{where}: env {k} must be a string or a number, not {type(v).__name__} {v!r}"
            )
    for k, v in attributes.items():
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ConfigError(f"{where}: attribute {k} must be text or a number")
        if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
            raise ConfigError(f"{where}: attribute {k} must be a finite number, not {v!r}")
        if isinstance(v, str) and not v.strip():
            raise ConfigError(f"{where}: attribute {k} is empty")
        if isinstance(v, str) and v.strip()[:1] in "[{" and parse_value(v)[0] == "TEXT":
            raise ConfigError(f"{where}: attribute {k} = {v!r} is not a valid range or set")
    role = _get(table, "role", str, where)
    role = "*" if role is None else role
    bad = role_error(role)
    if bad:
        raise ConfigError(f"{where}: {bad} (Mesos would refuse the framework)")
    volume = _get(table, "volume", dict, where)
    volume_mb, volume_path = 0.0, ""
    if volume is not None:
        extra = set(volume) - {"size", "path"}
        if extra:
            raise ConfigError(f"{where}: volume has unknown keys {sorted(extra)}")
        volume_mb = _number(volume, "size", 0.0, where + " volume")
        volume_path = _get(volume, "path", str, where + " volume") or ""
        if volume_mb <= 0:
            raise ConfigError(f"{where}: volume size (MB) must be positive")
        parts = volume_path.split("/")
        if not volume_path or volume_path.startswith("/") or ".." in parts or "" in parts:
            raise ConfigError(
                f"{where}: volume path must be a relative path inside the task sandbox "
                f'(e.g. "state"), not {volume_path!r}'
            )
        if role == "*":
            raise ConfigError(
                f'{where}: a volume needs a role other than "*" (Mesos reserves the disk '
                "to a role; unreserved resources cannot hold a persistent volume)"
            )
    cpus = _number(table, "cpus", 0.1, where, positive=True)
    mem = _number(table, "mem", 64.0, where, positive=True)
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
        role=role,
        kill_grace_seconds=_number(table, "kill_grace_seconds", 10.0, where),
        volume_mb=volume_mb,
        volume_path=volume_path,
        health_check=_health(table.get("health_check"), where),
    )


# timers that cannot be 0: a call, session or heartbeat of no time, or a loop of no pause
MUST_BE_POSITIVE = (
    "staging_timeout", "heartbeat_misses", "reconcile_interval", "kill_retry_seconds",
    "call_timeout", "zk_session_timeout",
)  # fmt: skip


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"""^\s*["']?([A-Za-z0-9_-]+)["']?\s*=""")
_WHERE = re.compile(r"^\[(scheduler|workers\.[^\]]+)\]( volume)?: (unknown keys \['([^']+)'|\S+)")
_FIRST_WORD_KEY = {"attribute": "attributes"}  # messages about one item name the item


def line_of(text: str, message: str) -> int | None:
    """The line of ``text`` a spec error (``[table]: key ...``, file name removed) is about.

    The key's line in its table, else the table's header line; None when neither is found.
    """
    m = _WHERE.match(message)
    if m is None:
        return None
    table = m.group(1)
    key = "volume" if m.group(2) else (m.group(4) or m.group(3))
    key = _FIRST_WORD_KEY.get(key, key)
    current, header = "", None
    for n, raw in enumerate(text.splitlines(), 1):
        h = _HEADER.match(raw)
        if h is not None:
            current = ".".join(part.strip().strip("\"'") for part in h.group(1).split("."))
            if current == table:
                header = n
            continue
        k = _KEY.match(raw)
        if k is not None and current == table and k.group(1) == key:
            return n
    return header


def parse_spec(text: str, path: str = "<spec>") -> PumpSpec:
    """Parse a specification; :class:`ConfigError` names the file, line and problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", path=path) from e
    try:
        return _parse(doc, path)
    except ConfigError as e:
        message = str(e).removeprefix(f"{path}: ")
        line = line_of(text, message)
        if line is None:
            raise
        raise ConfigError(message, path=path, line=line) from None


def _parse(doc: dict[str, Any], path: str) -> PumpSpec:
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
    if not master or not master.startswith(("http://", "https://", "zk://")):
        raise ConfigError(f"{where}: master must be a zk://, http:// or https:// URL")
    if "@" in master.split("/", 3)[2]:
        raise ConfigError(
            f"{where}: master must not carry credentials (they would show in logs and the "
            "status page): use principal and secret_file (Mesos), zk_auth_file (ZooKeeper)"
        )
    on_removed = _get(sched, "on_framework_removed", str, where) or "stop"
    if on_removed not in ON_REMOVED:
        raise ConfigError(f"{where}: on_framework_removed must be one of {ON_REMOVED}")
    state_dir = _get(sched, "state_dir", str, where) or f"~/.local/state/sarra/scheduler/{name}"
    defaults = SchedulerSettings(name=name, master=master, user="", state_dir=Path())
    numbers = {
        key: _number(sched, key, getattr(defaults, key), where, key in MUST_BE_POSITIVE)
        for key in (
            "failover_timeout", "min_running_seconds", "staging_timeout", "avoid_seconds",
            "refuse_seconds", "heartbeat_misses", "reconcile_interval", "kill_retry_seconds",
            "call_timeout", "zk_session_timeout", "backoff_seconds", "backoff_max_seconds",
        )
    }  # fmt: skip
    limit = _get(sched, "crash_loop_limit", int, where)
    if limit is not None and (isinstance(limit, bool) or limit < 0):
        raise ConfigError(f"{where}: crash_loop_limit must be a non-negative integer")
    status_listen = _get(sched, "status_listen", str, where) or "127.0.0.1:0"
    parse_listen(status_listen, where)
    principal = _get(sched, "principal", str, where) or ""
    secret_file = _get(sched, "secret_file", str, where) or ""
    if secret_file and not principal:
        raise ConfigError(f"{where}: secret_file needs principal (the name the secret is for)")
    user = _get(sched, "user", str, where)
    if not user or not user.strip() or any(c.isspace() or c in ":/" for c in user):
        raise ConfigError(
            f"{where}: user is required: the Unix user every agent runs the workers as "
            "(Mesos framework_info.user; it must exist on the agents)"
        )
    election_path = _get(sched, "election_path", str, where) or f"/sarra/scheduler/{name}"
    if not election_path.startswith("/") or election_path.endswith("/") or "//" in election_path:
        raise ConfigError(
            f"{where}: election_path must be an absolute ZooKeeper path (e.g. /sarra/scheduler/"
            f"{name}), not {election_path!r}"
        )
    master_ca_file = _get(sched, "master_ca_file", str, where) or ""
    if master_ca_file and not master.startswith("https://"):
        raise ConfigError(f"{where}: master_ca_file is for an https:// master")
    zk_auth_file = _get(sched, "zk_auth_file", str, where) or ""
    advertise = _get(sched, "advertise", str, where) or ""
    if any(c.isspace() or c in "/?#@:" for c in advertise) and not _is_v6(advertise):
        raise ConfigError(f"{where}: advertise must be a host name or address, not {advertise!r}")
    settings = SchedulerSettings(
        name=name,
        master=master,
        user=user,
        state_dir=Path(state_dir).expanduser(),
        zookeeper=_get(sched, "zookeeper", str, where) or "",
        election_path=election_path,
        checkpoint=bool(_get(sched, "checkpoint", bool, where) in (None, True)),
        watch_spec=bool(_get(sched, "watch_spec", bool, where)),
        status_listen=status_listen,
        principal=principal,
        secret_file=str(Path(secret_file).expanduser()) if secret_file else "",
        master_ca_file=str(Path(master_ca_file).expanduser()) if master_ca_file else "",
        zk_auth_file=str(Path(zk_auth_file).expanduser()) if zk_auth_file else "",
        advertise=advertise,
        on_framework_removed=on_removed,
        crash_loop_limit=10 if limit is None else limit,
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
    for name in sorted(set(old.workers) & set(new.workers)):
        was, now = old.workers[name], new.workers[name]
        before, after = (
            (was.volume_mb, was.volume_path, was.role),
            (now.volume_mb, now.volume_path, now.role),
        )
        if was.volume_mb and before != after:
            raise ConfigError(
                f"cannot change the volume (size, path or role) of worker type {name}: its "
                "volumes exist on the agents; use a new worker type name"
            )
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
