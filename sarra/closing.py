"""The ``with`` protocol for objects that hold an open file or descriptor.

Several core objects (the duplicate cache, the retry queue, a part ticket, an in-flight file)
own an OS resource that must be released however the block that uses them ends. They all
mean the same thing by ``with obj:``: hand back the object itself, and on the way out, normal
or by exception, call its :meth:`Closing.close`. This module holds that one meaning so each
class states only how it closes.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """Mixin: ``with obj:`` yields ``obj`` and calls ``obj.close()`` on exit.

    A subclass implements :meth:`close`. It must be idempotent (the caller may also close
    explicitly inside the block) and must not swallow the exception of the block: ``__exit__``
    returns ``None``, so an exception raised in the block propagates after the close.
    """

    def close(self) -> None:
        """Release the resource (idempotent)."""
        raise NotImplementedError(f"{type(self).__name__} must define close()")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
