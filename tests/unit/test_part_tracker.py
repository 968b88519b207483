"""PartTracker: reassembly of shuffled, duplicated blocks, exactly-once completion, crash
recovery, version restarts, expiry and bounds; with real files, real flock, real processes."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import stat
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from sarra.errors import HostilePath, MalformedMessage
from sarra.localfs.confined import SafeRoot
from sarra.notice import PartSpec
from sarra.parts.arithmetic import split
from sarra.parts.tracker import Completion, MarkStatus, PartTracker

BS = 4096
MTIME = 1_700_000_000.0
_FORK = multiprocessing.get_context("fork")


def make_data(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def sr3_form(specs: list[PartSpec], size: int) -> list[PartSpec]:
    """sr3 writes each block's own length as the remainder (spec 11 R3)."""
    return [replace(s, remainder=min(s.block_size, size - s.offset)) for s in specs]


def deliver(
    tracker: PartTracker, rel: str, data: bytes, spec: PartSpec, version: str = "v1"
) -> tuple[MarkStatus, Completion | None]:
    """What a subscriber does with one verified block."""
    with tracker.begin(rel, spec, version, mtime=MTIME, mode=0o640) as ticket:
        if ticket.done:
            return MarkStatus.DONE, None
        if ticket.needs():
            ticket.write_block(data[spec.offset : spec.offset + spec.length])
        marked = tracker.mark(ticket)
        return marked.status, marked.completion


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file() and p.name.startswith("."))


@pytest.fixture
def env(tmp_path: Path) -> tuple[PartTracker, Path]:
    root = tmp_path / "root"
    return PartTracker(tmp_path / "state", SafeRoot(root)), root


# single caller -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "form"),
    [
        (3 * BS + 100, "sr2"),  # rem > 0
        (3 * BS, "sr2"),  # rem == 0: the last block is a whole block (v2's Q5 bug)
        (3 * BS + 100, "sr3"),  # rem = each block's own length
        (3 * BS, "sr3"),  # rem == bs everywhere
    ],
)
def test_shuffled_duplicated_blocks_reassemble_byte_identical_once(
    env: tuple[PartTracker, Path], size: int, form: str
) -> None:
    tracker, root = env
    data = make_data(size)
    specs = split(size, BS)
    if form == "sr3":
        specs = sr3_form(specs, size)
    order = specs + specs[:2]
    random.Random(7).shuffle(order)
    completions = []
    for spec in order:
        status, completion = deliver(tracker, "d/big.bin", data, spec)
        if completion is not None:
            assert not (root / "d" / "big.bin").exists() or completion.file_size == size
            completions.append(completion)
            assert tracker.finish(completion)
        else:
            assert status in (MarkStatus.RECORDED, MarkStatus.DUPLICATE, MarkStatus.DONE)
    assert len(completions) == 1
    assert not completions[0].resumed
    final = root / "d" / "big.bin"
    assert final.read_bytes() == data
    st = final.stat()
    assert st.st_mtime == MTIME
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert leftovers(root) == []


def test_the_final_name_never_shows_partial_data(env: tuple[PartTracker, Path]) -> None:
    tracker, root = env
    data = make_data(4 * BS)
    for spec in split(len(data), BS)[:-1]:
        deliver(tracker, "f", data, spec)
        assert not (root / "f").exists()
    status, completion = deliver(tracker, "f", data, split(len(data), BS)[-1])
    assert status is MarkStatus.COMPLETE and completion is not None
    assert (root / "f").read_bytes() == data


def test_blocks_of_a_completed_version_get_done_and_nothing_is_rewritten(
    env: tuple[PartTracker, Path],
) -> None:
    tracker, root = env
    data = make_data(2 * BS + 1)
    specs = split(len(data), BS)
    for spec in specs:
        _, completion = deliver(tracker, "f", data, spec)
    assert completion is not None and tracker.finish(completion)
    (root / "f").write_bytes(b"local edit")
    with tracker.begin("f", specs[1], "v1") as ticket:
        assert ticket.done and not ticket.needs()
    assert deliver(tracker, "f", data, specs[0]) == (MarkStatus.DONE, None)
    assert (root / "f").read_bytes() == b"local edit"
    assert tracker.recover() == []


