"""SafeRoot: confinement, in-flight writing, file operations, error translation."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sarra.errors import DiskFull, HostilePath, LocalError
from sarra.localfs.confined import SafeRoot, check_link_target, check_relpath


@pytest.fixture
def tree(tmp_path: Path) -> tuple[SafeRoot, Path, Path]:
    """A root and a sibling 'outside' directory that must never change."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("precious")
    return SafeRoot(root), root, outside


def snapshot(path: Path) -> dict[str, bytes | None]:
    """Everything below ``path``: file contents (None for directories and links)."""
    out: dict[str, bytes | None] = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        out[rel] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return out


# validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rel",
    ["../x", "a/../../x", "a/..", "..", "", "/", ".", "./.", "a\0b", "x/\udcff"],
)
def test_hostile_relative_paths_are_refused(rel: str) -> None:
    with pytest.raises(HostilePath):
        check_relpath(rel)


def test_absolute_paths_are_read_relative_to_the_root() -> None:
    assert check_relpath("/a//b/./c") == ("a", "b", "c")


def test_windows_rules_refuse_backslashes_and_drive_prefixes() -> None:
    for rel in ("a\\b", "C:/x", "a/b:stream"):
        with pytest.raises(HostilePath):
            check_relpath(rel, windows=True)
    assert check_relpath("a\\b", windows=False) == ("a\\b",)


def test_too_long_components_and_paths_are_refused() -> None:
    with pytest.raises(HostilePath):
        check_relpath("a/" + "x" * 256)
    with pytest.raises(HostilePath):
        check_relpath("/".join(["y" * 200] * 30))
    assert check_relpath("x" * 255) == ("x" * 255,)


@pytest.mark.parametrize("target", ["../../outside/victim", "/etc/passwd", "..", "a/../../.."])
def test_link_targets_escaping_the_root_are_refused(target: str) -> None:
    with pytest.raises(HostilePath):
        check_link_target(("dir", "link"), target)


def test_link_targets_inside_the_root_and_listed_absolute_prefixes_are_allowed() -> None:
    check_link_target(("dir", "link"), "../other/file")
    check_link_target(("link",), "./dir/file")
    check_link_target(("link",), "/data/pub/file", allow_absolute_prefixes=("/data/pub",))
    with pytest.raises(HostilePath):
        check_link_target(("link",), "/data/public", allow_absolute_prefixes=("/data/pub",))


# hostile trees on disk --------------------------------------------------------------------


def test_a_symlinked_parent_pointing_outside_cannot_be_written_through(
    tree: tuple[SafeRoot, Path, Path],
) -> None:
    sr, root, outside = tree
    (root / "evil").symlink_to(outside)
    before = snapshot(outside)
    with pytest.raises(HostilePath):
        sr.open_inflight("evil/victim")
    with pytest.raises(HostilePath):
        sr.remove("evil/victim")
    with pytest.raises(HostilePath):
        sr.symlink("evil/newlink", "../x")
    with pytest.raises(HostilePath):
        sr.mkdir("evil/sub")
    with pytest.raises(HostilePath):
        sr.stat("evil/victim")
    assert snapshot(outside) == before


def test_committing_into_a_symlinked_parent_is_refused_and_leaves_nothing(
    tree: tuple[SafeRoot, Path, Path],
) -> None:
    sr, root, outside = tree
    (root / "evil").symlink_to(outside)
    before = snapshot(outside)
    f = sr.open_inflight("good/file")
    f.write(b"data")
    with pytest.raises(HostilePath):
        f.commit("evil/victim")
    assert snapshot(outside) == before
    assert list((root / "good").iterdir()) == []


def test_dotdot_paths_leave_the_outside_untouched(tree: tuple[SafeRoot, Path, Path]) -> None:
    sr, _root, outside = tree
    before = snapshot(outside)
    for op in (
        lambda: sr.open_inflight("../outside/victim"),
        lambda: sr.remove("a/../../outside/victim"),
        lambda: sr.rename("x", "../outside/victim"),
        lambda: sr.symlink("../outside/link", "x"),
    ):
        with pytest.raises(HostilePath):
            op()
    assert snapshot(outside) == before


def test_symlinks_with_escaping_targets_are_not_created(tree: tuple[SafeRoot, Path, Path]) -> None:
    sr, root, _outside = tree
    with pytest.raises(HostilePath):
        sr.symlink("d/link", "../../outside/victim")
    with pytest.raises(HostilePath):
        sr.symlink("link", "/etc/passwd")
    assert not (root / "d" / "link").is_symlink()
    assert not (root / "link").is_symlink()


def test_reading_through_a_final_symlink_is_refused(tree: tuple[SafeRoot, Path, Path]) -> None:
    sr, root, outside = tree
    (root / "peek").symlink_to(outside / "victim")
    with pytest.raises(HostilePath):
        sr.open_read("peek")


