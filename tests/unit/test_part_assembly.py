"""Reassembly data files: confined creation and reopening, placement, part size rules."""

from __future__ import annotations

import mmap
import os
import stat
from pathlib import Path

import pytest

from sarra.errors import HostilePath, LocalError, MalformedMessage
from sarra.localfs import streaming
from sarra.localfs.confined import SafeRoot
from sarra.notice import PartSpec
from sarra.parts import assembly
from sarra.parts.assembly import DATA_SUFFIX, check_spec, known_size


@pytest.fixture
def root(tmp_path: Path) -> SafeRoot:
    return SafeRoot(tmp_path / "root")


def test_a_data_file_is_created_exclusively_and_reopened_read_write(root: SafeRoot) -> None:
    rel = assembly.data_rel_for(root, "a/b/file.bin")
    assert rel.startswith("a/b/.file.bin.") and rel.endswith(DATA_SUFFIX)
    fd = assembly.open_data(root, rel, create=True)
    assert fd is not None
    assembly.pwrite_all(fd, b"world", 6, rel)
    os.close(fd)
    with pytest.raises(LocalError):
        assembly.open_data(root, rel, create=True)  # never adopts an existing name
    fd2 = assembly.open_data(root, rel, create=False)
    assert fd2 is not None
    assembly.pwrite_all(fd2, b"hello ", 0, rel)
    os.close(fd2)
    assert (root.root / rel).read_bytes() == b"hello world"
    assert stat.S_IMODE((root.root / rel).stat().st_mode) == 0o600


def test_a_missing_data_file_or_parent_opens_as_none(root: SafeRoot) -> None:
    assert assembly.open_data(root, "nodir/.x.sr-part", create=False) is None
    root.mkdir("d")
    assert assembly.open_data(root, "d/.x.sr-part", create=False) is None


