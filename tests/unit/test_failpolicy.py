"""The failure policy (``on_failure CLASS drop|queue``): the one table of failure classes,
the option's parsing (bad lines refused with file and line), and the loop's one decision
between the retry queue and a drop."""

from __future__ import annotations

import errno
import ftplib
import threading
from pathlib import Path

import pytest

from sarra.broker.base import QueueSpec
from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.codec import v02
from sarra.config import load_config
from sarra.config.options import OPTIONS
from sarra.config.settings import Settings
from sarra.errors import (
    FAILURE_ACTIONS,
    FAILURE_CLASSES,
    ConfigError,
    DiskFull,
    IntegrityError,
    LocalError,
    NotFound,
    QuotaExceeded,
    RateCapped,
    RemoteRefused,
    TransferError,
    TransportUnavailable,
    local_error,
)
from sarra.flow.engine import ConsumingLoop, LoopSettings, ReportSettings
from sarra.flow.failpolicy import DEFAULT_ACTIONS, FailurePolicy
from sarra.flow.retryqueue import RetryQueue
from sarra.flow.work import WorkItem
from sarra.notice import Notice
from sarra.transfer.ftp import FtpTransport
from sarra.transfer.http import _status_error
from tests.unit.test_engine_reconnect import _wire

# -- the table -----------------------------------------------------------------------------


def test_the_table_names_each_class_with_a_valid_default_and_a_description() -> None:
    assert set(FAILURE_CLASSES) == {
        "not_found", "checksum", "disk_full", "refused", "quota", "bandwidth"
    }  # fmt: skip
    for name, (action, what) in FAILURE_CLASSES.items():
        assert action in FAILURE_ACTIONS, name
        assert len(what) > 20, name


def test_every_error_class_names_a_class_of_the_table() -> None:
    for error in (
        NotFound("x"), IntegrityError("x"), DiskFull("x"), RemoteRefused("x"),
        QuotaExceeded("x"), RateCapped("x"),
    ):  # fmt: skip
        assert error.failure_class in FAILURE_CLASSES, type(error)
    assert QuotaExceeded("x").report_code == 507
    assert not RemoteRefused("x").retryable
    # errors of no class are decided by their retryable alone
    assert TransportUnavailable("x").failure_class is None
    assert LocalError("x").failure_class is None


def test_the_defaults_keep_the_behaviour_from_before_the_option() -> None:
    policy = FailurePolicy()
    assert policy.queue(NotFound("404"))  # a pump may announce before every server has it
    assert policy.queue(IntegrityError("sum"))
    assert policy.queue(DiskFull("full"))
    assert not policy.queue(RemoteRefused("403"))
    assert not policy.queue(QuotaExceeded("over"))
    assert policy.queue(RateCapped("cap"))
    assert policy.queue(TransportUnavailable("reset"))  # no class: retryable
    assert not policy.queue(LocalError("EROFS"))  # no class: not retryable
    assert policy.queue(RuntimeError("a bug"))  # never acked as lost work


def test_the_help_of_the_option_is_made_from_the_table() -> None:
    text = next(o for o in OPTIONS if o.name == "on_failure").help
    for name, (action, _) in FAILURE_CLASSES.items():
        assert f"{name}: " in text and f"[default {action}]" in text
    man = (Path(__file__).parents[2] / "man" / "sarra-options.7").read_text()
    assert "on_failure CLASS drop|queue" in man
    for name in FAILURE_CLASSES:
        assert name in man.split("on_failure CLASS", 1)[1].split(".TP", 1)[0]


# -- the errors transports raise --------------------------------------------------------------


def test_transports_classify_their_refusals_and_full_disks() -> None:
    assert _status_error(404, "Not Found", "get /a").failure_class == "not_found"
    assert isinstance(_status_error(403, "Forbidden", "get /a"), RemoteRefused)
    denied = FtpTransport._translate(ftplib.error_perm("550 Permission denied."), "put a")
    assert isinstance(denied, RemoteRefused)
    missing = FtpTransport._translate(ftplib.error_perm("550 No such file."), "get a")
    assert isinstance(missing, NotFound)
    full = FtpTransport._translate(ftplib.error_perm("552 Storage exceeded."), "put a")
    assert full.failure_class == "disk_full" and full.retryable
    assert local_error(OSError(errno.ENOSPC, "No space left"), "write").failure_class == (
        "disk_full"
    )
    assert local_error(OSError(errno.EDQUOT, "Quota"), "write").failure_class == "disk_full"


# -- the option ----------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "config" / "subscribe").mkdir(parents=True)
    return {
        "SR_CONFIG_DIR": str(tmp_path / "config"),
        "SR_STATE_DIR": str(tmp_path / "state"),
        "HOME": str(tmp_path),
    }


def _write(env: dict[str, str], text: str) -> Path:
    path = Path(env["SR_CONFIG_DIR"]) / "subscribe" / "f.conf"
    path.write_text("broker amqp://guest@localhost/\n" + text)
    return path


