"""The rate limiter with a fake clock (exact, no sleeping), and the options that set it."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from sarra.config import load_config
from sarra.config.options import options_table, parse_float, parse_rate
from sarra.config.settings import Settings
from sarra.errors import FAILURE_CLASSES, Interrupted, RateCapped
from sarra.flow.ratelimit import (
    READ_MIN,
    TokenBucket,
    byte_limiter,
    byte_rate,
    message_limiter,
    read_size,
    throttle_callback,
    throttled,
    wait_exceeded,
)
from sarra.localfs.streaming import BUFFER_SIZE, DIRECT_ALIGN
from sarra.transfer.base import copy_range


class FakeTime:
    """A clock that only moves when the limiter waits; records every wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []
        self.interrupt = False

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        if self.interrupt:
            return True
        self.now += seconds
        return False


def bucket(
    rate: float, burst: float | None = None, wait_max: float = 0.0
) -> tuple[TokenBucket, FakeTime]:
    t = FakeTime()
    return TokenBucket(rate, burst, clock=t.clock, wait=t.wait, wait_max=wait_max), t


def test_the_burst_passes_at_once_then_each_unit_waits_its_share():
    b, t = bucket(1000, burst=100)
    assert b.take(100) is True
    assert t.waits == []
    b.take(500)
    assert t.waits == [pytest.approx(0.5)]
    b.take(1000)
    assert t.waits[-1] == pytest.approx(1.0)


def test_the_average_rate_is_the_cap_over_many_chunks():
    b, t = bucket(2 * 1024 * 1024)  # 2 MiB/s, default burst 0.1 s
    start = t.now
    total = 0
    for _ in range(64):
        b.take(256 * 1024)
        total += 256 * 1024
    elapsed = t.now - start
    # exactly (total - burst) / rate: the burst is the only excess
    assert elapsed == pytest.approx((total - b.burst) / b.rate)
    assert total <= b.rate * elapsed + b.burst + 1e-6


def test_idle_time_refills_the_bucket_but_never_beyond_the_burst():
    b, t = bucket(100, burst=50)
    b.take(50)
    t.now += 3600  # an hour idle earns at most the burst
    b.take(50)
    assert t.waits == []
    b.take(10)
    assert t.waits == [pytest.approx(0.1)]


def test_a_chunk_larger_than_the_burst_is_taken_whole_and_repaid():
    b, t = bucket(1000, burst=10)
    b.take(5010)
    assert t.waits == [pytest.approx(5.0)]


def test_threads_sharing_a_bucket_queue_behind_each_others_debt():
    b, _ = bucket(1000, burst=1)
    # two threads reserve at the same instant: the second waits for both
    assert b.reserve(501) == pytest.approx(0.5)
    assert b.reserve(500) == pytest.approx(1.0)


def test_a_stop_during_a_wait_returns_false():
    b, t = bucket(10, burst=1)
    t.interrupt = True
    assert b.take(1) is True  # the burst: no wait
    assert b.take(5) is False


def test_the_default_wait_is_the_stop_event():
    stop = threading.Event()
    stop.set()
    b = TokenBucket(1, burst=1, stop=stop)
    b.take(1)
    assert b.take(1000) is False  # would wait 1000 s; the set event returns at once


def test_the_lock_is_not_held_while_waiting():
    t = FakeTime()
    seen: list[bool] = []
    b: TokenBucket

    def wait(seconds: float) -> bool:
        # another thread reserving during this wait must not block
        got = b._lock.acquire(blocking=False)
        seen.append(got)
        if got:
            b._lock.release()
        t.now += seconds
        return False

    b = TokenBucket(10, burst=1, clock=t.clock, wait=wait)
    b.take(1)
    b.take(20)
    assert seen == [True]


@pytest.mark.parametrize("rate, burst", [(0, None), (-1, None), (10, 0)])
def test_a_rate_or_burst_that_is_not_positive_is_refused(rate, burst):
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


def test_no_limit_builds_no_limiter_and_passes_chunks_through_untouched():
    assert byte_limiter(0) is None
    assert message_limiter(0.0) is None
    assert throttle_callback(None) is None
    chunks = [b"a", b"b"]
    assert throttled(chunks, None) is chunks


