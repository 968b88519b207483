"""Staged placement: verified files wait unnamed until one batch commit places them."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from sarra.errors import LocalError
from sarra.flow.download import Downloader, DownloadSettings
from sarra.flow.hooks import Plugins
from sarra.flow.wholefile import download_to
from sarra.flow.work import Staged, WorkItem
from sarra.localfs.confined import InflightFile, SafeRoot, sync_files
from sarra.notice import Checksum, Notice, frozen_headers


def _md5(data: bytes) -> Checksum:
    return Checksum("d", hashlib.md5(data).hexdigest())


def test_a_staged_file_is_invisible_until_committed_after_the_batch_barrier(
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
    sync_files([result.staged])
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


def _staged(root: SafeRoot, rel: str, data: bytes) -> InflightFile:
    result = download_to(
        root, rel, [data], expected_size=len(data), checksum=_md5(data), inflight=".tmp",
        mtime=None, mode=None, stage=True,
    )  # fmt: skip
    assert result.staged is not None
    return result.staged


def test_the_batch_barrier_syncs_the_batch_files_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The barrier fsyncs each file of the batch (data and inode) and nothing else: no
    whole-file-system sync that would also flush another writer's dirty data."""
    root = SafeRoot(tmp_path)
    batch = [_staged(root, f"d/f{i}", b"%d" % i) for i in range(3)]
    other = _staged(root, "d/not-in-batch", b"other writer")
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    monkeypatch.setattr(os, "sync", lambda: pytest.fail("whole-system sync"))
    sync_files(batch)
    assert sorted(synced) == sorted(f.fd for f in batch)
    assert other.fd not in synced
    for f in (*batch, other):
        f.abort()
    root.close()


def test_a_failed_barrier_places_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An fsync error (e.g. EIO) is a LocalError from the batch commit, before any rename:
    no final name can appear over data that may not be durable; the items stay staged."""
    root = SafeRoot(tmp_path)
    downloader = Downloader(DownloadSettings(), lambda _n: None, Plugins(), batch_commit=True)
    items = []
    for i in range(2):
        staged = _staged(root, f"e/g{i}", b"data %d" % i)
        item = WorkItem(_notice(f"e/g{i}"))
        item.staged = Staged(root, staged, f"e/g{i}", None, None)
        items.append(item)

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(LocalError):
        downloader.commit_batch(items)
    names = {p.name for p in (tmp_path / "e").iterdir()}
    assert len(names) == 2 and not names & {"g0", "g1"}  # still in flight, not placed
    assert all(i.staged is not None for i in items)
    monkeypatch.undo()
    downloader.commit_batch(items)  # the loop repeats it at the next flush
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["g0", "g1"]
    root.close()


def _notice(name: str) -> Notice:
    return Notice(
        exchange="xpublic", topic="v02.post.e", pubtime="20260101000000",
        base_url="http://example.invalid/", rel_path=f"/{name}", path=name,
        headers=frozen_headers({}), checksum=Checksum("d", "0" * 32), parts=None,
    )  # fmt: skip
