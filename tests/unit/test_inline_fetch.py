"""Small whole files from a near http(s) origin are fetched in the flow thread (no hand-off
to the pool and back); anything else, a failure, or a slow origin goes to the pool."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sarra.errors import TransportUnavailable
from sarra.flow import download as download_mod
from sarra.flow.download import (
    INLINE_MAX,
    INLINE_TIMEOUT,
    Destination,
    Downloader,
    DownloadSettings,
)
from sarra.flow.hooks import Plugins
from sarra.flow.ratelimit import TokenBucket
from sarra.flow.work import WorkItem
from sarra.notice import Checksum, Notice, PartSpec, frozen_headers

DATA = b"small file bytes\n" * 10


class FakeTransport:
    """Serves DATA for every URL; counts GETs and the threads that made them."""

    def __init__(self, timeout: float, *, fail: bool = False, delay: float = 0.0) -> None:
        self.timeout = timeout
        self.fail = fail
        self.delay = delay
        self.gets: list[int] = []  # thread idents
        self.closed = False
        self.trickle = False

    def get(self, url: str) -> Iterator[bytes]:
        self.gets.append(threading.get_ident())
        if self.delay:
            time.sleep(self.delay)
        if self.trickle:
            # a byte now and then inside one read (a buffered read loops over short reads
            # until it has its chunk): no read timeout, no chunk boundary, until aborted
            while not self.closed:
                time.sleep(0.01)
            raise TransportUnavailable(f"{url}: aborted")
        if self.fail:
            raise TransportUnavailable(f"{url}: connection refused")
        yield DATA

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class Origins:
    """Replaces open_transport: every transport made, with its timeout."""

    def __init__(self) -> None:
        self.made: list[FakeTransport] = []
        self.fail = False
        self.delay = 0.0
        self.trickle = False

    def __call__(self, url: str, **kw: Any) -> FakeTransport:
        t = FakeTransport(kw["timeout"], fail=self.fail, delay=self.delay)
        t.trickle = self.trickle
        self.made.append(t)
        return t


@pytest.fixture
def origins(monkeypatch: pytest.MonkeyPatch) -> Origins:
    o = Origins()
    monkeypatch.setattr(download_mod, "open_transport", o)
    return o


def _notice(name: str, *, size: int = len(DATA), base: str = "http://origin.test/",
            method: str = "1", data: bytes = DATA) -> Notice:  # fmt: skip
    parts = PartSpec(method, size, 1 if method == "1" else 2, 0, 0)
    return Notice(
        exchange="xpublic", topic="v02.post.a", pubtime="20260101000000", base_url=base,
        rel_path=f"/a/{name}", path=f"a/{name}", headers=frozen_headers({}),
        checksum=Checksum("d", hashlib.md5(data).hexdigest()), parts=parts,
    )  # fmt: skip


def _downloader(tmp_path: Path, **kw: Any) -> Downloader:
    def resolve(n: Notice) -> Destination:
        return Destination(str(tmp_path / "dest"), n.path)

    return Downloader(DownloadSettings(base_url_private=True), resolve,
                      kw.pop("plugins", Plugins()), batch_commit=True, **kw)  # fmt: skip


def _selected(d: Downloader, notice: Notice) -> WorkItem:
    item = WorkItem(notice)
    assert d.select(item)
    return item


def test_a_small_whole_file_is_fetched_in_the_calling_thread_and_staged_for_the_batch(
    tmp_path: Path, origins: Origins, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the barrier rule is another test's: a slow disk under load must not turn inline off here
    monkeypatch.setattr(download_mod, "INLINE_BARRIER_MAX", 3600.0)
    d = _downloader(tmp_path)
    item = _selected(d, _notice("f1"))
    assert d.work_inline(item) is True
    assert item.code == 201
    (transport,) = origins.made
    assert transport.gets == [threading.get_ident()]
    # the flow thread's own connection gives up sooner than the pool's
    assert transport.timeout == min(INLINE_TIMEOUT, DownloadSettings().timeout)
    # staged, not yet placed: the batch commit (barrier, then rename) places it
    assert item.staged is not None
    assert not (tmp_path / "dest" / "a" / "f1").exists()
    d.commit_batch([item])
    d.sync()
    assert (tmp_path / "dest" / "a" / "f1").read_bytes() == DATA
    # the next file reuses the connection
    item2 = _selected(d, _notice("f2"))
    assert d.work_inline(item2) is True
    assert len(origins.made) == 1 and len(transport.gets) == 2
    d.commit_batch([item2])
    d.close()
    assert transport.closed


def test_the_pool_gets_its_own_connections_with_the_usual_timeout(
    tmp_path: Path, origins: Origins
) -> None:
    d = _downloader(tmp_path)
    assert d.work_inline(_selected(d, _notice("f1"))) is True
    pool_item = _selected(d, _notice("f2"))
    worker = threading.Thread(target=d.work, args=(pool_item,))
    worker.start()
    worker.join()
    assert pool_item.code == 201
    inline_t, pool_t = origins.made
    assert pool_t.timeout == DownloadSettings().timeout
    assert inline_t.timeout == min(INLINE_TIMEOUT, DownloadSettings().timeout)
    assert pool_t.gets == [worker.ident]
    d.close()


@pytest.mark.parametrize(
    "why, notice, kw",
    [
        ("larger than INLINE_MAX", _notice("big", size=INLINE_MAX + 1), {}),
        ("a block of a file", _notice("part", method="i"), {}),
        ("an sftp origin", _notice("s", base="sftp://origin.test/"), {}),
        ("a byte rate limit", _notice("lim"), {"limiter": TokenBucket(1e9)}),
    ],
)
def test_other_work_goes_to_the_pool_untouched(
    tmp_path: Path, origins: Origins, why: str, notice: Notice, kw: dict[str, Any]
) -> None:
    d = _downloader(tmp_path, **kw)
    item = WorkItem(notice)
    item.dest_root, item.dest_rel = str(tmp_path / "dest"), notice.path
    assert d.work_inline(item) is False, why
    assert item.code is None and item.staged is None
    assert origins.made == []
    d.close()


def test_with_plugins_nothing_is_fetched_inline(tmp_path: Path, origins: Origins) -> None:
    class OnFile:
        def on_file(self, work: WorkItem) -> None:
            pass

    plugins = Plugins()
    plugins.register("on_file_test", OnFile())
    d = _downloader(tmp_path, plugins=plugins)
    item = _selected(d, _notice("f1"))
    assert d.work_inline(item) is False
    assert origins.made == [] and item.code is None
    d.close()


def test_a_failed_inline_fetch_leaves_the_item_and_the_origin_to_the_pool(
    tmp_path: Path, origins: Origins, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download_mod, "INLINE_BACKOFF", 0.2)
    origins.fail = True
    d = _downloader(tmp_path)
    item = _selected(d, _notice("f1"))
    assert d.work_inline(item) is False
    # as it was: the pool fetches it with its attempts and failure handling
    assert item.code is None and item.message == "" and item.staged is None
    assert item.error is None
    assert not (tmp_path / "dest" / "a").exists() or list((tmp_path / "dest" / "a").iterdir()) == []
    (broken,) = origins.made
    assert broken.closed  # dropped: the next inline fetch connects afresh
    origins.fail = False
    # the origin is the pool's for INLINE_BACKOFF: no inline fetch meanwhile
    item2 = _selected(d, _notice("f2"))
    assert d.work_inline(item2) is False
    assert len(origins.made) == 1 and item2.code is None
    # once the backoff is over it is tried inline again
    time.sleep(0.3)
    item4 = _selected(d, _notice("f4"))
    assert d.work_inline(item4) is True and item4.code == 201
    d.commit_batch([item4])
    d.close()


def test_an_origin_slower_than_inline_slow_on_every_fetch_of_a_window_goes_to_the_pool(
    tmp_path: Path, origins: Origins, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download_mod, "INLINE_SLOW", 0.005)
    origins.delay = 0.01
    d = _downloader(tmp_path)
    items = []
    for i in range(download_mod.INLINE_WINDOW):
        item = _selected(d, _notice(f"s{i}"))
        assert d.work_inline(item) is True  # done inline while the window fills
        items.append(item)
    late = _selected(d, _notice("late"))
    assert d.work_inline(late) is False and late.code is None  # the pool's now
    d.commit_batch(items)
    d.close()


def test_one_fast_fetch_in_a_window_keeps_a_busy_but_near_origin_inline(
    tmp_path: Path, origins: Origins, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loaded machine stalls now and then; a far origin is slow every time."""
    monkeypatch.setattr(download_mod, "INLINE_SLOW", 0.005)
    d = _downloader(tmp_path)
    items = []
    for i in range(download_mod.INLINE_WINDOW * 2 + 1):
        origins.delay = 0.0 if i % download_mod.INLINE_WINDOW == 1 else 0.01
        for t in origins.made:
            t.delay = origins.delay
        item = _selected(d, _notice(f"n{i}"))
        assert d.work_inline(item) is True, i
        items.append(item)
    d.commit_batch(items)
    d.close()


