"""Parsing of FTP listings (MLSD facts, Unix ``ls -l`` lines of LIST) and MDTM times; the
transport against a real server is in tests/integration/test_transfer_ftp.py."""

from __future__ import annotations

import calendar

import pytest

from sarra.transfer.base import RemoteEntry, listed_name
from sarra.transfer.ftp import _list_entry, _mlsd_entry, _timestamp

# 2026-12-06 12:00:00 UTC
NOW = float(calendar.timegm((2026, 12, 6, 12, 0, 0)))


def test_mlsd_facts_give_name_size_mtime_and_kind() -> None:
    entry = _mlsd_entry("Type=file;Size=1234;Modify=20260102030405.5;UNIX.mode=0644; a  b.txt")
    assert entry == RemoteEntry(
        "a  b.txt", 1234, calendar.timegm((2026, 1, 2, 3, 4, 5)) + 0.5, False, False
    )
    directory = _mlsd_entry("type=dir;modify=20260102030405; sub")
    assert directory is not None and directory.is_dir and directory.size is None
    assert _mlsd_entry("type=cdir;modify=20260102030405; .") is None
    assert _mlsd_entry("type=pdir;modify=20260102030405; ..") is None
    link = _mlsd_entry("type=OS.unix=slink:/x;size=3; l")
    assert link is not None and link.is_link


@pytest.mark.parametrize(
    ("line", "name", "size", "when", "is_dir"),
    [
        ("-rw-r--r--   1 u  g    1234 Jan  2  2025 old file.txt", "old file.txt", 1234,
         (2025, 1, 2, 0, 0), False),
        ("-rw-r--r--   1 u  g      10 Dec  6 11:30 recent", "recent", 10,
         (2026, 12, 6, 11, 30), False),
        # a time without a year that would be in the future is last year's (as ls shows it)
        ("-rw-r--r--   1 u  g      10 Dec 25 11:30 lastyear", "lastyear", 10,
         (2025, 12, 25, 11, 30), False),
        ("drwxr-xr-x   2 u  g    4096 Mar  3 09:00 sub", "sub", 4096, (2026, 3, 3, 9, 0), True),
        ("lrwxrwxrwx   1 u  g       7 Mar  3 09:00 link -> target", "link", 7,
         (2026, 3, 3, 9, 0), False),
        # no group column (some servers)
        ("-rw-r--r--   1 owner       5 Feb 28  2024 nogroup", "nogroup", 5,
         (2024, 2, 28, 0, 0), False),
    ],
)  # fmt: skip
def test_unix_list_lines_are_parsed(
    line: str, name: str, size: int, when: tuple[int, ...], is_dir: bool
) -> None:
    entry = _list_entry(line, now=NOW)
    assert entry is not None
    assert (entry.name, entry.size, entry.is_dir) == (name, size, is_dir)
    assert entry.mtime == calendar.timegm((*when, 0))


def test_lines_that_are_not_entries_are_skipped() -> None:
    assert _list_entry("total 48", now=NOW) is None
    assert _list_entry("12-06-26  12:00PM       <DIR>          dosdir", now=NOW) is None


@pytest.mark.parametrize(
    ("name", "ok"),
    [("a.txt", True), ("a b#c é", True), ("", False), (".", False), ("..", False),
     ("a/b", False), ("../x", False), ("/etc", False), ("a\0b", False), ("a\r\nDELE b", False)],
)  # fmt: skip
def test_a_listed_name_must_be_one_harmless_segment(name: str, ok: bool) -> None:
    assert listed_name(name) is ok


def test_mdtm_times_are_utc() -> None:
    assert _timestamp("20261206120000") == NOW
    assert _timestamp("20261206120000.250") == NOW + 0.25
    assert _timestamp("garbage") is None
