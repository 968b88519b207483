"""The sr_* components: each a short declaration (defaults + behaviour)."""

from __future__ import annotations

from sarra.components.base import Component
from sarra.components.post import PostComponent
from sarra.components.subscribe import SubscribeComponent
from sarra.components.watch import WatchComponent

REGISTRY: dict[str, Component] = {
    "post": PostComponent(),
    "watch": WatchComponent(),
    "subscribe": SubscribeComponent(),
}