def test_throttled_takes_each_chunk_and_closes_the_source():
    b, t = bucket(100, burst=1)
    closed = []

    def source():
        try:
            yield b"x" * 51
            yield b"y" * 50
        finally:
            closed.append(True)

    assert list(throttled(source(), b)) == [b"x" * 51, b"y" * 50]
    assert t.waits == [pytest.approx(0.5), pytest.approx(0.5)]
    assert closed == [True]


def test_throttled_raises_interrupted_when_stopped_and_closes_the_source():
    b, t = bucket(100, burst=1)
    t.interrupt = True
    closed = []

    def source():
        try:
            yield b"x" * 1000
            yield b"never"
        finally:
            closed.append(True)

    with pytest.raises(Interrupted):
        list(throttled(source(), b))
    assert closed == [True]


def test_a_put_is_throttled_chunk_by_chunk_before_each_write():
    b, t = bucket(1 << 20, burst=1)
    throttle = throttle_callback(b)
    source = io.BytesIO(b"z" * (3 << 20))
    target = io.BytesIO()
    assert copy_range(source, target, 0, None, throttle) == 3 << 20
    assert t.now - 1000.0 == pytest.approx(3.0, rel=1e-6)
    t.interrupt = True
    with pytest.raises(Interrupted):
        copy_range(io.BytesIO(b"z" * 10), io.BytesIO(), 0, None, throttle)


@pytest.mark.parametrize(
    ("waited", "delay", "wait_max", "exceeded"),
    [
        (0.0, 1e9, 0.0, False),  # 0: no bound, however long
        (0.0, 0.0, 1.0, False),  # no wait at all
        (0.0, 1.0, 1.0, False),  # exactly the limit: still waited
        (0.5, 0.5, 1.0, False),
        (0.5, 0.6, 1.0, True),  # the total would pass it
        (0.0, 1.5, 1.0, True),  # one wait alone past it
    ],
)
def test_the_wait_limit_counts_the_transfer_total(waited, delay, wait_max, exceeded):
    assert wait_exceeded(waited, delay, wait_max) is exceeded


def _source(chunks: list[bytes], closed: list[bool]):
    try:
        yield from chunks
    finally:
        closed.append(True)


def test_a_download_past_bandwidth_wait_max_fails_rate_capped_without_waiting():
    # 100 B/s, 1 s allowed in total: two chunks of 50 wait 0.5 s each, the third fails
    b, t = bucket(100, burst=1, wait_max=1.0)
    closed: list[bool] = []
    got = []
    with pytest.raises(RateCapped) as e:
        for chunk in throttled(_source([b"x" * 51, b"y" * 50, b"z" * 50, b"w"], closed), b):
            got.append(chunk)
    assert got == [b"x" * 51, b"y" * 50]
    assert t.waits == [pytest.approx(0.5), pytest.approx(0.5)]  # the third never waited
    assert closed == [True]
    assert e.value.retryable and e.value.failure_class == "bandwidth"
    assert e.value.report_code == 499
    assert "bandwidth_wait_max 1 s" in str(e.value)


def test_each_transfer_counts_its_own_waits():
    b, t = bucket(100, burst=1, wait_max=1.0)
    for _ in range(3):  # each within the limit, together far past it
        assert len(list(throttled(_source([b"x" * 51, b"y" * 50], []), b))) == 2
        t.now += 10.0  # idle between transfers: the bucket refills its burst
    assert sum(t.waits) == pytest.approx(3.0)


def test_without_a_wait_limit_a_transfer_waits_as_long_as_the_cap_requires():
    b, t = bucket(100, burst=1)
    assert len(list(throttled(_source([b"x" * 1000] * 5, []), b))) == 5
    assert sum(t.waits) == pytest.approx(50.0, rel=1e-3)


def test_a_put_past_bandwidth_wait_max_fails_rate_capped():
    b, t = bucket(1 << 20, burst=1, wait_max=2.0)
    target = io.BytesIO()
    with pytest.raises(RateCapped):
        copy_range(io.BytesIO(b"z" * (3 << 20)), target, 0, None, throttle_callback(b))
    assert sum(t.waits) <= 2.0
    assert target.tell() < 3 << 20  # stopped before the last chunk was written
    # a new callback per transfer: a small put passes
    assert copy_range(io.BytesIO(b"z" * (1 << 20)), io.BytesIO(), 0, None, throttle_callback(b))


