"""Rate limits of one instance: bytes per second (``kbytes_ps``, ``byte_rate_max``) and
notices per second (``message_rate_max``).

A limit of 0 means no limit and builds no limiter at all (:func:`byte_limiter` and
:func:`message_limiter` return None), so the unlimited path costs nothing.

``bandwidth_wait_max`` bounds how long one transfer may wait on the byte caps (this
instance's and the pump-wide ones of :mod:`sarra.flow.bandwidth`): a limiter carries it as
``wait_max`` and each transfer counts its own waits (:class:`TransferWaits`). When the next
wait would take the total past it, the transfer fails with
:class:`~sarra.errors.RateCapped` (failure class ``bandwidth``) instead of waiting. 0: wait
as long as the caps require.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Protocol, TypeVar

from sarra.errors import Interrupted, RateCapped
from sarra.localfs.streaming import BUFFER_SIZE, DIRECT_ALIGN

_Chunk = TypeVar("_Chunk", bound=Sized)

#: the default burst: this many seconds of the rate may pass without waiting after an idle time
BURST_SECONDS = 0.1
#: under a byte limit, transfers read about this many seconds of the rate at a time
READ_SECONDS = 0.25
#: the smallest read buffer under a byte limit
READ_MIN = 64 * 1024


class Limiter(Protocol):
    """What transfers are throttled by: a local :class:`TokenBucket`, or a pump-wide one
    (:mod:`sarra.flow.bandwidth`). ``rate`` is the nominal bytes/s (it sizes reads)."""

    rate: float
    #: the longest one transfer may wait on it in total, in seconds (0: no bound)
    wait_max: float

    def reserve(self, amount: float) -> float: ...

    def pause(self, delay: float) -> bool: ...

    def take(self, amount: float) -> bool: ...


class TokenBucket:
    """A thread-safe token bucket: at most ``rate`` units per second on average.

    Contract:

    - units are whatever the caller counts: bytes for a transfer limit (one bucket shared by
      every transfer thread of an instance, downloads and sends alike), notices for a
      message limit;
    - the bucket holds at most ``burst`` tokens (default: :data:`BURST_SECONDS` of ``rate``,
      at least one unit) and starts full: after an idle time that much passes at once;
    - :meth:`take` of ``n`` units always succeeds at once, possibly driving the bucket into
      debt (a chunk already read is never split); the caller then waits until the debt is
      repaid at ``rate``. Callers in other threads queue behind that debt, so over any long
      interval the units taken stay within ``rate * interval + burst`` however many threads
      share the bucket;
    - the lock only guards the arithmetic: waiting happens outside it, on ``stop`` (a
      :class:`threading.Event`) when given, so a stopping instance is never held up by a
      limit; :meth:`take` then returns False;
    - ``clock`` and ``wait`` (seconds -> True when interrupted) may be replaced, for tests.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
        wait_max: float = 0.0,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"a rate limit must be positive, got {rate!r}")
        self.rate = float(rate)
        self.wait_max = float(wait_max)
        self.burst = float(burst) if burst is not None else max(1.0, self.rate * BURST_SECONDS)
        if self.burst <= 0:
            raise ValueError(f"a burst must be positive, got {burst!r}")
        self._clock = clock
        if wait is None:
            wait = stop.wait if stop is not None else _sleep
        self._wait = wait
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._last = clock()

    def reserve(self, amount: float) -> float:
        """Take ``amount`` units now; return how long the caller must wait (0.0: none)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= amount
            debt = -self._tokens
        return debt / self.rate if debt > 0 else 0.0

    def take(self, amount: float) -> bool:
        """Take ``amount`` units, waiting as long as the rate requires (outside the lock).

        Returns True, or False when the wait was interrupted by ``stop``.
        """
        delay = self.reserve(amount)
        return self.pause(delay) if delay > 0 else True

    def pause(self, delay: float) -> bool:
        """Wait ``delay`` seconds (a debt :meth:`reserve` returned): False when interrupted."""
        return not self._wait(delay)


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def byte_rate(kbytes_ps: int, byte_rate_max: int) -> int:
    """The byte cap in force: the smaller of ``kbytes_ps`` (KiB/s) and ``byte_rate_max``
    (bytes/s) where both are set; 0 when neither is (unlimited)."""
    caps = [c for c in (kbytes_ps * 1024, byte_rate_max) if c > 0]
    return min(caps) if caps else 0


def byte_limiter(
    rate: int, stop: threading.Event | None = None, wait_max: float = 0.0
) -> TokenBucket | None:
    """The instance's byte limiter at ``rate`` bytes/s, or None when ``rate`` is 0;
    ``wait_max``: ``bandwidth_wait_max`` (see :class:`TransferWaits`)."""
    return TokenBucket(rate, stop=stop, wait_max=wait_max) if rate > 0 else None


def message_limiter(rate: float, stop: threading.Event | None = None) -> TokenBucket | None:
    """The instance's notice limiter at ``rate`` notices/s, or None when ``rate`` is 0.

    Its burst is one notice: notices are spread evenly rather than let through in groups.
    """
    return TokenBucket(rate, burst=1.0, stop=stop) if rate > 0 else None


def read_size(limiter: Limiter | None) -> int:
    """The read buffer of downloads under ``limiter``: about :data:`READ_SECONDS` of its
    rate, a multiple of the direct I/O alignment between :data:`READ_MIN` and the usual
    buffer size (that size without a limiter). A chunk is read at full speed and then paid
    for, so small reads keep each wait short: a server never sees its client idle long
    (nginx drops one that reads nothing for 60 s by default)."""
    if limiter is None:
        return BUFFER_SIZE
    size = int(limiter.rate * READ_SECONDS) // DIRECT_ALIGN * DIRECT_ALIGN
    return max(READ_MIN, min(BUFFER_SIZE, size))


def throttled(chunks: Iterable[_Chunk], limiter: Limiter | None) -> Iterable[_Chunk]:
    """``chunks``, each passed on once ``limiter`` allows its length; ``chunks`` itself
    when there is no limiter. Raises :class:`Interrupted` when a wait is cut short by the
    stop event; the source is closed in every case."""
    if limiter is None:
        return chunks
    return _throttle(chunks, limiter)


def wait_exceeded(waited: float, delay: float, wait_max: float) -> bool:
    """Whether a transfer that has waited ``waited`` seconds on the byte caps so far must
    fail rather than wait ``delay`` more, under ``bandwidth_wait_max`` ``wait_max`` (0: it
    never must)."""
    return wait_max > 0 and delay > 0 and waited + delay > wait_max


class TransferWaits:
    """The waits of one transfer under ``limiter``: a :class:`Limiter` for that transfer
    alone that adds up the time it waited and raises :class:`~sarra.errors.RateCapped`,
    without waiting, when the next wait would take the total past ``limiter.wait_max``.

    The bytes of the chunk that met the limit were already taken from the buckets (a take
    always succeeds, see :class:`TokenBucket`): that debt, at most one read of the rate, is
    left to the transfers that follow."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self.rate = limiter.rate
        self.wait_max = limiter.wait_max
        #: seconds waited so far by this transfer
        self.waited = 0.0

    def reserve(self, amount: float) -> float:
        return self.limiter.reserve(amount)

    def pause(self, delay: float) -> bool:
        self.waited += delay
        return self.limiter.pause(delay)

    def take(self, amount: float) -> bool:
        """Take ``amount``; True once waited, False when interrupted by the stop event.

        Raises:
            RateCapped: the wait would take this transfer past ``bandwidth_wait_max``.
        """
        delay = self.limiter.reserve(amount)
        if delay <= 0:
            return True
        if wait_exceeded(self.waited, delay, self.wait_max):
            raise RateCapped(
                f"the byte rate caps would hold this transfer longer than bandwidth_wait_max "
                f"{self.wait_max:g} s (waited {self.waited:.1f} s, next wait {delay:.1f} s, "
                f"at most {self.rate:g} bytes/s)"
            )
        return self.pause(delay)