# in-flight files --------------------------------------------------------------------------


def test_in_flight_data_is_never_visible_under_the_final_name(
    tree: tuple[SafeRoot, Path, Path],
) -> None:
    sr, root, _ = tree
    (root / "a").mkdir()
    (root / "a" / "f.txt").write_bytes(b"old version")
    f = sr.open_inflight("a/f.txt", ".tmp")
    f.write(b"new ")
    f.pwrite(b"version!", 4)
    f.fsync()
    assert (root / "a" / "f.txt").read_bytes() == b"old version"
    assert f.name.endswith(".tmp") and f.name.startswith("f.txt.")
    assert (root / "a" / f.name).read_bytes() == b"new version!"
    f.commit("a/f.txt")
    assert (root / "a" / "f.txt").read_bytes() == b"new version!"
    assert sorted(p.name for p in (root / "a").iterdir()) == ["f.txt"]


@pytest.mark.parametrize(
    ("inflight", "where"),
    [(".tmp", "suffix"), (".", "prefix"), ("tmp/", "subdir"), (None, "prefix"), ("NONE", "prefix")],
)
def test_inflight_styles_name_the_temporary_file_accordingly(
    tree: tuple[SafeRoot, Path, Path], inflight: str | None, where: str
) -> None:
    sr, root, _ = tree
    with sr.open_inflight("d/file.bin", inflight) as f:
        f.write(b"x")
        if where == "suffix":
            assert f.rel.startswith("d/file.bin.") and f.rel.endswith(".tmp")
        elif where == "prefix":
            assert f.rel.startswith("d/.file.bin.")
        else:
            assert f.rel.startswith("d/tmp/file.bin.")
        assert (root / f.rel).read_bytes() == b"x"
        f.commit("d/file.bin")
    assert (root / "d" / "file.bin").read_bytes() == b"x"
    assert not (root / f.rel).exists()


def test_two_writers_of_the_same_path_get_distinct_inflight_files(
    tree: tuple[SafeRoot, Path, Path],
) -> None:
    sr, root, _ = tree
    other = SafeRoot(root)  # as another instance would
    a = sr.open_inflight("same")
    b = other.open_inflight("same")
    c = sr.open_inflight("same")
    assert len({a.name, b.name, c.name}) == 3
    a.write(b"A")
    b.write(b"B")
    a.commit("same")
    assert (root / "same").read_bytes() == b"A"
    b.commit("same")
    assert (root / "same").read_bytes() == b"B"
    c.abort()
    assert sorted(p.name for p in root.iterdir()) == ["same"]


def test_a_very_long_final_name_still_gets_an_inflight_name(
    tree: tuple[SafeRoot, Path, Path],
) -> None:
    sr, root, _ = tree
    name = "n" * 255
    with sr.open_inflight(name) as f:
        f.write(b"ok")
        f.commit(name)
    assert (root / name).read_bytes() == b"ok"


def test_commit_sets_mtime_and_mode_without_setuid(tree: tuple[SafeRoot, Path, Path]) -> None:
    sr, root, _ = tree
    f = sr.open_inflight("x/y")
    f.write(b"1")
    f.commit("x/y", mtime=1_000_000_000.5, mode=0o6755 | stat.S_ISVTX)
    st = os.lstat(root / "x" / "y")
    assert stat.S_IMODE(st.st_mode) == 0o755
    assert st.st_mtime == pytest.approx(1_000_000_000.5)


def test_the_chmod_policy_masks_the_mode_and_default_mode_applies(tmp_path: Path) -> None:
    sr = SafeRoot(tmp_path, chmod_mask=0o750, file_mode=0o664, dir_mode=0o711)
    with sr.open_inflight("d/a") as f:
        f.commit("d/a", mode=0o777)
    with sr.open_inflight("d/b") as f:
        f.commit("d/b")
    assert stat.S_IMODE(os.lstat(tmp_path / "d" / "a").st_mode) == 0o750
    assert stat.S_IMODE(os.lstat(tmp_path / "d" / "b").st_mode) == 0o640
    assert stat.S_IMODE(os.lstat(tmp_path / "d").st_mode) == 0o711


def test_abort_and_leaving_the_block_remove_the_inflight_file(
    tree: tuple[SafeRoot, Path, Path],
) -> None:
    sr, root, _ = tree
    f = sr.open_inflight("d/f")
    f.write(b"partial")
    f.abort()
    f.abort()  # idempotent
    with pytest.raises(RuntimeError), sr.open_inflight("d/g") as g:
        g.write(b"partial")
        raise RuntimeError("transfer died")
    assert list((root / "d").iterdir()) == []
    with pytest.raises(LocalError):
        f.write(b"more")


