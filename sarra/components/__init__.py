"""The sr_* components: each a short declaration (defaults + behaviour).

The registry is an explicit literal table; a component's module is imported only when it is
used, so a one-shot ``sr_post`` does not pay for watchdog or the download path at start-up.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from sarra.components.base import Component

#: implemented component name -> "module:class"
IMPLEMENTED: dict[str, str] = {
    "post": "sarra.components.post:PostComponent",
    "watch": "sarra.components.watch:WatchComponent",
    "poll": "sarra.components.poll:PollComponent",
    "subscribe": "sarra.components.subscribe:SubscribeComponent",
    "sender": "sarra.components.sender:SenderComponent",
    "winnow": "sarra.components.winnow:WinnowComponent",
    "shovel": "sarra.components.shovel:ShovelComponent",
    "sarra": "sarra.components.sarra:SarraComponent",
    "report": "sarra.components.report_router:ReportRouterComponent",
    "log": "sarra.components.log:LogComponent",
}

#: the components whose ``one_shot`` is True (a run, not daemons): known without importing
#: them, so ``sr_subscribe start`` dispatches without loading the subscriber's flow code
ONE_SHOT: frozenset[str] = frozenset({"post"})


class Registry(Mapping[str, Component]):
    """Instantiates each component on first use."""

    def __init__(self, table: Mapping[str, str], one_shot: frozenset[str] = frozenset()) -> None:
        self._table = dict(table)
        self._one_shot = one_shot
        self._made: dict[str, Component] = {}

    def one_shot(self, name: str) -> bool:
        """The ``one_shot`` of component ``name``, without importing it (KeyError if unknown)."""
        if name not in self._table:
            raise KeyError(name)
        return name in self._one_shot

    def __getitem__(self, name: str) -> Component:
        if name not in self._made:
            module, _, cls = self._table[name].partition(":")
            self._made[name] = getattr(importlib.import_module(module), cls)()
        return self._made[name]

    def __contains__(self, name: object) -> bool:
        return name in self._table  # Mapping's would import the component

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


REGISTRY: Registry = Registry(IMPLEMENTED, ONE_SHOT)
