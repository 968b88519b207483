"""Staged placement: verified files wait unnamed until one batch commit places them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sarra.flow.wholefile import download_to
from sarra.localfs.confined import SafeRoot
from sarra.notice import Checksum


def _md5(data: bytes) -> Checksum:
    return Checksum("d", hashlib.md5(data).hexdigest())


def test_a_staged_file_is_invisible_until_committed_after_a_file_system_sync(
    tmp_path: Path,
) -> None:
    root = SafeRoot(tmp_path)
    data = b"staged bytes\n"
    result = download_to(
        root, "a/f.txt", [data], expected_size=len(data), checksum=_md5(data),
        inflight=".tmp", mtime=1_000_000_000.0, mode=0o640, stage=True,
    )  # fmt: skip
    assert result.staged is not None
    assert not (tmp_path / "a" / "f.txt").exists()
    root.sync_filesystem()
    result.staged.commit("a/f.txt", sync_dir=False, data_synced=True, metadata_set=True)
    assert root.sync_dirs() == 1
    placed = tmp_path / "a" / "f.txt"
    assert placed.read_bytes() == data
    assert placed.stat().st_mtime == 1_000_000_000.0
    assert placed.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["f.txt"]
    root.close()


def test_an_aborted_staged_file_leaves_nothing(tmp_path: Path) -> None:
    root = SafeRoot(tmp_path)
    data = b"x" * 100
    result = download_to(
        root, "b.bin", [data], expected_size=100, checksum=_md5(data), inflight=".tmp",
        mtime=None, mode=None, stage=True,
    )  # fmt: skip
    assert result.staged is not None
    result.staged.abort()
    assert list(tmp_path.iterdir()) == []
    root.close()
