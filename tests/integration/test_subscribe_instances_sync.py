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
    """Every shared barrier, rename and ack, in the order they happened, with the thread that
    made it and the files it was about."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_thread: dict[int, list[str]] = {}
        self.log: list[tuple[str, tuple[str, ...]]] = []
        self.acked = 0

    def add(self, what: str, names: tuple[str, ...] = ()) -> None:
        with self.lock:
            self.by_thread.setdefault(threading.get_ident(), []).append(what)
            self.log.append((what, names))
            if what == "ack":
                self.acked += len(names)

    def check_durable_before_ack(self) -> int:
        """Each acked file was renamed, then a shared barrier ran, then it was acked (the
        renames run in an instance's commit thread, the acks in its flow thread). Returns
        how many acks were checked."""
        renamed_at: dict[str, int] = {}
        last_barrier = -1
        checked = 0
        for at, (what, names) in enumerate(self.log):
            if what == "barrier":
                last_barrier = at
            elif what == "rename":
                renamed_at[names[0]] = at
            else:
                for name in names:
                    assert name in renamed_at, f"acked {name} before its rename"
                    assert renamed_at[name] < last_barrier, f"acked {name} with no barrier since"
                    checked += 1
        return checked


def traced(monkeypatch: pytest.MonkeyPatch) -> Events:
    """Record every shared barrier, rename and ack, in order."""
    events = Events()
    barrier, commit, ack = GroupSync.barrier, InflightFile.commit, ConsumingLoop._ack

    def traced_barrier(self: GroupSync, fd: int, written: int) -> bool:
        ran = barrier(self, fd, written)
        events.add("barrier")
        return ran

    def traced_commit(self: InflightFile, rel: str, *a: Any, **k: Any) -> None:
        commit(self, rel, *a, **k)
        events.add("rename", (rel.rsplit("/", 1)[-1],))

    def traced_ack(self: ConsumingLoop, acks: list[Any]) -> None:
        if acks:
            names = tuple(d.message.body.decode().rsplit("/", 1)[-1] for d in acks)
            events.add("ack", names)
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
    renamers = [seq for seq in events.by_thread.values() if "rename" in seq]
    ackers = [seq for seq in events.by_thread.values() if "ack" in seq]
    assert len(renamers) == len(ackers) == 2, "both instances placed and acked files"
    for seq in renamers:
        assert seq[0] == "barrier", "a batch's data barrier comes before its renames"
    assert events.check_durable_before_ack() >= 120


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