def test_a_symlink_at_the_data_name_or_in_a_parent_is_refused(
    root: SafeRoot, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("precious")
    os.symlink(outside / "victim", root.root / ".f.sr-part")
    with pytest.raises(HostilePath):
        assembly.open_data(root, ".f.sr-part", create=False)
    os.symlink(outside, root.root / "link")
    with pytest.raises(HostilePath):
        assembly.open_data(root, "link/.f.sr-part", create=True)
    assert (outside / "victim").read_text() == "precious"
    assert os.listdir(outside) == ["victim"]


def test_place_cuts_to_size_sets_metadata_and_renames(root: SafeRoot) -> None:
    rel = assembly.data_rel_for(root, "d/final")
    fd = assembly.open_data(root, rel, create=True)
    assert fd is not None
    assembly.presize(fd, 100, rel)
    assembly.pwrite_all(fd, b"x" * 10, 0, rel)
    assembly.presize(fd, 50, rel)  # never shrinks
    assert os.fstat(fd).st_size == 100
    assembly.place(root, fd, rel, "d/final", size=10, mtime=1_600_000_000.0, mode=0o4755)
    os.close(fd)
    final = root.root / "d" / "final"
    assert final.read_bytes() == b"x" * 10
    st = final.stat()
    assert st.st_mtime == 1_600_000_000.0
    assert stat.S_IMODE(st.st_mode) == 0o755  # setuid never set
    assert not (root.root / rel).exists()
    assert assembly.remove_data(root, rel) is False


def test_a_too_long_final_name_gets_a_short_data_name(root: SafeRoot) -> None:
    rel = assembly.data_rel_for(root, "d/" + "n" * 250)
    assert rel.startswith("d/.") and len(rel.split("/")[-1]) < 40


@pytest.mark.parametrize(
    ("spec", "size", "final"),
    [
        (PartSpec("i", 10, 3, 5, 0), 25, False),  # sr2 form tells the size early
        (PartSpec("i", 10, 3, 0, 1), 30, False),  # exact multiple, sr2 form
        (PartSpec("i", 10, 3, 10, 0), None, False),  # sr3 form: rem is this block's length
        (PartSpec("i", 10, 3, 5, 2), 25, True),
        (PartSpec("i", 10, 3, 0, 2), 30, True),  # Q5: last block is a whole block
        (PartSpec("i", 10, 3, 10, 2), 30, True),  # sr3 exact multiple
    ],
)
def test_the_file_size_is_known_from_the_last_block_or_sr2_form(
    spec: PartSpec, size: int | None, final: bool
) -> None:
    assert known_size(spec) == (size, final)


def test_the_last_block_length_follows_the_receiving_rules() -> None:
    assert PartSpec("i", 10, 3, 0, 2).length == 10
    assert PartSpec("i", 10, 3, 4, 2).length == 4
    assert PartSpec("i", 10, 3, 10, 2).length == 10
    assert PartSpec("i", 10, 3, 4, 1).length == 10


@pytest.mark.parametrize(
    "spec",
    [
        PartSpec("i", 10, 3, 11, 0),
        PartSpec("i", 10, 3, -1, 0),
        PartSpec("i", 10, 3, 0, -1),
        PartSpec("i", 10, 0, 0, 0),
        PartSpec("i", -5, 3, 0, 0),
        PartSpec("p", 10, 3, 0, 0),
    ],
)
def test_impossible_parts_are_refused(spec: PartSpec) -> None:
    with pytest.raises(MalformedMessage):
        check_spec(spec)


def _direct_flag_of(fd: int) -> bool:
    flags = next(
        line
        for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
        if line.startswith("flags:")
    )
    return bool(int(flags.split()[1], 8) & os.O_DIRECT)


@pytest.mark.parametrize(
    ("offset", "size"),
    [(0, 3 * 4096), (8192, 2 * 4096 + 100), (100, 5000), (4096, 10)],
    ids=["aligned", "aligned-with-tail", "unaligned-offset", "shorter-than-a-page"],
)
def test_aligned_writes_land_exactly_whatever_their_alignment(
    root: SafeRoot, offset: int, size: int
) -> None:
    rel = assembly.data_rel_for(root, "big.bin")
    fd = assembly.open_data(root, rel, create=True)
    assert fd is not None
    assembly.presize(fd, 64 * 1024, rel)
    payload = os.urandom(size)
    buf = mmap.mmap(-1, 4 * 4096)
    buf[:size] = payload
    with assembly.Ticket("k", PartSpec("i", 4096, 16, 0, 0), "v", "big.bin", b"", fd) as ticket:
        ticket.pwrite_aligned(memoryview(buf)[:size], offset)
        ticket.fsync()
    data = (root.root / rel).read_bytes()
    assert data[offset : offset + size] == payload
    assert data[:offset] == bytes(offset) and data[offset + size :] == bytes(
        len(data) - offset - size
    )


def test_aligned_writes_go_by_direct_io_where_the_file_system_allows(root: SafeRoot) -> None:
    rel = assembly.data_rel_for(root, "big.bin")
    fd = assembly.open_data(root, rel, create=True)
    assert fd is not None
    buf = mmap.mmap(-1, 8192)
    with assembly.Ticket("k", PartSpec("i", 8192, 2, 0, 0), "v", "big.bin", b"", fd) as ticket:
        ticket.pwrite_aligned(memoryview(buf), 0)
        direct = ticket.direct_fd
        assert direct is not None
        if direct >= 0:  # the file system took O_DIRECT: the data went through that descriptor
            assert _direct_flag_of(direct)
        else:  # refused (tmpfs on older kernels): the page cache took the write instead
            assert not _direct_flag_of(fd)
    assert ticket.direct_fd == -1  # closed with the ticket


def test_presize_allocates_the_space_where_it_can_and_never_shrinks(root: SafeRoot) -> None:
    rel = assembly.data_rel_for(root, "big.bin")
    fd = assembly.open_data(root, rel, create=True)
    assert fd is not None
    try:
        assembly.presize(fd, 1 << 20, rel)
        st = os.fstat(fd)
        assert st.st_size == 1 << 20
        if streaming.allocate(fd, 1 << 20):
            assert st.st_blocks * 512 >= 1 << 20  # reserved, not sparse
        assembly.presize(fd, 1000, rel)
        assert os.fstat(fd).st_size == 1 << 20
    finally:
        os.close(fd)


def test_chunks_of_any_size_are_regrouped_into_full_buffers_in_turn() -> None:
    from sarra.localfs.streaming import copy_into

    data = os.urandom(10_000)
    pieces = [data[i : i + 777] for i in range(0, len(data), 777)]
    buffers = [memoryview(bytearray(4096)) for _ in range(2)]
    out = []
    for view in copy_into(iter(pieces), buffers):
        out.append((view.obj is buffers[len(out) % 2].obj, bytes(view)))
    assert all(same for same, _ in out)
    assert [len(b) for _, b in out] == [4096, 4096, 10_000 - 8192]
    assert b"".join(b for _, b in out) == data
