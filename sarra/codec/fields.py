"""v02 header fields: input normalization and bounds, ``sum`` and ``parts`` grammar,
emission order (spec 4, 5, 6.1-6.3, 9.5)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sarra.errors import MalformedMessage
from sarra.notice import FILE_OP_SUMS, Checksum, PartSpec

#: sr2's emission order of known headers (4.5); the rest follow in their own order
SR2_ORDER = (
    "to_clusters",
    "from_cluster",
    "source",
    "rename",
    "mtime",
    "atime",
    "mode",
    "link",
    "parts",
    "sum",
    "oldname",
    "newname",
)
#: v03 field names never emitted as v02 headers (4.3)
V03_NAMES = frozenset(
    (
        "identity",
        "integrity",
        "size",
        "blocks",
        "content",
        "fileOp",
        "pubTime",
        "baseUrl",
        "relPath",
        "topic",
    )
)
#: AMQP short string limit for header names
HEADER_NAME_MAX = 255
#: every sum letter we accept on input
SUM_LETTERS = frozenset("dsn0azLRmr")

_HEX32 = re.compile(r"[0-9a-fA-F]{32}", re.ASCII)
_HEX128 = re.compile(r"[0-9a-fA-F]{128}", re.ASCII)
_SUM_VALUES: dict[str, re.Pattern[str]] = {
    "d": _HEX32,
    "n": _HEX32,
    "s": _HEX128,
    "L": _HEX128,
    "R": _HEX128,
    "m": _HEX128,
    "r": _HEX128,
    "0": re.compile(r"\d{1,4}", re.ASCII),
    "a": re.compile(r"\S.*", re.DOTALL),
    "z": re.compile(r"[ds]", re.ASCII),
}
_INT = re.compile(r"-?\d+", re.ASCII)
#: largest file size (and so any part value) a ``parts`` header may describe: what a signed
#: 64-bit offset holds, as the file system calls that use these values (ftruncate,
#: fallocate, pwrite) take it; beyond it they raise OverflowError instead of refusing
PARTS_VALUE_MAX = (1 << 63) - 1
_MODE = re.compile(r"[0-7]{1,6}", re.ASCII)


@dataclass(frozen=True, slots=True)
class Limits:
    """Receiver bounds (spec 9.5); exceeding one gets 417."""

    max_body: int = 64 * 1024
    max_header_bytes: int = 64 * 1024
    max_headers: int = 64


DEFAULT_LIMITS = Limits()


def normalize_headers(raw: Mapping[str, object] | None, limits: Limits) -> dict[str, str]:
    """Turn AMQP application headers into strings, in order, within ``limits`` (4.1, 9.5).

    Integers become decimal strings and bytes are decoded as UTF-8.

    Raises:
        MalformedMessage: another value type, undecodable bytes, or a bound exceeded.
    """
    if raw is None:
        return {}
    if len(raw) > limits.max_headers:
        raise MalformedMessage(f"{len(raw)} headers, more than {limits.max_headers}")
    out: dict[str, str] = {}
    total = 0
    for name, value in raw.items():
        if not isinstance(name, str):
            raise MalformedMessage(f"header name {name!r} is not a string")
        if isinstance(value, str):
            text = value
        elif isinstance(value, bytes):
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedMessage(f"header {name!r} is not valid UTF-8") from exc
        elif isinstance(value, int) and not isinstance(value, bool):
            text = str(value)
        else:
            raise MalformedMessage(f"header {name!r} has type {type(value).__name__}")
        try:
            total += len(name.encode("utf-8")) + len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:  # lone surrogates from a lax client library
            raise MalformedMessage(f"header {name!r} is not valid UTF-8") from exc
        if total > limits.max_header_bytes:
            raise MalformedMessage(f"headers exceed {limits.max_header_bytes} bytes")
        out[name] = text
    return out


def parse_checksum(text: str) -> Checksum:
    """Parse a ``sum`` header (spec 5.1); a bare ``n`` or ``0`` is accepted (Q6).

    Raises:
        MalformedMessage: unknown letter or malformed value.
    """
    letter, comma, value = text.partition(",")
    if letter not in SUM_LETTERS:
        raise MalformedMessage(f"unknown sum letter in {text[:40]!r}")
    if not comma and letter in "n0":
        return Checksum(letter, "")
    if not _SUM_VALUES[letter].fullmatch(value):
        raise MalformedMessage(f"malformed sum value {text[:140]!r}")
    return Checksum(letter, value)


@functools.lru_cache(maxsize=1024)
def parse_parts(text: str) -> PartSpec:
    """Parse a ``parts`` header and check it per spec 6.1/6.3.

    Raises:
        MalformedMessage: bad grammar, values outside the rules of 6.3, or a value (or the
            file size the values imply) over :data:`PARTS_VALUE_MAX`.

    Cached (a valid text only: an exception is not cached, and a :class:`PartSpec` is
    frozen): a burst of notices about files of a few sizes repeats a few parts texts.
    """
    fields = text.split(",")
    if len(fields) != 5 or fields[0] not in ("1", "i", "p"):
        raise MalformedMessage(f"malformed parts {text[:80]!r}")
    # 20 digits at most: enough for any value up to PARTS_VALUE_MAX, and it keeps int()
    # away from its digit limit (a ValueError, not a MalformedMessage)
    if not all(_INT.fullmatch(f) and len(f.lstrip("-")) <= 20 for f in fields[1:]):
        raise MalformedMessage(f"malformed parts {text[:80]!r}")
    bs, cnt, rem, n = (int(f) for f in fields[1:])
    if max(bs, cnt, rem, n) > PARTS_VALUE_MAX:
        raise MalformedMessage(f"parts value out of range in {text!r}")
    spec = PartSpec(fields[0], bs, cnt, rem, n)
    if spec.method == "1":
        if bs < 0 or cnt != 1 or n != 0:
            raise MalformedMessage(f"inconsistent whole-file parts {text!r}")
        return spec
    if bs <= 0 or cnt <= 0 or not 0 <= n < cnt or rem < 0 or rem > bs:
        raise MalformedMessage(f"inconsistent parts {text!r}")
    # block count times block size is the file size: a claim no file can have is refused
    # here, before any component computes an offset from it
    if spec.file_size > PARTS_VALUE_MAX:
        raise MalformedMessage(f"parts {text!r} describe a file over {PARTS_VALUE_MAX} bytes")
    return spec


def check_known_headers(headers: Mapping[str, str]) -> None:
    """Check the grammar of ``mode`` (timestamps are checked by the caller).

    Raises:
        MalformedMessage: ``mode`` is not octal.
    """
    mode = headers.get("mode")
    if mode is not None and not _MODE.fullmatch(mode):
        raise MalformedMessage(f"mode {mode[:20]!r} is not octal")


def data_parts(
    checksum: Checksum, headers: Mapping[str, str], *, required: bool
) -> PartSpec | None:
    """The parsed ``parts`` of a notice: None for file operations (Q7: stale parts ignored).

    Raises:
        MalformedMessage: ``parts`` missing on a data post (when ``required``) or malformed.
    """
    if checksum.letter in FILE_OP_SUMS:
        return None
    text = headers.get("parts")
    if text is None:
        if required:
            raise MalformedMessage(f"data post (sum {checksum.letter}) without parts")
        return None
    return parse_parts(text)


def ordered(headers: Mapping[str, str], drop: Iterable[str] = ()) -> dict[str, str]:
    """``headers`` in sr2's order (4.5) without ``drop`` and the v03 names (4.3)."""
    skip = V03_NAMES.union(drop) if drop else V03_NAMES
    out = {k: headers[k] for k in SR2_ORDER if k in headers and k not in skip}
    out.update((k, v) for k, v in headers.items() if k not in out and k not in skip)
    return out


