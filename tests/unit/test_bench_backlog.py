"""The backlog bench's arithmetic: first-half and second-half rates from the side's own
stamps, and CPU time per file from the sampled timeline. Made-up stamps, no timing."""

from __future__ import annotations

from typing import Any

import pytest

from bench.bench_backlog import RssTimeline, halves


def test_a_steady_run_has_equal_halves() -> None:
    stamps = [i * 0.01 for i in range(1000)]  # one file every 10 ms
    first, second = halves(stamps, 1000)
    assert first == pytest.approx(100.0, rel=0.01)
    assert second == pytest.approx(100.0, rel=0.01)


def test_a_second_half_at_half_the_pace_shows_as_half_the_rate() -> None:
    stamps = [i * 0.01 for i in range(500)] + [4.99 + (i + 1) * 0.02 for i in range(500)]
    first, second = halves(stamps, 1000)
    assert second / first == pytest.approx(0.5, rel=0.01)


def test_marks_every_100_files_stand_for_100_files_each() -> None:
    # the floor's marks: one stamp per 100 files (20 for 2000 files), 10 files/s over the
    # first 10 intervals, then 5 files/s
    marks = [i * 10.0 for i in range(11)] + [100.0 + (i + 1) * 20.0 for i in range(9)]
    first, second = halves(marks, 2000)
    assert first == pytest.approx(10.0, rel=0.02)
    assert second == pytest.approx(5.0, rel=0.02)


def test_too_few_stamps_give_no_rate() -> None:
    assert halves([1.0, 2.0], 2) == (0.0, 0.0)


def timeline(samples: list[tuple[float, int, float, float, float]], want: int) -> RssTimeline:
    t: Any = RssTimeline.__new__(RssTimeline)
    t.samples, t.want = samples, want
    return t


def test_cpu_per_file_is_taken_between_the_fractions_drained() -> None:
    # 1000 files; the subscriber's CPU grows 1 s per 100 files, the broker's 0.5 s
    # and its system part 0.2 s
    samples = [(f / 10, 30_000, f * 1.0, f * 0.5, f * 0.2) for f in range(11)]
    t = timeline(samples, 1000)
    assert t.cpu_ms_per_file(0.1, 0.5) == pytest.approx(10.0)
    assert t.cpu_ms_per_file(0.5, 0.9, broker=True) == pytest.approx(5.0)
    assert t.cpu_ms_per_file(0.5, 0.9, system=True) == pytest.approx(2.0)
    assert t.at(0.5) == 30_000


def test_cpu_per_file_without_samples_past_a_fraction_is_zero() -> None:
    t = timeline([(0.0, 1, 0.0, 0.0, 0.0), (0.3, 1, 3.0, 1.0, 0.5)], 1000)
    assert t.cpu_ms_per_file(0.1, 0.5) == 0.0
