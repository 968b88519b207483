"""Two instances of one subscriber on one queue share their file-system barriers
(sarra.localfs.groupsync): every file arrives intact, and no instance acks a file before a
barrier that followed its rename (nor renames one before a barrier that followed its data)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from sarra.broker.session import BrokerSession
from sarra.components.subscribe import SubscribeComponent
from sarra.flow.engine import ConsumingLoop
from sarra.localfs import groupsync
from sarra.localfs.confined import InflightFile
from sarra.localfs.groupsync import GroupSync
from tests.integration.flowkit import md5_tree, post, site_env, unique, wait_for

pytestmark = pytest.mark.skipif(not groupsync.available(), reason="Linux syncfs only")


class Events:
    """What each flow thread did, in order: barrier, rename, ack."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_thread: dict[int, list[str]] = {}
        self.acked = 0

    def add(self, what: str, n: int = 0) -> None:
        with self.lock:
            self.by_thread.setdefault(threading.get_ident(), []).append(what)
            if what == "ack":
                self.acked += n


def traced(monkeypatch: pytest.MonkeyPatch) -> Events:
    """Record every flow thread's shared barriers, renames and acks, in order."""
    events = Events()
    barrier, commit, ack = GroupSync.barrier, InflightFile.commit, ConsumingLoop._ack

    def traced_barrier(self: GroupSync, fd: int, written: int) -> bool:
        ran = barrier(self, fd, written)
        events.add("barrier")
        return ran

    def traced_commit(self: InflightFile, *a: Any, **k: Any) -> None:
        commit(self, *a, **k)
        events.add("rename")

    def traced_ack(self: ConsumingLoop, acks: list[Any]) -> None:
        if acks:
            events.add("ack", len(acks))
        ack(self, acks)

    monkeypatch.setattr(GroupSync, "barrier", traced_barrier)
    monkeypatch.setattr(InflightFile, "commit", traced_commit)
    monkeypatch.setattr(ConsumingLoop, "_ack", traced_ack)
    return events


def _consumers(site: Any, queue: str) -> int:
    probe = BrokerSession(site.broker_url(), name="probe")
    probe.connect()
    try:
        return probe.queue_counts(queue)[1]
    finally:
        probe.close()


@contextmanager
def running_instances(site: Any, name: str, count: int) -> Iterator[None]:
    """Run instances 0..count-1 of a subscribe config, each in its own thread."""
    stop = threading.Event()
    errors: list[BaseException] = []
    with site_env(site):
        cfg = site.load("subscribe", name)
        component = SubscribeComponent()
        component.declare(cfg)

        def target(n: int) -> None:
            try:
                component.run(cfg, n, stop)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=target, args=(n,), daemon=True) for n in range(count)]
        for t in threads:
            t.start()
        try:
            yield
        finally:
            stop.set()
            for t in threads:
                t.join(60)
    assert not any(t.is_alive() for t in threads), "an instance did not stop within 60 s"
    if errors:
        raise errors[0]


def mirror_and_check(  # type: ignore[no-untyped-def]
    site,
    nginx,
    tmp_path,
    events: Events,
    prefix: str,
    *,
    files: int,
    dirs: int,
    instances: int = 1,
    extra: str = "",
):
    """Post ``files`` files of varied sizes in ``dirs`` directories to ``instances`` running
    instances of a mirroring subscriber (prefetch 10, plus the ``extra`` lines); return once
    every file is acked, each identical to its source and no in-flight name left."""
    tag = unique(prefix)
    src = nginx.root / tag
    for i in range(files):
        p = src / f"d{i % dirs}/f{i:03d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(bytes([i % 251]) * (700 + 37 * i))
    dest = tmp_path / "dest"
    queue = f"q_guest.{tag}"
    lines = f"instances {instances}\nprefetch 10\nqueue_name {queue}\n{extra}"
    name = site.mirror_subscription(tag, dest, lines)
    with running_instances(site, name, instances):
        wait_for(lambda: _consumers(site, queue) == instances, 60, "every instance consuming")
        assert post(site, nginx.base_url, nginx.root, [src]) == 0
        wait_for(lambda: events.acked >= files, timeout=60, what="every file acked")
    assert md5_tree(dest) == md5_tree(src)
    assert not [p for p in dest.rglob("*") if p.is_file() and "~sr" in p.name]


def test_two_instances_share_barriers_and_ack_only_durable_files(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path, monkeypatch
):
    events = traced(monkeypatch)

    mirror_and_check(site, nginx, tmp_path, events, "inst", files=120, dirs=3, instances=2)
    flows = [seq for seq in events.by_thread.values() if "rename" in seq or "ack" in seq]
    assert len(flows) == 2, "both instances placed files"
    for seq in flows:
        assert "barrier" in seq  # the group barrier is in use
        since_barrier = {"rename": False, "ack": False}
        for what in seq:
            if what == "barrier":
                since_barrier = {"rename": False, "ack": False}
            elif what == "rename":
                # the data barrier precedes the batch's renames: no rename right after an ack
                assert not since_barrier["ack"], f"renamed with no barrier since an ack: {seq}"
                since_barrier["rename"] = True
            elif what == "ack":
                # the renames before it were made durable by a barrier first
                assert not since_barrier["rename"], f"acked a rename before a barrier: {seq}"
                since_barrier["ack"] = True


@pytest.mark.parametrize(("line", "shared"), [("", True), ("sync_barrier files\n", False)])
def test_one_instance_uses_the_syncfs_barrier_unless_told_files(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path, monkeypatch, line, shared
):
    """A single instance takes the shared syncfs barrier by default (sync_barrier
    filesystem); ``sync_barrier files`` leaves each batch to its own fsyncs. Every file
    arrives intact and is acked either way."""
    events = traced(monkeypatch)

    mirror_and_check(site, nginx, tmp_path, events, "one", files=40, dirs=2, extra=line)
    barriers = sum(seq.count("barrier") for seq in events.by_thread.values())
    assert (barriers > 0) is shared, f"{barriers} shared barriers with {line!r}"
