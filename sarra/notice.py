"""Immutable wire data: notices, reports, checksums and part specifications.

Instances are made only by :mod:`sarra.codec` (which validates them); everything else reads
them. Per-message working state lives on the flow's work item, never here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

Headers = Mapping[str, str]
"""AMQP application headers of a v02 message, all long strings, in wire order."""

#: sum letters whose value can be recomputed from the data or the name
VERIFIABLE_SUMS = frozenset("ds")
#: sum letters of file operations (no data, no parts)
FILE_OP_SUMS = frozenset("LRmr")


def frozen_headers(items: Mapping[str, str]) -> Headers:
    """Return a read-only copy of ``items`` that keeps their order."""
    return MappingProxyType(dict(items))


@dataclass(frozen=True, slots=True)
class Checksum:
    """A v02 ``sum`` header: ``<letter>,<value>``.

    ``value`` is empty for the bare ``n``/``0`` sums that sr2 sends on parts. For ``z``
    (checksum on download) ``value`` is the letter of the algorithm to compute.
    """

    letter: str
    value: str

    def wire(self) -> str:
        """The header value exactly as sent."""
        return f"{self.letter},{self.value}" if self.value else self.letter

    @property
    def verifiable(self) -> bool:
        """True when received data can be checked against this sum."""
        return self.letter in VERIFIABLE_SUMS

    @property
    def file_op(self) -> bool:
        """True for link, remove, mkdir and rmdir notices."""
        return self.letter in FILE_OP_SUMS


@dataclass(frozen=True, slots=True)
class PartSpec:
    """A v02 ``parts`` header: ``<method>,<bs>,<cnt>,<rem>,<n>``.

    ``method`` is ``1`` (whole file), ``i`` (a byte range of the file at baseUrl+relPath) or
    ``p`` (a block stored as its own ``.Part`` object). Arithmetic follows spec 6.2/6.3.
    """

    method: str
    block_size: int
    block_count: int
    remainder: int
    block_number: int

    def wire(self) -> str:
        """The header value exactly as sent."""
        return (
            f"{self.method},{self.block_size},{self.block_count},"
            f"{self.remainder},{self.block_number}"
        )

    @property
    def whole(self) -> bool:
        """True when this notice covers the whole file."""
        return self.method == "1"

    @property
    def last(self) -> bool:
        """True for the last block of the file."""
        return self.block_number == self.block_count - 1

    @property
    def offset(self) -> int:
        """Byte offset of this block in the file."""
        return 0 if self.whole else self.block_number * self.block_size

    @property
    def length(self) -> int:
        """Length in bytes of this block (spec 6.3: lenient about sr3's remainder)."""
        if self.whole:
            return self.block_size
        if not self.last:
            return self.block_size
        if 0 < self.remainder <= self.block_size:
            return self.remainder
        return self.block_size

    @property
    def file_size(self) -> int:
        """Size of the whole file as this notice describes it."""
        if self.whole:
            return self.block_size
        last_len = self.remainder if 0 < self.remainder <= self.block_size else self.block_size
        return (self.block_count - 1) * self.block_size + last_len


@dataclass(frozen=True, slots=True)
class Notice:
    """A v02 post (announcement) as received or about to be sent.

    ``pubtime``, ``base_url`` and ``rel_path`` are the body fields exactly as on the wire
    (``rel_path`` escaped), so relays re-emit them byte-identical. ``path`` is the logical
    path: decoded and without a leading ``/``. ``headers`` holds every application header,
    known or not, in wire order; ``checksum`` and ``parts`` are their parsed forms.
    """

    exchange: str
    topic: str
    pubtime: str
    base_url: str
    rel_path: str
    path: str
    headers: Headers
    checksum: Checksum
    parts: PartSpec | None
    #: v03 fields that have no v02 header form (nested objects such as ``geometry``, typed
    #: numbers, sr3's block manifest, a report table), as the text of one JSON object ("" when
    #: none): kept so that a v03 notice re-encoded in v03 loses nothing; v02 output ignores it
    v03_fields: str = ""

    def header(self, name: str, default: str | None = None) -> str | None:
        """One header's value, or ``default``."""
        return self.headers.get(name, default)

    @property
    def url(self) -> str:
        """baseUrl and logical path joined by exactly one ``/`` (not re-encoded)."""
        if self.base_url == "file:":
            return "file:/" + self.path
        return self.base_url.rstrip("/") + "/" + self.path


@dataclass(frozen=True, slots=True)
class Report:
    """A v02 report: the notice it is about plus outcome fields (spec section 8)."""

    notice: Notice
    code: int
    host: str
    user: str
    elapsed: float
    message: str


@dataclass(frozen=True, slots=True)
class Pulse:
    """A ``v02.pulse.*`` keep-alive or broadcast: acked and ignored."""

    topic: str
    text: str


@dataclass(frozen=True, slots=True)
class WireMessage:
    """What goes to or comes from the broker, before decoding or after encoding."""

    exchange: str
    routing_key: str
    body: bytes
    headers: Headers
    content_type: str = "text/plain"
    delivery_mode: int = 2
    expiration: str | None = None