def test_on_failure_lines_override_the_defaults_and_the_last_wins(env) -> None:
    _write(
        env,
        "on_failure not_found drop\n"
        "on_failure DISK_FULL queue\n"
        "on_failure checksum drop\n"
        "on_failure checksum queue\n"
        "on_failure refused queue\n",
    )
    settings = Settings.load("subscribe", "f", (), env=env)
    policy = FailurePolicy.from_lines(settings.on_failure)
    assert dict(policy.actions) == {
        **DEFAULT_ACTIONS,
        "not_found": "drop",
        "disk_full": "queue",
        "checksum": "queue",
        "refused": "queue",
    }
    assert not policy.queue(NotFound("404"))
    assert policy.queue(RemoteRefused("403"))


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("on_failure nowhere drop", "unknown failure class 'nowhere'"),
        ("on_failure not_found retry", "unknown action 'retry'"),
        ("on_failure not_found", "expected on_failure CLASS drop|queue"),
        ("on_failure not_found drop now", "expected on_failure CLASS drop|queue"),
    ],
)
def test_a_bad_on_failure_line_is_refused_with_file_line_and_reason(env, line, reason) -> None:
    path = _write(env, f"{line}\n")
    with pytest.raises(ConfigError) as caught:
        load_config("subscribe", "f", (), env=env)
    error = caught.value
    assert (error.path, error.line, error.option) == (str(path), 2, "on_failure")
    assert reason in str(error)


# -- the loop's decision ---------------------------------------------------------------------


def _loop(tmp_path: Path, policy: FailurePolicy, retry_ttl: float = 60.0) -> ConsumingLoop:
    return ConsumingLoop(
        MemorySession(MemoryBroker(), name="flow"),
        LoopSettings(
            queue=QueueSpec("q", (("xin", "#"),)),
            prefetch=1,
            threads=1,
            attempts=3,
            retry_ttl=retry_ttl,
            failure_policy=policy,
        ),
        ReportSettings(False, "xr", "host", "user", None, None, None),
        lambda _item: True,
        lambda _item: None,
        RetryQueue(tmp_path / "retry.jsonl", ttl=retry_ttl),
        stop=threading.Event(),
    )


def _item() -> WorkItem:
    w = _wire("f")
    notice = v02.decode(w.exchange, w.routing_key, w.body, w.headers, w.content_type)
    assert isinstance(notice, Notice)
    return WorkItem(notice=notice)


def _fail_with(loop: ConsumingLoop, error: Exception) -> tuple[WorkItem, int]:
    calls = []

    def work(item: WorkItem) -> None:
        calls.append(1)
        raise error

    loop.work = work
    item = _item()
    loop._work_guarded(item)
    return item, len(calls)


def test_a_dropped_class_is_tried_once_reported_and_not_queued(tmp_path: Path) -> None:
    loop = _loop(tmp_path, FailurePolicy.from_lines(["checksum drop"]))
    item, tries = _fail_with(loop, IntegrityError("checksum mismatch"))
    assert (tries, item.code, item.requeue) == (1, 499, False)


def test_a_queued_class_is_tried_attempts_times_then_queued(tmp_path: Path) -> None:
    loop = _loop(tmp_path, FailurePolicy.from_lines(["checksum queue"]))
    item, tries = _fail_with(loop, IntegrityError("checksum mismatch"))
    assert (tries, item.code, item.requeue) == (3, 499, True)


def test_not_found_is_never_tried_again_at_once_but_queued_or_dropped(tmp_path: Path) -> None:
    queued, tries = _fail_with(_loop(tmp_path, FailurePolicy()), NotFound("HTTP 404"))
    assert (tries, queued.requeue) == (1, True)
    dropped, tries = _fail_with(
        _loop(tmp_path, FailurePolicy.from_lines(["not_found drop"])), NotFound("HTTP 404")
    )
    assert (tries, dropped.requeue) == (1, False)


def test_a_refusal_queued_by_choice_is_queued(tmp_path: Path) -> None:
    loop = _loop(tmp_path, FailurePolicy.from_lines(["refused queue"]))
    item, tries = _fail_with(loop, RemoteRefused("HTTP 403"))
    assert (tries, item.requeue) == (1, True)


def test_nothing_is_queued_without_a_retry_queue(tmp_path: Path) -> None:
    loop = _loop(tmp_path, FailurePolicy.from_lines(["disk_full queue"]), retry_ttl=0.0)
    assert not loop.requeue_after(DiskFull("full"))
    assert not loop.requeue_after(TransferError("5xx"))


def test_on_failure_in_default_conf_applies_and_a_config_overrides_it(env) -> None:
    (Path(env["SR_CONFIG_DIR"]) / "default.conf").write_text(
        "on_failure not_found drop\non_failure refused queue\n"
    )
    _write(env, "on_failure refused drop\n")
    settings = Settings.load("subscribe", "f", (), env=env)
    policy = FailurePolicy.from_lines(settings.on_failure)
    assert policy.actions["not_found"] == "drop"
    assert policy.actions["refused"] == "drop"
