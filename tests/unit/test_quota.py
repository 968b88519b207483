"""Quotas per source: the admin.conf line, the usage ledger and the guard a sarra uses."""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from pathlib import Path

import pytest

from sarra.config.loader import load_pump_config
from sarra.config.quota import Quota, parse_quota, quota_table
from sarra.errors import ConfigError, LocalError, QuotaExceeded
from sarra.flow.failpolicy import FailurePolicy
from sarra.flow.quota import FileLedger, QuotaGuard, Usage
from sarra.police.audit import WARNING, check_quotas


def test_a_quota_line_gives_bytes_with_binary_suffixes_and_files() -> None:
    assert parse_quota("alice bytes=10G files=100000") == ("alice", Quota(10 * 1024**3, 100000))
    assert parse_quota("bob files=3") == ("bob", Quota(None, 3))
    assert parse_quota("carol bytes=4K") == ("carol", Quota(4096, None))
    assert quota_table(["a bytes=1", "a files=2"]) == {"a": Quota(None, 2)}  # last wins


@pytest.mark.parametrize(
    "text",
    [
        "alice",
        "alice bytes",
        "alice size=3",
        "alice files=x",
        "../x files=1",
        "alice files=1 files=2",
        "alice bytes=-1",
    ],
)
def test_a_bad_quota_line_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quota(text)


def test_admin_conf_quota_lines_are_read_and_a_bad_one_names_its_file_and_line(
    tmp_path: Path,
) -> None:
    env = {"SR_CONFIG_DIR": str(tmp_path), "SR_STATE_DIR": str(tmp_path / "state")}
    (tmp_path / "admin.conf").write_text(
        "admin amqp://root@localhost/\nquota alice bytes=1M files=10\nquota bob files=2\n"
    )
    quotas = quota_table(load_pump_config(env).get("quota"))
    assert quotas == {"alice": Quota(1024**2, 10), "bob": Quota(None, 2)}
    (tmp_path / "admin.conf").write_text("admin amqp://root@localhost/\nquota alice lots\n")
    with pytest.raises(ConfigError, match=r"admin.conf:2"):
        load_pump_config(env)


def test_the_ledger_counts_new_files_replacements_and_removals(tmp_path: Path) -> None:
    guard = QuotaGuard({"alice": Quota(1000, 3)}, FileLedger(tmp_path))
    guard.admit("alice", 300, None)
    guard.admit("alice", 200, None)
    assert guard.store.usage("alice") == Usage(500, 2)
    guard.admit("alice", 400, 300)  # replacing a 300-byte file: +100 bytes, no new file
    assert guard.store.usage("alice") == Usage(600, 2)
    guard.removed("alice", 200)
    assert guard.store.usage("alice") == Usage(400, 1)
    assert guard.admit("bob", 10**9, None) is None  # no quota: not tracked
    assert FileLedger(tmp_path).sources() == ["alice"]


def test_a_write_over_the_bytes_or_the_files_limit_is_refused_and_counted(tmp_path: Path) -> None:
    guard = QuotaGuard({"alice": Quota(1000, 2)}, FileLedger(tmp_path))
    guard.admit("alice", 900, None)
    with pytest.raises(QuotaExceeded, match="bytes quota exceeded: 900 used \\+ 101 > 1000"):
        guard.admit("alice", 101, None)
    guard.admit("alice", 100, None)  # exactly the limit fits
    with pytest.raises(QuotaExceeded, match="files quota exceeded"):
        guard.admit("alice", 0, None)
    guard.admit("alice", 50, 100)  # a smaller replacement always fits
    usage = guard.store.usage("alice")
    assert (usage.bytes, usage.files, usage.refused) == (950, 2, 2)
    assert "files quota exceeded" in usage.last_refusal
    err = QuotaExceeded("x")
    assert err.report_code == 507 and err.report_always
    assert FailurePolicy().queue(err) is False  # default: drop, the source hears at once


def test_a_failed_write_gives_its_charge_back_and_usage_never_goes_negative(
    tmp_path: Path,
) -> None:
    guard = QuotaGuard({"alice": Quota(100, None)}, FileLedger(tmp_path))
    charge = guard.admit("alice", 80, None)
    guard.release(charge)
    assert guard.store.usage("alice") == Usage(0, 0)
    guard.removed("alice", 5000)
    assert guard.store.usage("alice") == Usage(0, 0)
    charge = guard.admit("alice", 0, None)  # size unknown beforehand
    guard.adjust(charge, 70)
    assert guard.store.usage("alice").bytes == 70
    guard.check("alice", 30, None)  # a file in blocks: checked, not charged
    assert guard.store.usage("alice") == Usage(70, 1)
    with pytest.raises(QuotaExceeded):
        guard.check("alice", 31, None)
    usage = guard.store.usage("alice")
    assert (usage.bytes, usage.files, usage.refused) == (70, 1, 1)  # refusal counted, no charge


def test_an_unreadable_ledger_is_a_local_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "alice.json").write_text("{not json")
    with pytest.raises(LocalError, match=r"alice\.json unreadable"):
        QuotaGuard({"alice": Quota(None, 5)}, FileLedger(tmp_path)).admit("alice", 1, None)


def test_the_ledger_survives_a_restart(tmp_path: Path) -> None:
    QuotaGuard({"alice": Quota(None, 5)}, FileLedger(tmp_path)).admit("alice", 7, None)
    again = QuotaGuard({"alice": Quota(None, 5)}, FileLedger(tmp_path))
    assert again.store.usage("alice") == Usage(7, 1)


def _charge_many(directory: str, n: int) -> None:
    guard = QuotaGuard({"alice": Quota(None, 150)}, FileLedger(Path(directory)))
    for _ in range(n):
        with contextlib.suppress(QuotaExceeded):
            guard.admit("alice", 1, None)


def test_several_processes_share_one_ledger_without_losing_or_overshooting(
    tmp_path: Path,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_charge_many, args=(str(tmp_path), 50)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    usage = FileLedger(tmp_path).usage("alice")
    # 200 attempts against a limit of 150 files: exactly 150 admitted, 50 refused
    assert (usage.files, usage.bytes, usage.refused) == (150, 150, 50)


def test_the_audit_shows_usage_and_recent_refusals(tmp_path: Path) -> None:
    ledger = FileLedger(tmp_path)
    guard = QuotaGuard({"alice": Quota(10, None), "bob": Quota(None, 9)}, ledger)
    guard.admit("alice", 10, None)
    with pytest.raises(QuotaExceeded):
        guard.admit("alice", 1, None)
    now = time.time()
    found = check_quotas(guard.quotas, ledger, 3600, now)
    by = {(f.check, f.subject): f for f in found}
    assert by["quota_usage", "alice"].detail == "10 bytes of 10, 1 files of no limit, 1 refused"
    assert by["quota_usage", "bob"].detail.startswith("0 bytes of no limit, 0 files of 9")
    assert by["quota_refused", "alice"].severity == WARNING
    assert ("quota_refused", "bob") not in by
    later = check_quotas(guard.quotas, ledger, 3600, now + 7200)
    assert not [f for f in later if f.check == "quota_refused"]
