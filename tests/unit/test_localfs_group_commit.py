"""Group commit: renames noted without a directory fsync are made durable by sync_dirs."""

from __future__ import annotations

from pathlib import Path

from sarra.localfs.confined import SafeRoot


def _place(root: SafeRoot, rel: str, data: bytes) -> None:
    f = root.open_inflight(rel)
    f.write(data)
    f.commit(rel, sync_dir=False)


def test_files_committed_without_a_directory_sync_are_in_place_and_noted(tmp_path: Path) -> None:
    root = SafeRoot(tmp_path)
    _place(root, "a/x.txt", b"x")
    _place(root, "a/y.txt", b"y")
    _place(root, "b/z.txt", b"z")
    assert (tmp_path / "a" / "x.txt").read_bytes() == b"x"
    assert root.sync_dirs() == 2  # one fsync per directory, not per file
    assert root.sync_dirs() == 0


def test_a_directory_removed_before_the_sync_is_skipped(tmp_path: Path) -> None:
    root = SafeRoot(tmp_path)
    _place(root, "gone/x.txt", b"x")
    (tmp_path / "gone" / "x.txt").unlink()
    (tmp_path / "gone").rmdir()
    assert root.sync_dirs() == 1
    assert root.sync_dirs() == 0
