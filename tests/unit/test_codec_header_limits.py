"""The header checks of the emitting and parsing paths: byte lengths, not character counts,
and a cached parse that still refuses what it refused before."""

from __future__ import annotations

import pytest

from sarra.codec.fields import HEADER_NAME_MAX, check_emittable, parse_parts
from sarra.errors import MalformedMessage
from sarra.notice import PartSpec


def test_ascii_value_at_the_limit_passes_one_byte_over_is_refused() -> None:
    check_emittable({"to_clusters": "a" * 255}, 255)
    with pytest.raises(MalformedMessage, match="256 bytes"):
        check_emittable({"to_clusters": "a" * 256}, 255)


def test_non_ascii_value_is_measured_in_utf8_bytes() -> None:
    value = "é" * 128  # 128 characters, 256 bytes
    with pytest.raises(MalformedMessage, match="256 bytes"):
        check_emittable({"rename": value}, 255)
    check_emittable({"rename": "é" * 127 + "a"}, 255)  # 255 bytes


def test_long_header_name_is_refused_in_bytes() -> None:
    check_emittable({"n" * HEADER_NAME_MAX: "v"}, 255)
    with pytest.raises(MalformedMessage, match="header name"):
        check_emittable({"ñ" * 128: "v"}, 255)  # 128 characters, 256 bytes


def test_parse_parts_cached_result_equals_fresh_and_errors_repeat() -> None:
    first = parse_parts("1,2048,1,0,0")
    assert first == PartSpec("1", 2048, 1, 0, 0)
    assert parse_parts("1,2048,1,0,0") == first
    for _ in range(2):  # an error is raised every time, never remembered as a result
        with pytest.raises(MalformedMessage):
            parse_parts("1,2048,2,0,0")
