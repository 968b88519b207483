"""Receiving the blocks of a multi-part file (spec 6.6 to 6.8).

``inplace on``: each block is fetched (an HTTP range for ``i``, the whole ``.Part`` object for
``p``), hashed while streaming into the version's shared in-flight data file at its offset,
verified against the block's sum, fsync'd, and only then marked present in the
:class:`~sarra.parts.tracker.PartTracker`. Exactly one caller gets the completion: the file
is then already under its final name; that caller runs ``on_file`` once and records it.

``inplace off``: each block is kept as its own verified ``.Part`` file (spec 6.7 naming).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sarra.codec import v02
from sarra.errors import IntegrityError, MalformedMessage, MessageError
from sarra.flow.ratelimit import Limiter, TokenBucket, read_size, throttled
from sarra.flow.wholefile import download_to
from sarra.flow.work import PartState, WorkItem
from sarra.integrity.sums import new_hasher
from sarra.localfs.confined import SafeRoot
from sarra.localfs.streaming import DIRECT_MIN, interruptible, stream
from sarra.notice import VERIFIABLE_SUMS, Checksum, Notice, PartSpec
from sarra.parts import growing
from sarra.parts.arithmetic import parse_part_suffix, part_suffix
from sarra.parts.tracker import DEFAULT_EXPIRY, Marked, MarkStatus, PartTracker, Ticket
from sarra.transfer.base import Transport
from sarra.transfer.chunks import aligned_chunks

if TYPE_CHECKING:
    from sarra.flow.bandwidth import Bandwidth

log = logging.getLogger(__name__)


class PartReceiver:
    """Places the blocks of multi-part files for one component instance.

    ``state_dir`` holds the trackers (one per destination root); ``on_file`` is the
    component's once-per-file hook (plugins), called with the work item of the block that
    completed the file.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        inplace: bool,
        inflight: str | None,
        on_file: Callable[[WorkItem], None],
        on_part: Callable[[WorkItem], None] | None = None,
        expiry: float = DEFAULT_EXPIRY,
        interrupt: threading.Event | None = None,
        limiter: TokenBucket | None = None,
        bandwidth: Bandwidth | None = None,
    ) -> None:
        self.state_dir = state_dir
        #: set when the instance stops: transfers are abandoned between two chunks
        self.interrupt = interrupt
        #: the instance's byte rate limit (None: unlimited)
        self.limiter = limiter
        self.bandwidth = bandwidth
        self.inplace = inplace
        self.inflight = inflight
        self.on_file = on_file
        #: the per-block hook (plugins), after a block is verified and written
        self.on_part = on_part
        self.expiry = expiry
        self._trackers: dict[str, PartTracker] = {}
        self._lock = threading.Lock()

    def _limiter(self, notice: Notice) -> Limiter | None:
        """The limiter of a transfer for ``notice``: the pump-wide caps of its source (with
        the instance's own limit) when there are any, else the instance's limit."""
        if self.bandwidth is None:
            return self.limiter
        return self.bandwidth.limiter(notice.header("source"))

    def tracker(self, root: SafeRoot) -> PartTracker:
        key = hashlib.sha256(str(root.root).encode()).hexdigest()[:16]
        with self._lock:
            tracker = self._trackers.get(key)
            if tracker is None:
                tracker = PartTracker(self.state_dir / "parts" / key, root)
                self._trackers[key] = tracker
            return tracker

    # -- one block -----------------------------------------------------------------------------

    def receive(
        self,
        item: WorkItem,
        root: SafeRoot,
        rel: str,
        url: str,
        transport: Transport,
        *,
        mtime: float | None,
        mode: int | None,
    ) -> None:
        """Fetch, verify and place one block; settle ``item`` with the outcome."""
        notice = item.notice
        spec = notice.parts
        assert spec is not None and not spec.whole
        target_rel, _ = block_paths(rel, spec, notice.checksum.letter)
        # a p block is its own object
        remote_offset = 0 if spec.method == "p" else spec.offset
        if not self.inplace:
            self._keep_part(item, root, rel, target_rel, url, transport, remote_offset, mtime)
            return
        tracker = self.tracker(root)
        version = notice_version(notice)
        growth = notice.header(growing.HEADER)
        growth_id, final = growing.parse_header(growth) if growth is not None else ("", False)
        # a p block (its own .Part object upstream) lands at its offset like an i block
        tracked = PartSpec(
            "i", spec.block_size, spec.block_count, spec.remainder, spec.block_number
        )
        ticket = tracker.begin(
            target_rel,
            tracked,
            growth_id or version,
            mtime=mtime,
            mode=mode,
            about=_about(notice),
            growing=growth is not None,
            final=final,
        )
        try:
            marked = self._write_block(item, tracker, ticket, transport, url, remote_offset)
        except BaseException:
            # a failed block (416, short, corrupt, disk full...) of a version with nothing
            # else in it releases the data file and record now, not after part_expiry
            if tracker.abandon(ticket):
                log.info("%s: released the reassembly file of a failed block", target_rel)
            raise
        item.dest_rel = target_rel
        if marked is None:
            return
        status = marked.status
        item.part = PartState.INSERTED
        if status is MarkStatus.COMPLETE:
            item.part = PartState.COMPLETE
            completion = marked.completion
            assert completion is not None
            item.size = completion.file_size
            if completion.block_sums is not None:
                item.whole = (completion.file_size, completion.block_sums)
            item.settle(201, "Downloaded")
            try:
                self._part_done(item)
                self.on_file(item)
            finally:
                tracker.finish(completion)  # on_file is never offered again
            return
        if status is MarkStatus.RECORDED:
            item.size = spec.length
            of = f"{marked.count}+" if growth is not None and not final else f"{marked.count}"
            item.settle(201, f"Inserted (block {marked.present} of {of})")
            self._part_done(item)
        elif status is MarkStatus.STALE:
            item.settle(304, "superseded by a newer version of the file")
        else:
            item.settle(304, f"not modified (block {status.value})")

    def _write_block(
        self,
        item: WorkItem,
        tracker: PartTracker,
        ticket: Ticket,
        transport: Transport,
        url: str,
        remote_offset: int,
    ) -> Marked | None:
        """Fetch, verify and write ``ticket``'s block, then mark it present; None when the
        version was already complete (``item`` is then settled 304). Closes the ticket.

        Space for the block is reserved only once its data arrives (:meth:`Ticket.reserve`).
        """
        notice = item.notice
        spec = notice.parts
        assert spec is not None
        with ticket:
            if ticket.done:
                item.part = PartState.DONE
                # for a pump that announces it again after a redelivery
                item.whole = tracker.block_sums(ticket)
                item.settle(304, "not modified (this version is complete)")
                return None
            if ticket.needs():
                limiter = self._limiter(notice)
                chunks: Iterator[bytes | memoryview]
                write: Callable[[memoryview, int], None]
                if spec.length >= DIRECT_MIN:
                    chunks = aligned_chunks(
                        transport, url, remote_offset, spec.length, read_size(limiter)
                    )
                    write = ticket.pwrite_aligned
                else:
                    chunks = iter(transport.get(url, remote_offset, spec.length))
                    write = ticket.pwrite
                computed = _stream_block(
                    interruptible(throttled(chunks, limiter), self.interrupt),
                    notice.checksum,
                    spec,
                    write,
                    f"{ticket.final_rel} block {spec.block_number}",
                    reserve=ticket.reserve,
                )
                ticket.fsync()  # durable before it is marked present
                item.computed = computed
            kept_sum = item.computed or notice.checksum
            return tracker.mark(ticket, block_sum=kept_sum.wire())

    def _keep_part(
        self,
        item: WorkItem,
        root: SafeRoot,
        rel: str,
        target_rel: str,
        url: str,
        transport: Transport,
        remote_offset: int,
        mtime: float | None,
    ) -> None:
        """inplace off: the block becomes its own verified ``.Part`` file."""
        notice = item.notice
        spec = notice.parts
        assert spec is not None
        _, part_rel = block_paths(rel, spec, notice.checksum.letter)
        root.check_relpath(part_rel)
        limiter = self._limiter(notice)
        result = download_to(
            root,
            part_rel,
            interruptible(
                throttled(
                    (
                        aligned_chunks(
                            transport, url, remote_offset, spec.length, read_size(limiter)
                        )
                        if spec.length >= DIRECT_MIN
                        else transport.get(url, remote_offset, spec.length)
                    ),
                    limiter,
                ),
                self.interrupt,
            ),
            expected_size=spec.length,
            checksum=notice.checksum,
            inflight=self.inflight,
            mtime=mtime,
            mode=None,
            sync_dir=False,
        )
        item.dest_rel = part_rel
        item.part = PartState.KEPT
        item.size = result.size
        item.computed = result.checksum
        item.settle(201, "Downloaded (part kept as .Part)")
        self._part_done(item)

    def _part_done(self, item: WorkItem) -> None:
        if self.on_part is not None:
            self.on_part(item)

    # -- housekeeping --------------------------------------------------------------------------

    def housekeeping(self, report: Callable[[Notice, int, str], None] | None = None) -> None:
        """Finish completions of dead instances; expire versions that never complete.

        Each expired version is logged and, with ``report``, reported 499 about the notice of
        the block that started it (spec 6.8).
        """
        with self._lock:
            trackers = list(self._trackers.values())
        for tracker in trackers:
            for completion in tracker.recover():
                log.info("%s: completing a file left by a stopped instance", completion.final_rel)
                tracker.finish(completion)
            for expired in tracker.expire(self.expiry):
                log.error(
                    "499 %s: gave up on version %s after %.0fs: %d of %d blocks arrived",
                    expired.final_rel,
                    expired.version,
                    self.expiry,
                    expired.present,
                    expired.block_count,
                )
                notice = _notice_from(expired.about)
                if report is not None and notice is not None:
                    report(
                        notice,
                        499,
                        f"gave up after {self.expiry:.0f}s: "
                        f"{expired.present} of {expired.block_count} blocks arrived",
                    )


