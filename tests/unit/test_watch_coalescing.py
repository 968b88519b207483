"""Coalescing of file system events into posting actions (sarra.flow.watching), fake clock."""

from __future__ import annotations

import os
from pathlib import Path

from sarra.flow.watching import (
    DEFAULT_EVENTS,
    Action,
    Coalescer,
    FsEvent,
    InflightNames,
    parse_events,
)

INTERVAL = 3.0
WALL = 1_000_000.0  # the fake wall clock; files get mtimes relative to it


def make_file(path: Path, data: bytes = b"x", age: float = 100.0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (WALL - age, WALL - age))
    return str(path)


def coalescer(**kw: object) -> Coalescer:
    return Coalescer(interval=INTERVAL, **kw)  # type: ignore[arg-type]


def test_a_created_file_is_released_only_after_a_quiet_interval(tmp_path: Path) -> None:
    f = make_file(tmp_path / "a.txt")
    c = coalescer()
    c.add(FsEvent("created", f), now=10.0)
    c.add(FsEvent("modified", f), now=11.0)
    assert c.ready(now=13.5, wall=WALL) == []  # 2.5 s since the last event
    assert c.ready(now=14.0, wall=WALL) == [Action("file", f)]
    assert c.ready(now=20.0, wall=WALL) == []  # released once


def test_a_file_written_continuously_is_not_released_until_the_writes_stop(
    tmp_path: Path,
) -> None:
    f = make_file(tmp_path / "slow.bin")
    c = coalescer()
    c.add(FsEvent("created", f), now=0.0)
    for t in range(1, 20):
        c.add(FsEvent("modified", f), now=float(t))
        assert c.ready(now=t + 0.5, wall=WALL) == []
    assert c.ready(now=22.0, wall=WALL) == [Action("file", f)]


def test_a_file_that_grows_without_events_is_not_released_until_it_stops(
    tmp_path: Path,
) -> None:
    """Windows may not report writes through a handle still open: a file whose size or mtime
    changed since its last event is still being written, and waits a whole interval more."""
    path = tmp_path / "slow.bin"
    f = make_file(path, b"a" * 4096)
    c = coalescer()
    c.add(FsEvent("created", f), now=0.0)
    with path.open("ab") as out:
        out.write(b"b" * 4096)  # no event for it
    assert c.ready(now=4.0, wall=WALL) == []  # quiet by events, not by the file
    with path.open("ab") as out:
        out.write(b"c" * 4096)
    os.utime(path, (WALL - 50, WALL - 50))  # the size or the mtime alone is enough
    assert c.ready(now=7.5, wall=WALL) == []
    assert c.ready(now=10.0, wall=WALL) == []  # 2.5 s since it was last seen changing
    assert c.ready(now=10.5, wall=WALL) == [Action("file", f)]


def test_a_file_rewritten_to_the_same_size_with_a_new_mtime_waits_too(tmp_path: Path) -> None:
    path = tmp_path / "same.bin"
    f = make_file(path, b"a" * 10)
    c = coalescer()
    c.add(FsEvent("modified", f), now=0.0)
    path.write_bytes(b"b" * 10)
    os.utime(path, (WALL - 10, WALL - 10))
    assert c.ready(now=3.0, wall=WALL) == []
    assert c.ready(now=6.0, wall=WALL) == [Action("file", f)]


def test_a_numeric_inflight_holds_files_younger_than_the_minimum_age(tmp_path: Path) -> None:
    f = make_file(tmp_path / "young.txt", age=2.0)
    c = coalescer(min_age=10.0)
    c.add(FsEvent("created", f), now=0.0)
    assert c.ready(now=5.0, wall=WALL) == []
    assert len(c) == 1
    assert c.ready(now=9.0, wall=WALL + 9.0) == [Action("file", f)]


def test_files_with_an_inflight_suffix_are_ignored_until_renamed(tmp_path: Path) -> None:
    tmp = make_file(tmp_path / "data.csv.tmp")
    final = str(tmp_path / "data.csv")
    c = coalescer(inflight=InflightNames(".tmp"))
    c.add(FsEvent("created", tmp), now=0.0)
    c.add(FsEvent("modified", tmp), now=1.0)
    assert c.ready(now=10.0, wall=WALL) == []
    os.rename(tmp, final)
    c.add(FsEvent("moved", tmp, dest=final), now=11.0)
    assert c.ready(now=14.0, wall=WALL) == [Action("file", final)]


def test_inflight_prefixes_and_directories_name_files_in_flight() -> None:
    assert InflightNames(".").matches("/d/.hidden")
    assert not InflightNames(".").matches("/d/visible")
    assert InflightNames("tmp/").matches("/d/tmp/f")
    assert not InflightNames("tmp/").matches("/d/tmpx/f")
    assert InflightNames(".part").matches("/d/f.part")
    assert not InflightNames(None).matches("/d/f.part")


def test_a_file_created_and_deleted_within_an_interval_is_never_announced(
    tmp_path: Path,
) -> None:
    f = str(tmp_path / "brief.txt")
    c = coalescer()
    c.add(FsEvent("created", f), now=0.0)
    c.add(FsEvent("deleted", f), now=0.5)
    assert c.ready(now=10.0, wall=WALL) == []
    assert len(c) == 0


