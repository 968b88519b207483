"""v02 timestamps (spec 3.2): lenient parsing, strict 9-digit output.

Accepted: ``YYYYMMDD[T]HHMMSS[.digits][(e|E)[+-]digits]``. The fraction is read the way both
peers read it, as ``float("0" + everything after the seconds)``, clamped to ``[0, 1)``.
Emitted: ``YYYYMMDDHHMMSS.nnnnnnnnn``, nine digits truncated from integer nanoseconds.
"""

from __future__ import annotations

import calendar
import datetime
import functools
import math
import re
import time

from sarra.errors import MalformedMessage

_TIMESTAMP = re.compile(
    r"(?P<date>\d{8})T?(?P<time>\d{6})(?P<frac>(?:\.\d*)?(?:[eE][+-]?\d+)?)",
    re.ASCII,
)
_NS_PER_S = 1_000_000_000
#: fractions are clamped below 1; a float epoch near 2e9 resolves ~0.24 us, so a closer bound
#: would round up into the next second once added
_FRACTION_MAX = 0.999999


def parse_timestamp(s: str) -> float:
    """Return the UTC epoch seconds of a v02 timestamp.

    Raises:
        MalformedMessage: ``s`` does not follow the grammar or names an impossible date.
    """
    seconds, fraction = parse_timestamp_parts(s)
    return seconds + fraction


def check_timestamp(s: str) -> None:
    """Refuse ``s`` unless it is a v02 timestamp (as :func:`parse_timestamp` reads them).

    The emitted form (``YYYYMMDDHHMMSS.nnnnnnnnn``, what every poster writes) is checked
    without the regular expression or the float: its date and time digits are the only
    part that can still be wrong (an impossible date).

    Raises:
        MalformedMessage: ``s`` does not follow the grammar or names an impossible date.
    """
    if len(s) == 24 and s[14] == "." and s.isascii() and s[:14].isdigit() and s[15:].isdigit():
        try:
            _whole_seconds(s[:8], s[8:14])
        except ValueError as exc:
            raise MalformedMessage(f"bad timestamp {s!r}: {exc}") from exc
        return
    parse_timestamp_parts(s)


def parse_timestamp_parts(s: str) -> tuple[int, float]:
    """Return (whole UTC epoch seconds, fraction in ``[0, 1)``) of a v02 timestamp.

    Raises:
        MalformedMessage: ``s`` does not follow the grammar or names an impossible date.
    """
    m = _TIMESTAMP.fullmatch(s)
    if m is None:
        raise MalformedMessage(f"bad timestamp {s[:64]!r}")
    date, hms, frac = m.group("date", "time", "frac")
    try:
        seconds = _whole_seconds(date, hms)
    except ValueError as exc:
        raise MalformedMessage(f"bad timestamp {s!r}: {exc}") from exc
    fraction = 0.0
    if frac:
        try:
            fraction = float("0" + frac)
        except ValueError as exc:  # the regex allows ".e5", which float() refuses
            raise MalformedMessage(f"bad timestamp fraction {s!r}") from exc
        if not math.isfinite(fraction):
            raise MalformedMessage(f"bad timestamp fraction {s!r}")
        fraction = min(max(fraction, 0.0), _FRACTION_MAX)
    return seconds, fraction


@functools.lru_cache(maxsize=4096)
def _whole_seconds(date: str, hms: str) -> int:
    """UTC epoch seconds of ``YYYYMMDD`` + ``HHMMSS``; ValueError for an impossible date.

    Cached: the timestamps of a burst of messages share few distinct seconds.
    """
    fields = (
        int(date[0:4]),
        int(date[4:6]),
        int(date[6:8]),
        int(hms[0:2]),
        int(hms[2:4]),
        int(hms[4:6]),
    )
    datetime.datetime(*fields)  # validates the calendar (strptime is ~6x slower)
    return calendar.timegm((*fields, 0, 0, 0))


@functools.lru_cache(maxsize=4096)
def _formatted_seconds(seconds: int) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(seconds))


def format_timestamp_ns(ns: int) -> str:
    """Format integer nanoseconds since the epoch as ``YYYYMMDDHHMMSS.nnnnnnnnn`` (UTC)."""
    seconds, nanos = divmod(ns, _NS_PER_S)
    return _formatted_seconds(seconds) + f".{nanos:09d}"


def now_timestamp() -> str:
    """The current time as an emitted v02 timestamp."""
    return format_timestamp_ns(time.time_ns())
