"""The file: transport on a real local file system."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sarra.errors import IntegrityError, NotFound
from sarra.transfer.file import CHUNK_SIZE, FileTransport
from sarra.transfer.url import retrieval_url

DATA = bytes(range(256)) * 9000  # 2.3 MB: several chunks, not a multiple of the chunk size


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "d ir" / "f#é.bin"
    path.parent.mkdir()
    path.write_bytes(DATA)
    return path


def url_of(path: Path) -> str:
    return retrieval_url("file:", str(path).lstrip("/"))


def test_a_whole_file_is_read_in_chunks(source: Path) -> None:
    chunks = list(FileTransport().get(url_of(source)))
    assert b"".join(chunks) == DATA
    assert max(len(c) for c in chunks) == CHUNK_SIZE


@pytest.mark.parametrize(
    ("offset", "length"), [(0, 1000), (CHUNK_SIZE - 7, CHUNK_SIZE + 100), (len(DATA) - 5, 5)]
)
def test_ranged_reads_return_exactly_the_range(source: Path, offset: int, length: int) -> None:
    data = b"".join(FileTransport().get(url_of(source), offset, length))
    assert data == DATA[offset : offset + length]


def test_a_read_past_the_end_is_an_integrity_error(source: Path) -> None:
    with pytest.raises(IntegrityError):
        b"".join(FileTransport().get(url_of(source), len(DATA) - 5, 10))


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        FileTransport().get(url_of(tmp_path / "nope"))
    with pytest.raises(NotFound):
        FileTransport().stat(url_of(tmp_path / "nope"))


def test_stat_gives_size_and_mtime(source: Path) -> None:
    st = FileTransport().stat(url_of(source))
    assert st.size == len(DATA)
    assert st.mtime == pytest.approx(os.stat(source).st_mtime)


def test_parts_put_in_any_order_assemble_the_file(source: Path, tmp_path: Path) -> None:
    transport = FileTransport()
    target = tmp_path / "out.bin"
    half = len(DATA) // 2
    assert transport.put(str(source), str(target), half, len(DATA) - half) == len(DATA) - half
    assert transport.put(str(source), str(target), 0, half) == half
    assert target.read_bytes() == DATA


def test_rename_replaces_and_delete_removes(source: Path, tmp_path: Path) -> None:
    transport = FileTransport()
    other = tmp_path / "other"
    other.write_bytes(b"old")
    transport.rename(str(source), url_of(other))
    assert other.read_bytes() == DATA
    assert not source.exists()
    transport.delete(str(other))
    assert not other.exists()
    with pytest.raises(NotFound):
        transport.delete(str(other))
