"""Polling snapshots and their differences (sarra.flow.watching.snapshot/diff_snapshots)."""

from __future__ import annotations

import os
from pathlib import Path

from sarra.flow.watcher import inflight_rule, watch_sleep
from sarra.flow.watching import Action, Coalescer, FsEvent, diff_snapshots, snapshot


class Cfg:
    """The two settings watch_sleep and inflight_rule read (typed defaults as the table's)."""

    def __init__(self, sleep: float = 0.0, inflight: float | str | None = None) -> None:
        self.sleep = sleep
        self.inflight = inflight


def test_a_snapshot_lists_files_and_subdirectories_but_not_the_root(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("1")
    snap = snapshot([str(tmp_path)])
    assert sorted(snap) == [str(tmp_path / "d"), str(tmp_path / "d" / "f")]
    assert snap[str(tmp_path / "d")][0] is True


def test_differences_give_creations_modifications_and_deletions(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.write_text("1")
    gone = tmp_path / "gone"
    gone.write_text("1")
    before = snapshot([str(tmp_path)])
    keep.write_text("12")
    gone.unlink()
    (tmp_path / "new").write_text("1")
    after = snapshot([str(tmp_path)])
    assert diff_snapshots(before, after) == [
        FsEvent("modified", str(keep)),
        FsEvent("created", str(tmp_path / "new")),
        FsEvent("deleted", str(gone)),
    ]


def test_a_rename_seen_by_polling_is_a_remove_plus_a_create(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("1")
    before = snapshot([str(tmp_path)])
    os.rename(tmp_path / "a", tmp_path / "b")
    events = diff_snapshots(before, snapshot([str(tmp_path)]))
    c = Coalescer(interval=1.0)
    c.add_all(events, now=0.0)
    assert c.ready(now=1.0, wall=os.path.getmtime(tmp_path / "b")) == [
        Action("file", str(tmp_path / "b")),
        Action("remove", str(tmp_path / "a")),
    ]


def test_an_unchanged_tree_gives_no_events(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("1")
    snap = snapshot([str(tmp_path)])
    assert diff_snapshots(snap, snapshot([str(tmp_path)])) == []


def test_inflight_is_a_minimum_age_when_numeric_and_a_name_rule_otherwise() -> None:
    assert inflight_rule(Cfg(inflight=10.0))[0] == 10.0
    assert inflight_rule(Cfg(inflight="30"))[0] == 30.0
    age, names = inflight_rule(Cfg(inflight=".tmp"))
    assert age is None and names.matches("/x/y.tmp")
    age, names = inflight_rule(Cfg())
    assert age is None and not names.matches("/x/y.tmp")


def test_sleep_defaults_to_three_seconds_when_unset_or_zero() -> None:
    assert watch_sleep(Cfg()) == 3.0
    assert watch_sleep(Cfg(sleep=0.0)) == 3.0
    assert watch_sleep(Cfg(sleep=0.5)) == 0.5
