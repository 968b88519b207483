"""DuplicateCache: keys, bases, parts, ttl, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarra.broker.base import Delivery
from sarra.errors import ConfigError
from sarra.flow.download import Destination, Downloader, DownloadSettings
from sarra.flow.hooks import Plugins
from sarra.flow.nodupe import DuplicateCache, derive_key
from sarra.flow.work import WorkItem
from sarra.notice import Checksum, Notice, PartSpec, WireMessage, frozen_headers

T0 = 1_700_000_000.0
MD5 = "6f5902ac237024bdd0c176cb93063dc4"
SUM = Checksum("d", MD5)
WHOLE = PartSpec("1", 12, 1, 0, 0)


def notice(
    path: str = "dir/a.txt",
    sum_: Checksum = SUM,
    parts: PartSpec | None = WHOLE,
    **headers: str,
) -> Notice:
    return Notice(
        exchange="xpublic",
        topic="v02.post." + path.rsplit("/", 1)[0].replace("/", "."),
        pubtime="20240101000000.0",
        base_url="http://h",
        rel_path="/" + path,
        path=path,
        headers=frozen_headers({"sum": sum_.wire(), **headers}),
        checksum=sum_,
        parts=parts,
    )


def test_a_second_sighting_within_ttl_is_a_duplicate(tmp_path: Path) -> None:
    c = DuplicateCache(None, ttl=300)
    assert not c.check(notice(), T0)
    assert c.check(notice(), T0 + 10)
    assert c.check(notice(sum_=Checksum("d", MD5.upper())), T0 + 20)  # hex case-insensitive
    assert not c.check(notice(sum_=Checksum("d", "0" * 32)), T0 + 20)


def test_entries_expire_after_ttl_and_memory_shrinks() -> None:
    c = DuplicateCache(None, ttl=100)
    for n in range(50):
        c.check(notice(path=f"d/f{n}"), T0)
    assert len(c) == 50
    assert not c.check(notice(path="d/f0"), T0 + 150)
    assert len(c) == 1  # the others expired
    assert c.check(notice(path="d/f0"), T0 + 200)  # refreshed at T0+150


def test_a_hit_refreshes_the_entry_time() -> None:
    c = DuplicateCache(None, ttl=100)
    c.check(notice(), T0)
    assert c.check(notice(), T0 + 90)
    assert c.check(notice(), T0 + 180)


@pytest.mark.parametrize(
    ("basis", "other_dir_dup", "other_name_dup"),
    [("path", False, False), ("name", True, False), ("data", True, True)],
)
def test_the_basis_decides_what_counts_as_the_same(
    basis: str, other_dir_dup: bool, other_name_dup: bool
) -> None:
    c = DuplicateCache(None, ttl=300, basis=basis)
    assert not c.check(notice(path="one/a.txt"), T0)
    assert c.check(notice(path="two/a.txt"), T0) is other_dir_dup
    assert c.check(notice(path="one/b.txt"), T0) is other_name_dup


def test_an_unknown_basis_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        DuplicateCache(None, ttl=1, basis="content")


def test_blocks_of_one_file_are_not_duplicates_of_each_other() -> None:
    c = DuplicateCache(None, ttl=300)
    same_sum = Checksum("d", MD5)  # e.g. blocks of zeros have equal sums
    blocks = [notice(sum_=same_sum, parts=PartSpec("i", 10, 3, 4, n)) for n in range(3)]
    assert [c.check(b, T0) for b in blocks] == [False, False, False]
    assert [c.check(b, T0) for b in blocks] == [True, True, True]
    # count/remainder differences alone do not make a block new (as sr2)
    assert c.check(notice(sum_=same_sum, parts=PartSpec("i", 10, 4, 0, 1)), T0)


def test_keys_for_sums_that_do_not_identify_data() -> None:
    n = Checksum("n", MD5)
    assert derive_key(notice(sum_=n, mtime="20240101000001")) == "dir/a.txt,20240101000001"
    assert derive_key(notice(sum_=Checksum("0", "1234"))) == "dir/a.txt,20240101000000.0"
    assert derive_key(notice(sum_=Checksum("L", "ab"), parts=None, link="../b")) == "L,../b"
    assert derive_key(notice(sum_=Checksum("R", "ab"), parts=None)) == "R,dir/a.txt"
    c = DuplicateCache(None, ttl=300)
    assert not c.check(notice(sum_=n, mtime="20240101000001"), T0)
    assert not c.check(notice(sum_=n, mtime="20240101000002"), T0)  # modified again
    assert c.check(notice(sum_=n, mtime="20240101000002"), T0)


def test_forget_drops_a_path_so_it_passes_again() -> None:
    c = DuplicateCache(None, ttl=300)
    c.check(notice(path="d/a"), T0)
    c.check(notice(path="d/b"), T0)
    assert c.forget("d/a") == 1
    assert not c.check(notice(path="d/a"), T0)
    assert c.check(notice(path="d/b"), T0)
    data = DuplicateCache(None, ttl=300, basis="data")
    data.check(notice(path="d/a"), T0)
    assert data.forget("d/a") == 0


def test_entries_persist_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "nodupe.001"
    with DuplicateCache(path, ttl=300) as c:
        c.check(notice(path="d/with space.txt"), T0)
        c.check(notice(path="d/b", sum_=Checksum("s", "e" * 128)), T0)
    # the file is read at open relative to the wall clock, so use current times for it
    with DuplicateCache(path, ttl=10**10) as c:
        assert len(c) == 2
        assert c.check(notice(path="d/with space.txt"), T0 + 1)
        assert c.forget("d/with space.txt") == 1
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    digest, epoch, value = lines[0].split(" ")
    assert len(digest) == 32 and float(epoch) == T0 and value == "d/b"


def test_expired_and_torn_lines_are_dropped_on_load(tmp_path: Path) -> None:
    path = tmp_path / "nodupe"
    with DuplicateCache(path, ttl=10**10) as c:
        c.check(notice(path="d/old"), 1000.0)  # long ago
        c.check(notice(path="d/new"), T0 * 2)  # far future: never expires here
    with path.open("a") as fh:
        fh.write("not a line\n0123 1.0")  # junk and a torn last line
    with DuplicateCache(path, ttl=3600) as c:
        assert len(c) == 1
        assert c.check(notice(path="d/new"), T0 * 2 + 1)
    assert len(path.read_text().splitlines()) == 1


def test_the_file_is_compacted_when_dead_lines_dominate(tmp_path: Path) -> None:
    path = tmp_path / "nodupe"
    c = DuplicateCache(path, ttl=10)
    for n in range(3000):
        c.check(notice(path=f"d/f{n}"), T0 + n)  # each expires ten checks later
    assert len(c) <= 11
    assert len(path.read_text().splitlines()) < 2100
    c.close()
    assert len(path.read_text().splitlines()) == len(c)  # only live entries on close


def test_zero_ttl_disables_suppression(tmp_path: Path) -> None:
    with DuplicateCache(tmp_path / "n", ttl=0) as c:
        assert not c.check(notice(), T0)
        assert not c.check(notice(), T0)
        assert len(c) == 0


# -- the consumer's select: a redelivered notice is never suppressed (crash windows) --------


def _select_item(n: Notice, redelivered: bool) -> WorkItem:
    wire = WireMessage(n.exchange, n.topic, b"{}", {})
    return WorkItem(n, delivery=Delivery(wire, 1, 0, redelivered=redelivered))


def _downloader(tmp_path: Path, cache: DuplicateCache) -> Downloader:
    return Downloader(
        DownloadSettings(base_url_private=True),
        lambda _n: Destination(str(tmp_path / "dest"), _n.path),
        Plugins(),
        cache,
    )


def test_an_entry_left_by_a_killed_instance_does_not_suppress_its_redelivered_notice(
    tmp_path: Path,
) -> None:
    """The entry is written at selection (before the download); the instance dies without
    closing the cache; on restart the broker redelivers the unacked notice: it is selected
    (so downloaded), while a fresh copy of it is suppressed as in normal operation."""
    path = tmp_path / "recent.cache"
    killed = DuplicateCache(path, ttl=300)
    first = _downloader(tmp_path, killed)
    assert first.select(_select_item(notice(), redelivered=False))
    killed._fh.close()  # type: ignore[union-attr]  # SIGKILL: no save, no close

    restarted = DuplicateCache(path, ttl=300)
    assert len(restarted) == 1  # the entry survived the kill
    down = _downloader(tmp_path, restarted)
    again = _select_item(notice(), redelivered=True)
    assert down.select(again)
    assert again.code is None  # not settled: it goes on to the transfer pool
    copy = _select_item(notice(), redelivered=False)
    assert not down.select(copy)
    assert (copy.code, copy.message) == (0, "duplicate")
    restarted.close()


def test_a_redelivered_notice_never_seen_is_recorded_so_later_copies_are_suppressed(
    tmp_path: Path,
) -> None:
    cache = DuplicateCache(None, ttl=300)
    down = _downloader(tmp_path, cache)
    assert down.select(_select_item(notice(), redelivered=True))
    assert len(cache) == 1
    assert not down.select(_select_item(notice(), redelivered=False))


def _on_disk(path: Path) -> int:
    """Entries in the file (its lines; read, not loaded: loading rewrites it)."""
    return len(path.read_text().splitlines())


def test_an_entry_recorded_without_persist_reaches_the_file_only_once_persisted(
    tmp_path: Path,
) -> None:
    """A poster records at queueing time and persists once the broker confirmed: killed in
    between, the next run does not find the entry (so it posts the file)."""
    path = tmp_path / "recent.cache"
    with DuplicateCache(path, ttl=300) as c:
        assert not c.check(notice("a"), persist=False)
        assert c.check(notice("a"), persist=False)  # suppressed in memory meanwhile
        c.save()  # a compaction meanwhile does not write it either
        assert _on_disk(path) == 0  # "killed" now: nothing on disk
        c.persist()
        assert _on_disk(path) == 1
        assert not c.check(notice("b"), persist=False)
        c.forget("b")  # e.g. given up (broker unreachable): never written
        c.persist()
    assert _on_disk(path) == 1  # close rewrote it: "a" only
    with DuplicateCache(path, ttl=300) as loaded:
        assert len(loaded) == 1
