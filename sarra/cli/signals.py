"""Stop signals of a running instance.

The first SIGTERM or SIGINT sets the instance's stop event, so the component finishes or
abandons its in-flight work cleanly; a second one exits at once, for an operator who does not
want to wait.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install_stop_handlers(stop: threading.Event) -> Callable[[], None]:
    """Make SIGTERM/SIGINT set ``stop`` (second signal: ``os._exit(128 + signum)``).

    Must be called from the main thread. Returns a function restoring the previous handlers.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            os._exit(128 + signum)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
