"""Growing files: block accounting and the ``growing`` header (pure; no I/O).

A file still being written (append-only) is announced block by block as it grows, with a
fixed block size ``bs``. Each notice carries the header ``growing: <id>`` where ``<id>``
names this growth (the poster picks it when it first sees the file grow; it replaces
``mtime`` as the *version* a receiver's tracker keys on, since ``mtime`` changes with every
append). While the file grows, block ``n`` is announced once, as soon as its ``bs`` bytes
exist, with the provisional ``parts i,<bs>,<n+1>,0,<n>`` (valid v02: "as if the file ended
after this block"; only the block's own range is meaningful). When the file settles, the
*final* notices carry ``growing: <id>,final`` and the true ``parts i,<bs>,<cnt>,<rem>,<n>``
for every block not yet announced, and always at least the last block (announced again when
it was already complete), so the receiver learns the final count and size from any final
notice, in whatever order they arrive. The file is complete when every block of the final
count is present and verified; only then is it placed under its final name.

A file that never completed a block while growing is announced the ordinary way when it
settles (no ``growing`` header), so peers that know nothing of growing files (sr2, sr3) see
nothing new for it.
"""

from __future__ import annotations

from sarra.errors import MalformedMessage
from sarra.notice import PartSpec
from sarra.parts.arithmetic import split

#: the header naming a growth (value ``<id>`` or ``<id>,final``)
HEADER = "growing"
_FINAL = "final"


def header_value(growth_id: str, final: bool) -> str:
    """The ``growing`` header of a provisional (``final`` False) or final block notice."""
    if not growth_id or "," in growth_id or any(c.isspace() for c in growth_id):
        raise ValueError(f"bad growth id {growth_id!r}")
    return f"{growth_id},{_FINAL}" if final else growth_id


def parse_header(value: str) -> tuple[str, bool]:
    """(growth id, final) from a ``growing`` header; MalformedMessage when malformed."""
    gid, sep, rest = value.partition(",")
    if not gid or any(c.isspace() for c in gid) or (sep and rest != _FINAL):
        raise MalformedMessage(f"bad {HEADER} header {value!r}")
    return gid, bool(sep)


def provisional_specs(size: int, block_size: int, posted: int) -> list[PartSpec]:
    """The blocks to announce now that the file has ``size`` bytes, ``posted`` full blocks
    having been announced already: every newly complete block ``n``, as
    ``i,<bs>,<n+1>,0,<n>``. Raises ValueError when the file shrank below what was posted."""
    if block_size <= 1:
        raise ValueError(f"a growing file needs a fixed block size, not {block_size}")
    full = size // block_size
    if full < posted:
        raise ValueError(f"the file shrank to {size} bytes below {posted} announced blocks")
    return [PartSpec("i", block_size, n + 1, 0, n) for n in range(posted, full)]


def final_specs(size: int, block_size: int, posted: int) -> list[PartSpec]:
    """The final blocks of a file that settled at ``size`` bytes after ``posted`` full
    blocks were announced provisionally: each block not yet announced, and the last block
    in any case, all with the true count and remainder. Raises ValueError when the file
    shrank below what was posted, or is empty (nothing to finish)."""
    if block_size <= 1:
        raise ValueError(f"a growing file needs a fixed block size, not {block_size}")
    if size < posted * block_size:
        raise ValueError(f"the file shrank to {size} bytes below {posted} announced blocks")
    if size == 0:
        raise ValueError("an empty file has no blocks")
    blocks = split(size, block_size)
    if len(blocks) == 1:  # split() makes a whole-file spec; a growth needs an 'i' block
        blocks = [PartSpec("i", block_size, 1, size % block_size, 0)]
    return blocks[min(posted, len(blocks) - 1) :]
