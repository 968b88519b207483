"""Pure part arithmetic (spec 6.1-6.4, 6.7), with property tests for split()."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sarra.errors import ConfigError
from sarra.notice import PartSpec
from sarra.parts import arithmetic as pa

MIB = 1 << 20
T = 50 * MIB


@pytest.mark.parametrize(
    "text,size",
    [
        ("0", 0),
        ("1", 1),
        ("209715200", 209715200),
        ("1M", MIB),
        ("1m", MIB),
        ("1MB", MIB),
        ("1mb", MIB),
        ("10k", 10240),
        ("2G", 2 << 30),
        ("1Tb", 1 << 40),
        (" 4 K ", 4096),
    ],
)
def test_sizes_use_powers_of_two(text: str, size: int) -> None:
    assert pa.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "1.5M", "-1", "1X", "1MiB", "1 M B"])
def test_bad_sizes_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        pa.parse_size(text)


@pytest.mark.parametrize(
    "fs,bs",
    [
        (0, 0),
        (T, T),
        (T + 1, -(-(T + 1) // 3)),
        (10 * T, -(-10 * T // 3)),
        (10 * T + 1, -(-(10 * T + 1) // 10)),
        (100 * T, 10 * T),
        (100 * T + 1, 10 * T),
        (10**13, 10 * T),
    ],
)
def test_the_auto_block_size_follows_the_sr2_formula(fs: int, bs: int) -> None:
    assert pa.auto_block_size(fs) == bs


def test_the_block_size_option_means_auto_never_or_fixed() -> None:
    assert pa.effective_block_size(0, 3 * T) == T
    assert pa.effective_block_size(1, 3 * T) == 3 * T
    assert pa.effective_block_size(MIB, 3 * T) == MIB
    assert pa.split(3 * T, pa.effective_block_size(1, 3 * T)) == [PartSpec("1", 3 * T, 1, 0, 0)]
    assert pa.DEFAULT_POST_BLOCKSIZE == 209715200


def test_golden_splits_match_gm4_and_gm5() -> None:
    assert [p.wire() for p in pa.split(2621440, MIB)] == [
        f"i,1048576,3,524288,{n}" for n in range(3)
    ]
    gm5 = pa.split(2097152, MIB)
    assert [p.wire() for p in gm5] == ["i,1048576,2,0,0", "i,1048576,2,0,1"]
    assert gm5[-1].length == MIB


def test_files_are_split_only_when_the_block_size_is_smaller() -> None:
    assert pa.split(12, 209715200) == [PartSpec("1", 12, 1, 0, 0)]
    assert pa.split(12, 12) == [PartSpec("1", 12, 1, 0, 0)]
    assert pa.split(0, 0) == [PartSpec("1", 0, 1, 0, 0)]
    with pytest.raises(ValueError):
        pa.split(-1, 10)


@st.composite
def sizes(draw: st.DrawFn) -> tuple[int, int]:
    """A file size and a block size giving at most ~1000 blocks (0 and >= size included)."""
    file_size = draw(st.integers(0, 10**12))
    low = max(1, file_size // 1000)
    block_size = draw(st.one_of(st.just(0), st.integers(low, file_size + 10)))
    return file_size, block_size


@given(sizes())
def test_split_blocks_cover_the_file_contiguously(size: tuple[int, int]) -> None:
    file_size, block_size = size
    specs = pa.split(file_size, block_size)
    offset = 0
    for n, spec in enumerate(specs):
        assert spec.block_number == n
        assert spec.block_count == len(specs)
        assert spec.offset == offset
        assert spec.file_size == file_size
        assert 0 <= spec.remainder < max(spec.block_size, 1)
        offset += spec.length
    assert offset == file_size
    assert (len(specs) > 1) == (0 < block_size < file_size)
    assert all(s.method == ("i" if len(specs) > 1 else "1") for s in specs)


@given(sizes(), st.sampled_from("dsn0"))
def test_part_suffixes_round_trip(size: tuple[int, int], letter: str) -> None:
    file_size, block_size = size
    for spec in pa.split(file_size, block_size)[-2:]:
        name = pa.part_suffix("a/b/big.bin", spec, letter)
        target, parsed, got = pa.parse_part_suffix(name) or ("", spec, "")
        assert target == "a/b/big.bin" and got == letter
        assert parsed == PartSpec("p", *(getattr(spec, f) for f in PART_FIELDS))


PART_FIELDS = ("block_size", "block_count", "remainder", "block_number")


def test_the_golden_part_name_parses() -> None:
    rel = "a/b/big.bin.1048576.3.524288.0.d.Part"
    assert pa.parse_part_suffix(rel) == ("a/b/big.bin", PartSpec("p", MIB, 3, 524288, 0), "d")
    assert pa.part_suffix("a/b/big.bin", PartSpec("i", MIB, 3, 524288, 0), "d") == rel
    assert pa.parse_part_suffix("a/b/big.bin") is None
    assert pa.parse_part_suffix("x.1.2.3.d.Part") is None