def block_paths(rel: str, spec: PartSpec, letter: str) -> tuple[str, str]:
    """(the file a block of ``rel`` belongs to, the ``.Part`` file it is kept as with
    ``inplace off``). Raises MalformedMessage for a ``p`` block without a .Part suffix."""
    if spec.method == "p":
        parsed = parse_part_suffix(rel)
        if parsed is None:
            raise MalformedMessage(f"p block {rel!r} has no .Part suffix")
        return parsed[0], rel
    name = rel.rsplit("/", 1)
    suffix = part_suffix(name[-1], spec, letter)
    return rel, f"{name[0]}/{suffix}" if len(name) == 2 else suffix


def _about(notice: Notice) -> dict[str, Any]:
    """A JSON-able copy of ``notice`` kept by the tracker, to report an expired version."""
    wire = v02.to_wire(notice, header_value_max=1 << 20)
    return {
        "exchange": wire.exchange,
        "routing_key": wire.routing_key,
        "body": wire.body.decode("utf-8"),
        "headers": dict(wire.headers),
    }


def _notice_from(about: dict[str, Any] | None) -> Notice | None:
    """The notice kept by :func:`_about`; None for records made without one."""
    if not about:
        return None
    try:
        decoded = v02.decode(
            about["exchange"], about["routing_key"], about["body"].encode(), about["headers"]
        )
    except (MessageError, KeyError, TypeError, AttributeError) as exc:
        log.warning("cannot rebuild the notice of an expired version: %s", exc)
        return None
    return decoded if isinstance(decoded, Notice) else None