def test_a_newer_version_midway_restarts_tracking_without_mixing(
    env: tuple[PartTracker, Path],
) -> None:
    tracker, root = env
    old, new = make_data(3 * BS, seed=1), make_data(3 * BS, seed=2)
    specs = split(3 * BS, BS)
    deliver(tracker, "f", old, specs[0], "v1")
    stale = tracker.begin("f", specs[1], "v1")
    stale.write_block(old[BS : 2 * BS])
    statuses = [deliver(tracker, "f", new, s, "v2")[0] for s in specs]
    assert statuses[-1] is MarkStatus.COMPLETE
    assert tracker.mark(stale).status is MarkStatus.STALE
    stale.close()
    assert (root / "f").read_bytes() == new
    assert leftovers(root) == []


def test_a_different_block_size_is_a_different_version(env: tuple[PartTracker, Path]) -> None:
    tracker, root = env
    data = make_data(4 * BS)
    deliver(tracker, "f", data, split(len(data), BS)[0])
    results = [deliver(tracker, "f", data, s)[0] for s in split(len(data), 2 * BS)]
    assert results == [MarkStatus.RECORDED, MarkStatus.COMPLETE]
    assert (root / "f").read_bytes() == data


def test_impossible_parts_and_hostile_paths_are_refused(env: tuple[PartTracker, Path]) -> None:
    tracker, root = env
    bad = [
        PartSpec("i", BS, 3, BS + 1, 0),
        PartSpec("i", BS, 3, 0, 3),
        PartSpec("i", 0, 3, 0, 0),
        PartSpec("p", BS, 3, 0, 0),
        PartSpec("1", BS, 1, 0, 0),
    ]
    for spec in bad:
        with pytest.raises(MalformedMessage):
            tracker.begin("f", spec, "v1")
    with pytest.raises(HostilePath):
        tracker.begin("../escape", PartSpec("i", BS, 2, 0, 0), "v1")
    with (
        tracker.begin("f", PartSpec("i", BS, 2, 0, 0), "v1") as ticket,
        pytest.raises(MalformedMessage),
    ):
        ticket.write_block(b"short")
    assert not (root.parent / "escape").exists()


def test_the_number_of_tracked_versions_is_bounded(tmp_path: Path) -> None:
    tracker = PartTracker(tmp_path / "state", SafeRoot(tmp_path / "root"), max_open=2)
    spec = PartSpec("i", BS, 2, 0, 0)
    tracker.begin("a", spec, "v1").close()
    tracker.begin("b", spec, "v1").close()
    with pytest.raises(MalformedMessage, match="bound 2"):
        tracker.begin("c", spec, "v1")
    tracker.begin("a", replace(spec, block_number=1), "v1").close()  # known ones go on
    assert tracker.tracked() == 2


def test_expiry_removes_stalled_versions_and_reports_them(env: tuple[PartTracker, Path]) -> None:
    tracker, root = env
    data = make_data(3 * BS)
    specs = split(len(data), BS)
    deliver(tracker, "stalled", data, specs[0])
    for spec in specs:
        _, completion = deliver(tracker, "complete", data, spec)
    assert completion is not None and tracker.finish(completion)
    assert tracker.expire(older_than=3600) == []
    expired = tracker.expire(older_than=0.0)
    assert [(e.final_rel, e.present, e.block_count) for e in expired] == [("stalled", 1, 3)]
    assert leftovers(root) == []
    assert tracker.tracked() == 0
    assert (root / "complete").read_bytes() == data
    assert sorted(os.listdir(tracker.state_dir / "locks")) == [".new"]


