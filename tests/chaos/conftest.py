"""Every test under tests/chaos/ carries the ``chaos`` marker, so CI can run the group alone
(``-m chaos``) or leave it out (``-m 'not chaos'``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.chaoskit import HEADER, TABLE

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.servers)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The counts table of every scenario that ran, even without ``-s``."""
    if TABLE:
        terminalreporter.section("chaos counts")
        for line in (HEADER, *TABLE):
            terminalreporter.write_line(line)
