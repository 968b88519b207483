"""``quota SOURCE bytes=SIZE files=N``: a source's share of the pump's tree (admin.conf).

Parsed here, line by line, so that a bad line is refused with its file and line; enforced by
the pump's sr_sarra (:mod:`sarra.flow.quota`). Either limit may be left out (no limit of
that kind); at least one must be given. Sizes take the binary suffixes of every size
option (``10G`` is 10 GiB).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sarra.config.options import parse_size

#: a source name as ``declare source`` accepts it (it names the usage ledger file)
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*")


@dataclass(frozen=True, slots=True)
class Quota:
    """The limits of one source: bytes and files on the pump's tree (None: no limit)."""

    bytes: int | None = None
    files: int | None = None

    def text(self) -> str:
        words = [f"bytes={self.bytes}" if self.bytes is not None else ""]
        words.append(f"files={self.files}" if self.files is not None else "")
        return " ".join(w for w in words if w)


def parse_quota(text: str) -> tuple[str, Quota]:
    """``SOURCE bytes=SIZE files=N`` -> (source, quota). Raises ValueError saying why."""
    words = text.split()
    if len(words) < 2:
        raise ValueError(f"expected quota SOURCE bytes=SIZE files=N, got {text!r}")
    source = words[0]
    if not SOURCE_NAME.fullmatch(source):
        raise ValueError(f"bad source name {source!r}")
    limits: dict[str, int] = {}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        key = key.lower()
        if not eq or key not in ("bytes", "files") or key in limits:
            raise ValueError(f"expected bytes=SIZE and/or files=N once each, got {word!r}")
        number = parse_size(value) if key == "bytes" else int(value)
        if number < 0:
            raise ValueError(f"{key} must not be negative, got {value!r}")
        limits[key] = number
    return source, Quota(limits.get("bytes"), limits.get("files"))


def quota_table(lines: Iterable[str]) -> dict[str, Quota]:
    """The ``quota`` values (checked lines, in order: the last line for a source wins)."""
    return dict(parse_quota(line) for line in lines)
