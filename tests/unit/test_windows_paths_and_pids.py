"""The Windows code paths that Wine cannot exercise, run on Linux with doubles where Windows
itself is needed (the Wine tests in tests/wine run the rest for real):

- the confined walk with the Windows primitives (no ``dir_fd``: a checked path per level),
  over real directories and real symlinks, and over a junction shown by an ``lstat`` double
  (Wine cannot create junctions or Windows symlinks, and shows host symlinks as plain
  directories);
- pid files recording the process's creation time, and a reused pid read as stale and never
  terminated (the pids are doubles: a reused pid cannot be produced on demand).
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sarra.cli import instances
from sarra.cli.instances import (
    Instance,
    State,
    instance_pid,
    read_pid_record,
    terminate,
    write_pid_file,
)
from sarra.errors import HostilePath
from sarra.localfs import confined
from sarra.localfs.confined import SafeRoot

_PRIMITIVES = [
    "_open_root", "_open_dir_at", "open_at", "_mkdir_at", "_lstat_at", "_unlink_at",
    "_rmdir_at", "_replace_at", "_symlink_at", "_fsync_dir", "close_dir", "_dup_dir",
    "_scandir", "_same_dir",
]  # fmt: skip


@pytest.fixture
def windows_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """SafeRoot runs with the primitives Windows uses (the module's ``_win_*``) and takes its
    Windows branches (``sys.platform``); the OS calls under them are Linux's."""
    monkeypatch.setattr(sys, "platform", "win32")
    for name in _PRIMITIVES:
        win = "_win" + (name if name.startswith("_") else "_" + name)
        monkeypatch.setattr(confined, name, getattr(confined, win))


def _root(tmp_path: Path) -> tuple[SafeRoot, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    return SafeRoot(tmp_path / "dest", windows=True), outside


def test_the_windows_walk_writes_commits_and_reads_inside_the_root(
    windows_walk: None, tmp_path: Path
) -> None:
    root, _ = _root(tmp_path)
    f = root.open_inflight("obs/deep/a.txt")
    f.write(b"data")
    f.commit("obs/deep/a.txt", mtime=1_000_000.0)
    assert (tmp_path / "dest" / "obs" / "deep" / "a.txt").read_bytes() == b"data"
    assert (tmp_path / "dest" / "obs" / "deep" / "a.txt").stat().st_mtime == 1_000_000.0
    fd = root.open_read("obs/deep/a.txt")
    try:
        assert os.read(fd, 10) == b"data"
    finally:
        os.close(fd)
    assert [p.name for p in (tmp_path / "dest" / "obs" / "deep").iterdir()] == ["a.txt"]


def test_a_symlinked_parent_is_refused_and_nothing_lands_where_it_points(
    windows_walk: None, tmp_path: Path
) -> None:
    root, outside = _root(tmp_path)
    root.mkdir("obs")
    (tmp_path / "dest" / "obs" / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(HostilePath, match="symlink"):
        root.open_inflight("obs/link/x.txt")
    with pytest.raises(HostilePath):
        root.mkdir("obs/link/sub")
    assert list(outside.iterdir()) == []


def test_a_final_name_that_is_a_symlink_is_not_read_through(
    windows_walk: None, tmp_path: Path
) -> None:
    root, outside = _root(tmp_path)
    (outside / "secret").write_text("secret")
    root.mkdir("obs")
    (tmp_path / "dest" / "obs" / "s.txt").symlink_to(outside / "secret")
    with pytest.raises(HostilePath, match="symlink"):
        root.open_read("obs/s.txt")


class _JunctionStat:
    """What Windows' lstat shows of a junction: a directory with the reparse-point attribute."""

    def __init__(self, real: os.stat_result) -> None:
        self._real = real
        self.st_mode = stat.S_IFDIR | 0o755
        self.st_file_attributes = stat.FILE_ATTRIBUTE_DIRECTORY | (
            stat.FILE_ATTRIBUTE_REPARSE_POINT
        )

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


def test_a_junction_in_the_tree_is_refused(
    windows_walk: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = _root(tmp_path)
    root.mkdir("obs")
    junction = tmp_path / "dest" / "obs" / "j"
    junction.mkdir()  # a real directory, shown as a junction by lstat below
    real_lstat = os.lstat

    def lstat(path: str | os.PathLike[str]) -> object:
        st = real_lstat(path)
        return _JunctionStat(st) if Path(path) == junction else st

    monkeypatch.setattr(confined, "_lstat", lstat)
    with pytest.raises(HostilePath):
        root.open_inflight("obs/j/x.txt")
    with pytest.raises(HostilePath):
        root.open_read("obs/j")  # the junction itself, as a final name
    assert list(junction.iterdir()) == []
    # a plain directory beside it is walked as usual
    f = root.open_inflight("obs/plain/x.txt")
    f.write(b"x")
    f.commit("obs/plain/x.txt")
    assert (tmp_path / "dest" / "obs" / "plain" / "x.txt").read_bytes() == b"x"


# pid files and pid reuse --------------------------------------------------------------------


def _inst(tmp_path: Path) -> Instance:
    return Instance("subscribe", "obs", 1, tmp_path / "state", tmp_path / "log")


def test_a_pid_file_records_the_creation_time_and_old_files_still_read(tmp_path: Path) -> None:
    path = tmp_path / "a.pid"
    write_pid_file(path, 4242, 133_000_000_000_000_000)
    assert path.read_text() == "4242\nstarted 133000000000000000\n"
    assert read_pid_record(path) == (4242, 133_000_000_000_000_000)
    write_pid_file(path, 17)
    assert path.read_text() == "17\n"
    assert read_pid_record(path) == (17, None)
    path.write_text("garbage\nstarted x\n")
    assert read_pid_record(path) == (None, None)
    assert read_pid_record(tmp_path / "missing.pid") == (None, None)


@dataclass
class FakeWindows:
    """A Windows process table ``{pid: creation time}`` and the pids terminated."""

    table: dict[int, int] = field(default_factory=dict)
    killed: list[int] = field(default_factory=list)


@pytest.fixture
def on_windows(monkeypatch: pytest.MonkeyPatch) -> FakeWindows:
    """Pretend to be on Windows, with a process table of doubles."""
    fake = FakeWindows()
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(instances.osport, "pid_alive", lambda pid: pid in fake.table)
    monkeypatch.setattr(instances.osport, "process_started", fake.table.get)
    monkeypatch.setattr(instances, "_force_stop", lambda pid, started: fake.killed.append(pid))
    return fake


def test_on_windows_a_live_pid_counts_only_with_its_own_creation_time(
    on_windows: FakeWindows, tmp_path: Path
) -> None:
    inst = _inst(tmp_path)
    on_windows.table[500] = 111
    write_pid_file(inst.pid_path, 500, 111)
    assert instance_pid(inst) == (State.RUNNING, 500)
    on_windows.table[500] = 222  # the instance died and Windows gave its pid to another process
    assert instance_pid(inst) == (State.STALE, 500)
    write_pid_file(inst.pid_path, 500)  # no creation time: cannot be told from a reused pid
    assert instance_pid(inst) == (State.STALE, 500)
    del on_windows.table[500]
    write_pid_file(inst.pid_path, 500, 111)
    assert instance_pid(inst) == (State.STALE, 500)


def test_stop_never_terminates_a_process_that_reused_an_instance_pid(
    on_windows: FakeWindows, tmp_path: Path
) -> None:
    inst = _inst(tmp_path)
    on_windows.table[700] = 999  # an unrelated live process now has pid 700
    write_pid_file(inst.pid_path, 700, 123)
    assert terminate([inst], timeout=0.2) == {1: "stale pid removed"}
    assert on_windows.killed == []
    assert not inst.stop_path.exists() and not inst.pid_path.exists()
    assert 700 in on_windows.table


def test_stop_terminates_the_real_instance_if_it_ignores_the_stop_request(
    on_windows: FakeWindows, tmp_path: Path
) -> None:
    inst = _inst(tmp_path)
    on_windows.table[800] = 5
    write_pid_file(inst.pid_path, 800, 5)
    assert terminate([inst], timeout=0.2) == {1: "killed"}
    assert on_windows.killed == [800]
    assert not inst.pid_path.exists()
