"""Downloader.after_settle: which sources ``delete`` removes and which copies ``discard`` does,
on the file transport (the end-to-end cases are in tests/integration/test_delete_discard.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarra.flow.download import Destination, Downloader, DownloadSettings
from sarra.flow.hooks import Plugins
from sarra.flow.work import PartState, WorkItem
from sarra.notice import Checksum, Notice, PartSpec, frozen_headers
from sarra.parts.arithmetic import part_suffix


def _item(src: Path, dest: Path, name: str, parts: PartSpec | None, **kw: object) -> WorkItem:
    notice = Notice(
        exchange="xpublic", topic="v02.post.a", pubtime="20260101000000",
        base_url=f"file:{src}", rel_path=f"/{name}", path=name, headers=frozen_headers({}),
        checksum=kw.pop("checksum", Checksum("d", "0" * 32)), parts=parts,  # type: ignore[arg-type]
    )  # fmt: skip
    item = WorkItem(notice, dest_root=str(dest), dest_rel=kw.pop("rel", name))  # type: ignore[arg-type]
    item.settle(kw.pop("code", 201), "Downloaded")  # type: ignore[arg-type]
    item.part = kw.pop("part", None)  # type: ignore[assignment]
    return item


def _downloader(dest: Path, **settings: object) -> Downloader:
    return Downloader(
        DownloadSettings(**settings),  # type: ignore[arg-type]
        lambda _n: Destination(str(dest), "f"),
        Plugins(),
    )


def test_p_blocks_assembled_in_place_delete_every_part_object_once_complete(
    tmp_path: Path,
) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    (dest / "big").write_bytes(b"x")
    names = [part_suffix("big", PartSpec("p", 10, 3, 5, n), "d") for n in range(3)]
    for n in names:
        (src / n).write_bytes(b"block")
    (src / "other").write_bytes(b"stays")
    down = _downloader(dest, delete_source=True)
    inserted = _item(src, dest, names[0], PartSpec("p", 10, 3, 5, 0), rel="big",
                     part=PartState.INSERTED)  # fmt: skip
    down.after_settle([inserted])
    assert sorted(p.name for p in src.iterdir()) == sorted([*names, "other"])  # not complete
    complete = _item(src, dest, names[1], PartSpec("p", 10, 3, 5, 1), rel="big",
                     part=PartState.COMPLETE)  # fmt: skip
    reports: list[tuple[str, int, str]] = []
    down.after_settle([complete], lambda n, c, m: reports.append((n.path, c, m)))
    assert [p.name for p in src.iterdir()] == ["other"]
    assert reports == []
    assert (dest / "big").exists()  # discard is off


def test_a_range_kept_as_a_part_file_never_deletes_the_remote_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    (src / "big").write_bytes(b"whole")
    part = part_suffix("big", PartSpec("i", 10, 3, 5, 0), "d")
    (dest / part).write_bytes(b"block")
    down = _downloader(dest, delete_source=True, discard=True)
    kept = _item(src, dest, "big", PartSpec("i", 10, 3, 5, 0), rel=part, part=PartState.KEPT)
    down.after_settle([kept, kept])
    assert (src / "big").exists()
    warned = [r for r in caplog.records if "inplace off" in r.getMessage()]
    assert len(warned) == 1  # once per base URL, not per block
    assert not (dest / part).exists()  # but the placed .Part file is discarded


def test_only_verified_placed_files_lose_their_source(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    for n in ("ok", "unverified", "unchanged", "failed"):
        (src / n).write_bytes(b"data")
        (dest / n).write_bytes(b"data")
    down = _downloader(dest, delete_source=True, discard=True)
    down.after_settle(
        [
            _item(src, dest, "ok", None),
            _item(src, dest, "unverified", None, checksum=Checksum("0", "1")),
            _item(src, dest, "unchanged", None, code=304),
            _item(src, dest, "failed", None, code=499),
        ]
    )
    assert sorted(p.name for p in src.iterdir()) == ["failed", "unchanged", "unverified"]
    # discard: every file placed (201), verified or not; never a file not placed now
    assert sorted(p.name for p in dest.iterdir()) == ["failed", "unchanged"]


def test_a_source_that_cannot_be_deleted_is_reported_with_its_error(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    dest.mkdir()
    (dest / "gone").write_bytes(b"data")
    down = _downloader(dest, delete_source=True)
    reports: list[tuple[str, int, str]] = []
    down.after_settle(
        [_item(src, dest, "gone", None)], lambda n, c, m: reports.append((n.path, c, m))
    )
    assert len(reports) == 1
    path, code, message = reports[0]
    assert path == "gone" and code >= 400  # the transport error's report code
    assert message.startswith("source not deleted: ") and "No such file" in message