def test_deleting_a_known_file_gives_a_remove(tmp_path: Path) -> None:
    f = str(tmp_path / "old.txt")
    c = coalescer()
    c.add(FsEvent("deleted", f), now=0.0)
    assert c.ready(now=3.0, wall=WALL) == [Action("remove", f)]


def test_renaming_a_known_file_gives_a_rename_with_the_old_name(tmp_path: Path) -> None:
    new = make_file(tmp_path / "f2.txt")
    old = str(tmp_path / "f1.txt")
    c = coalescer()
    c.add(FsEvent("moved", old, dest=new), now=0.0)
    assert c.ready(now=3.0, wall=WALL) == [Action("rename", new, oldname=old)]


def test_successive_renames_in_one_interval_collapse_to_one(tmp_path: Path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    c_ = make_file(tmp_path / "c")
    c = coalescer()
    c.add(FsEvent("moved", a, dest=b), now=0.0)
    c.add(FsEvent("moved", b, dest=c_), now=0.1)
    assert c.ready(now=5.0, wall=WALL) == [Action("rename", c_, oldname=a)]


def test_renaming_a_file_not_yet_announced_announces_only_the_new_name(tmp_path: Path) -> None:
    a = str(tmp_path / "a")
    b = make_file(tmp_path / "b")
    c = coalescer()
    c.add(FsEvent("created", a), now=0.0)
    c.add(FsEvent("moved", a, dest=b), now=0.5)
    assert c.ready(now=5.0, wall=WALL) == [Action("file", b)]


def test_a_directory_rename_gives_a_pair_per_file_then_the_old_directory(tmp_path: Path) -> None:
    new_dir = tmp_path / "new"
    f1 = make_file(new_dir / "x.txt")
    f2 = make_file(new_dir / "sub" / "y.txt")
    old_dir = str(tmp_path / "old")
    c = coalescer()
    c.add(FsEvent("moved", old_dir, is_dir=True, dest=str(new_dir)), now=0.0)
    assert c.ready(now=3.0, wall=WALL) == [
        Action("rename", f2, oldname=os.path.join(old_dir, "sub", "y.txt")),
        Action("rename", f1, oldname=os.path.join(old_dir, "x.txt")),
        Action("remove", old_dir, newname=str(new_dir)),
    ]


def test_symlinks_give_link_actions(tmp_path: Path) -> None:
    link = tmp_path / "ln"
    link.symlink_to("target-nowhere")
    c = coalescer()
    c.add(FsEvent("created", str(link)), now=0.0)
    assert c.ready(now=3.0, wall=WALL) == [Action("link", str(link))]


def test_directories_are_announced_only_when_events_asks(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    quiet = coalescer()
    quiet.add(FsEvent("created", str(d), is_dir=True), now=0.0)
    quiet.add(FsEvent("deleted", str(tmp_path / "e"), is_dir=True), now=0.0)
    assert quiet.ready(now=3.0, wall=WALL) == []
    loud = coalescer(events=DEFAULT_EVENTS | {"mkdir", "rmdir"})
    loud.add(FsEvent("created", str(d), is_dir=True), now=0.0)
    loud.add(FsEvent("deleted", str(tmp_path / "e"), is_dir=True), now=0.0)
    assert loud.ready(now=3.0, wall=WALL) == [
        Action("mkdir", str(d)),
        Action("rmdir", str(tmp_path / "e")),
    ]


def test_events_filters_the_kinds_announced(tmp_path: Path) -> None:
    new = make_file(tmp_path / "new")
    known = make_file(tmp_path / "known")
    c = coalescer(events=parse_events("modify,delete"))
    c.add(FsEvent("created", new), now=0.0)
    c.add(FsEvent("modified", known), now=0.0)
    c.add(FsEvent("deleted", str(tmp_path / "gone")), now=0.0)
    assert c.ready(now=3.0, wall=WALL) == [
        Action("file", known),
        Action("remove", str(tmp_path / "gone")),
    ]


def test_events_accepts_bars_and_commas() -> None:
    assert parse_events("create|delete") == {"create", "delete"}
    assert parse_events("create, link") == {"create", "link"}
    assert parse_events(None) == DEFAULT_EVENTS


def test_a_flush_ignores_the_interval_but_not_the_minimum_age(tmp_path: Path) -> None:
    old = make_file(tmp_path / "old", age=100.0)
    young = make_file(tmp_path / "young", age=1.0)
    c = coalescer(min_age=10.0)
    c.add(FsEvent("created", old), now=0.0)
    c.add(FsEvent("created", young), now=0.0)
    assert c.ready(now=0.1, wall=WALL, flush=True) == [Action("file", old)]
    assert c.pending_paths() == [young]


def test_a_directory_moved_in_from_outside_announces_the_files_inside(tmp_path: Path) -> None:
    d = tmp_path / "arrived"
    f1 = make_file(d / "one")
    f2 = make_file(d / "deep" / "two")
    c = coalescer()
    c.add(FsEvent("created", str(d), is_dir=True), now=0.0)
    c.add(FsEvent("created", f1), now=0.1)  # watchdog may also report some of them
    assert sorted(c.ready(now=5.0, wall=WALL), key=lambda a: a.path) == [
        Action("file", f2),
        Action("file", f1),
    ]
