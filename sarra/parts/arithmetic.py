"""Pure part arithmetic (spec 6): sizes, block sizes, splitting and ``.Part`` names."""

from __future__ import annotations

import re

from sarra.errors import ConfigError
from sarra.notice import PartSpec

#: sr_post/sr_watch default ``blocksize``: 200 MiB, fixed (spec 6.4)
DEFAULT_POST_BLOCKSIZE = 209_715_200
#: the ``t`` of sr2's automatic block size formula
AUTO_THRESHOLD = 50 * 1024 * 1024

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"\s*(\d+)\s*([kmgt]?)b?\s*", re.IGNORECASE | re.ASCII)
_PART_SUFFIX = re.compile(r"(.+)\.(\d+)\.(\d+)\.(\d+)\.(\d+)\.([A-Za-z0-9])\.Part", re.ASCII)


def parse_size(text: str) -> int:
    """Parse a size: a plain integer, or one with a ``K``/``M``/``G``/``T`` suffix (powers
    of 2, optional ``B``, any case).

    Raises:
        ConfigError: ``text`` is not a size.
    """
    m = _SIZE.fullmatch(text)
    if m is None:
        raise ConfigError(f"not a size: {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def auto_block_size(file_size: int) -> int:
    """sr2's automatic block size (``blocksize 0``) with t = 50 MiB."""
    t = AUTO_THRESHOLD
    if file_size > 100 * t:
        return 10 * t
    if file_size > 10 * t:
        return -(-file_size // 10)
    if file_size > t:
        return -(-file_size // 3)
    return file_size


def effective_block_size(option: int, file_size: int) -> int:
    """The block size for a file: ``option`` 0 = automatic, 1 = never split (the file
    size), N = fixed N bytes. :func:`split` divides the file only when 0 < result < size.
    """
    if option == 0:
        return auto_block_size(file_size)
    if option == 1:
        return file_size
    return option


def split(file_size: int, block_size: int) -> list[PartSpec]:
    """The parts announcing a file of ``file_size`` bytes in blocks of ``block_size``.

    One ``1,<size>,1,0,0`` part unless 0 < block_size < file_size; otherwise ``i`` parts
    ``i,<bs>,<ceil(fs/bs)>,<fs mod bs>,<n>`` for every n.

    Raises:
        ValueError: ``file_size`` is negative.
    """
    if file_size < 0:
        raise ValueError(f"negative file size {file_size}")
    if not 0 < block_size < file_size:
        return [PartSpec("1", file_size, 1, 0, 0)]
    count = -(-file_size // block_size)
    remainder = file_size % block_size
    return [PartSpec("i", block_size, count, remainder, n) for n in range(count)]


def part_suffix(name: str, spec: PartSpec, sum_letter: str) -> str:
    """The ``.Part`` name of a block: ``<name>.<bs>.<cnt>.<rem>.<n>.<letter>.Part`` (6.7)."""
    return (
        f"{name}.{spec.block_size}.{spec.block_count}.{spec.remainder}."
        f"{spec.block_number}.{sum_letter}.Part"
    )


def parse_part_suffix(rel: str) -> tuple[str, PartSpec, str] | None:
    """Split a ``.Part`` name into (target name, ``p`` PartSpec, sum letter).

    Returns None when ``rel`` does not end in a ``.Part`` suffix. The PartSpec is not
    validated: callers compare it with the message's ``parts``.
    """
    m = _PART_SUFFIX.fullmatch(rel)
    if m is None:
        return None
    bs, cnt, rem, n = (int(m.group(i)) for i in range(2, 6))
    return m.group(1), PartSpec("p", bs, cnt, rem, n), m.group(6)
