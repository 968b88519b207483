"""Quotas per source on the pump's tree: the usage ledger and the check before a write.

The pump's sr_sarra charges each file it places to the notice's ``source`` (policed from the
``xs_<u>`` exchange it came on) and, before writing, refuses with
:class:`~sarra.errors.QuotaExceeded` (report 507) a file that would take the source over its
``quota`` line (admin.conf, :mod:`sarra.config.quota`). Only sources with a ``quota`` line are
tracked and checked; every other source flows as before.

Usage lives behind :class:`UsageStore`, in one of two stores:

* :class:`FileLedger` (the default): one small JSON file per source under
  ``<state_dir>/quota/`` (``<source>.json``), read and rewritten under an exclusive lock on
  ``<source>.lock`` (``flock``; LockFileEx on Windows), so every instance and every sarra
  configuration of *one node* share it and it survives restarts.
* :class:`RedisLedger` (``quota_redis_serverurl`` in admin.conf): one Redis hash per source,
  ``<quota_redis_keybase>.source.<source>`` (default keybase ``sarra.quota``), plus the set
  ``<keybase>.sources``; every charge is one Lua script (check, add, count a refusal, never
  below zero), so the nodes of a pump that share one tree (admin guide, "Several pump
  nodes") share one ledger and a source cannot hold more than its quota however many nodes
  write for it. The password comes from ``credentials.conf`` as for the shared duplicate
  store (:mod:`sarra.flow.sharedstore`).

  **Redis unreachable** (or failing): a charge that could be refused (an increase against a
  limit, or a check) raises :class:`~sarra.errors.QuotaStoreUnavailable`, which is
  retryable: the file is not written, its notice goes to the retry queue and is tried again
  later; nothing is placed unchecked. A charge that cannot be refused (a file removed, a
  charge given back after a failed download, a size corrected after it) is kept in memory
  and applied, in order, before this process's next charge once Redis answers; lost if the
  process stops first (each one is logged with its numbers, so the ledger can be corrected
  by hand: ``HINCRBY``); until applied, other processes may admit that much more. An
  error is logged once per outage, and a line when Redis answers again. A reply lost after
  Redis ran the script (a timeout) leaves the charge taken though the file is not written:
  usage too high by that file (never too low), corrected by hand.

What is counted: a file placed by the sarra adds its size and one file; a file replaced
adds the difference of sizes and no file; a file removed (an ``R`` notice) subtracts its
size and one file. The charge is taken, under the lock, *before* the download (so several
instances cannot overshoot together) and given back if the download fails. Files removed
behind the pump's back (a cleanup cron) are not seen: the ledger of such a source is
corrected by rewriting ``<source>.json`` while its sarra instances are stopped, or with
``HINCRBY`` on its Redis hash (admin guide, "Quotas per source").
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from sarra import osport
from sarra.config import paths
from sarra.config.credentials import CredentialStore, ParsedUrl
from sarra.config.quota import SOURCE_NAME, Quota
from sarra.errors import LocalError, QuotaExceeded, QuotaStoreUnavailable
from sarra.flow.sharedstore import redis_client, redis_error, redis_url

log = logging.getLogger(__name__)

#: the default prefix of the Redis ledger's keys (``quota_redis_keybase``)
KEYBASE = "sarra.quota"


@dataclass(slots=True)
class Usage:
    """What one source holds on the tree, and what was refused to it."""

    bytes: int = 0
    files: int = 0
    refused: int = 0
    last_refusal: str = ""
    last_refusal_time: float = 0.0


class UsageStore(Protocol):
    """Where usage is kept. Both methods are atomic for every process of the pump."""

    def charge(
        self, source: str, delta_bytes: int, delta_files: int, quota: Quota, dry_run: bool = False
    ) -> Usage:
        """Add the deltas to ``source``'s usage unless an increase would exceed ``quota``:
        then count a refusal and raise QuotaExceeded. Decreases are always applied (never
        below zero). ``dry_run``: only the check (and a refusal's count), nothing added.
        Returns the usage after the change."""
        ...

    def usage(self, source: str) -> Usage:
        """The current usage of ``source`` (zero if never charged)."""
        ...


def _over(usage: Usage, delta_bytes: int, delta_files: int, quota: Quota) -> str | None:
    """Why the change would exceed ``quota`` (None: it fits)."""
    if delta_bytes > 0 and quota.bytes is not None and usage.bytes + delta_bytes > quota.bytes:
        return f"bytes quota exceeded: {usage.bytes} used + {delta_bytes} > {quota.bytes} allowed"
    if delta_files > 0 and quota.files is not None and usage.files + delta_files > quota.files:
        return f"files quota exceeded: {usage.files} used + {delta_files} > {quota.files} allowed"
    return None


class FileLedger:
    """Usage per source in ``directory``: ``<source>.json`` guarded by ``<source>.lock``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()  # threads of this process; flock orders the processes

    def _paths(self, source: str) -> tuple[Path, Path]:
        if not SOURCE_NAME.fullmatch(source):
            raise ValueError(f"bad source name {source!r}")
        return self.directory / f"{source}.json", self.directory / f"{source}.lock"

    @staticmethod
    def _read(path: Path) -> Usage:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return Usage(**{k: doc[k] for k in Usage.__slots__ if k in doc})
        except FileNotFoundError:
            return Usage()
        except (OSError, ValueError, TypeError) as exc:  # a hand edit gone wrong
            raise LocalError(f"quota ledger {path} unreadable: {exc}") from exc

    @staticmethod
    def _write(path: Path, usage: Usage) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(usage), sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)

    def charge(
        self, source: str, delta_bytes: int, delta_files: int, quota: Quota, dry_run: bool = False
    ) -> Usage:
        path, lock_path = self._paths(source)
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | osport.O_BINARY, 0o600)
            try:
                osport.lock(fd, exclusive=True)
                usage = self._read(path)
                reason = _over(usage, delta_bytes, delta_files, quota)
                if reason is not None:
                    usage.refused += 1
                    usage.last_refusal = reason
                    usage.last_refusal_time = time.time()
                    self._write(path, usage)
                    raise QuotaExceeded(f"source {source}: {reason}")
                if dry_run:
                    return usage
                usage.bytes = max(0, usage.bytes + delta_bytes)
                usage.files = max(0, usage.files + delta_files)
                self._write(path, usage)
                return usage
            finally:
                os.close(fd)  # releases the lock

    def usage(self, source: str) -> Usage:
        return self._read(self._paths(source)[0])

    def sources(self) -> list[str]:
        """Every source with a ledger, sorted."""
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json") if not p.name.startswith("."))


