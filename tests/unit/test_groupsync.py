"""Barriers shared between instances (sarra.localfs.groupsync): one syncfs covers every
process whose writes ended before it started; nothing else lets a process skip its own."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from sarra.errors import LocalError
from sarra.localfs import groupsync
from sarra.localfs.groupsync import GroupSync

pytestmark = pytest.mark.skipif(not groupsync.available(), reason="Linux syncfs only")


class Counting:
    """A stand-in syncfs that counts its calls (and can fail, or notify)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fd: int) -> None:
        os.fstat(fd)  # a real descriptor
        self.calls += 1


def _dirfd(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


def test_the_real_syncfs_runs_and_is_recorded_as_completed(tmp_path: Path) -> None:
    g = GroupSync(tmp_path)
    fd = _dirfd(tmp_path)
    try:
        written = time.monotonic_ns()
        assert g.barrier(fd, written) is True
        # writes that ended before that syncfs started need no other
        assert g.barrier(fd, written) is False
        assert (g.ran, g.shared) == (1, 1)
    finally:
        os.close(fd)
    (record,) = tmp_path.glob("syncfs_*.state")
    assert record.read_text().split()[2] == "completed"


def test_writes_that_end_after_the_last_syncfs_started_need_a_new_one(tmp_path: Path) -> None:
    sync = Counting()
    g = GroupSync(tmp_path, syncfs=sync)
    fd = _dirfd(tmp_path)
    try:
        g.barrier(fd, time.monotonic_ns())
        later = time.monotonic_ns()  # written after that syncfs had started
        assert g.barrier(fd, later) is True
        assert sync.calls == 2
    finally:
        os.close(fd)


def test_a_syncfs_run_by_another_process_covers_this_one(tmp_path: Path) -> None:
    sync = Counting()
    fd = _dirfd(tmp_path)
    try:
        written = time.monotonic_ns()
        assert GroupSync(tmp_path, syncfs=sync).barrier(fd, written) is True
        other = GroupSync(tmp_path, syncfs=sync)  # the other instance: only the file shared
        assert other.barrier(fd, written) is False
        assert sync.calls == 1
    finally:
        os.close(fd)


def _leader(state: Path, release: Path, done: Path, ready: Path) -> None:
    """Child: run a syncfs that lasts until ``release`` exists, then mark ``done``."""

    def slow(fd: int) -> None:
        ready.touch()
        while not release.exists():
            time.sleep(0.01)
        done.touch()

    fd = _dirfd(state)
    GroupSync(state, syncfs=slow).barrier(fd, time.monotonic_ns())
    os._exit(0)


def _follower(state: Path, written: int, out: Path) -> None:
    """Child: a barrier for writes that ended at ``written``; records what it saw."""
    sync = Counting()
    fd = _dirfd(state)
    ran = GroupSync(state, syncfs=sync).barrier(fd, written)
    out.write_text(f"{int(ran)} {sync.calls} {int((state / 'done').exists())}")
    os._exit(0)


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.mark.parametrize("before", [True, False])
def test_two_processes_racing_one_waits_for_the_others_syncfs(tmp_path: Path, before: bool) -> None:
    """A process whose writes ended before the running syncfs started waits for it and then
    skips its own; one whose writes ended after it started runs its own, after it."""
    ctx = multiprocessing.get_context("fork")
    release, done, ready = tmp_path / "release", tmp_path / "done", tmp_path / "ready"
    early = time.monotonic_ns()
    leader = ctx.Process(target=_leader, args=(tmp_path, release, done, ready))
    leader.start()
    _wait_for(ready)  # the leader holds the lock and its syncfs has started
    written = early if before else time.monotonic_ns()
    out = tmp_path / "out"
    follower = ctx.Process(target=_follower, args=(tmp_path, written, out))
    follower.start()
    time.sleep(0.2)
    assert not out.exists()  # blocked on the lock while the leader's syncfs runs
    release.touch()
    leader.join(30)
    follower.join(30)
    assert (leader.exitcode, follower.exitcode) == (0, 0)
    ran, calls, saw_done = map(int, out.read_text().split())
    assert saw_done == 1  # it returned only after the leader's syncfs had completed
    assert (ran, calls) == ((0, 0) if before else (1, 1))


def _crasher(state: Path) -> None:
    def dies(fd: int) -> None:
        os._exit(3)  # killed between taking the lock and completing the syncfs

    fd = _dirfd(state)
    GroupSync(state, syncfs=dies).barrier(fd, time.monotonic_ns())


def test_a_crash_between_the_lock_and_the_completion_lets_nobody_skip(tmp_path: Path) -> None:
    written = time.monotonic_ns()
    ctx = multiprocessing.get_context("fork")
    crasher = ctx.Process(target=_crasher, args=(tmp_path,))
    crasher.start()
    crasher.join(30)
    assert crasher.exitcode == 3
    sync = Counting()
    fd = _dirfd(tmp_path)
    try:
        # the lock was released by the death; the unfinished syncfs is not taken as done
        assert GroupSync(tmp_path, syncfs=sync).barrier(fd, written) is True
        assert sync.calls == 1
    finally:
        os.close(fd)


def test_a_crash_after_an_earlier_completion_leaves_only_that_older_one(tmp_path: Path) -> None:
    sync = Counting()
    fd = _dirfd(tmp_path)
    try:
        GroupSync(tmp_path, syncfs=sync).barrier(fd, time.monotonic_ns())
        written = time.monotonic_ns()  # after the completed one started
        ctx = multiprocessing.get_context("fork")
        crasher = ctx.Process(target=_crasher, args=(tmp_path,))
        crasher.start()
        crasher.join(30)
        assert crasher.exitcode == 3
        assert GroupSync(tmp_path, syncfs=sync).barrier(fd, written) is True
        assert sync.calls == 2
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "record",
    [
        "not-this-boot {dev:x} completed 999999999999999999999\n",  # before a reboot
        "{boot} {other:x} completed 999999999999999999999\n",  # another device
        "{boot} {dev:x} completed 99999",  # torn (cut short) ... still a smaller time
        "{boot} {dev:x} compl",  # torn
        "\0\0\0\0",
    ],
)
def test_a_record_of_another_boot_device_or_a_torn_one_is_not_trusted(
    tmp_path: Path, record: str
) -> None:
    fd = _dirfd(tmp_path)
    try:
        dev = os.fstat(fd).st_dev
        text = record.format(boot=groupsync._BOOT_ID, dev=dev, other=dev + 1)
        (tmp_path / f"syncfs_{dev:x}.state").write_text(text)
        sync = Counting()
        assert GroupSync(tmp_path, syncfs=sync).barrier(fd, time.monotonic_ns()) is True
        assert sync.calls == 1
    finally:
        os.close(fd)


