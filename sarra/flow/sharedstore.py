"""A duplicate store shared by the instances of one configuration on several nodes (Redis).

``nodupe_driver redis`` (sr3's name) keeps the entries of :mod:`sarra.flow.nodupe` in Redis
instead of (for sr_winnow: besides) the per-instance file, so instances on different hosts
consuming one queue suppress each other's duplicates. A Redis key is
``<nodupe_redis_keybase>.<32 hex digits>``, the same 128-bit hash of (key, value) the local
cache uses; Redis expires it after ``nodupe_ttl``.

Two operations, each one atomic Redis command or script, so two nodes never both win:

* :meth:`SharedStore.check` (sr_subscribe's ``nodupe``): ``SET key d PX ttl GET``: the entry is
  refreshed (a sliding window, as the local cache does) and it is a duplicate when it was
  there. Like the local cache, the entry is made when the notice is first seen.
* :meth:`SharedStore.claim` / :meth:`commit` / :meth:`release` (sr_winnow): a *claim* marks the
  entry pending (value ``p:<owner>``, expiring after ``nodupe_redis_claim``) only if it is
  absent; once the forwarded post is confirmed by the broker, :meth:`commit` turns it into a
  done entry (value ``d``, expiring after ``nodupe_ttl``). A notice whose entry another node
  holds pending is neither forwarded nor dropped: the winnow waits until that node commits
  (a duplicate) or its claim expires (a node that died: this one claims it and forwards the
  file). So each file is forwarded once while the nodes live, and never lost to a dead node
  (one that died after its post was confirmed but before committing may see the file
  forwarded a second time).

**Redis unreachable** (or answering with an error: a wrong password, read-only, out of
memory): every operation retries with a growing delay (up to 10 s) and logs
an error once per outage (and when Redis answers again). Meanwhile the instance waits: it acks
nothing, forwards and downloads nothing, and its unacked notices stay with the broker; stopped
meanwhile, it raises :class:`~sarra.errors.Interrupted` (no outcome: the broker gives the
notices to another instance). Nothing is acked on a guess.

The password of ``nodupe_redis_serverurl`` comes from ``credentials.conf`` (a line
``redis://user:password@host:port/db``) like a broker's; logs show the URL without it.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from sarra.config import paths
from sarra.config.credentials import CredentialStore, ParsedUrl, parse_url
from sarra.config.settings import Settings
from sarra.errors import ConfigError, Interrupted
from sarra.flow.nodupe import DuplicateCache, _digest, derive_key
from sarra.notice import Notice

log = logging.getLogger(__name__)

T = TypeVar("T")

DRIVERS = ("disk", "redis")
#: the longest wait between two attempts to reach an unreachable Redis
RETRY_MAX = 10.0
#: while another node holds a claim, how often to look again
BUSY_POLL = 0.05

# KEYS[1] the entry; ARGV: owner value, claim ms, ttl ms. Returns 1 claimed, 0 done (a
# duplicate; its ttl refreshed), 2 pending with another owner, 3 already ours.
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == 'd' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 0
end
if v == ARGV[1] then return 3 end
return 2
"""

# KEYS: entries; ARGV[1] owner value. Deletes those still pending with that owner.
_RELEASE = """
local n = 0
for _, k in ipairs(KEYS) do
  if redis.call('GET', k) == ARGV[1] then
    redis.call('DEL', k)
    n = n + 1
  end
end
return n
"""


def redis_client(url: ParsedUrl, timeout: float) -> Any:
    """A client of the Redis at ``url`` (imported here: redis-py costs ~10 MiB and 60 ms of
    start-up, paid only by configurations that use a store), with no silent retries inside
    the library: callers retry, and say so in the log."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(
        host=url.host,
        port=url.port or 6379,
        db=_db(url.path),
        username=url.user,
        password=url.password,
        ssl=url.scheme == "rediss",
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def redis_error() -> type[Exception]:
    """redis-py's base error (imported when an error is being handled)."""
    import redis

    return redis.RedisError


class Claim(enum.Enum):
    """What :meth:`SharedStore.claim` found."""

    NEW = "new"  # claimed: forward it, then commit
    DUPLICATE = "duplicate"  # done by someone within ttl


