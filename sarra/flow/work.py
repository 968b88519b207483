"""The per-message work item: all working state of one notice on its way through a flow."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sarra.broker.base import Delivery
from sarra.flow.retryqueue import RetryItem
from sarra.notice import Checksum, Notice, WireMessage

if TYPE_CHECKING:
    from sarra.localfs.confined import InflightFile, SafeRoot


class PartState(enum.Enum):
    """What happened to a block (``.Part`` notice) of a file assembled in place."""

    INSERTED = "inserted"  # written and recorded; other blocks are still missing
    COMPLETE = "complete"  # this block completed the file
    DONE = "done"  # the version was already complete (a redelivery)
    KEPT = "kept"  # inplace off: the block is kept as its own .Part object


@dataclass(frozen=True, slots=True)
class Staged:
    """A file written under its temporary name, made durable and renamed by the batch commit
    (:meth:`sarra.flow.download.Downloader.commit_batch`)."""

    root: SafeRoot
    inflight: InflightFile
    rel: str
    mtime: float | None
    mode: int | None


@dataclass(slots=True)
class WorkItem:
    """One notice being processed. Exactly one of ``delivery``/``retry`` says where it came from.

    ``code``/``message`` hold the outcome once known; the flow reports it (when reporting is
    on) and then acks the delivery or settles the retry entry. A work item is never dropped
    without an outcome.
    """

    notice: Notice
    delivery: Delivery | None = None
    retry: RetryItem | None = None
    received: float = field(default_factory=time.monotonic)
    #: destination root (directory) and path under it, once resolved
    dest_root: str | None = None
    dest_rel: str | None = None
    #: filled by plugins or the flow
    code: int | None = None
    message: str = ""
    computed: Checksum | None = None
    size: int = 0
    error: BaseException | None = None
    #: queue this item for a later retry from disk instead of settling it as failed
    requeue: bool = False
    #: abandoned by a stop: no outcome, neither reported nor acked (redelivered later)
    abandoned: bool = False
    #: messages to publish (re-announcements, forwarded notices) on the post broker before
    #: the delivery is acked; filled by the component's select or work step
    outgoing: list[WireMessage] = field(default_factory=list)
    #: set by the downloader: the file waits under its temporary name for the batch commit
    staged: Staged | None = None
    #: the quota charge taken before writing the file (given back if it is not placed)
    quota_charge: Any = None
    #: set by the block assembler for a .Part notice
    part: PartState | None = None
    #: (file size, every block's sum) once a file assembled from blocks is complete
    whole: tuple[int, tuple[str, ...]] | None = None
    #: set by the sender: the local file a notice names
    local_source: str | None = None
    #: scratch space for plugins; the core never reads or writes it
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def local_path(self) -> str | None:
        """Absolute local path of the destination, when resolved."""
        if self.dest_root is None or self.dest_rel is None:
            return None
        return self.dest_root.rstrip("/") + "/" + self.dest_rel

    def settle(self, code: int, message: str) -> None:
        """Record the outcome."""
        self.code = code
        self.message = message
