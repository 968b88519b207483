"""download_to and is_unchanged: streamed verification before placement."""

from __future__ import annotations

import hashlib
import mmap
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarra.codec.timestamps import parse_timestamp
from sarra.errors import HostilePath, IntegrityError, MalformedMessage, TransportUnavailable
from sarra.flow.wholefile import WholeFileResult, download_to, is_unchanged
from sarra.localfs.confined import SafeRoot
from sarra.notice import Checksum, Notice, PartSpec, frozen_headers

DATA = b"hello world\n" * 1000
MD5 = hashlib.md5(DATA).hexdigest()
SHA512 = hashlib.sha512(DATA).hexdigest()


def chunks(data: bytes = DATA, size: int = 777) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def place(
    sr: SafeRoot, sum_: Checksum, data: bytes = DATA, *, mtime: float | None = None
) -> WholeFileResult:
    return download_to(
        sr,
        "dir/file.txt",
        chunks(data),
        expected_size=len(DATA),
        checksum=sum_,
        inflight=".tmp",
        mtime=mtime,
        mode=None,
    )


def entries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


@pytest.fixture
def sr(tmp_path: Path) -> SafeRoot:
    return SafeRoot(tmp_path)


def test_a_matching_md5_download_is_placed_and_verified(sr: SafeRoot, tmp_path: Path) -> None:
    seen: list[int] = []
    res = download_to(
        sr,
        "dir/file.txt",
        chunks(),
        expected_size=len(DATA),
        checksum=Checksum("d", MD5.upper()),
        inflight=".tmp",
        mtime=1_700_000_000.25,
        mode=0o4644,
        progress=seen.append,
    )
    assert res.verified and res.size == len(DATA)
    assert res.checksum == Checksum("d", MD5)
    assert res.elapsed >= 0
    assert seen[-1] == len(DATA) and seen == sorted(seen)
    final = tmp_path / "dir" / "file.txt"
    assert final.read_bytes() == DATA
    st = os.stat(final)
    assert stat.S_IMODE(st.st_mode) == 0o644
    assert st.st_mtime == pytest.approx(1_700_000_000.25)
    assert entries(tmp_path) == ["dir/file.txt"]


def test_a_matching_sha512_download_is_verified(sr: SafeRoot) -> None:
    res = place(sr, Checksum("s", SHA512))
    assert res.verified


def test_a_checksum_mismatch_leaves_nothing_behind(sr: SafeRoot, tmp_path: Path) -> None:
    with pytest.raises(IntegrityError) as info:
        place(sr, Checksum("d", "0" * 32))
    assert "0" * 32 in str(info.value) and MD5 in str(info.value)
    assert entries(tmp_path) == []


def test_a_mismatch_does_not_replace_an_existing_final_file(sr: SafeRoot, tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "file.txt").write_bytes(b"previous")
    with pytest.raises(IntegrityError):
        place(sr, Checksum("s", "a" * 128))
    assert (tmp_path / "dir" / "file.txt").read_bytes() == b"previous"
    assert entries(tmp_path) == ["dir/file.txt"]


@pytest.mark.parametrize("data", [DATA[:-1], DATA + b"extra"], ids=["short", "long"])
def test_a_size_mismatch_leaves_nothing_behind(sr: SafeRoot, tmp_path: Path, data: bytes) -> None:
    with pytest.raises(IntegrityError, match="size mismatch"):
        place(sr, Checksum("d", MD5), data)
    assert entries(tmp_path) == []


def test_z_computes_the_named_sum_without_claiming_verification(sr: SafeRoot) -> None:
    res = place(sr, Checksum("z", "s"))
    assert res.checksum == Checksum("s", SHA512)
    assert not res.verified
    res = place(sr, Checksum("z", "d"))
    assert res.checksum == Checksum("d", MD5)