def _stream_block(
    chunks: Iterator[bytes | memoryview],
    checksum: Checksum,
    spec: PartSpec,
    write: Callable[[memoryview, int], None],
    what: str,
    reserve: Callable[[], object] | None = None,
) -> Checksum | None:
    """Write a block's chunks at their offsets while hashing; verify length and sum.
    ``reserve`` is called when the first bytes arrive (see :func:`stream`)."""
    letter = checksum.letter
    algo = letter if checksum.verifiable else (checksum.value if letter == "z" else None)
    if algo is not None and algo not in VERIFIABLE_SUMS:
        raise MalformedMessage(f"{what}: sum {checksum.wire()!r} does not describe data")
    hasher = new_hasher(algo) if algo is not None else None
    got = stream(
        chunks, hasher, write, start=spec.offset, limit=spec.length, what=what, reserve=reserve
    )
    if got != spec.length:
        raise IntegrityError(f"{what}: {got} bytes, expected {spec.length}")
    if hasher is None or algo is None:
        return None
    computed = Checksum(algo, hasher.hexdigest())
    if checksum.verifiable and computed.value != checksum.value.lower():
        raise IntegrityError(
            f"{what}: checksum mismatch: expected {checksum.wire()}, got {computed.wire()}"
        )
    return computed


def notice_version(notice: Notice) -> str:
    """The version of a file a block belongs to: its mtime header, else its pubTime."""
    return notice.header("mtime") or notice.pubtime
