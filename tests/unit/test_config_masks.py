"""accept/reject matching and destination paths."""

from __future__ import annotations

import calendar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sarra.config.masks import Mask, destination_relpath, expand_directory, explain, match
from sarra.errors import ConfigError, HostilePath

URL = "https://dd.weather.gc.ca/observations/swob-ml/20240305/CXAB/file.xml"


def test_the_first_matching_mask_wins():
    masks = (Mask(".*/CXAB/.*", False), Mask(".*swob-ml.*", True, directory="/a"))
    assert match(masks, URL, accept_unmatch=True) is None
    masks = (Mask(".*swob-ml.*", True, directory="/a"), Mask(".*/CXAB/.*", False))
    assert match(masks, URL, accept_unmatch=False) is masks[0]


def test_masks_are_anchored_at_the_start_like_re_match():
    assert match((Mask("swob", True),), URL, accept_unmatch=False) is None
    assert match((Mask("https://dd", True),), URL, accept_unmatch=False) is not None


def test_accept_unmatch_decides_when_nothing_matches():
    default = Mask("", True, directory="/fallback")
    assert match((Mask("nomatch", True),), URL, accept_unmatch=False) is None
    assert match((Mask("nomatch", True),), URL, accept_unmatch=True, default=default) is default


def test_explain_gives_a_reason_for_log_reject():
    result = explain((Mask(".*CXAB.*", False),), URL, accept_unmatch=True)
    assert not result.accepted and "rejected by '.*CXAB.*'" in result.reason
    assert "accept_unmatch off" in explain((), URL, accept_unmatch=False).reason


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (Mask("", True), "file.xml"),
        (Mask("", True, mirror=True), "observations/swob-ml/20240305/CXAB/file.xml"),
        (Mask("", True, mirror=True, strip=2), "20240305/CXAB/file.xml"),
        (Mask("", True, mirror=True, strip=9), "file.xml"),
        (Mask("", True, mirror=True, strip=".*swob-ml/"), "20240305/CXAB/file.xml"),
        (Mask("", True, flatten="-"), "observations-swob-ml-20240305-CXAB-file.xml"),
        (Mask("", True, flatten="-", strip=3), "CXAB-file.xml"),
        (Mask("", True, rename="renamed.xml"), "renamed.xml"),
        (Mask("", True, mirror=True, rename="elsewhere/"), "elsewhere/file.xml"),
    ],
)
def test_destination_applies_strip_flatten_mirror_and_rename(mask, expected):
    assert destination_relpath(mask, "observations/swob-ml/20240305/CXAB/file.xml") == expected


def test_a_rename_header_replaces_the_path():
    assert destination_relpath(Mask("", True, mirror=True), "a/b", rename_header="c/d") == "c/d"


def test_a_leading_slash_counts_as_an_element_when_stripping_like_sr2():
    assert destination_relpath(Mask("", True, mirror=True, strip=1), "/a/b/f") == "a/b/f"


@pytest.mark.parametrize("path", ["../etc/passwd", "a/../../b/f", "a/b/"])
def test_a_hostile_or_nameless_path_is_refused(path):
    with pytest.raises(HostilePath):
        destination_relpath(Mask("", True, mirror=True), path)


@given(
    st.lists(st.sampled_from(["a", "..", ".", "", "b c", "x"]), min_size=1, max_size=6),
    st.booleans(),
    st.integers(min_value=0, max_value=4),
)
def test_a_destination_never_contains_dot_dot(parts, mirror, strip):
    try:
        result = destination_relpath(Mask("", True, mirror=mirror, strip=strip), "/".join(parts))
    except HostilePath:
        return
    assert ".." not in result.split("/") and not result.startswith("/") and result


def test_directory_variables_are_expanded_per_notice():
    now = calendar.timegm((2024, 3, 5, 7, 0, 0))
    assert (
        expand_directory("/d/${SOURCE}/${YYYYMMDD}/${HH}", source="ec", now=now)
        == "/d/ec/20240305/07"
    )
    with pytest.raises(ConfigError):
        expand_directory("/d/${SOURCE}", source=None, now=now)