@pytest.mark.parametrize("sum_", [Checksum("n", "ab" * 16), Checksum("0", ""), Checksum("a", "x")])
def test_unverifiable_sums_are_placed_unverified(
    sr: SafeRoot, tmp_path: Path, sum_: Checksum
) -> None:
    res = place(sr, sum_)
    assert not res.verified and res.checksum is None
    assert (tmp_path / "dir" / "file.txt").read_bytes() == DATA


@pytest.mark.parametrize("sum_", [Checksum("z", "x"), Checksum("L", "ab"), Checksum("x", "ab")])
def test_sums_that_do_not_describe_data_are_refused_before_writing(
    sr: SafeRoot, tmp_path: Path, sum_: Checksum
) -> None:
    with pytest.raises(MalformedMessage):
        place(sr, sum_)
    assert entries(tmp_path) == []


def test_a_transfer_failure_midway_leaves_nothing_behind(sr: SafeRoot, tmp_path: Path) -> None:
    def broken() -> Iterator[bytes]:
        yield DATA[:100]
        raise TransportUnavailable("connection reset")

    with pytest.raises(TransportUnavailable):
        download_to(
            sr,
            "dir/file.txt",
            broken(),
            expected_size=None,
            checksum=Checksum("d", MD5),
            inflight="tmp/",
            mtime=None,
            mode=None,
        )
    assert entries(tmp_path) == []


def test_a_hostile_destination_is_refused(sr: SafeRoot, tmp_path: Path) -> None:
    with pytest.raises(HostilePath):
        download_to(
            sr,
            "../escape",
            chunks(),
            expected_size=None,
            checksum=Checksum("d", MD5),
            inflight=".tmp",
            mtime=None,
            mode=None,
        )
    assert not (tmp_path.parent / "escape").exists()


# is_unchanged ----------------------------------------------------------------------------


def notice(sum_: Checksum, parts: PartSpec | None, mtime: str | None = None) -> Notice:
    headers = {"sum": sum_.wire()}
    if parts is not None:
        headers["parts"] = parts.wire()
    if mtime is not None:
        headers["mtime"] = mtime
    return Notice(
        exchange="xpublic",
        topic="v02.post.dir.file.txt",
        pubtime="20240101000000.0",
        base_url="http://localhost",
        rel_path="/dir/file.txt",
        path="dir/file.txt",
        headers=frozen_headers(headers),
        checksum=sum_,
        parts=parts,
    )


WHOLE = PartSpec("1", len(DATA), 1, 0, 0)


def test_an_identical_older_file_is_unchanged(sr: SafeRoot) -> None:
    place(sr, Checksum("d", MD5), mtime=1_700_000_000.0)
    assert is_unchanged(sr, "dir/file.txt", notice(Checksum("d", MD5), WHOLE, "20231114221320"))
    assert is_unchanged(sr, "dir/file.txt", notice(Checksum("s", SHA512.upper()), WHOLE))


def test_a_fractional_mtime_set_by_placement_compares_equal(sr: SafeRoot) -> None:
    header = "20231114221320.123456789"
    place(sr, Checksum("d", MD5), mtime=parse_timestamp(header))
    assert is_unchanged(sr, "dir/file.txt", notice(Checksum("d", MD5), WHOLE, header))
    assert not is_unchanged(sr, "dir/file.txt", notice(Checksum("d", MD5), WHOLE, "20231114221321"))


def test_a_newer_mtime_header_means_changed(sr: SafeRoot) -> None:
    place(sr, Checksum("d", MD5), mtime=1_700_000_000.0)
    assert not is_unchanged(
        sr, "dir/file.txt", notice(Checksum("d", MD5), WHOLE, "20240101T000000")
    )
    assert not is_unchanged(sr, "dir/file.txt", notice(Checksum("d", MD5), WHOLE, "garbage"))


