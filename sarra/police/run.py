"""Orchestration of ``sr_police``: load the pump, reach the broker, audit, fix, declare.

Kept apart from the argument parsing (:mod:`sarra.police.cli`) so tests and other tools call
these functions directly with an ``env`` mapping (``SR_CONFIG_DIR``/``SR_STATE_DIR``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

from sarra.config import paths
from sarra.config.credentials import CredentialStore
from sarra.config.loader import load_pump_config
from sarra.config.quota import quota_table
from sarra.errors import BrokerError, CredentialsError
from sarra.flow.quota import RedisLedger, open_ledger
from sarra.police import audit as au
from sarra.police.declare import Action, declare_pump, declare_users, password_for
from sarra.police.mgmt import Management
from sarra.police.private import Access, Authorizer, environment_files
from sarra.police.pump import Pump
from sarra.security_events import events_path, record_event

log = logging.getLogger(__name__)


def load_pump(env: Mapping[str, str] | None = None, admin_conf: Path | None = None) -> Pump:
    """The pump of ``<config_dir>/default.conf`` + ``admin.conf`` (ConfigError if unusable)."""
    return Pump.from_config(load_pump_config(env, admin_conf=admin_conf))


def load_store(env: Mapping[str, str] | None = None) -> CredentialStore:
    """credentials.conf; refused (CredentialsError) when others may read it."""
    return CredentialStore.load(paths.credentials_path(env))


def management_for(pump: Pump, store: CredentialStore) -> Management:
    """A management API client logged in as the pump's admin.

    Raises:
        CredentialsError: credentials.conf has no password for the admin account.
    """
    user = pump.admin.user or "guest"
    password = pump.admin.password or password_for(pump, store, user)
    if password is None:
        raise CredentialsError(
            f"no password for the admin account {pump.broker_url_for(user)} in credentials.conf"
        )
    return Management(pump.management_url, user, password)


def declare(env: Mapping[str, str] | None = None, admin_conf: Path | None = None) -> list[Action]:
    """``sr_police declare``: users, permissions and exchanges of the pump."""
    pump = load_pump(env, admin_conf)
    store = load_store(env)
    return declare_pump(pump, management_for(pump, store), store)


def authorizer(
    env: Mapping[str, str] | None = None,
    admin_conf: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Authorizer:
    """``sr_police authorize``: the private-data authorizer for nginx (not yet serving).

    Raises:
        ConfigError, CredentialsError: the pump or credentials.conf cannot be loaded.
    """

    def load() -> Access:
        pump = load_pump(env, admin_conf)
        store = load_store(env)
        passwords = {u.name: password_for(pump, store, u.name) for u in pump.users}
        return Access(pump.private, {u: p for u, p in passwords.items() if p is not None})

    def record(kind: str, user: str, detail: str) -> None:
        record_event(kind, env=env, user=user, detail=detail, component="authorize")

    watched = environment_files(env)
    if admin_conf is not None:
        watched[0] = admin_conf
    return Authorizer(load, watched, host, port, record)


def audit(
    env: Mapping[str, str] | None = None,
    settings: au.AuditSettings | None = None,
    *,
    admin_conf: Path | None = None,
    now: float | None = None,
) -> au.AuditReport:
    """``sr_police audit``: every check; a broker that cannot be reached is itself a finding."""
    settings = settings or au.AuditSettings()
    pump = load_pump(env, admin_conf)
    report = au.AuditReport(time=time.time() if now is None else now, broker=pump.management_url)
    findings = report.findings
    findings += au.check_pump_names(pump)
    findings += au.check_credentials(env)
    try:
        mgmt = management_for(
            pump, CredentialStore.load(paths.credentials_path(env), check_mode=False)
        )
        findings += au.check_users(pump, mgmt)
        findings += au.check_exchanges(pump, mgmt.exchanges())
        first = mgmt.queues()
        second = None
        if settings.sample_seconds > 0:
            time.sleep(settings.sample_seconds)
            second = mgmt.queues()
        findings += au.check_queues(pump, first, second, settings)
        report.cluster = mgmt.cluster()
        findings += au.check_cluster(report.cluster)
    except (BrokerError, CredentialsError) as exc:
        findings.append(au.Finding("broker_unreachable", au.ERROR, pump.management_url, str(exc)))
    findings += au.check_instances(env, settings.stuck_after, report.time)
    findings += au.check_events(events_path(env), settings.events_window, report.time)
    pump_config = load_pump_config(env, admin_conf=admin_conf)
    quotas = quota_table(pump_config.get("quota") or ())
    ledger = open_ledger(
        pump_config.get("quota_redis_serverurl"),
        pump_config.get("quota_redis_keybase"),
        paths.state_dir(env=env),
        env,
        check_mode=False,  # credentials_mode is its own finding
    )
    try:
        findings += au.check_quotas(quotas, ledger, settings.events_window, report.time)
    finally:
        if isinstance(ledger, RedisLedger):
            ledger.close()
    if settings.broker_log is not None:
        findings += au.check_broker_log(settings.broker_log)
    return report


def fix(
    report: au.AuditReport,
    env: Mapping[str, str] | None = None,
    *,
    force: bool = False,
    admin_conf: Path | None = None,
) -> list[str]:
    """Repair what ``report`` found and can safely be repaired; the list of what was done.

    Safe fixes: ``chmod 600`` on credential files, removal of stale pid files, declaring
    missing users, permissions and exchanges. Deleting misnamed queues and exchanges (and
    per-user exchanges of nobody) needs ``force``. Users are never deleted.
    """
    done: list[str] = []
    by_check: dict[str, list[au.Finding]] = {}
    for f in report.findings:
        by_check.setdefault(f.check, []).append(f)
    for f in by_check.get("credentials_mode", []):
        os.chmod(f.subject, 0o600)
        done.append(f"chmod 600 {f.subject}")
    for f in by_check.get("instance_dead", []):
        comp, cfg, num = f.subject.split("/")
        pid_file = paths.state_dir(comp, cfg, env) / f"sr_{comp}_{cfg}_{num}.pid"
        pid_file.unlink(missing_ok=True)
        done.append(f"removed stale pid file {pid_file}")
    broker_checks = ("user_missing", "permissions_wrong", "exchange_missing")
    destructive = ("exchange_name", "exchange_owner", "queue_name")
    if not any(by_check.get(c) for c in (*broker_checks, *(destructive if force else ()))):
        return done
    pump = load_pump(env, admin_conf)
    store = load_store(env)
    mgmt = management_for(pump, store)
    names = {f.subject for c in ("user_missing", "permissions_wrong") for f in by_check.get(c, [])}
    wanted = [u for u in pump.users if u.name in names]
    for action in declare_users(pump, mgmt, store, wanted):
        done.append(f"declare {action}")
    for f in by_check.get("exchange_missing", []):
        mgmt.put_exchange(f.subject)
        done.append(f"declared exchange {f.subject}")
    if force:
        for f in by_check.get("queue_name", []):
            mgmt.delete_queue(f.subject)
            done.append(f"deleted queue {f.subject}")
        for f in by_check.get("exchange_name", []) + by_check.get("exchange_owner", []):
            mgmt.delete_exchange(f.subject)
            done.append(f"deleted exchange {f.subject}")
    for line in done:
        log.info("%s", line)
    return done