def test_a_failed_syncfs_raises_and_records_nothing(tmp_path: Path) -> None:
    def fails(fd: int) -> None:
        raise LocalError("syncfs: Input/output error")

    fd = _dirfd(tmp_path)
    try:
        written = time.monotonic_ns()
        with pytest.raises(LocalError):
            GroupSync(tmp_path, syncfs=fails).barrier(fd, written)
        sync = Counting()
        assert GroupSync(tmp_path, syncfs=sync).barrier(fd, written) is True
        assert sync.calls == 1
    finally:
        os.close(fd)


# -- the option: sync_barrier ----------------------------------------------------------------


def _settings(tmp_path: Path, component: str, text: str) -> tuple[Path, dict[str, str]]:
    (tmp_path / "config" / component).mkdir(parents=True, exist_ok=True)
    env = {
        "SR_CONFIG_DIR": str(tmp_path / "config"),
        "SR_STATE_DIR": str(tmp_path / "state"),
        "HOME": str(tmp_path),
    }
    path = tmp_path / "config" / component / "f.conf"
    path.write_text("broker amqp://guest@localhost/\n" + text)
    return path, env


@pytest.mark.parametrize("component", ["subscribe", "sarra"])
def test_one_instance_shares_a_syncfs_barrier_by_default_and_files_opts_out(
    tmp_path: Path, component: str
) -> None:
    from sarra.components.common import group_sync_for
    from sarra.config.settings import Settings

    _path, env = _settings(tmp_path, component, "")
    default = Settings.load(component, "f", (), env=env)
    assert default.sync_barrier == "filesystem" and default.instances == 1
    shared = group_sync_for(default, tmp_path / "state1")
    assert isinstance(shared, GroupSync)

    _path, env = _settings(tmp_path, component, "sync_barrier files\ninstances 3\n")
    opted_out = Settings.load(component, "f", (), env=env)
    assert opted_out.sync_barrier == "files"
    assert group_sync_for(opted_out, tmp_path / "state2") is None


def test_an_unknown_sync_barrier_is_refused_with_file_line_and_reason(tmp_path: Path) -> None:
    from sarra.config.loader import load_config
    from sarra.errors import ConfigError

    path, env = _settings(tmp_path, "subscribe", "sync_barrier journal\n")
    with pytest.raises(ConfigError) as caught:
        load_config("subscribe", "f", (), env=env)
    error = caught.value
    assert (error.path, error.line, error.option) == (str(path), 2, "sync_barrier")
    assert "expected one of filesystem, files" in str(error)


def test_sync_barrier_is_named_as_ignored_where_nothing_downloads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sarra.config.loader import load_config

    path, env = _settings(tmp_path, "post", "sync_barrier files\n")
    load_config("post", "f", (), env=env)
    assert f"{path}:2: option 'sync_barrier' is ignored by post" in caplog.text