def redis_url(
    text: str, credentials: CredentialStore, option: str = "nodupe_redis_serverurl"
) -> ParsedUrl:
    """``option``'s URL (``nodupe_redis_serverurl`` ...) with its password from the credentials
    file when the configured URL carries none. Raises ConfigError (naming ``option``) for a
    scheme other than redis/rediss or a path that is not a database number."""
    url = parse_url(text)
    if url.scheme not in ("redis", "rediss"):
        raise ConfigError(
            f"{option} must be a redis:// or rediss:// URL, not {url}",
            option=option,
        )
    _db(url.path, option)
    if url.password is None:
        found = credentials.find(url)
        if found is not None and found.password is not None:
            return ParsedUrl(url.scheme, url.host, url.port, found.user, found.password, url.path)
    return url


def _db(path: str, option: str = "nodupe_redis_serverurl") -> int:
    text = path.strip("/")
    if not text:
        return 0
    if not text.isdigit():
        raise ConfigError(
            f"the path of {option} is a database number, not {path!r}",
            option=option,
        )
    return int(text)


class SharedStore:
    """The shared duplicate entries of one configuration (see the module docstring).

    Thread-safe (the client has a connection pool); ``stop`` ends the waits on an outage.
    """

    def __init__(
        self,
        url: ParsedUrl,
        keybase: str,
        ttl: float,
        *,
        claim_ttl: float = 30.0,
        stop: threading.Event | None = None,
        client: Any = None,
        timeout: float = 5.0,
    ) -> None:
        if ttl <= 0:
            raise ConfigError("a shared duplicate store needs nodupe_ttl > 0", option="nodupe_ttl")
        self.url = url
        self.keybase = keybase
        self.ttl_ms = max(1, int(ttl * 1000))
        self.claim_ms = max(1, int(claim_ttl * 1000))
        self.stop = stop or threading.Event()
        #: the value of this process's claims (unique per host, pid and store)
        self.owner = f"p:{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._redis = client or redis_client(url, timeout)
        self._claim = self._redis.register_script(_CLAIM)
        self._release = self._redis.register_script(_RELEASE)
        self._down_since: float | None = None

    def __repr__(self) -> str:
        return f"SharedStore({self.url.without_password()!r}, keybase={self.keybase!r})"

    def key(self, digest: int) -> str:
        return f"{self.keybase}.{digest:032x}"

    # -- operations ------------------------------------------------------------------------

    def check(self, digest: int) -> bool:
        """True if the entry was there (a duplicate); either way it is set for ttl now."""
        key = self.key(digest)
        old = self._call("check", lambda: self._redis.set(key, "d", px=self.ttl_ms, get=True))
        return old is not None

    def claim(self, digest: int, on_busy: Callable[[], None] | None = None) -> Claim:
        """Claim the entry for forwarding, or say it is a duplicate. While another owner
        holds it pending, wait (its commit makes this a duplicate; its expiry lets this one
        claim); ``on_busy`` is called once before waiting, so a caller can commit its own
        claims first (two nodes waiting on each other's claims would otherwise each wait
        for the other's expiry)."""
        key = self.key(digest)
        args: list[str | int] = [self.owner, self.claim_ms, self.ttl_ms]
        busy = False
        while True:
            found = self._call("claim", lambda: self._claim(keys=[key], args=args))
            if found in (1, 3):
                return Claim.NEW
            if found == 0:
                return Claim.DUPLICATE
            if not busy and on_busy is not None:
                on_busy()
            busy = True
            if self.stop.wait(BUSY_POLL):
                raise Interrupted("stopping while another node holds the notice")

    def commit(self, digests: Iterable[int]) -> None:
        """Mark claimed entries done for ttl (one transaction)."""
        keys = [self.key(d) for d in digests]
        if not keys:
            return

        def run() -> None:
            pipe = self._redis.pipeline(transaction=True)
            for k in keys:
                pipe.set(k, "d", px=self.ttl_ms)
            pipe.execute()

        self._call("commit", run)

    def release(self, digests: Iterable[int]) -> int:
        """Drop this owner's pending claims (nothing was forwarded); one attempt only, as
        unreleased claims expire anyway. Returns how many were dropped."""
        keys = [self.key(d) for d in digests]
        if not keys:
            return 0
        try:
            return int(self._release(keys=keys, args=[self.owner]))
        except redis_error() as e:
            log.warning("cannot release %d claims in %s (%s); they expire", len(keys), self, e)
            return 0

    def forget(self, digests: Iterable[int]) -> int:
        """Delete entries (e.g. after a file was removed). Returns how many existed."""
        keys = [self.key(d) for d in digests]
        if not keys:
            return 0
        return int(self._call("forget", lambda: self._redis.delete(*keys)))

    def ping(self) -> None:
        """Reach Redis once (retrying like every operation)."""
        self._call("ping", self._redis.ping)

    def close(self) -> None:
        self._redis.close()

    # -- outage handling --------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        delay = 0.2
        while True:
            try:
                result = fn()
            except redis_error() as e:
                # unreachable, refusing (a wrong password), loading, read-only, out of memory:
                # no verdict either way, so wait rather than pass or drop the notice
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.error(
                        "shared duplicate store %s unreachable or failing (%s: %s): waiting, "
                        "nothing is acked meanwhile; retrying up to every %.0f s",
                        self.url.without_password(),
                        what,
                        e,
                        RETRY_MAX,
                    )
                if self.stop.wait(delay):
                    raise Interrupted(
                        f"stopping while the shared duplicate store is unreachable ({e})"
                    ) from e
                delay = min(delay * 2, RETRY_MAX)
                continue
            if self._down_since is not None:
                log.warning(
                    "shared duplicate store %s reachable again after %.1f s",
                    self.url.without_password(),
                    time.monotonic() - self._down_since,
                )
                self._down_since = None
            return result


