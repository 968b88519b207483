"""The in-flight journal lets a restarted instance remove what a killed one left behind."""

from __future__ import annotations

from pathlib import Path

from sarra.flow.journal import InflightJournal
from sarra.localfs.confined import SafeRoot


def test_files_left_in_flight_by_a_dead_writer_are_removed_at_recovery(tmp_path: Path) -> None:
    journal_path = tmp_path / "state" / "inflight_000.journal"
    journal_path.parent.mkdir()
    root_dir = tmp_path / "dest"
    journal = InflightJournal(journal_path)
    root = SafeRoot(root_dir, on_inflight=lambda rel, c: journal.note(str(root_dir), rel, c))
    finished = root.open_inflight("a/done.txt")
    finished.write(b"complete")
    finished.commit("a/done.txt")
    abandoned = root.open_inflight("a/partial.txt")
    abandoned.write(b"half")
    abandoned.fsync()
    left_behind = root_dir / abandoned.rel
    # simulate SIGKILL: the process never finishes the file nor closes the journal
    assert left_behind.exists()

    successor = InflightJournal(journal_path)
    handled = successor.recover(lambda d, rel: SafeRoot(d, create=False).remove(rel))

    assert handled == [(str(root_dir), abandoned.rel)]
    assert not left_behind.exists()
    assert (root_dir / "a" / "done.txt").read_bytes() == b"complete"
    assert journal_path.read_bytes() == b""
    abandoned.abort()


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_text('[true, "/r", "x.tmp"]\n[false, "/r", "x.t')
    removed: list[tuple[str, str]] = []
    InflightJournal(path).recover(lambda d, rel: removed.append((d, rel)) is None)
    assert removed == [("/r", "x.tmp")]


def test_a_long_run_keeps_the_journal_small_and_still_recovers_what_is_in_flight(
    tmp_path: Path,
) -> None:
    """Past max_bytes the journal is rewritten with only the files still in flight (a
    busy instance always has some), so it does not grow with the number of files handled."""
    journal_path = tmp_path / "inflight_000.journal"
    root_dir = tmp_path / "dest"
    journal = InflightJournal(journal_path, max_bytes=4096)
    root = SafeRoot(root_dir, on_inflight=lambda rel, c: journal.note(str(root_dir), rel, c))
    kept = [root.open_inflight(f"k/{i}.txt") for i in range(3)]
    for i in range(500):  # many files come and go while those three stay in flight
        f = root.open_inflight(f"d/{i}.txt")
        f.write(b"x")
        f.commit(f"d/{i}.txt")
        assert journal_path.stat().st_size <= 4096 + 200
    handled = InflightJournal(journal_path).recover(
        lambda d, rel: SafeRoot(d, create=False).remove(rel)
    )
    assert sorted(handled) == sorted((str(root_dir), f.rel) for f in kept)
    assert not any((root_dir / f.rel).exists() for f in kept)
    assert len(list((root_dir / "d").iterdir())) == 500
    assert not journal_path.with_name(journal_path.name + ".new").exists()
    for f in kept:
        f.abort()