def test_the_bandwidth_class_names_its_option():
    assert "bandwidth_wait_max" in FAILURE_CLASSES["bandwidth"][1]


def test_the_message_limiter_spreads_notices_evenly():
    t = FakeTime()
    m = TokenBucket(4, burst=1.0, clock=t.clock, wait=t.wait)
    for _ in range(9):
        m.take(1)
    assert t.now - 1000.0 == pytest.approx(2.0)


@pytest.mark.parametrize(
    "kbytes_ps, byte_rate_max, cap",
    [(0, 0, 0), (500, 0, 512_000), (0, 500_000, 500_000), (500, 500_000, 500_000),
     (100, 500_000, 102_400)],
)  # fmt: skip
def test_the_cap_is_the_smaller_of_the_two_byte_settings(kbytes_ps, byte_rate_max, cap):
    assert byte_rate(kbytes_ps, byte_rate_max) == cap


@pytest.mark.parametrize(
    "text, value",
    [("500", 500), ("500k", 500_000), ("500K", 500_000), ("1.5m", 1_500_000),
     ("2g", 2_000_000_000), ("500ki", 512_000), ("500kb", 512_000), ("500kib", 512_000),
     ("1mi", 1 << 20), ("100b", 100), ("0", 0)],
)  # fmt: skip
def test_byte_rate_max_reads_suffixes_as_sr3_does(text, value):
    assert parse_rate(text) == value


@pytest.mark.parametrize("text", ["", "fast", "-5k", "5x", "1.2.3k"])
def test_a_bad_rate_is_refused(text):
    with pytest.raises(ValueError):
        parse_rate(text)


@pytest.mark.parametrize("text", ["-1", "x", "inf", "nan"])
def test_a_bad_message_rate_is_refused(text):
    with pytest.raises(ValueError):
        parse_float(text)


def test_bandwidth_wait_max_loads_as_a_duration_default_zero(tmp_path: Path):
    conf = tmp_path / "config" / "subscribe"
    conf.mkdir(parents=True)
    (conf / "w.conf").write_text("bandwidth_wait_max 10m\n")
    (conf / "d.conf").write_text("kbytes_ps 5\n")
    env = {"SR_CONFIG_DIR": str(tmp_path / "config"), "HOME": str(tmp_path)}
    for name, seconds in (("w", 600.0), ("d", 0.0)):
        s = Settings.from_config(load_config("subscribe", name, (), env=env))
        assert s.bandwidth_wait_max == seconds


def test_sr2_and_sr3_spellings_load_into_typed_settings(tmp_path: Path):
    conf = tmp_path / "config" / "subscribe"
    conf.mkdir(parents=True)
    (conf / "r.conf").write_text("kbytes_ps 500\nbyteRateMax 1.5m\nmessageRateMax 2.5\n")
    env = {"SR_CONFIG_DIR": str(tmp_path / "config"), "HOME": str(tmp_path)}
    s = Settings.from_config(load_config("subscribe", "r", (), env=env))
    assert s.kbytes_ps == 500
    assert s.byte_rate_max == 1_500_000
    assert s.message_rate_max == 2.5
    assert byte_rate(s.kbytes_ps, s.byte_rate_max) == 512_000
    table = options_table()
    assert table.resolve("byteRateMax") is table["byte_rate_max"]
    assert table.resolve("messageRateMax") is table["message_rate_max"]


@pytest.mark.parametrize(
    "rate, size",
    [(None, BUFFER_SIZE), (2 << 20, 512 << 10), (1_000_000, 249_856), (10 << 10, READ_MIN),
     (1 << 30, BUFFER_SIZE)],
)  # fmt: skip
def test_downloads_under_a_limit_read_about_a_quarter_second_at_a_time(rate, size):
    limiter = None if rate is None else TokenBucket(rate)
    got = read_size(limiter)
    assert got == size
    assert got % DIRECT_ALIGN == 0
