"""Every test under tests/chaos/ carries the ``chaos`` marker, so CI can run the group alone
(``-m chaos``) or leave it out (``-m 'not chaos'``)."""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.servers)