def per_transfer(limiter: Limiter) -> Limiter:
    """The limiter of one transfer: ``limiter`` itself when it has no ``wait_max``, else a
    fresh :class:`TransferWaits` over it."""
    return TransferWaits(limiter) if getattr(limiter, "wait_max", 0.0) > 0 else limiter


def _throttle(chunks: Iterable[_Chunk], limiter: Limiter) -> Iterator[_Chunk]:
    source = iter(chunks)
    limiter = per_transfer(limiter)
    try:
        for chunk in source:
            if not limiter.take(len(chunk)):
                raise Interrupted("stopping: transfer abandoned, the notice will be redelivered")
            yield chunk
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def throttle_callback(limiter: Limiter | None) -> Callable[[int], None] | None:
    """For a transport's ``put``: a function given each count of bytes sent, waiting as the
    limiter requires (raising :class:`Interrupted` when stopped); None without a limiter.
    Make one per transfer: under ``bandwidth_wait_max`` it counts that transfer's waits
    (raising :class:`~sarra.errors.RateCapped` past it)."""
    if limiter is None:
        return None
    limiter = per_transfer(limiter)

    def throttle(sent: int) -> None:
        if not limiter.take(sent):
            raise Interrupted("stopping: transfer abandoned, the notice will be redelivered")

    return throttle