def test_a_trickling_origin_is_aborted_inline_after_inline_timeout_and_left_to_the_pool(
    tmp_path: Path, origins: Origins, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No read ever times out on an origin sending a byte now and then: the watchdog aborts
    the inline fetch so that the flow thread is free again (the pool fetches it)."""
    monkeypatch.setattr(download_mod, "INLINE_TIMEOUT", 0.3)
    origins.trickle = True
    d = _downloader(tmp_path)
    item = _selected(d, _notice("slow", size=INLINE_MAX))
    started = time.monotonic()
    assert d.work_inline(item) is False
    assert time.monotonic() - started < 3.0
    assert item.code is None and item.staged is None
    assert not (tmp_path / "dest" / "a").exists() or list((tmp_path / "dest" / "a").iterdir()) == []
    d.close()


def test_a_stop_aborts_a_running_inline_fetch_at_once(
    tmp_path: Path, origins: Origins, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()
    origins.trickle = True
    d = _downloader(tmp_path, interrupt=stop)
    item = _selected(d, _notice("slow", size=INLINE_MAX))
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert d.work_inline(item) is False  # the pool then abandons it (stopping)
    assert time.monotonic() - started < 1.5  # not INLINE_TIMEOUT (2 s)
    assert item.code is None and item.staged is None
    d.close()


def test_a_slow_batch_barrier_sends_work_to_the_pool_until_a_barrier_is_quick_again(
    tmp_path: Path, origins: Origins, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a disk the barrier's fsyncs take time, and the flow thread runs the barrier: the
    pool then downloads meanwhile; on a file system where they are quick, inline again."""
    # "quick" with a margin a loaded test machine keeps (renames alone took over 5 ms there)
    monkeypatch.setattr(download_mod, "INLINE_BARRIER_MAX", 0.25)
    d = _downloader(tmp_path)
    first = _selected(d, _notice("f1"))
    assert d.work_inline(first) is True

    def slow_sync(files: object) -> None:
        time.sleep(download_mod.INLINE_BARRIER_MAX * 4)

    monkeypatch.setattr(download_mod, "sync_files", slow_sync)
    d.commit_batch([first])
    second = _selected(d, _notice("f2"))
    assert d.work_inline(second) is False and second.code is None
    monkeypatch.setattr(download_mod, "sync_files", lambda files: None)
    pooled = _selected(d, _notice("f3"))
    d.work(pooled)  # as a pool thread would
    d.commit_batch([pooled])
    third = _selected(d, _notice("f4"))
    assert d.work_inline(third) is True
    d.commit_batch([third])
    d.close()