# KEYS[1] the source's hash, KEYS[2] the set of sources; ARGV: source, delta bytes, delta
# files, bytes limit ('' none), files limit ('' none), dry run (0/1), now (seconds, text).
# Returns {refused 0/1, bytes, files, refused count, last refusal, its time}, all text.
_CHARGE = """
local u = redis.call('HMGET', KEYS[1], 'bytes', 'files', 'refused', 'last_refusal',
                     'last_refusal_time')
local b = tonumber(u[1]) or 0
local f = tonumber(u[2]) or 0
local r = tonumber(u[3]) or 0
local lr = u[4] or ''
local lt = u[5] or '0'
local db = tonumber(ARGV[2])
local df = tonumber(ARGV[3])
local reason = nil
if db > 0 and ARGV[4] ~= '' and b + db > tonumber(ARGV[4]) then
  reason = string.format('bytes quota exceeded: %d used + %d > %d allowed', b, db,
                         tonumber(ARGV[4]))
elseif df > 0 and ARGV[5] ~= '' and f + df > tonumber(ARGV[5]) then
  reason = string.format('files quota exceeded: %d used + %d > %d allowed', f, df,
                         tonumber(ARGV[5]))
end
redis.call('SADD', KEYS[2], ARGV[1])
if reason then
  r = r + 1
  redis.call('HSET', KEYS[1], 'refused', string.format('%d', r), 'last_refusal', reason,
             'last_refusal_time', ARGV[7])
  return {'1', string.format('%d', b), string.format('%d', f), string.format('%d', r),
          reason, ARGV[7]}
end
if ARGV[6] ~= '1' then
  b = math.max(0, b + db)
  f = math.max(0, f + df)
  redis.call('HSET', KEYS[1], 'bytes', string.format('%d', b), 'files', string.format('%d', f))
end
return {'0', string.format('%d', b), string.format('%d', f), string.format('%d', r), lr, lt}
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _refusable(delta_bytes: int, delta_files: int, quota: Quota) -> bool:
    """Whether such a charge could be refused (an increase against a limit)."""
    return (delta_bytes > 0 and quota.bytes is not None) or (
        delta_files > 0 and quota.files is not None
    )


class RedisLedger:
    """Usage per source in Redis, shared by every node naming it (see the module doc).

    Thread-safe (the client has a connection pool; the pending corrections a lock)."""

    def __init__(
        self,
        url: ParsedUrl,
        keybase: str = KEYBASE,
        *,
        client: Any = None,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.keybase = keybase
        self._clock = clock
        self._redis = client or redis_client(url, timeout)
        self._charge = self._redis.register_script(_CHARGE)
        self._lock = threading.Lock()
        #: charges that cannot be refused, taken while Redis was unreachable (applied first)
        self._pending: list[tuple[str, int, int]] = []
        self._down_since: float | None = None

    def __repr__(self) -> str:
        return f"RedisLedger({self.url.without_password()!r}, keybase={self.keybase!r})"

    def key(self, source: str) -> str:
        if not SOURCE_NAME.fullmatch(source):
            raise ValueError(f"bad source name {source!r}")
        return f"{self.keybase}.source.{source}"

    def _run(self, source: str, db: int, df: int, quota: Quota, dry_run: bool) -> list[str]:
        args: list[str | int] = [
            source,
            db,
            df,
            "" if quota.bytes is None else quota.bytes,
            "" if quota.files is None else quota.files,
            1 if dry_run else 0,
            repr(float(self._clock())),
        ]
        answer = self._charge(keys=[self.key(source), f"{self.keybase}.sources"], args=args)
        return [_text(a) for a in answer]

    def _flush(self) -> None:
        """Apply the pending corrections (called under the lock); raises redis errors."""
        while self._pending:
            source, db, df = self._pending[0]
            self._run(source, db, df, Quota(), False)
            self._pending.pop(0)

    def _down(self, what: str, error: Exception) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error(
                "quota ledger %s unreachable or failing (%s: %s): files of sources with a "
                "quota are not written meanwhile (retried later)",
                self.url.without_password(),
                what,
                error,
            )

    def _up(self) -> None:
        if self._down_since is not None:
            log.warning(
                "quota ledger %s reachable again after %.1f s",
                self.url.without_password(),
                time.monotonic() - self._down_since,
            )
            self._down_since = None

    def charge(
        self, source: str, delta_bytes: int, delta_files: int, quota: Quota, dry_run: bool = False
    ) -> Usage:
        self.key(source)  # a bad name is a ValueError, not an outage
        with self._lock:
            try:
                self._flush()
                answer = self._run(source, delta_bytes, delta_files, quota, dry_run)
            except redis_error() as e:
                self._down(f"charge {source}", e)
                if dry_run or _refusable(delta_bytes, delta_files, quota):
                    raise QuotaStoreUnavailable(
                        f"source {source}: quota ledger {self.url.without_password()} "
                        f"unreachable ({e}); not written, retried later"
                    ) from e
                self._pending.append((source, delta_bytes, delta_files))
                log.error(
                    "quota ledger unreachable: the change of %+d bytes, %+d files of source "
                    "%s is kept in memory until it answers (%d pending)",
                    delta_bytes,
                    delta_files,
                    source,
                    len(self._pending),
                )
                return Usage()
            self._up()
        usage = Usage(int(answer[1]), int(answer[2]), int(answer[3]), answer[4], float(answer[5]))
        if answer[0] == "1":
            raise QuotaExceeded(f"source {source}: {usage.last_refusal}")
        return usage

    def usage(self, source: str) -> Usage:
        key = self.key(source)
        fields = ("bytes", "files", "refused", "last_refusal", "last_refusal_time")
        try:
            got = self._redis.hmget(key, *fields)
        except redis_error() as e:
            raise QuotaStoreUnavailable(
                f"quota ledger {self.url.without_password()} unreachable ({e})"
            ) from e
        b, f, r, lr, lt = (None if v is None else _text(v) for v in got)
        return Usage(int(b or 0), int(f or 0), int(r or 0), lr or "", float(lt or 0))

    def sources(self) -> list[str]:
        """Every source charged at least once, sorted."""
        try:
            found = self._redis.smembers(f"{self.keybase}.sources")
        except redis_error() as e:
            raise QuotaStoreUnavailable(
                f"quota ledger {self.url.without_password()} unreachable ({e})"
            ) from e
        return sorted(_text(s) for s in found)

    def pending(self) -> list[tuple[str, int, int]]:
        """The corrections not yet applied (Redis unreachable)."""
        with self._lock:
            return list(self._pending)

    def close(self) -> None:
        with self._lock:
            try:
                self._flush()
            except redis_error() as e:
                for source, db, df in self._pending:
                    log.error(
                        "quota ledger unreachable at exit: lost the change of %+d bytes, %+d "
                        "files of source %s (correct it by hand: %s)",
                        db,
                        df,
                        source,
                        e,
                    )
        self._redis.close()


class Ledger(UsageStore, Protocol):
    """A store the audit can list: :class:`FileLedger` or :class:`RedisLedger`."""

    def sources(self) -> list[str]: ...


def open_ledger(
    serverurl: str | None,
    keybase: str | None,
    state_root: Path,
    env: Mapping[str, str] | None = None,
    *,
    check_mode: bool = True,
) -> FileLedger | RedisLedger:
    """The ledger the pump's settings name: a :class:`RedisLedger` at ``serverurl``
    (``quota_redis_serverurl``; its password from ``credentials.conf``), else the
    :class:`FileLedger` of ``state_root``. Nothing of redis is imported without a URL.

    Raises:
        ConfigError: a URL that is not redis:// or rediss://, or a path not a db number.
    """
    if not serverurl:
        return FileLedger(ledger_dir(state_root))
    path = paths.credentials_path(env)
    credentials = (
        CredentialStore.load(path, check_mode=check_mode) if path.exists() else CredentialStore()
    )
    url = redis_url(serverurl, credentials, option="quota_redis_serverurl")
    return RedisLedger(url, keybase or KEYBASE)


def ledger_dir(state_root: Path) -> Path:
    """The pump-wide ledger directory under the state root (shared by every sarra)."""
    return state_root / "quota"


@dataclass(frozen=True, slots=True)
class Charge:
    """A charge taken before a write, to be given back if the write fails."""

    source: str
    bytes: int
    files: int


class QuotaGuard:
    """The check a sarra makes before writing a file of ``source`` (see the module doc)."""

    def __init__(self, quotas: Mapping[str, Quota], store: UsageStore) -> None:
        self.quotas = dict(quotas)
        self.store = store

    def admit(self, source: str | None, new_size: int, old_size: int | None) -> Charge | None:
        """Charge a write of ``new_size`` bytes replacing a file of ``old_size`` (None: a new
        file). None when ``source`` has no quota. Raises QuotaExceeded (the refusal counted)."""
        quota = self.quotas.get(source) if source else None
        if quota is None or source is None:
            return None
        files = 1 if old_size is None else 0
        delta = new_size - (old_size or 0)
        self.store.charge(source, delta, files, quota)
        return Charge(source, delta, files)

    def check(self, source: str | None, new_size: int, old_size: int | None) -> None:
        """Refuse (QuotaExceeded) a file that would not fit, without charging it (a file
        assembled from blocks: charged by :meth:`placed` once complete)."""
        quota = self.quotas.get(source) if source else None
        if quota is not None and source is not None:
            delta, files = new_size - (old_size or 0), 1 if old_size is None else 0
            self.store.charge(source, delta, files, quota, dry_run=True)

    def placed(self, source: str, delta_bytes: int, files: int) -> None:
        """Charge a file already placed (never refused: it was checked before)."""
        if source in self.quotas:
            self.store.charge(source, delta_bytes, files, Quota())

    def adjust(self, charge: Charge | None, actual_delta: int) -> None:
        """The file turned out to change usage by ``actual_delta`` bytes, not the charge's."""
        if charge is not None and actual_delta != charge.bytes:
            self.store.charge(charge.source, actual_delta - charge.bytes, 0, Quota())

    def release(self, charge: Charge | None) -> None:
        """Give back a charge whose write failed."""
        if charge is not None:
            self.store.charge(charge.source, -charge.bytes, -charge.files, Quota())

    def close(self) -> None:
        """Close the store (a Redis ledger applies its pending corrections first)."""
        close = getattr(self.store, "close", None)
        if close is not None:
            close()

    def removed(self, source: str | None, size: int | None) -> None:
        """A file of ``source`` (``size`` bytes; None: none was there) was removed."""
        if source and source in self.quotas and size is not None:
            self.store.charge(source, -size, -1, Quota())