def test_sweep_removes_old_leftovers_only(tree: tuple[SafeRoot, Path, Path]) -> None:
    sr, root, _ = tree
    dead = SafeRoot(root)
    leftover = dead.open_inflight("d/f")
    leftover_name = leftover.name
    os.close(leftover.fd)  # the writer died without cleaning up
    live = sr.open_inflight("d/g")
    (root / "d" / "user.tmp").write_text("not ours")
    old = time.time() - 3600
    os.utime(root / "d" / leftover_name, (old, old))
    os.utime(root / "d" / live.name, (old, old))
    removed = sr.sweep_inflight("d", older_than=600)
    assert removed == [f"d/{leftover_name}"]
    assert (root / "d" / live.name).exists()
    assert (root / "d" / "user.tmp").exists()
    assert sr.sweep_inflight("d", older_than=600) == []
    assert sr.sweep_inflight("missing", older_than=0) == []
    live.abort()


def test_sweep_covers_the_inflight_subdirectory(tree: tuple[SafeRoot, Path, Path]) -> None:
    sr, root, _ = tree
    f = SafeRoot(root).open_inflight("f", "tmp/")
    os.close(f.fd)
    assert sr.sweep_inflight("", older_than=0, inflight="tmp/", now=time.time() + 10) == [
        f"tmp/{f.name}"
    ]


# file operations --------------------------------------------------------------------------


def test_symlink_creates_and_atomically_replaces_links(tree: tuple[SafeRoot, Path, Path]) -> None:
    sr, root, _ = tree
    sr.symlink("d/link", "../target1")
    assert os.readlink(root / "d" / "link") == "../target1"
    sr.symlink("d/link", "target2")
    assert os.readlink(root / "d" / "link") == "target2"
    assert sorted(p.name for p in (root / "d").iterdir()) == ["link"]
    sr.symlink("abs", "/srv/pub/x", allow_absolute_prefixes=["/srv/pub"])
    assert os.readlink(root / "abs") == "/srv/pub/x"


def test_remove_is_never_recursive_and_absent_is_fine(tree: tuple[SafeRoot, Path, Path]) -> None:
    sr, root, outside = tree
    (root / "full").mkdir()
    (root / "full" / "f").write_text("x")
    (root / "empty").mkdir()
    (root / "link").symlink_to(outside)
    assert sr.remove("link") is True
    assert (outside / "victim").exists()
    assert sr.remove("empty") is True
    with pytest.raises(LocalError):
        sr.remove("full")
    assert (root / "full" / "f").exists()
    assert sr.remove("full/f") is True
    assert sr.remove("full/f") is False
    assert sr.remove("nope/nothing") is False


def test_rename_mkdir_stat_and_open_read(tree: tuple[SafeRoot, Path, Path]) -> None:
    sr, root, _ = tree
    sr.mkdir("a/b/c")
    sr.mkdir("a/b/c")
    assert sr.stat("a/b/c") is not None
    assert sr.stat("a/missing") is None
    assert sr.stat("missing/deeper") is None
    (root / "a" / "f").write_bytes(b"content")
    sr.rename("a/f", "z/g")
    assert not (root / "a" / "f").exists()
    fd = sr.open_read("z/g")
    try:
        assert os.read(fd, 100) == b"content"
    finally:
        os.close(fd)
    with pytest.raises(LocalError):
        sr.rename("a/none", "z/h")


# error translation ------------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path | None]:
    """A 1 MiB tmpfs when mounting is possible, else None."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.parametrize("simulate", [False, True], ids=["tmpfs", "simulated"])
def test_a_full_disk_raises_disk_full_and_leaves_no_inflight_file(
    tiny_fs: Path | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, simulate: bool
) -> None:
    if simulate or tiny_fs is None:  # no mount privilege: ENOSPC from the write call
        root = tmp_path / "sim"

        def full(fd: int, data: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr("sarra.localfs.confined.os.write", full)
    else:
        root = tiny_fs
    sr = SafeRoot(root)
    with pytest.raises(DiskFull) as info, sr.open_inflight("big") as f:
        for _ in range(4):
            f.write(b"\0" * (512 * 1024))
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.retryable
    assert list(root.iterdir()) == []
    sr.close()  # the root's descriptor would keep the tmpfs busy


def test_other_os_errors_become_local_errors(tree: tuple[SafeRoot, Path, Path]) -> None:
    sr, root, _ = tree
    (root / "file").write_text("x")
    with pytest.raises(LocalError) as info:
        sr.open_inflight("file/child")  # a parent that is a regular file
    assert not isinstance(info.value, DiskFull)
    assert isinstance(info.value.__cause__, OSError)
