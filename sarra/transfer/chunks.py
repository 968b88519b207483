"""Reading a transport's body into page-aligned buffers, for the direct-I/O write path.

Reads ``transport.features.get_into``: a transport that fills caller buffers does so; any
other has its ``get`` chunks copied into the same buffers
(:func:`sarra.localfs.streaming.copy_into`).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator

from sarra.localfs.streaming import BUFFER_SIZE, DIRECT_ALIGN, copy_into
from sarra.transfer.base import Transport


def aligned_chunks(
    transport: Transport,
    url: str,
    offset: int = 0,
    length: int | None = None,
    buffer_size: int = BUFFER_SIZE,
) -> Iterator[memoryview]:
    """The body of ``url`` (from ``offset``, ``length`` bytes when given) in page-aligned
    buffers of ``buffer_size`` bytes (a multiple of the alignment) used in turn: a view
    stays valid for one more chunk (see :meth:`sarra.transfer.http.HttpTransport.get_into`)."""
    if buffer_size <= 0 or buffer_size % DIRECT_ALIGN:
        raise ValueError(f"buffer_size must be a positive multiple of {DIRECT_ALIGN}")
    size = buffer_size
    if length is not None:
        size = min(size, max(DIRECT_ALIGN, -(-length // DIRECT_ALIGN) * DIRECT_ALIGN))
    # anonymous maps start on a page boundary, as direct I/O needs; they are unmapped when
    # the last view goes (never closed here: the hasher may still hold a view)
    buffers = [memoryview(mmap.mmap(-1, size)) for _ in range(2)]
    if transport.features.get_into:
        return iter(transport.get_into(url, buffers, offset, length))
    return copy_into(transport.get(url, offset, length), buffers)
