"""Growing files: block accounting (sarra.parts.growing), the tracker's growing versions
(real files, real flock), and the poster's follower over a real file being appended to."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sarra.config.settings import load_settings
from sarra.errors import ConfigError, LocalError, MalformedMessage
from sarra.flow.growing import GrowthFollower, follow, growth_follower
from sarra.flow.nodupe import derive_key
from sarra.flow.posting import NoticeBuilder, PostSettings
from sarra.localfs.confined import SafeRoot
from sarra.notice import Notice, PartSpec
from sarra.parts import growing
from sarra.parts.tracker import MarkStatus, PartTracker

BS = 4096
MTIME = 1_700_000_000.0


# block accounting ----------------------------------------------------------------------------


def test_each_block_is_announced_once_as_soon_as_it_is_complete() -> None:
    assert growing.provisional_specs(BS - 1, BS, 0) == []
    assert growing.provisional_specs(2 * BS + 5, BS, 0) == [
        PartSpec("i", BS, 1, 0, 0),
        PartSpec("i", BS, 2, 0, 1),
    ]
    assert growing.provisional_specs(2 * BS + 5, BS, 2) == []
    assert growing.provisional_specs(3 * BS, BS, 2) == [PartSpec("i", BS, 3, 0, 2)]


def test_the_final_notices_carry_the_true_count_and_at_least_the_last_block() -> None:
    # a short tail not yet announced
    assert growing.final_specs(3 * BS + 7, BS, 3) == [PartSpec("i", BS, 4, 7, 3)]
    # every block already announced (exact multiple): the last one is repeated as final
    assert growing.final_specs(3 * BS, BS, 3) == [PartSpec("i", BS, 3, 0, 2)]
    # blocks completed after the last poll are announced too
    assert growing.final_specs(5 * BS + 1, BS, 3) == [
        PartSpec("i", BS, 6, 1, 3),
        PartSpec("i", BS, 6, 1, 4),
        PartSpec("i", BS, 6, 1, 5),
    ]
    # smaller than one block: still an 'i' block (the tracker takes only those)
    assert growing.final_specs(10, BS, 0) == [PartSpec("i", BS, 1, 10, 0)]
    assert growing.final_specs(BS, BS, 1) == [PartSpec("i", BS, 1, 0, 0)]


def test_a_file_that_shrank_or_has_no_fixed_block_size_is_refused() -> None:
    with pytest.raises(ValueError, match="shrank"):
        growing.provisional_specs(BS, BS, 2)
    with pytest.raises(ValueError, match="shrank"):
        growing.final_specs(BS, BS, 2)
    with pytest.raises(ValueError, match="empty"):
        growing.final_specs(0, BS, 0)
    with pytest.raises(ValueError, match="fixed block size"):
        growing.provisional_specs(10, 0, 0)


@given(
    st.lists(st.integers(min_value=0, max_value=5 * 64), min_size=1, max_size=20),
    st.integers(min_value=2, max_value=64),
)
def test_any_growth_announces_every_block_exactly_once_with_the_final_size(
    appends: list[int], bs: int
) -> None:
    size, posted, announced = 0, 0, []
    for grown in appends:
        size += grown
        specs = growing.provisional_specs(size, bs, posted)
        posted += len(specs)
        announced += specs
    if size == 0:
        return
    final = growing.final_specs(size, bs, posted)
    numbers = [s.block_number for s in announced] + [s.block_number for s in final]
    count = -(-size // bs)
    assert sorted(set(numbers)) == list(range(count))
    assert len(numbers) == count or (len(numbers) == count + 1 and size % bs == 0)
    assert all(s.block_count == count and s.file_size == size for s in final)
    # every provisional block covers exactly the bytes of that block in the final file
    for s in announced:
        assert (s.offset, s.length) == (s.block_number * bs, bs)


def test_the_growing_header_round_trips_and_junk_is_malformed() -> None:
    assert growing.parse_header(growing.header_value("20261207.5", False)) == ("20261207.5", False)
    assert growing.parse_header(growing.header_value("20261207.5", True)) == ("20261207.5", True)
    for bad in ("", ",final", "a,b", "a b", "a,final,x"):
        with pytest.raises(MalformedMessage):
            growing.parse_header(bad)


# the tracker ---------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> tuple[PartTracker, Path]:
    root = tmp_path / "root"
    return PartTracker(tmp_path / "state", SafeRoot(root)), root


def deliver(
    tracker: PartTracker, data: bytes, spec: PartSpec, final: bool, gid: str = "g1"
) -> MarkStatus:
    with tracker.begin(
        "a/log.txt", spec, gid, mtime=MTIME, mode=0o640, growing=True, final=final
    ) as ticket:
        if ticket.done:
            return MarkStatus.DONE
        if ticket.needs():
            ticket.write_block(data[spec.offset : spec.offset + spec.length])
        marked = tracker.mark(ticket)
        if marked.completion is not None:
            tracker.finish(marked.completion)
        return marked.status


def _growth(size: int, steps: int, seed: int) -> tuple[list[PartSpec], list[PartSpec]]:
    rng = random.Random(seed)
    cuts = [*sorted(rng.randrange(size + 1) for _ in range(steps - 1)), size]
    posted, provisional = 0, []
    for cut in cuts:
        specs = growing.provisional_specs(cut, BS, posted)
        posted += len(specs)
        provisional += specs
    return provisional, growing.final_specs(size, BS, posted)


@pytest.mark.parametrize("size", [7 * BS + 123, 7 * BS, 100])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_growing_file_in_any_order_is_placed_once_complete_and_byte_identical(
    env: tuple[PartTracker, Path], size: int, seed: int
) -> None:
    tracker, root = env
    data = random.Random(seed).randbytes(size)
    provisional, final = _growth(size, 6, seed)
    notices = [(s, False) for s in provisional] + [(s, True) for s in final]
    random.Random(seed).shuffle(notices)
    statuses = []
    for spec, is_final in notices:
        statuses.append(deliver(tracker, data, spec, is_final))
        if statuses[-1] is not MarkStatus.COMPLETE:
            assert not (root / "a" / "log.txt").exists()
    assert statuses.count(MarkStatus.COMPLETE) == 1
    assert (root / "a" / "log.txt").read_bytes() == data
    assert [p for p in root.rglob("*") if p.name.startswith(".")] == []


def test_provisional_blocks_alone_never_complete_a_growing_file(
    env: tuple[PartTracker, Path],
) -> None:
    tracker, root = env
    data = random.Random(5).randbytes(4 * BS)
    for spec in growing.provisional_specs(4 * BS, BS, 0):
        # each one reads like the last block of a file of (n+1) blocks, yet is not the end
        assert deliver(tracker, data, spec, False) is MarkStatus.RECORDED
    assert not (root / "a" / "log.txt").exists()
    (last,) = growing.final_specs(4 * BS, BS, 4)
    assert deliver(tracker, data, last, True) is MarkStatus.COMPLETE
    assert (root / "a" / "log.txt").read_bytes() == data
    # a late provisional block of the finished growth changes nothing
    assert deliver(tracker, data, PartSpec("i", BS, 1, 0, 0), False) is MarkStatus.DONE


def test_the_placed_file_gets_the_time_and_mode_of_the_final_notices(
    env: tuple[PartTracker, Path],
) -> None:
    tracker, root = env
    data = random.Random(4).randbytes(3 * BS + 1)
    provisional = growing.provisional_specs(3 * BS, BS, 0)
    (final,) = growing.final_specs(len(data), BS, 3)

    def give(spec: PartSpec, is_final: bool, mtime: float, mode: int) -> MarkStatus:
        with tracker.begin(
            "a/log.txt", spec, "g1", mtime=mtime, mode=mode, growing=True, final=is_final
        ) as ticket:
            ticket.write_block(data[spec.offset : spec.offset + spec.length])
            marked = tracker.mark(ticket)
            if marked.completion is not None:
                tracker.finish(marked.completion)
            return marked.status

    give(provisional[0], False, MTIME, 0o600)
    give(final, True, MTIME + 60, 0o644)  # the final notice arrives before the others
    give(provisional[1], False, MTIME + 1, 0o600)
    assert give(provisional[2], False, MTIME + 2, 0o600) is MarkStatus.COMPLETE
    st = (root / "a" / "log.txt").stat()
    assert (st.st_mtime, st.st_mode & 0o777) == (MTIME + 60, 0o644)


def test_final_notices_that_contradict_each_other_or_the_blocks_are_malformed(
    env: tuple[PartTracker, Path],
) -> None:
    tracker, root = env
    data = random.Random(6).randbytes(6 * BS)
    specs = growing.provisional_specs(5 * BS, BS, 0)
    for spec in specs[:2] + specs[3:]:  # block 2 delayed
        deliver(tracker, data, spec, False)
    with pytest.raises(MalformedMessage, match="before blocks already received"):
        deliver(tracker, data, PartSpec("i", BS, 3, 5, 2), True)
    assert deliver(tracker, data, PartSpec("i", BS, 6, 0, 5), True) is MarkStatus.RECORDED
    with pytest.raises(MalformedMessage, match="contradict"):
        deliver(tracker, data, PartSpec("i", BS, 7, 0, 6), False)
    with pytest.raises(MalformedMessage, match="contradict"):
        deliver(tracker, data, PartSpec("i", BS, 7, 0, 6), True)
    assert not (root / "a" / "log.txt").exists()
    assert deliver(tracker, data, specs[2], False) is MarkStatus.COMPLETE
    assert (root / "a" / "log.txt").read_bytes() == data
    assert tracker.begin("a/log.txt", PartSpec("i", BS, 7, 0, 6), "g1", growing=True).done


def test_a_new_growth_of_the_same_path_discards_the_unfinished_one(
    env: tuple[PartTracker, Path],
) -> None:
    tracker, root = env
    old = random.Random(7).randbytes(3 * BS)
    new = random.Random(8).randbytes(2 * BS + 1)
    for spec in growing.provisional_specs(3 * BS, BS, 0):
        deliver(tracker, old, spec, False, gid="old")
    for spec in growing.provisional_specs(2 * BS + 1, BS, 0):
        deliver(tracker, new, spec, False, gid="new")
    (tail,) = growing.final_specs(2 * BS + 1, BS, 2)
    assert deliver(tracker, new, tail, True, gid="new") is MarkStatus.COMPLETE
    assert (root / "a" / "log.txt").read_bytes() == new
    assert tracker.tracked() == 0


def test_the_final_repeat_of_an_announced_block_is_not_a_duplicate() -> None:
    spec = PartSpec("i", BS, 3, 0, 2)
    base = {"sum": "d," + hashlib.md5(b"x").hexdigest(), "parts": spec.wire()}

    def notice(extra: dict[str, str]) -> Notice:
        from sarra.codec import v02

        decoded = v02.decode(
            "xs_guest", "v02.post.a", b"20261207030000 http://h /a/log.txt", {**base, **extra}
        )
        assert isinstance(decoded, Notice)
        return decoded

    provisional = notice({"growing": "g1"})
    final = notice({"growing": "g1,final"})
    assert derive_key(provisional) != derive_key(final)
    assert derive_key(notice({})) == derive_key(notice({}))


# the poster's follower -----------------------------------------------------------------------


@pytest.fixture
def builder_for(tmp_path: Path) -> NoticeBuilder:
    env = {"SR_CONFIG_DIR": str(tmp_path / "c"), "SR_STATE_DIR": str(tmp_path / "s")}
    given = [
        ("post_broker", "amqp://u@localhost/"),
        ("post_base_url", "http://localhost/"),
        ("post_base_dir", str(tmp_path)),
        ("sum", "d"),
        ("blocksize", str(BS)),
        ("growing", "on"),
    ]
    cfg = load_settings("post", None, given, env=env)
    return NoticeBuilder(PostSettings.from_config(cfg, "u", "localhost"))


def test_growing_without_a_fixed_blocksize_is_refused(tmp_path: Path) -> None:
    env = {"SR_CONFIG_DIR": str(tmp_path / "c"), "SR_STATE_DIR": str(tmp_path / "s")}
    given = [("post_broker", "amqp://u@localhost/"), ("post_base_url", "http://localhost/"),
             ("blocksize", "0"), ("growing", "on")]  # fmt: skip
    cfg = load_settings("post", None, given, env=env)
    with pytest.raises(ConfigError, match="fixed blocksize"):
        growth_follower(cfg, NoticeBuilder(PostSettings.from_config(cfg, "u", "localhost")))


def test_the_follower_announces_blocks_as_a_real_file_grows_then_its_final_blocks(
    tmp_path: Path, builder_for: NoticeBuilder
) -> None:
    builder = builder_for
    path = tmp_path / "grow.log"
    data = random.Random(9).randbytes(5 * BS + 99)
    follower = GrowthFollower(builder, BS)
    announced: list[Notice] = []
    path.write_bytes(b"")
    for cut in (10, BS, BS + 1, 3 * BS + 5, 3 * BS + 6, 5 * BS + 99):
        with path.open("ab") as f:
            f.write(data[path.stat().st_size : cut])
        announced += follower.poll(str(path))
    assert [n.parts.wire() for n in announced if n.parts] == [
        "i,4096,1,0,0",
        "i,4096,2,0,1",
        "i,4096,3,0,2",
        "i,4096,4,0,3",
        "i,4096,5,0,4",
    ]
    final = follower.finish(str(path))
    assert [n.parts.wire() for n in final if n.parts] == ["i,4096,6,99,5"]
    assert {n.header("growing") for n in announced} == {announced[0].header("growing")}
    assert final[0].header("growing") == f"{announced[0].header('growing')},final"
    for n in announced + final:
        assert n.parts is not None
        chunk = data[n.parts.offset : n.parts.offset + n.parts.length]
        assert n.checksum.value == hashlib.md5(chunk).hexdigest()
    assert str(path) not in follower


def test_a_file_that_never_completed_a_block_is_announced_the_ordinary_way(
    tmp_path: Path, builder_for: NoticeBuilder
) -> None:
    path = tmp_path / "small.log"
    path.write_bytes(b"hello")
    follower = GrowthFollower(builder_for, BS)
    assert follower.poll(str(path)) == []
    (notice,) = follower.finish(str(path))
    assert notice.parts is not None and notice.parts.whole
    assert notice.header("growing") is None


def test_a_file_that_shrank_while_followed_is_refused_then_announced_whole(
    tmp_path: Path, builder_for: NoticeBuilder
) -> None:
    path = tmp_path / "trunc.log"
    path.write_bytes(b"x" * (2 * BS))
    follower = GrowthFollower(builder_for, BS)
    assert len(follower.poll(str(path))) == 2
    path.write_bytes(b"y" * 10)
    with pytest.raises(LocalError, match="shrank"):
        follower.poll(str(path))
    notices = follower.finish(str(path))
    assert len(notices) == 1 and notices[0].header("growing") is None


def test_sr_post_follows_a_file_until_it_is_idle_then_finishes_it(
    tmp_path: Path, builder_for: NoticeBuilder
) -> None:
    path = tmp_path / "idle.log"
    path.write_bytes(b"z" * (2 * BS + 3))
    published: list[tuple[int, bool]] = []
    done = follow(
        GrowthFollower(builder_for, BS),
        str(path),
        lambda notices, final: published.append((len(notices), final)),
        idle=0.2,
        stop=threading.Event(),
        poll_every=0.05,
    )
    assert done
    assert published == [(2, False), (1, True)]


def test_sr_post_stopped_while_a_file_grows_never_announces_it_complete(
    tmp_path: Path, builder_for: NoticeBuilder
) -> None:
    path = tmp_path / "busy.log"
    path.write_bytes(b"z" * (BS + 3))
    stop = threading.Event()
    stop.set()
    published: list[bool] = []
    follower = GrowthFollower(builder_for, BS)
    done = follow(
        follower, str(path), lambda _n, final: published.append(final), idle=60, stop=stop
    )
    assert not done
    assert published == [False]  # the complete block only; no final notice
    assert str(path) not in follower
