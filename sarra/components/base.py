"""Contract between the command-line front end and the components.

A component is a short declaration: its name, its defaults (in the option table) and the
behaviour it runs. The front end (sarra.cli) owns processes, pid files, logs and signals;
the component owns the data flow of one instance.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from sarra.config.settings import Settings


@dataclass(slots=True)
class InstanceStatus:
    """What ``status`` shows about a configuration, beyond process liveness."""

    queue: str | None = None
    backlog: int | None = None  # messages ready in the queue
    consumers: int | None = None
    extra: dict[str, object] = field(default_factory=dict)


class Component(Protocol):
    """What every sr_* component offers the front end."""

    name: str  # "subscribe", "post", "watch", ...
    #: True for one-shot components (sr_post without sleep): no instances, no daemon verbs
    one_shot: bool

    def run(self, cfg: Settings, instance: int, stop: threading.Event) -> int:
        """Run one instance in the foreground until ``stop`` is set; returns an exit status.

        Must return promptly (within a few seconds) once ``stop`` is set, with nothing lost:
        in-flight work is either finished and acked, or left unacked for redelivery.
        """
        ...

    def declare(self, cfg: Settings) -> None:
        """Create the exchanges and queues this configuration uses (idempotent)."""
        ...

    def cleanup(self, cfg: Settings) -> None:
        """Delete the queue and local state of this configuration."""
        ...

    def status(self, cfg: Settings) -> InstanceStatus:
        """Broker-side view: queue name, backlog, consumers."""
        ...
