"""v02 timestamps: lenient parsing (spec 3.2, Q1), strict 9-digit output."""

from __future__ import annotations

import calendar
import re

import pytest

from sarra.codec.timestamps import (
    check_timestamp,
    format_timestamp_ns,
    now_timestamp,
    parse_timestamp,
    parse_timestamp_parts,
)
from sarra.errors import MalformedMessage

BASE = calendar.timegm((2026, 11, 23, 6, 59, 0, 0, 0, 0))


@pytest.mark.parametrize("digits", range(11))
def test_zero_to_ten_fraction_digits_are_accepted(digits: int) -> None:
    frac = "1234567891"[:digits]
    stamp = "20261123065900" + (f".{frac}" if digits else "")
    assert parse_timestamp(stamp) == pytest.approx(BASE + float("0." + (frac or "0")), abs=1e-6)


def test_a_dot_without_digits_is_accepted() -> None:
    assert parse_timestamp("20261123065900.") == BASE


def test_the_exponent_form_is_read_as_the_peers_read_it() -> None:
    seconds, fraction = parse_timestamp_parts("20261123065900.00679016e-05")
    assert seconds == BASE
    assert fraction == pytest.approx(6.79016e-08, rel=1e-9)
    assert parse_timestamp("20261123065900.5E+00") == BASE + 0.5


def test_a_fraction_of_one_or_more_is_clamped_below_one_second() -> None:
    t = parse_timestamp("20261123065900.5e+01")
    assert BASE + 0.999 < t < BASE + 1
    assert parse_timestamp_parts("20261123065900.5e+01") == (BASE, 0.999999)


@pytest.mark.parametrize("stamp", ["20261123065900.9999999999", "20991231235959.9999999999"])
def test_a_fraction_just_below_one_stays_in_its_own_second(stamp: str) -> None:
    # a float epoch near 2e9 resolves ~0.24 us: a clamp of 0.999999999 added to the whole
    # seconds rounds up to the next second, which is the defect placement's own parser had
    whole, _ = parse_timestamp_parts(stamp)
    t = parse_timestamp(stamp)
    assert whole < t < whole + 1
    assert int(t) == whole


def test_the_t_separator_is_accepted() -> None:
    assert parse_timestamp("20261123T065900.25") == BASE + 0.25


@pytest.mark.parametrize(
    "stamp",
    [
        "",
        "2026112306590",
        "202611230659001",
        "20261123 065900",
        "20261323065900",
        "20261132065900",
        "20261123256000",
        "20261123065900.12a",
        "20261123065900e",
        "20261123065900.1e+",
        "2026-11-23T06:59:00",
        "20261123065900.1\n",
        "٢٠٢٦١١٢٣٠٦٥٩٠٠",
    ],
)
def test_malformed_timestamps_are_refused(stamp: str) -> None:
    with pytest.raises(MalformedMessage, match="timestamp"):
        parse_timestamp(stamp)
    with pytest.raises(MalformedMessage, match="timestamp"):
        check_timestamp(stamp)


@pytest.mark.parametrize(
    "stamp",
    [
        "20261323065900.123456789",  # the emitted form's length, an impossible month
        "20260230065900.000000000",  # February 30th
        "20261123246000.000000000",  # hour 24
        "2026112306590٠.123456789",  # an Arabic-Indic digit: str.isdigit() alone would pass it
        "20261123065900.12345678٠",
        "20261123065900,123456789",
    ],
)
def test_the_emitted_form_fast_check_refuses_what_the_parser_refuses(stamp: str) -> None:
    with pytest.raises(MalformedMessage, match="timestamp"):
        parse_timestamp(stamp)
    with pytest.raises(MalformedMessage, match="timestamp"):
        check_timestamp(stamp)


@pytest.mark.parametrize(
    "stamp",
    ["20261123065900.123456789", "20240229235959.999999999", "20261123065900", "20261123T065900.5"],
)
def test_check_timestamp_accepts_what_the_parser_accepts(stamp: str) -> None:
    parse_timestamp(stamp)
    check_timestamp(stamp)  # no exception


def test_output_has_exactly_nine_truncated_digits() -> None:
    ns = BASE * 10**9 + 6_790_160
    assert format_timestamp_ns(ns) == "20261123065900.006790160"
    assert format_timestamp_ns(BASE * 10**9) == "20261123065900.000000000"
    assert format_timestamp_ns(BASE * 10**9 + 999_999_999) == "20261123065900.999999999"


def test_output_round_trips_through_the_parser() -> None:
    ns = BASE * 10**9 + 123_456_789
    assert parse_timestamp(format_timestamp_ns(ns)) == pytest.approx(ns / 1e9, abs=1e-6)


def test_now_is_in_the_emitted_form() -> None:
    now = now_timestamp()
    assert re.fullmatch(r"\d{14}\.\d{9}", now)
    assert parse_timestamp(now) > BASE - 10**9
