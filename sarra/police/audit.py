"""``sr_police audit``: what is wrong with a pump, as findings a person or a monitor reads.

Each check returns :class:`Finding` objects; :func:`audit_pump` runs them all. The broker
checks use the management API (:mod:`sarra.police.mgmt`); the local checks read the config
and state directories of the account running sr_police. Checks (the ``check`` field):

=====================  ========  ================================================  ===========
check                  severity  meaning                                           fix
=====================  ========  ================================================  ===========
broker_unreachable     error     the management API cannot be used                 -
user_missing           error     declared in admin.conf, absent on the broker      declare
user_undeclared        warning   on the broker, not declared (an unused user)      -
permissions_wrong      error     permissions differ from spec 1.5                  declare
user_collision         error     users ``u`` and ``u_x``: their exchanges collide  -
user_prefix            info      users ``al`` and ``alice`` (safe only anchored)   -
exchange_missing       error     a pump exchange does not exist                    declare
exchange_name          error     exchange name not starting with ``x``             delete*
exchange_owner         warning   ``xs_``/``xr_``/``xl_`` exchange of no user       delete*
queue_name             error     queue name not ``q_<user>.`` of a known user      delete*
queue_no_consumer      warning   nobody consumes the queue                         -
queue_backlog          warning   messages above ``backlog_max``                    -
queue_growing          warning   messages grew between two samples                 -
instance_dead          error     pid file of a process that is gone                remove pid
instance_stuck         warning   running, but no log/heartbeat for ``stuck_after``  -
credentials_mode       error     a credentials or key file readable by others      chmod 600
security_event         warning   forged source/report etc. recorded by components  -
access_refused         warning   the broker log shows a refused access             -
quota_usage            info      a source's usage of its ``quota`` (admin.conf)    -
quota_refused          warning   a source refused for its quota within the window  -
quota_store_down       error     the Redis quota ledger cannot be read             -
cluster_node_down      error     a node of the broker cluster is not running       -
queue_replica_down     warning   a replica (or the node) of a ``q_`` queue is down  -
=====================  ========  ================================================  ===========

The report also shows the cluster (:mod:`sarra.broker.cluster`): its nodes, and each ``q_``
queue's leader and replicas (``cluster`` in the JSON output).

``delete*``: only with ``--force``. Exit status of the audit: 0 nothing above info,
1 warnings, 2 errors (the Nagios convention).
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sarra.broker.cluster import ClusterView
from sarra.cli.instances import Instance, State, instance_pid, last_activity, pid_file_numbers
from sarra.config import paths
from sarra.config.quota import Quota
from sarra.errors import QuotaStoreUnavailable
from sarra.flow.quota import Ledger
from sarra.police.mgmt import Management
from sarra.police.pump import Pump
from sarra.security_events import read_events

ERROR, WARNING, INFO = "error", "warning", "info"
_RANK = {INFO: 0, WARNING: 1, ERROR: 2}
_PID_FILE = re.compile(r"sr_(?P<comp>[a-z]+)_(?P<cfg>.+)_(?P<num>\d{3,})\.pid")
_KEYFILE = re.compile(r"ssh_keyfile=([^,\s]+)")
_REFUSED = re.compile(
    r"access to (?P<what>exchange|queue) '(?P<name>[^']*)' in vhost '[^']*' "
    r"refused for user '(?P<user>[^']*)'"
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem. ``fix`` says what ``--fix`` would do (None: nothing automatic)."""

    check: str
    severity: str
    subject: str
    detail: str
    fix: str | None = None
    needs_force: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The finding as JSON output shows it: every field by name."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """Thresholds. ``sample_seconds`` > 0 takes a second queue sample that much later."""

    backlog_max: int = 10000
    sample_seconds: float = 0.0
    stuck_after: float = 450.0
    events_window: float = 86400.0
    broker_log: Path | None = None


@dataclass
class AuditReport:
    """All findings of one audit, plus what was fixed (``fixed``) when fixing."""

    time: float
    broker: str
    findings: list[Finding] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    cluster: ClusterView | None = None

    @property
    def exit_code(self) -> int:
        return max((_RANK[f.severity] for f in self.findings), default=0)

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.check for f in self.findings))

    def to_json(self) -> str:
        return json.dumps(
            {
                "time": self.time,
                "broker": self.broker,
                "status": ["ok", "warning", "error"][self.exit_code],
                "counts": self.counts(),
                "findings": [f.to_dict() for f in self.findings],
                "fixed": self.fixed,
                "cluster": None if self.cluster is None else self.cluster.to_dict(),
            },
            indent=2,
            sort_keys=True,
        )

    def to_text(self) -> str:
        stamp = time.strftime("%F %T", time.localtime(self.time))
        lines = [f"sr_police audit of {self.broker} at {stamp}"]
        if not self.findings:
            lines.append("no problems found")
        order = sorted(self.findings, key=lambda f: (-_RANK[f.severity], f.check, f.subject))
        for f in order:
            hint = ""
            if f.fix:
                hint = f"  [fix: {f.fix}{' --force' if f.needs_force else ''}]"
            lines.append(f"{f.severity.upper():<7} {f.check:<18} {f.subject}: {f.detail}{hint}")
        lines.extend(f"FIXED   {what}" for what in self.fixed)
        if self.cluster is not None:
            lines.extend(self.cluster.lines())
        status = ["ok", "warning", "error"][self.exit_code]
        lines.append(f"{len(self.findings)} finding(s); status {status}")
        return "\n".join(lines) + "\n"


# -- broker checks ---------------------------------------------------------------------


def check_users(pump: Pump, mgmt: Management) -> list[Finding]:
    """Declared users missing on the broker, unused broker users, wrong permissions."""
    found: list[Finding] = []
    have = {u["name"] for u in mgmt.users()}
    perms = mgmt.permissions()
    for user in pump.users:
        if user.name not in have:
            found.append(
                Finding(
                    "user_missing",
                    ERROR,
                    user.name,
                    f"{user.role} declared in admin.conf but not on the broker",
                    "declare",
                )
            )
        elif perms.get(user.name) != user.permission:
            got = perms.get(user.name)
            shown = "none" if got is None else f"c={got.configure} w={got.write} r={got.read}"
            found.append(
                Finding(
                    "permissions_wrong", ERROR, user.name, f"{user.role} has {shown}", "declare"
                )
            )
    declared = {u.name for u in pump.users}
    for name in sorted(have - declared):
        found.append(
            Finding(
                "user_undeclared", WARNING, name, "broker user not declared in admin.conf (unused?)"
            )
        )
    return found


def check_exchanges(pump: Pump, exchanges: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """Missing pump exchanges; names not starting with ``x``; per-user exchanges of nobody."""
    found: list[Finding] = []
    names = {str(x["name"]) for x in exchanges}
    for name in pump.exchanges:
        if name not in names:
            found.append(
                Finding("exchange_missing", ERROR, name, "pump exchange missing", "declare")
            )
    for name in sorted(names):
        if name == "" or name.startswith("amq."):
            continue  # the broker's own
        if not name.startswith("x"):
            found.append(
                Finding(
                    "exchange_name",
                    ERROR,
                    name,
                    "exchange names must start with 'x' (spec 1.2)",
                    "delete exchange",
                    needs_force=True,
                )
            )
        elif re.match(r"x[lrs]_", name) and pump.exchange_owner(name) is None:
            found.append(
                Finding(
                    "exchange_owner",
                    WARNING,
                    name,
                    "per-user exchange of no declared user",
                    "delete exchange",
                    needs_force=True,
                )
            )
    return found


def queue_owner(pump: Pump, queue: str, broker_users: Sequence[str] = ()) -> str | None:
    """The longest declared (or broker) user u such that ``queue`` starts with ``q_<u>.``."""
    candidates = {u.name for u in pump.users} | set(broker_users)
    best = None
    for name in candidates:
        if queue.startswith(f"q_{name}.") and (best is None or len(name) > len(best)):
            best = name
    return best


def check_queues(
    pump: Pump,
    first: Sequence[Mapping[str, Any]],
    second: Sequence[Mapping[str, Any]] | None,
    settings: AuditSettings,
) -> list[Finding]:
    """Queue names, consumers, backlog and growth (``second`` is the later sample)."""
    found: list[Finding] = []
    latest = {str(q["name"]): q for q in (second if second is not None else first)}
    earlier = {str(q["name"]): q for q in first}
    for name, q in sorted(latest.items()):
        if queue_owner(pump, name) is None:
            found.append(
                Finding(
                    "queue_name",
                    ERROR,
                    name,
                    "queue name is not q_<declared user>.* (spec 1.2)",
                    "delete queue",
                    needs_force=True,
                )
            )
        messages = int(q.get("messages") or 0)
        if int(q.get("consumers") or 0) == 0:
            found.append(
                Finding(
                    "queue_no_consumer",
                    WARNING,
                    name,
                    f"no consumer ({messages} message(s) waiting)",
                )
            )
        if messages > settings.backlog_max:
            found.append(
                Finding(
                    "queue_backlog",
                    WARNING,
                    name,
                    f"{messages} messages > backlog_max {settings.backlog_max}",
                )
            )
        if second is not None and name in earlier:
            before = int(earlier[name].get("messages") or 0)
            if messages > before:
                found.append(
                    Finding(
                        "queue_growing",
                        WARNING,
                        name,
                        f"{before} -> {messages} messages in {settings.sample_seconds:g} s",
                    )
                )
    return found


def check_cluster(view: ClusterView) -> list[Finding]:
    """Nodes not running; ``q_`` queues with a replica (a classic queue: its node) down."""
    found = [
        Finding("cluster_node_down", ERROR, n.name, "broker node not running")
        for n in view.nodes
        if not n.running
    ]
    for q in view.queues:
        if q.replicas_down:
            left = f"{len(q.online)} of {len(q.members)} online"
            found.append(
                Finding(
                    "queue_replica_down",
                    WARNING,
                    q.name,
                    f"{q.type} queue: {', '.join(q.replicas_down)} down ({left})",
                )
            )
    return found


# -- local checks ----------------------------------------------------------------------


def check_instances(
    env: Mapping[str, str] | None, stuck_after: float, now: float | None = None
) -> list[Finding]:
    """Every instance with a pid file under the state directory: dead or stuck ones."""
    found: list[Finding] = []
    root = paths.state_dir(env=env)
    logs = paths.log_dir(env)
    clock = time.time() if now is None else now
    if not root.is_dir():
        return found
    for pid_path in sorted(root.glob("*/*/sr_*.pid")):
        m = _PID_FILE.fullmatch(pid_path.name)
        if m is None or m["comp"] != pid_path.parent.parent.name:
            continue
        comp, cfg = m["comp"], m["cfg"]
        if int(m["num"]) not in pid_file_numbers(pid_path.parent, comp, cfg):
            continue
        inst = Instance(comp, cfg, int(m["num"]), pid_path.parent, logs)
        state, pid = instance_pid(inst)
        if state is State.STALE:
            found.append(
                Finding(
                    "instance_dead",
                    ERROR,
                    inst.label,
                    f"pid file names pid {pid}, which is not running",
                    "remove stale pid file",
                )
            )
        elif state is State.RUNNING:
            seen = last_activity(inst)
            if seen is None or clock - seen > stuck_after:
                age = "never" if seen is None else f"{clock - seen:.0f} s ago"
                found.append(
                    Finding(
                        "instance_stuck",
                        WARNING,
                        inst.label,
                        f"pid {pid} alive but last activity {age} "
                        f"(> {stuck_after:g} s); restart it",
                    )
                )
    return found


def credential_files(env: Mapping[str, str] | None) -> list[Path]:
    """credentials.conf and the ssh key files it names."""
    main = paths.credentials_path(env)
    files = [main]
    try:
        text = main.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return files
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            files += [Path(os.path.expanduser(k)) for k in _KEYFILE.findall(line)]
    return files


def check_credentials(env: Mapping[str, str] | None) -> list[Finding]:
    """Credential and key files any group or other user could read or write."""
    found: list[Finding] = []
    for file in credential_files(env):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
        except OSError:
            continue
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            found.append(
                Finding(
                    "credentials_mode",
                    ERROR,
                    str(file),
                    f"mode {mode:o} lets others read secrets",
                    "chmod 600",
                )
            )
    return found


def check_pump_names(pump: Pump) -> list[Finding]:
    """Declared user names whose exchanges collide (``u``, ``u_x``) or merely prefix."""
    found = [
        Finding(
            "user_collision",
            ERROR,
            f"{a}/{b}",
            f"xs_{b} is both {b}'s exchange and {a}'s exchange with suffix "
            f"{b[len(a) + 1 :]!r} (spec 1.5); rename one user",
        )
        for a, b in pump.collisions()
    ]
    found += [
        Finding(
            "user_prefix",
            INFO,
            f"{a}/{b}",
            f"{a!r} is a prefix of {b!r}: safe with anchored permissions only "
            f"(sr2-style ^xs_{a}.* would let {a} write xs_{b})",
        )
        for a, b in pump.prefixes()
    ]
    return found


def check_events(events_file: Path, window: float, now: float | None = None) -> list[Finding]:
    """Security events of the last ``window`` seconds, one finding per (kind, user)."""
    clock = time.time() if now is None else now
    events = read_events(events_file, since=clock - window)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for e in events:
        groups.setdefault((str(e["kind"]), str(e.get("user", "?"))), []).append(e)
    found = []
    for (kind, user), items in sorted(groups.items()):
        last = items[-1]
        where = f" on {last['exchange']}" if last.get("exchange") else ""
        found.append(
            Finding(
                "security_event",
                WARNING,
                f"{kind}:{user}",
                f"{len(items)} {kind} event(s) by {user} in the last "
                f"{window:g} s; last{where}: {last.get('detail', '')}",
            )
        )
    return found


def check_broker_log(path: Path) -> list[Finding]:
    """Access refusals in a RabbitMQ log file: attempts on other users' exchanges/queues."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return [Finding("access_refused", INFO, str(path), f"cannot read broker log: {exc}")]
    counts = Counter((m["user"], m["what"], m["name"]) for m in _REFUSED.finditer(text))
    return [
        Finding(
            "access_refused",
            WARNING,
            f"{user}:{name}",
            f"broker refused {user} access to {what} {name!r} {n} time(s)",
        )
        for (user, what, name), n in sorted(counts.items())
    ]