def test_an_unfinished_completion_is_offered_again_until_finished(
    env: tuple[PartTracker, Path],
) -> None:
    tracker, root = env
    data = make_data(2 * BS)
    specs = split(len(data), BS)
    deliver(tracker, "f", data, specs[0])
    _, first = deliver(tracker, "f", data, specs[1])
    assert first is not None
    # while the holder lives, nobody else gets it (another thread sees FINISHING)
    assert deliver(tracker, "f", data, specs[0])[0] is MarkStatus.FINISHING
    assert tracker.recover() == []
    tracker.release(first)  # on_file failed: give it back
    again = tracker.recover()
    assert [c.resumed for c in again] == [True]
    assert tracker.finish(again[0])
    assert tracker.recover() == []
    assert deliver(tracker, "f", data, specs[1])[0] is MarkStatus.DONE
    assert (root / "f").read_bytes() == data


# threads and processes -----------------------------------------------------------------------


def test_threads_marking_concurrently_complete_once(env: tuple[PartTracker, Path]) -> None:
    tracker, root = env
    data = make_data(16 * BS + 5)
    specs = split(len(data), BS)
    found: list[Completion] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        order = list(specs)
        random.Random(seed).shuffle(order)
        for spec in order:
            _, completion = deliver(tracker, "t", data, spec)
            if completion is not None:
                with lock:
                    found.append(completion)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 1
    assert tracker.finish(found[0])
    assert (root / "t").read_bytes() == data


