"""What becomes of a notice whose processing failed: the ``on_failure`` policy.

The one place that decides between *drop* (report the failure and ack the notice) and
*queue* (keep it in the disk retry queue, retried with backoff until ``retry_ttl``). An error
with a ``failure_class`` (see :data:`sarra.errors.FAILURE_CLASSES`) follows the action
configured for its class (``on_failure CLASS drop|queue``, else the class's default); any
other error follows its ``retryable``. With no retry queue (``retry off`` or a ``retry_ttl``
of 0) nothing is queued.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sarra.errors import FAILURE_CLASSES, SarraError, parse_on_failure

#: the default action of every class
DEFAULT_ACTIONS: Mapping[str, str] = MappingProxyType(
    {name: action for name, (action, _) in FAILURE_CLASSES.items()}
)


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """The action for each failure class (the defaults overridden by the configuration)."""

    actions: Mapping[str, str] = field(default_factory=lambda: DEFAULT_ACTIONS)

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> FailurePolicy:
        """From the ``on_failure`` values (``"CLASS ACTION"``, in order: the last wins)."""
        actions = dict(DEFAULT_ACTIONS)
        for line in lines:
            name, action = parse_on_failure(line)
            actions[name] = action
        return cls(MappingProxyType(actions))

    def action(self, error: BaseException) -> str | None:
        """The action for ``error``'s class; None for an error of no class."""
        name = getattr(error, "failure_class", None)
        return self.actions.get(name) if name is not None else None

    def retry_now(self, error: SarraError) -> bool:
        """Whether the same operation may be tried again at once (the ``attempts``): a
        retryable error whose class is not dropped."""
        return error.retryable and self.action(error) != "drop"

    def queue(self, error: BaseException) -> bool:
        """Whether a notice that failed with ``error`` goes to the retry queue: its class's
        action, else its ``retryable``; an unexpected exception (a bug, an OSError not
        translated) is queued, never acked as lost work."""
        action = self.action(error)
        if action is not None:
            return action == "queue"
        if isinstance(error, SarraError):
            return error.retryable
        return True