def test_different_size_sum_or_unverifiable_sum_means_changed(sr: SafeRoot) -> None:
    place(sr, Checksum("d", MD5))
    bigger = PartSpec("1", len(DATA) + 1, 1, 0, 0)
    assert not is_unchanged(sr, "dir/file.txt", notice(Checksum("d", MD5), bigger))
    assert not is_unchanged(sr, "dir/file.txt", notice(Checksum("d", "1" * 32), WHOLE))
    assert not is_unchanged(sr, "dir/file.txt", notice(Checksum("n", MD5), WHOLE))
    assert not is_unchanged(sr, "dir/file.txt", notice(Checksum("z", "d"), WHOLE))
    assert not is_unchanged(sr, "dir/missing", notice(Checksum("d", MD5), WHOLE))


def test_a_block_is_compared_over_its_own_range(sr: SafeRoot) -> None:
    place(sr, Checksum("d", MD5))
    bs = 5000
    cnt = -(-len(DATA) // bs)
    for n in range(cnt):
        block = DATA[n * bs : (n + 1) * bs]
        part = PartSpec("i", bs, cnt, len(DATA) % bs, n)
        assert is_unchanged(
            sr, "dir/file.txt", notice(Checksum("d", hashlib.md5(block).hexdigest()), part)
        )
    wrong = PartSpec("i", bs, cnt, len(DATA) % bs, 1)
    assert not is_unchanged(
        sr, "dir/file.txt", notice(Checksum("d", hashlib.md5(DATA[:bs]).hexdigest()), wrong)
    )


def test_a_malformed_or_padded_mtime_header_is_handled(sr: SafeRoot) -> None:
    # the header is read by the codec; surrounding blanks are tolerated, a bad stamp means changed
    place(sr, Checksum("d", MD5), mtime=1_700_000_000.0)
    padded = notice(Checksum("d", MD5), WHOLE, " 20231114T221319.5 ")
    assert is_unchanged(sr, "dir/file.txt", padded)
    for bad in ("2023111422132", "20231314221320"):
        assert not is_unchanged(sr, "dir/file.txt", notice(Checksum("d", MD5), WHOLE, bad))


# -- large files: allocated up front, hashed alongside, aligned chunks by direct I/O ---------

BIG = os.urandom(3 * 1024 * 1024 + 4321)  # over DIRECT_MIN, with an unaligned tail


def _big_chunks(data: bytes = BIG) -> Iterator[memoryview]:
    from sarra.localfs.streaming import BUFFER_SIZE, copy_into

    buffers = [memoryview(mmap.mmap(-1, BUFFER_SIZE)) for _ in range(2)]
    return copy_into(chunks(data, 100_000), buffers)


def _place_big(sr: SafeRoot, data: bytes, sum_: Checksum, seen: list[int]) -> WholeFileResult:
    return download_to(
        sr,
        "big/file.bin",
        _big_chunks(data),
        expected_size=len(BIG),
        checksum=sum_,
        inflight=".tmp",
        mtime=None,
        mode=None,
        progress=seen.append,
    )


def test_a_large_download_is_placed_exactly_and_verified(sr: SafeRoot, tmp_path: Path) -> None:
    seen: list[int] = []
    res = _place_big(sr, BIG, Checksum("d", hashlib.md5(BIG).hexdigest()), seen)
    assert res.verified and res.size == len(BIG)
    assert (tmp_path / "big" / "file.bin").read_bytes() == BIG
    assert seen[-1] == len(BIG) and seen == sorted(seen)
    assert entries(tmp_path) == ["big/file.bin"]


@pytest.mark.parametrize(
    "data",
    [BIG[:-1], BIG + b"x", BIG[:100] + b"?" + BIG[101:]],
    ids=["short", "long", "corrupt"],
)
def test_a_large_download_that_does_not_verify_leaves_nothing_behind(
    sr: SafeRoot, tmp_path: Path, data: bytes
) -> None:
    with pytest.raises(IntegrityError):
        _place_big(sr, data, Checksum("d", hashlib.md5(BIG).hexdigest()), [])
    assert entries(tmp_path) == []