def check_quotas(
    quotas: Mapping[str, Quota], ledger: Ledger, window: float, now: float
) -> list[Finding]:
    """Usage and refusals of every source with a ``quota`` line (and of any source whose
    ledger remains after its line was removed); refusals are a warning while the last one
    is less than ``window`` seconds old (``events_window``). The ledger is the node's files
    or the pump's Redis (``quota_redis_serverurl``); a Redis that cannot be read is an
    error finding ``quota_store_down``."""
    found: list[Finding] = []
    try:
        sources = sorted(set(quotas) | set(ledger.sources()))
        usages = [(source, ledger.usage(source)) for source in sources]
    except QuotaStoreUnavailable as exc:
        return [Finding("quota_store_down", ERROR, repr(ledger), str(exc))]
    for source, usage in usages:
        quota = quotas.get(source)
        limit_b = "no limit" if quota is None or quota.bytes is None else f"{quota.bytes}"
        limit_f = "no limit" if quota is None or quota.files is None else f"{quota.files}"
        found.append(
            Finding(
                "quota_usage",
                INFO,
                source,
                f"{usage.bytes} bytes of {limit_b}, {usage.files} files of {limit_f}, "
                f"{usage.refused} refused",
            )
        )
        if usage.refused and now - usage.last_refusal_time < window:
            when = time.strftime("%F %T", time.localtime(usage.last_refusal_time))
            found.append(
                Finding(
                    "quota_refused",
                    WARNING,
                    source,
                    f"{usage.refused} file(s) refused; last at {when}: {usage.last_refusal}",
                )
            )
    return found
