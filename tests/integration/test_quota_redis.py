"""The quota ledger in Redis (``quota_redis_serverurl``) against a real Redis
(tests/servers/redis.py): two ledgers on one key base stand for two pump nodes on one tree."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from sarra.config.credentials import parse_url
from sarra.config.loader import load_pump_config
from sarra.config.quota import Quota
from sarra.errors import ConfigError, QuotaExceeded, QuotaStoreUnavailable
from sarra.flow.quota import FileLedger, QuotaGuard, RedisLedger, Usage, open_ledger
from sarra.police.audit import ERROR, INFO, WARNING, check_quotas
from tests.integration.flowkit import unique
from tests.servers.redis import Redis


def _ledger(redis_server: Redis, keybase: str, **kw: object) -> RedisLedger:
    return RedisLedger(parse_url(redis_server.credentials_line()), keybase, **kw)  # type: ignore[arg-type]


def _node(url: str, keybase: str, attempts: int, size: int) -> None:
    """One pump node (its own process and ledger) admitting files of alice."""
    ledger = RedisLedger(parse_url(url), keybase)
    guard = QuotaGuard({"alice": Quota(1000, 150)}, ledger)
    for _ in range(attempts):
        with contextlib.suppress(QuotaExceeded):
            guard.admit("alice", size, None)
    ledger.close()


def test_two_nodes_in_processes_never_exceed_the_quota_together(redis_server: Redis) -> None:
    base = unique("quota")
    ctx = multiprocessing.get_context("spawn")
    url = redis_server.credentials_line()
    procs = [ctx.Process(target=_node, args=(url, base, 50, 1)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    usage = _ledger(redis_server, base).usage("alice")
    # 200 attempts of one 1-byte file against files=150: exactly 150 admitted, 50 refused
    assert (usage.files, usage.bytes, usage.refused) == (150, 150, 50)
    assert usage.last_refusal == "files quota exceeded: 150 used + 1 > 150 allowed"


def test_two_ledgers_charged_by_threads_stop_at_the_bytes_limit(redis_server: Redis) -> None:
    base = unique("quota")
    nodes = [_ledger(redis_server, base), _ledger(redis_server, base)]
    admitted: list[int] = []
    lock = threading.Lock()

    def charge(ledger: RedisLedger) -> None:
        guard = QuotaGuard({"alice": Quota(1000, None)}, ledger)
        for _ in range(60):
            try:
                guard.admit("alice", 7, None)
            except QuotaExceeded:
                continue
            with lock:
                admitted.append(7)

    threads = [threading.Thread(target=charge, args=(n,)) for n in nodes for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    usage = nodes[0].usage("alice")
    assert usage == nodes[1].usage("alice")
    assert sum(admitted) == usage.bytes == 994  # 142 files of 7 bytes fit in 1000
    assert usage.files == 142
    assert usage.refused == 360 - 142
    for n in nodes:
        n.close()


def test_the_redis_ledger_keeps_the_file_ledgers_semantics(
    redis_server: Redis, tmp_path: Path
) -> None:
    """The same charges on a FileLedger and a RedisLedger give the same usage (times apart)."""
    quota = Quota(100, 3)
    steps: list[tuple[int, int, Quota, bool]] = [
        (60, 1, quota, False),  # a new file
        (30, 1, quota, True),  # a check: nothing added
        (50, 1, quota, False),  # refused: bytes
        (-20, 0, quota, False),  # replaced by a smaller one
        (30, 1, quota, False),
        (1, 1, quota, True),  # a check that fits (71 bytes, 3 files)
        (10, 1, quota, False),
        (1, 1, quota, True),  # refused for its files (3 used), counted though a dry run
        (-500, -7, Quota(), False),  # removals never go below zero
        (5, 1, Quota(None, None), False),  # placed: never refused
    ]
    file_ledger, redis_ledger = FileLedger(tmp_path), _ledger(redis_server, unique("quota"))
    for delta_b, delta_f, q, dry in steps:
        outcomes = []
        for ledger in (file_ledger, redis_ledger):
            try:
                got: object = ledger.charge("alice", delta_b, delta_f, q, dry_run=dry)
            except QuotaExceeded as e:
                got = str(e)
            if isinstance(got, Usage):
                got.last_refusal_time = 0.0
            outcomes.append(got)
        assert outcomes[0] == outcomes[1], (delta_b, delta_f, q, dry)
    a, b = file_ledger.usage("alice"), redis_ledger.usage("alice")
    assert b.last_refusal_time > 0
    a.last_refusal_time = b.last_refusal_time = 0.0
    assert a == b == Usage(5, 1, 2, "files quota exceeded: 3 used + 1 > 3 allowed", 0.0)
    assert redis_ledger.sources() == ["alice"]
    assert redis_ledger.usage("nobody") == Usage()
    redis_ledger.close()


def test_refunds_checks_and_refusals_through_the_guard(redis_server: Redis) -> None:
    base = unique("quota")
    one, other = _ledger(redis_server, base), _ledger(redis_server, base)
    node_a = QuotaGuard({"alice": Quota(1000, 2)}, one)
    node_b = QuotaGuard({"alice": Quota(1000, 2)}, other)
    charge = node_a.admit("alice", 600, None)
    node_b.check("alice", 400, None)  # fits: not charged
    assert other.usage("alice") == Usage(600, 1)
    with pytest.raises(QuotaExceeded, match="bytes quota exceeded: 600 used \\+ 500 > 1000"):
        node_b.admit("alice", 500, None)  # the other node's 600 bytes count here
    node_a.release(charge)  # that download failed: given back
    assert one.usage("alice").bytes == 0 and one.usage("alice").files == 0
    node_b.admit("alice", 900, None)
    node_b.adjust(node_b.admit("alice", 50, 40), 20)  # a replacement that grew by 20, not 10
    node_a.removed("alice", 900)
    usage = one.usage("alice")
    assert (usage.bytes, usage.files, usage.refused) == (20, 0, 1)
    for ledger in (one, other):
        ledger.close()


def test_while_redis_is_down_nothing_is_written_unchecked_and_corrections_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.servers.redis import start_redis

    server = start_redis()
    try:
        base = unique("quota")
        ledger = _ledger(server, base, timeout=1.0)
        guard = QuotaGuard({"alice": Quota(1000, 10)}, ledger)
        guard.admit("alice", 100, None)
        server.stop()
        caplog.set_level(logging.WARNING, logger="sarra.flow.quota")
        with pytest.raises(QuotaStoreUnavailable) as down:
            guard.admit("alice", 1, None)  # could be refused: not written, retried later
        assert down.value.retryable
        with pytest.raises(QuotaStoreUnavailable):
            guard.check("alice", 1, None)
        guard.placed("alice", 30, 1)  # cannot be refused: kept until Redis answers
        guard.removed("alice", 10)
        assert ledger.pending() == [("alice", 30, 1), ("alice", -10, -1)]
        with pytest.raises(QuotaStoreUnavailable):
            ledger.usage("alice")
        found = check_quotas({"alice": Quota(1000, 10)}, ledger, 3600, time.time())
        assert [(f.check, f.severity) for f in found] == [("quota_store_down", ERROR)]
        server.start()  # an empty Redis (no persistence): only what was pending comes back
        guard.admit("alice", 5, None)
        assert ledger.pending() == []
        assert ledger.usage("alice") == Usage(25, 1)
        text = caplog.text
        assert text.count("unreachable or failing") == 1
        assert "reachable again" in text
        assert "+30 bytes, +1 files of source alice" in text
        assert server.password not in text
        ledger.close()
    finally:
        server.stop()


def test_the_audit_reads_usage_and_refusals_from_redis(redis_server: Redis) -> None:
    base = unique("quota")
    ledger = _ledger(redis_server, base)
    guard = QuotaGuard({"alice": Quota(10, None), "bob": Quota(None, 9)}, ledger)
    guard.admit("alice", 10, None)
    with pytest.raises(QuotaExceeded):
        guard.admit("alice", 1, None)
    _ledger(redis_server, base).charge("carol", 3, 1, Quota())  # her quota line since removed
    now = time.time()
    found = check_quotas(guard.quotas, ledger, 3600, now)
    by = {(f.check, f.subject): f for f in found}
    assert by["quota_usage", "alice"].detail == "10 bytes of 10, 1 files of no limit, 1 refused"
    assert by["quota_usage", "bob"].detail == "0 bytes of no limit, 0 files of 9, 0 refused"
    assert by["quota_usage", "carol"].detail == (
        "3 bytes of no limit, 1 files of no limit, 0 refused"
    )
    assert by["quota_usage", "carol"].severity == INFO
    assert by["quota_refused", "alice"].severity == WARNING
    assert "bytes quota exceeded: 10 used + 1 > 10 allowed" in by["quota_refused", "alice"].detail
    assert ("quota_refused", "bob") not in by
    later = check_quotas(guard.quotas, ledger, 3600, now + 7200)
    assert not [f for f in later if f.check == "quota_refused"]
    ledger.close()


def test_admin_conf_selects_the_redis_ledger_with_its_password_from_credentials(
    redis_server: Redis, tmp_path: Path
) -> None:
    env = {"SR_CONFIG_DIR": str(tmp_path), "SR_STATE_DIR": str(tmp_path / "state")}
    creds = tmp_path / "credentials.conf"
    creds.write_text(redis_server.credentials_line() + "\n")
    creds.chmod(0o600)
    base = unique("quota")
    (tmp_path / "admin.conf").write_text(
        "admin amqp://root@localhost/\nquota alice files=1\n"
        f"quota_redis_serverurl {redis_server.url()}\nquota_redis_keybase {base}\n"
    )
    config = load_pump_config(env)
    ledger = open_ledger(
        config.get("quota_redis_serverurl"),
        config.get("quota_redis_keybase"),
        tmp_path / "state",
        env,
    )
    assert isinstance(ledger, RedisLedger)
    assert ledger.url.password == redis_server.password
    assert redis_server.password not in repr(ledger)
    ledger.charge("alice", 1, 1, Quota(None, 1))
    assert _ledger(redis_server, base).usage("alice").files == 1  # under the configured keybase
    ledger.close()
    assert isinstance(open_ledger(None, None, tmp_path / "state", env), FileLedger)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("quota_redis_serverurl amqp://h/", "redis:// or rediss://"),
        ("quota_redis_serverurl redis://h/x", "database number"),
    ],
)
def test_a_bad_quota_store_line_is_refused_with_its_file_and_line(
    tmp_path: Path, line: str, why: str
) -> None:
    env = {"SR_CONFIG_DIR": str(tmp_path), "SR_STATE_DIR": str(tmp_path / "state")}
    (tmp_path / "admin.conf").write_text(f"admin amqp://root@localhost/\n{line}\n")
    with pytest.raises(ConfigError, match=rf"admin.conf:2.*{why}"):
        load_pump_config(env)
    with pytest.raises(ConfigError, match=why):
        open_ledger(line.split()[1], None, tmp_path, env)