#: what replaces the end of a text shortened to fit a header (then the bytes cut)
SHORTENED_MARK = "...[{cut} bytes cut]"


def fit_header_value(text: str, value_max: int) -> str:
    """``text`` if it fits in ``value_max`` UTF-8 bytes, else its start cut on a character
    boundary and marked with :data:`SHORTENED_MARK` (how many bytes were cut), so the
    result always fits and encodes.

    Used for free text only (a report's ``message``): a value with meaning (a sum, a path)
    is never shortened.
    """
    raw = text.encode("utf-8", "replace")  # a lone surrogate (undecodable name) becomes "?"
    if len(raw) <= value_max:
        return raw.decode("utf-8")
    mark = SHORTENED_MARK.format(cut=len(raw))  # an upper bound on the real mark's length
    keep = max(0, value_max - len(mark.encode("utf-8")))
    head = raw[:keep].decode("utf-8", "ignore")  # drops a character cut in the middle
    cut = len(raw) - len(head.encode("utf-8"))
    out = head + SHORTENED_MARK.format(cut=cut)
    if len(out.encode("utf-8")) > value_max:  # no room even for the mark
        return raw[:value_max].decode("utf-8", "ignore")
    return out


def has_lone_surrogate(text: str) -> bool:
    """True when ``text`` cannot be written as UTF-8: it holds a lone surrogate (a file name
    that was not valid UTF-8, decoded with ``surrogateescape``, or a JSON ``\\ud800``
    escape). Costs nothing for ASCII text."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def shown(text: str) -> str:
    """``text`` safe to log or put in an error: itself when it is valid UTF-8, else the
    repr of its bytes (``b'bad\\xff.txt'``) or, for a surrogate no byte explains, its
    ASCII repr."""
    if not has_lone_surrogate(text):
        return text
    try:
        return repr(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return ascii(text)


def check_text(what: str, text: str) -> None:
    """Refuse a field that cannot be sent as UTF-8 text.

    Raises:
        MalformedMessage: ``text`` holds a lone surrogate; names ``what`` and shows the text
            in a safe form.
    """
    if has_lone_surrogate(text):
        raise MalformedMessage(f"{what} {shown(text)[:200]} is not valid UTF-8 (lone surrogate)")


def check_emittable(headers: Mapping[str, str], value_max: int) -> None:
    """Refuse headers sr2 would refuse (4.4): values over ``value_max`` bytes, long names.

    Raises:
        MalformedMessage: naming the header and its byte length, or a name or value that
            is not valid UTF-8 (a lone surrogate).
    """
    for name, value in headers.items():
        if not (name.isascii() and value.isascii()):
            check_text("header name", name)
            check_text(f"header {shown(name)!r} value", value)
        # an ASCII str's length is its UTF-8 length (isascii() costs nothing: CPython keeps
        # the flag); only other text is encoded (which also refuses lone surrogates)
        name_len = len(name) if name.isascii() else len(name.encode("utf-8"))
        if name_len > HEADER_NAME_MAX:
            raise MalformedMessage(f"header name {name[:40]!r}... is {name_len} bytes (max 255)")
        value_len = len(value) if value.isascii() else len(value.encode("utf-8"))
        if value_len > value_max:
            raise MalformedMessage(
                f"header {name!r} value is {value_len} bytes (max {value_max} for v02)"
            )
