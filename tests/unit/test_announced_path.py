"""The path announced for a local file, POSIX and Windows forms (a pure function)."""

from __future__ import annotations

import pytest

from sarra.errors import LocalError
from sarra.flow.posting import announced_path


@pytest.mark.parametrize(
    ("path", "base", "expected"),
    [
        ("C:\\data\\obs\\a.txt", "C:\\data", "/obs/a.txt"),
        ("C:\\data\\obs\\a.txt", "C:\\data\\", "/obs/a.txt"),
        ("c:\\DATA\\Obs\\a.txt", "C:\\data", "/Obs/a.txt"),
        ("C:/data/obs/a.txt", "C:\\data", "/obs/a.txt"),
        ("C:\\data\\x\\..\\obs\\a.txt", "C:\\data", "/obs/a.txt"),
        ("C:\\a.txt", "C:\\", "/a.txt"),
        ("\\\\srv\\share\\obs\\a.txt", "\\\\srv\\share", "/obs/a.txt"),
        ("C:\\data\\obs\\a.txt", None, "/C:/data/obs/a.txt"),
    ],
)
def test_windows_paths_are_announced_with_slashes(
    path: str, base: str | None, expected: str
) -> None:
    assert announced_path(path, base, windows=True) == expected


@pytest.mark.parametrize(
    ("path", "base"),
    [
        ("C:\\database\\a.txt", "C:\\data"),
        ("D:\\data\\a.txt", "C:\\data"),
        ("C:\\data", "C:\\data"),
        ("C:\\data\\", "C:\\Data"),
    ],
)
def test_windows_paths_outside_the_base_are_refused(path: str, base: str) -> None:
    with pytest.raises(LocalError):
        announced_path(path, base, windows=True)


def test_posix_paths_are_unchanged() -> None:
    assert announced_path("/data/obs/a.txt", "/data", windows=False) == "/obs/a.txt"
    assert announced_path("/data/obs/a.txt", "/data/", windows=False) == "/obs/a.txt"
    assert announced_path("/data/obs/a.txt", None, windows=False) == "/data/obs/a.txt"
    assert announced_path("/data/obs/a.txt", "/", windows=False) == "/data/obs/a.txt"
    # a backslash is an ordinary character of a POSIX name
    assert announced_path("/data/o\\b", "/data", windows=False) == "/o\\b"
    for path, base in (("/database/a", "/data"), ("/data", "/data"), ("/Data/a", "/data")):
        with pytest.raises(LocalError):
            announced_path(path, base, windows=False)
