"""sr_poll's on_line and on_html_page plugin results (sarra.flow.hooks.Plugins)."""

from __future__ import annotations

import dataclasses
import logging
import types

import pytest

from sarra.errors import ConfigError
from sarra.flow.hooks import Plugins
from sarra.transfer.base import RemoteEntry

ENTRY = RemoteEntry(name="a.txt", size=10, mtime=1000.0)


def _plugins(*modules: types.SimpleNamespace) -> Plugins:
    p = Plugins()
    for i, m in reversed(list(enumerate(modules))):
        p.register(f"p{i}", m)
    return p


def _line(fn: object) -> types.SimpleNamespace:
    return types.SimpleNamespace(on_line=fn)


def test_on_line_keeps_replaces_or_leaves_out() -> None:
    same = dataclasses.replace(ENTRY, mtime=None)
    assert _plugins(_line(lambda entry, directory: None)).on_line(ENTRY, "/d") == ENTRY
    assert _plugins(_line(lambda entry, directory: True)).on_line(ENTRY, "/d") == ENTRY
    assert _plugins(_line(lambda entry, directory: False)).on_line(ENTRY, "/d") is None
    assert _plugins(_line(lambda entry, directory: same)).on_line(ENTRY, "/d") == same
    # one False wins over a replacement, whatever the order
    both = _plugins(_line(lambda entry, directory: same), _line(lambda entry, directory: False))
    assert both.on_line(ENTRY, "/d") is None
    # the first replacement in configuration order
    other = dataclasses.replace(ENTRY, size=99)
    two = _plugins(_line(lambda entry, directory: same), _line(lambda entry, directory: other))
    assert two.on_line(ENTRY, "/d") == same


def test_on_line_cannot_rename_nor_return_junk(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    renamed = dataclasses.replace(ENTRY, name="b.txt")
    assert _plugins(_line(lambda entry, directory: renamed)).on_line(ENTRY, "/d") is None
    assert _plugins(_line(lambda entry, directory: "a.txt 10")).on_line(ENTRY, "/d") is None
    assert len([r for r in caplog.records if "left out" in r.getMessage()]) == 2


def test_on_line_with_other_argument_names_is_refused() -> None:
    with pytest.raises(ConfigError):
        _plugins(_line(lambda parent: None))


def _page(fn: object) -> types.SimpleNamespace:
    return types.SimpleNamespace(on_html_page=fn)


def test_on_html_page_entries_are_checked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    found = [
        ENTRY,
        RemoteEntry("..", None, None, is_dir=True),
        RemoteEntry("../x", 1, None),
        RemoteEntry("a\nb", 1, None),
        RemoteEntry("sub", None, None, is_dir=True),
        RemoteEntry("a.txt", 99, None),  # a name twice: the first stays
    ]
    p = _plugins(_page(lambda page, url: found))
    assert p.on_html_page("<html/>", "http://h/d/") == [ENTRY, found[4]]
    assert len([r for r in caplog.records if "left out" in r.getMessage()]) == 2
    assert _plugins(_page(lambda page, url: None)).on_html_page("x", "u") is None
    # the first plugin that answers wins
    first = _plugins(_page(lambda page, url: None), _page(lambda page, url: [ENTRY]))
    assert first.on_html_page("x", "u") == [ENTRY]


@pytest.mark.parametrize("bad", ["a.txt", 3, [("a.txt", 1, 2)]])
def test_on_html_page_must_return_entries(bad: object) -> None:
    with pytest.raises(TypeError):
        _plugins(_page(lambda page, url: bad)).on_html_page("x", "u")
