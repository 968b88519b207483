"""Bandwidth caps that hold for a whole pump, not per process: token buckets in Redis.

``kbytes_ps`` / ``byte_rate_max`` (:mod:`sarra.flow.ratelimit`) cap one instance. The caps
here are shared by every instance of every flow on every node that names the same Redis:

* ``bandwidth SOURCE RATE [WEIGHT]`` (admin.conf, or any configuration): the transfers of
  files whose notice names ``SOURCE`` (its ``source`` header) take at most ``RATE`` bytes/s
  together, pump-wide;
* ``bandwidth * RATE``: the pump's total for all sources together, divided fairly: each
  source *active* (it took bytes within the last :data:`ACTIVE_WINDOW` seconds, or is still
  waiting out what it took) gets
  ``RATE * weight / (sum of the active sources' weights)`` (``WEIGHT`` defaults to 1), or its
  own cap when that is lower. An idle source's share goes to the active ones within about
  :data:`ACTIVE_WINDOW` seconds. (A source capped below its share leaves the difference
  unused: simple and predictable, not max-min fair.)
* ``bandwidth_shared RATE`` (an option of one configuration): that configuration's
  transfers, all its instances on all nodes, take at most ``RATE`` bytes/s.

A transfer takes from every bucket that applies to it (and from the instance's own limiter)
and waits for the slowest. Each bucket is one Redis hash, refilled and taken from by one Lua
script call (atomic), with the time from Redis ``TIME``: nodes' clocks do not matter. Like
the local bucket, a take always succeeds and may leave a debt that the caller waits out, so
over any interval the bytes stay within ``rate * interval + burst`` however many processes
share the bucket.

**Redis unreachable** (or failing): transfers go on, each process limited on its own by a
local bucket at the same rate (the pump as a whole may then exceed the cap, up to the number
of processes times it); a warning is logged once per outage, Redis is tried again every
:data:`RETRY_AFTER` seconds, and a line is logged when it answers again. An outage is never
a reason to stop or lose a transfer.

**bandwidth_wait_max** (0: none): a transfer whose waits on these caps (and the instance's
own) would add up to more than that fails with :class:`~sarra.errors.RateCapped` (failure
class ``bandwidth``, see :class:`~sarra.flow.ratelimit.TransferWaits`) instead of waiting.

The store is ``bandwidth_redis_serverurl`` (default: ``nodupe_redis_serverurl``), its
password from ``credentials.conf`` as for the shared duplicate store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sarra.config import paths
from sarra.config.credentials import CredentialStore, ParsedUrl, parse_url
from sarra.config.options import BANDWIDTH_TOTAL as TOTAL
from sarra.config.options import parse_bandwidth
from sarra.config.settings import Settings
from sarra.errors import ConfigError
from sarra.flow.ratelimit import BURST_SECONDS, Limiter, TokenBucket, _sleep
from sarra.flow.sharedstore import redis_client, redis_error, redis_url

log = logging.getLogger(__name__)

#: a source that took bytes within this many seconds counts in the division of ``bandwidth *``
ACTIVE_WINDOW = 2.0
#: after a failed Redis call, transfers use their local buckets this long before trying again
RETRY_AFTER = 5.0
#: an idle bucket disappears from Redis after this long (it would be full anyway)
IDLE_EXPIRE_MS = 60_000
#: the bucket of notices without a source header
NO_SOURCE = "-"
KEYBASE = "sarra.bandwidth"


# -- the arithmetic (mirrored by the Lua script; tests check both against the same cases) --


def fair_share(total: float, weight: float, active: Mapping[str, float], cap: float) -> float:
    """The rate of a source of ``weight`` among ``active`` (name -> weight, itself
    included) under a pump total ``total`` (0: none) and its own ``cap`` (0: none)."""
    rate = cap
    if total > 0:
        share = total * weight / sum(active.values())
        if rate <= 0 or share < rate:
            rate = share
    return rate


def refill_take(
    tokens: float | None, last: float, now: float, amount: float, rate: float, burst: float
) -> tuple[float, float, float]:
    """One take from a bucket holding ``tokens`` at time ``last`` (None: a new, full
    bucket): returns (tokens, last, wait in seconds). The bucket never holds more than
    ``burst`` (which shrinks with a source's share); a clock going back refills nothing."""
    if tokens is None:
        tokens, last = burst, now
    if now > last:
        tokens += (now - last) * rate
        last = now
    tokens = min(burst, tokens) - amount
    return tokens, last, (-tokens / rate if tokens < 0 else 0.0)


# KEYS[1] the bucket (hash tokens, last); KEYS[2] the active sources (zset: last seen);
# KEYS[3] their weights (hash). ARGV: amount, cap (0 none), total (0 none), weight, member,
# burst seconds, active window, now ('' : Redis TIME; set only by tests).
# Returns "wait rate" as text (Lua numbers would be truncated to integers).
_TAKE = """
local now
if ARGV[8] ~= '' then
  now = tonumber(ARGV[8])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local amount = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local total = tonumber(ARGV[3])
local weight = tonumber(ARGV[4])
if total > 0 then
  redis.call('ZADD', KEYS[2], now, ARGV[5])
  local oldest = string.format('%.17g', now - tonumber(ARGV[7]))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. oldest)
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], 60000)
  redis.call('PEXPIRE', KEYS[3], 60000)
  local sum = 0
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    sum = sum + (tonumber(redis.call('HGET', KEYS[3], m)) or 1)
  end
  local share = total * weight / sum
  if rate <= 0 or share < rate then rate = share end
end
local burst = math.max(1, rate * tonumber(ARGV[6]))
local st = redis.call('HMGET', KEYS[1], 'tokens', 'last')
local tokens = tonumber(st[1])
local last = tonumber(st[2])
if tokens == nil or last == nil then
  tokens = burst
  last = now
end
if now > last then
  tokens = tokens + (now - last) * rate
  last = now
end
-- never more than the burst of the rate in force (a share shrinks as sources arrive)
tokens = math.min(burst, tokens) - amount
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
           'last', string.format('%.17g', last))
redis.call('PEXPIRE', KEYS[1], 60000)
local wait = 0
if tokens < 0 then wait = -tokens / rate end
if total > 0 then
  -- active until its debt is repaid (then the window): a source waiting out a long debt
  -- keeps its share rather than leaving it to the others meanwhile
  redis.call('ZADD', KEYS[2], string.format('%.17g', now + wait), ARGV[5])
end
return string.format('%.17g %.17g', wait, rate)
"""


@dataclass(frozen=True)
class Cap:
    """One bucket's terms: its own cap (bytes/s, 0: none), its weight and the pump total
    it shares (bytes/s, 0: none)."""

    cap: float
    weight: float = 1.0
    total: float = 0.0

    @property
    def nominal(self) -> float:
        """The most it may get (sizes transfer reads and the outage fallback)."""
        caps = [c for c in (self.cap, self.total) if c > 0]
        return min(caps)


class BandwidthStore:
    """The buckets in one Redis, with the outage handling of the module docstring."""

    def __init__(
        self,
        url: ParsedUrl,
        *,
        client: Any = None,
        timeout: float = 2.0,
        keybase: str = KEYBASE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.keybase = keybase
        self._clock = clock
        self._redis = client or redis_client(url, timeout)
        self._take = self._redis.register_script(_TAKE)
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._down_since: float | None = None

    def __repr__(self) -> str:
        return f"BandwidthStore({self.url.without_password()!r})"

    def take(self, bucket: str, amount: float, cap: Cap, now: float | None = None) -> float | None:
        """Take ``amount`` from ``bucket``: the wait in seconds, or None when Redis cannot
        be used (the caller then uses its local bucket)."""
        if self._clock() < self._down_until:
            return None
        args: list[str | float] = [
            amount,
            cap.cap,
            cap.total,
            cap.weight,
            bucket,
            BURST_SECONDS,
            ACTIVE_WINDOW,
            "" if now is None else repr(now),
        ]
        b = self.keybase
        try:
            answer = self._take(
                keys=[f"{b}.bucket.{bucket}", f"{b}.active", f"{b}.weight"], args=args
            )
        except redis_error() as e:
            with self._lock:
                self._down_until = self._clock() + RETRY_AFTER
                if self._down_since is None:
                    self._down_since = self._clock()
                    log.warning(
                        "bandwidth store %s unreachable or failing (%s): each process now "
                        "limits itself alone at the same rates (the pump may exceed its caps); "
                        "trying again every %.0f s",
                        self.url.without_password(),
                        e,
                        RETRY_AFTER,
                    )
            return None
        if self._down_since is not None:
            with self._lock:
                if self._down_since is not None:
                    log.warning(
                        "bandwidth store %s reachable again after %.1f s: caps are pump-wide again",
                        self.url.without_password(),
                        self._clock() - self._down_since,
                    )
                    self._down_since = None
        text = answer.decode() if isinstance(answer, bytes) else str(answer)
        return float(text.split()[0])

    def close(self) -> None:
        self._redis.close()


class SharedBucket:
    """A :class:`~sarra.flow.ratelimit.Limiter` backed by one Redis bucket, falling back to
    a local bucket at the same nominal rate when the store cannot be used."""

    def __init__(
        self,
        store: BandwidthStore,
        name: str,
        cap: Cap,
        *,
        stop: threading.Event | None = None,
        wait: Callable[[float], bool] | None = None,
        wait_max: float = 0.0,
    ) -> None:
        self.store = store
        self.name = name
        self.cap = cap
        self.rate = cap.nominal
        self.wait_max = wait_max
        self.fallback = TokenBucket(self.rate, stop=stop, wait=wait)
        if wait is None:
            wait = stop.wait if stop is not None else _sleep
        self._wait = wait

    def __repr__(self) -> str:
        return f"SharedBucket({self.name!r}, {self.cap})"

    def reserve(self, amount: float) -> float:
        delay = self.store.take(self.name, amount, self.cap)
        return self.fallback.reserve(amount) if delay is None else delay

    def pause(self, delay: float) -> bool:
        return not self._wait(delay)

    def take(self, amount: float) -> bool:
        delay = self.reserve(amount)
        return self.pause(delay) if delay > 0 else True


class AllOf:
    """Several limiters at once: each is taken from, the wait is the longest."""

    def __init__(
        self,
        limiters: Sequence[Limiter],
        wait: Callable[[float], bool],
        wait_max: float = 0.0,
    ) -> None:
        self.limiters = tuple(limiters)
        self.rate = min(lim.rate for lim in self.limiters)
        self.wait_max = wait_max
        self._wait = wait

    def reserve(self, amount: float) -> float:
        return max(lim.reserve(amount) for lim in self.limiters)

    def pause(self, delay: float) -> bool:
        return not self._wait(delay)

    def take(self, amount: float) -> bool:
        delay = self.reserve(amount)
        return self.pause(delay) if delay > 0 else True


class Bandwidth:
    """The shared caps of one instance: :meth:`limiter` gives a transfer's limiter."""

    def __init__(
        self,
        store: BandwidthStore,
        sources: Mapping[str, tuple[int, float]],
        flow: tuple[str, int] | None = None,
        *,
        local: Limiter | None = None,
        stop: threading.Event | None = None,
        wait_max: float = 0.0,
    ) -> None:
        self.store = store
        #: ``bandwidth_wait_max``, carried by every limiter built here
        self.wait_max = wait_max
        self.total = float(sources[TOTAL][0]) if TOTAL in sources else 0.0
        self.sources = {k: v for k, v in sources.items() if k != TOTAL}
        self.local = local
        self.stop = stop
        self._wait: Callable[[float], bool] = stop.wait if stop is not None else _sleep
        self._flow = (
            SharedBucket(
                store, f"flow.{flow[0]}", Cap(float(flow[1])), stop=stop, wait_max=wait_max
            )
            if flow is not None
            else None
        )
        self._lock = threading.Lock()
        self._per_source: dict[str, Limiter | None] = {}

    def limiter(self, source: str | None) -> Limiter | None:
        """The limiter of a transfer of a file from ``source`` (None: unlimited)."""
        name = source or NO_SOURCE
        with self._lock:
            if name not in self._per_source:
                self._per_source[name] = self._build(name)
            return self._per_source[name]

    def _build(self, name: str) -> Limiter | None:
        parts: list[Limiter] = [lim for lim in (self.local, self._flow) if lim is not None]
        cap, weight = self.sources.get(name, (0, 1.0))
        if cap > 0 or self.total > 0:
            parts.append(
                SharedBucket(
                    self.store,
                    f"source.{name}",
                    Cap(float(cap), weight, self.total),
                    stop=self.stop,
                    wait_max=self.wait_max,
                )
            )
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else AllOf(parts, self._wait, self.wait_max)

    def close(self) -> None:
        self.store.close()


def bandwidth_lines(lines: Sequence[str]) -> dict[str, tuple[int, float]]:
    """The ``bandwidth`` values (one ``NAME RATE [WEIGHT]`` each): the last line of a name wins."""
    found: dict[str, tuple[int, float]] = {}
    for line in lines:
        name, rate, weight = parse_bandwidth(line)
        found[name] = (rate, weight)
    return found


def open_bandwidth(
    s: Settings, component: str, local: Limiter | None, stop: threading.Event | None = None
) -> Bandwidth | None:
    """The shared caps ``s`` asks for (``bandwidth`` lines, ``bandwidth_shared``), or None.

    Raises:
        ConfigError: caps without a Redis URL, or a bad URL.
    """
    sources = bandwidth_lines(s.bandwidth)
    flow_rate = s.bandwidth_shared
    if not sources and not flow_rate:
        return None
    text = s.bandwidth_redis_serverurl or s.nodupe_redis_serverurl
    if not text:
        raise ConfigError(
            "bandwidth caps are pump-wide and need a Redis: set bandwidth_redis_serverurl "
            "(or nodupe_redis_serverurl)",
            option="bandwidth_redis_serverurl",
        )
    option = (
        "bandwidth_redis_serverurl" if s.bandwidth_redis_serverurl else "nodupe_redis_serverurl"
    )
    if parse_url(text).scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"{option} must be a redis:// or rediss:// URL for the bandwidth caps",
            option=option,
        )
    path = paths.credentials_path()
    credentials = CredentialStore.load(path) if path.exists() else CredentialStore()
    url = redis_url(text, credentials)
    flow = (f"{component}.{s.name or 'default'}", flow_rate) if flow_rate else None
    return Bandwidth(
        BandwidthStore(url), sources, flow, local=local, stop=stop, wait_max=s.bandwidth_wait_max
    )