def _process_worker(state: str, root: str, size: int, seed: int, log: str, kill_at: int) -> None:
    """Deliver a shuffled, partly duplicated list of blocks; log each on_file run.

    After ``kill_at`` delivered blocks (or on completion when kill_at is 0), stop the
    process (SIGSTOP) so the parent can SIGKILL it at that exact point.
    """
    tracker = PartTracker(state, SafeRoot(root))
    data = make_data(size)
    specs = split(size, BS)
    rng = random.Random(seed)
    order = specs + rng.sample(specs, len(specs) // 3)
    rng.shuffle(order)
    for i, spec in enumerate(order, 1):
        _, completion = deliver(tracker, "sub/big.bin", data, spec)
        if completion is not None:
            if kill_at == 0:  # die holding the completion, before on_file
                os.kill(os.getpid(), signal.SIGSTOP)
            with open(log, "a") as f:
                f.write(f"on_file {os.getpid()} resumed={completion.resumed}\n")
            tracker.finish(completion)
        if i == kill_at:
            os.kill(os.getpid(), signal.SIGSTOP)


def _start(tmp: Path, size: int, seed: int, kill_at: int = -1) -> multiprocessing.Process:
    args = (str(tmp / "state"), str(tmp / "root"), size, seed, str(tmp / "log"), kill_at)
    proc = _FORK.Process(target=_process_worker, args=args)
    proc.start()
    return proc


def _kill_when_stopped(proc: multiprocessing.Process) -> None:
    assert proc.pid is not None
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL


def _on_file_runs(tmp: Path) -> list[str]:
    log = tmp / "log"
    return log.read_text().splitlines() if log.exists() else []


def test_four_processes_with_shuffled_duplicated_blocks_complete_exactly_once(
    tmp_path: Path,
) -> None:
    size = 40 * BS + 123
    procs = [_start(tmp_path, size, seed) for seed in range(4)]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert len(_on_file_runs(tmp_path)) == 1
    assert (tmp_path / "root" / "sub" / "big.bin").read_bytes() == make_data(size)
    assert leftovers(tmp_path / "root") == []


def test_a_process_killed_midway_leaves_a_file_another_finishes(tmp_path: Path) -> None:
    size = 30 * BS
    victim = _start(tmp_path, size, seed=1, kill_at=12)
    _kill_when_stopped(victim)
    assert not (tmp_path / "root" / "sub" / "big.bin").exists()
    survivor = _start(tmp_path, size, seed=2)
    survivor.join(timeout=60)
    assert survivor.exitcode == 0
    runs = _on_file_runs(tmp_path)
    assert len(runs) == 1 and "resumed=False" in runs[0]
    assert (tmp_path / "root" / "sub" / "big.bin").read_bytes() == make_data(size)
    assert leftovers(tmp_path / "root") == []


def test_a_process_killed_holding_the_completion_is_taken_over_once(tmp_path: Path) -> None:
    size = 10 * BS + 1
    victim = _start(tmp_path, size, seed=3, kill_at=0)
    _kill_when_stopped(victim)
    assert _on_file_runs(tmp_path) == []
    assert (tmp_path / "root" / "sub" / "big.bin").read_bytes() == make_data(size)
    tracker = PartTracker(tmp_path / "state", SafeRoot(tmp_path / "root"))
    resumed = tracker.recover()
    assert [(c.final_rel, c.resumed) for c in resumed] == [("sub/big.bin", True)]
    assert tracker.finish(resumed[0])
    assert tracker.recover() == []
    # a late duplicate in another process does not run on_file again
    late = _start(tmp_path, size, seed=4)
    late.join(timeout=60)
    assert late.exitcode == 0
    assert _on_file_runs(tmp_path) == []


def test_a_process_killed_holding_the_lock_does_not_wedge_the_file(tmp_path: Path) -> None:
    tracker = PartTracker(tmp_path / "state", SafeRoot(tmp_path / "root"))
    key, _ = tracker.key_for("sub/big.bin")

    def hold() -> None:
        with tracker._lock(f"{key}.lock"):
            os.kill(os.getpid(), signal.SIGSTOP)

    holder = _FORK.Process(target=hold)
    holder.start()
    _kill_when_stopped(holder)
    data = make_data(2 * BS)
    statuses = [deliver(tracker, "sub/big.bin", data, s)[0] for s in split(len(data), BS)]
    assert statuses == [MarkStatus.RECORDED, MarkStatus.COMPLETE]


# block sums ---------------------------------------------------------------------------------


def _mark_with_sum(
    tracker: PartTracker, data: bytes, spec: PartSpec, version: str
) -> Completion | None:
    with tracker.begin("f.bin", spec, version) as ticket:
        ticket.write_block(data[spec.offset : spec.offset + spec.length])
        return tracker.mark(ticket, block_sum=f"d,sum{spec.block_number}{version}").completion


def test_every_block_sum_comes_back_with_the_completion_and_stays_until_the_version_goes(
    env: tuple[PartTracker, Path],
) -> None:
    tracker, _root = env
    data = make_data(3 * BS + 10)
    specs = split(len(data), BS)
    completion = None
    for spec in reversed(specs):
        completion = _mark_with_sum(tracker, data, spec, "v1") or completion
    assert completion is not None
    assert completion.block_sums == tuple(f"d,sum{n}v1" for n in range(4))
    tracker.finish(completion)
    # a redelivered block finds the version done: the sums are still there to announce it
    with tracker.begin("f.bin", specs[2], "v1") as ticket:
        assert ticket.done
        assert tracker.block_sums(ticket) == (len(data), completion.block_sums)
    # a newer version replaces the old one's sums; its own come back when it completes
    newer = None
    for spec in specs:
        newer = _mark_with_sum(tracker, data, spec, "v2") or newer
    assert newer is not None and newer.block_sums == tuple(f"d,sum{n}v2" for n in range(4))
    tracker.finish(newer)
    # expiry of the completed version removes its sums too
    tracker.expire(older_than=0, now=10**12)
    assert not list((tracker.state_dir / "sums").iterdir())


def test_a_completion_without_every_block_sum_has_none(env: tuple[PartTracker, Path]) -> None:
    tracker, _root = env
    data = make_data(2 * BS)
    specs = split(len(data), BS)
    _mark_with_sum(tracker, data, specs[0], "v1")
    with tracker.begin("f.bin", specs[1], "v1") as ticket:
        ticket.write_block(data[BS:])
        completion = tracker.mark(ticket).completion  # no sum given for this block
    assert completion is not None and completion.block_sums is None
