"""Checksums by v02 letter: the vectors of facts 7.3 item 3 and the golden messages."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sarra.errors import LocalError, MalformedMessage
from sarra.integrity import sums
from sarra.notice import Checksum

HELLO = b"hello world\n"
HELLO_MD5 = "6f5902ac237024bdd0c176cb93063dc4"
MIB = 1 << 20


def big(size: int) -> bytes:
    """The golden data: bytes(i % 251 for i in range(size))."""
    return (bytes(range(251)) * (size // 251 + 1))[:size]


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sums") / "big.bin"
    path.write_bytes(big(2621440))
    return path


def test_data_sums_of_hello_world_match_the_vectors() -> None:
    d = sums.new_hasher("d")
    d.update(HELLO)
    assert d.hexdigest() == HELLO_MD5
    s = sums.new_hasher("s")
    s.update(HELLO)
    assert s.hexdigest().startswith("db3974a97f2407b7cae1ae637c003068")


def test_the_internal_xxhash_letter_hashes_but_is_not_a_name_sum() -> None:
    x = sums.new_hasher("x")
    x.update(HELLO)
    assert len(x.hexdigest()) == 32
    with pytest.raises(KeyError):
        sums.name_sum("x", "hello.txt")


def test_name_sums_match_the_vectors() -> None:
    assert sums.name_sum("n", "/a/b/hello.txt") == Checksum("n", "2e54144ba487ae25d03a3caba233da71")
    assert sums.name_sum("L", "hello.txt").value.startswith("acec329f80cc50ed")
    r = sums.name_sum("R", "wdir/f1.txt")
    assert r.value == hashlib.sha512(b"f1.txt").hexdigest()
    assert r.value.startswith("fbcf201977e5cf3c")
    assert sums.name_sum("m", "a/dir/").value == hashlib.sha512(b"dir").hexdigest()


def test_a_random_sum_is_four_digits() -> None:
    r = sums.random_sum()
    assert r.letter == "0" and len(r.value) == 4 and r.value.isdigit()


def test_file_checksums_cover_exactly_the_requested_range(big_file: Path) -> None:
    assert sums.file_checksum(big_file, "d").value == "3777773793cc4ccade1c3c12b410705c"
    blocks = [sums.file_checksum(big_file, "d", n * MIB, MIB).value for n in range(3)]
    assert blocks == [
        "8f293a2f6c19b345152f7a49bb4c643c",
        "b66f7bda0d9b13d834b1b87ede0a33bb",
        "d753f03ae9ab80f0aa595b781db2904b",
    ]


def test_the_sr3_block_sums_of_gm14_are_reproduced(big_file: Path) -> None:
    block0 = sums.file_checksum(big_file, "s", 0, MIB).value
    assert block0.startswith("67dad569eefc986a")
    to_eof = sums.file_checksum(big_file, "s", MIB).value
    assert to_eof.startswith("5b39b5a4c5e701f1")
    true_block1 = sums.file_checksum(big_file, "s", MIB, MIB).value
    assert true_block1.startswith("b58d4f5c5f7b2f20")
    assert sums.file_checksum(big_file, "s", 2 * MIB, 10 * MIB).value.startswith("a6f6a9695b28")


def test_a_missing_file_is_a_local_error(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match="cannot checksum"):
        sums.file_checksum(tmp_path / "nope", "d")


def test_matching_ignores_hex_case() -> None:
    assert sums.matches(Checksum("d", HELLO_MD5.upper()), HELLO_MD5)
    assert not sums.matches(Checksum("d", HELLO_MD5), "0" * 32)


def test_v02_and_v03_values_convert_both_ways() -> None:
    assert sums.v02_to_v03(Checksum("d", HELLO_MD5)) == ("md5", "b1kCrCNwJL3QwXbLkwY9xA==")
    assert sums.v03_to_v02("md5", "b1kCrCNwJL3QwXbLkwY9xA==") == Checksum("d", HELLO_MD5)
    s = sums.name_sum("n", "hello.txt")
    assert sums.v03_to_v02(*sums.v02_to_v03(s)) == s
    assert sums.v02_to_v03(Checksum("z", "s")) == ("cod", "sha512")
    assert sums.v03_to_v02("cod", "md5") == Checksum("z", "d")
    assert sums.v03_to_v02("random", "0042") == Checksum("0", "0042")


@pytest.mark.parametrize(
    "method,value", [("md4", "AA=="), ("md5", "not base64!"), ("cod", "crc32")]
)
def test_unmappable_v03_identities_are_refused(method: str, value: str) -> None:
    with pytest.raises(MalformedMessage):
        sums.v03_to_v02(method, value)


def test_file_operations_have_no_v03_identity() -> None:
    with pytest.raises(MalformedMessage):
        sums.v02_to_v03(sums.name_sum("L", "x"))
