"""stream(): where the hash runs (helper thread or the caller's) never changes what it covers."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator

import pytest

from sarra.errors import IntegrityError
from sarra.localfs import streaming
from sarra.localfs.streaming import stream

CHUNK = 1 << 16
DATA = os.urandom(9 * CHUNK + 777)


class _Recorder:
    """An md5 that notes which thread hashed each update, and its size."""

    def __init__(self) -> None:
        self.md5 = hashlib.md5()
        self.calls: list[tuple[str, int]] = []

    def update(self, data: bytes | memoryview, /) -> None:
        self.calls.append((threading.current_thread().name, len(data)))
        self.md5.update(data)


def _chunks(data: bytes = DATA) -> Iterator[memoryview]:
    # two buffers used in turn, as aligned_chunks does: a stale view would hash wrong bytes
    buffers = [bytearray(CHUNK), bytearray(CHUNK)]
    for turn, at in enumerate(range(0, len(data), CHUNK)):
        piece = data[at : at + CHUNK]
        buf = buffers[turn % 2]
        buf[: len(piece)] = piece
        yield memoryview(buf)[: len(piece)]


def _run(data: bytes = DATA, limit: int | None = None) -> tuple[_Recorder, bytearray]:
    out = bytearray(len(data))
    rec = _Recorder()

    def write(view: memoryview, offset: int) -> None:
        out[offset : offset + len(view)] = view

    got = stream(_chunks(data), rec, write, limit=limit, what="t")
    assert got == len(data)
    return rec, out


@pytest.mark.parametrize(("cpus", "helper"), [(64, True), (1, False)], ids=["overlap", "inline"])
def test_every_byte_written_is_hashed_in_order_on_either_side(
    monkeypatch: pytest.MonkeyPatch, cpus: int, helper: bool
) -> None:
    monkeypatch.setattr(streaming, "CPUS", cpus)
    rec, out = _run()
    assert bytes(out) == DATA
    assert rec.md5.hexdigest() == hashlib.md5(DATA).hexdigest()
    names = {name for name, _ in rec.calls}
    assert all(n.startswith("hash") for n in names) is helper
    assert (threading.current_thread().name in names) is not helper
    assert sum(n for _, n in rec.calls) == len(DATA)


def test_a_stream_switches_side_as_others_start_and_still_hashes_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 2 CPUs: alone, a stream overlaps; once another stream runs, it hashes inline
    monkeypatch.setattr(streaming, "CPUS", 2)
    other = streaming._STREAMS
    switched = {"done": False}

    def chunks() -> Iterator[memoryview]:
        for i, view in enumerate(_chunks()):
            if i == 4 and not switched["done"]:
                with other._lock:
                    other.active += 1  # a second transfer starts now
                switched["done"] = True
            yield view

    rec = _Recorder()
    out = bytearray(len(DATA))

    def write(view: memoryview, offset: int) -> None:
        out[offset : offset + len(view)] = view

    try:
        assert stream(chunks(), rec, write, what="t") == len(DATA)
    finally:
        with other._lock:
            other.active -= 1
    assert bytes(out) == DATA and rec.md5.hexdigest() == hashlib.md5(DATA).hexdigest()
    sides = [name.startswith("hash") for name, _ in rec.calls]
    assert sides[:4] == [True] * 4 and not any(sides[4:])
    assert streaming._STREAMS.active == 0


@pytest.mark.parametrize("cpus", [64, 1], ids=["overlap", "inline"])
def test_the_stream_count_is_released_on_failure(
    monkeypatch: pytest.MonkeyPatch, cpus: int
) -> None:
    monkeypatch.setattr(streaming, "CPUS", cpus)
    with pytest.raises(IntegrityError, match="more than"):
        _run(limit=len(DATA) - 1)
    assert streaming._STREAMS.active == 0