def open_store(
    s: Settings, component: str, stop: threading.Event | None = None
) -> SharedStore | None:
    """The shared store ``s`` asks for (``nodupe_driver redis``), or None (``disk``).

    Raises:
        ConfigError: redis without ``nodupe_redis_serverurl``, a bad URL, or ttl 0.
    """
    if s.nodupe_driver != "redis":
        return None
    if not s.nodupe_redis_serverurl:
        raise ConfigError(
            "nodupe_driver redis needs nodupe_redis_serverurl", option="nodupe_redis_serverurl"
        )
    path = paths.credentials_path()
    credentials = CredentialStore.load(path) if path.exists() else CredentialStore()
    url = redis_url(s.nodupe_redis_serverurl, credentials)
    keybase = s.nodupe_redis_keybase or f"sarra.nodupe.{component}.{s.name or 'default'}"
    return SharedStore(
        url, keybase, s.suppress_duplicates, claim_ttl=s.nodupe_redis_claim, stop=stop
    )


class SharedDuplicateCache(DuplicateCache):
    """``nodupe`` with its verdicts from a :class:`SharedStore` (sr_subscribe).

    The in-memory cache underneath only remembers which entries this instance made for each
    path, so :meth:`forget` (a delete) can drop them from the store; a delete handled on
    another node drops what that node saw.

    A notice the broker *redelivers* is not checked (it is processed; an unchanged file is a
    304): its entry may have been made by a node that died before finishing it, and the other
    copies of that file, reaching live nodes, were suppressed by that entry.
    """

    def __init__(self, store: SharedStore, ttl: float, basis: str = "path") -> None:
        super().__init__(None, ttl=ttl, basis=basis)
        self.store = store

    def check(self, notice: Notice, now: float | None = None, *, persist: bool = True) -> bool:
        if self.ttl <= 0:
            return False
        digest = _digest(derive_key(notice), self.value_of(notice.path))
        duplicate = self.store.check(digest)  # may wait (Redis down) or raise Interrupted
        super().check(notice, now, persist=persist)
        return duplicate

    def note(self, notice: Notice, now: float | None = None) -> None:
        """A redelivered notice: remembered here only (so a delete can forget it), the store
        is not asked (its entry may be the one a dead node left)."""
        DuplicateCache.check(self, notice, now)

    def forget(self, path: str) -> int:
        digests = set(self._by_value.get(self.value_of(path), ()))
        if digests and self.basis != "data":
            self.store.forget(digests)
        return super().forget(path)

    def close(self) -> None:
        super().close()
        self.store.close()
