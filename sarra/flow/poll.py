"""sr_poll's work: list remote directories and announce new or changed files.

Each pass lists every polled directory (and, as sr2 does, its subdirectories) with the
transport of the ``destination`` URL (``listdir``: nginx/Apache index pages over http(s),
SFTP, FTP(S)). A file is announced once per (name, size, time) as the listing shows them:
the :class:`SeenState` remembers what was announced, and is written (atomically) only once
the broker confirmed the notices, so a restart neither loses nor repeats an announcement
(a crash between the confirmation and the write repeats it: a duplicate, never a loss).

Only one poller of a configuration polls at a time: the instances share a lock file in the
configuration's state directory (``fcntl.flock``, local to one host). The one holding it polls;
the others wait as stand-bys and take over (reading the state the last holder wrote) when it
ends. Across hosts (``single_active_consumer on``) the lock holder also stands for the
broker's election (:mod:`sarra.broker.election`) and polls only while it holds the token; it
hands its state over in a new token after each pass, and a poller elected takes the state of
the token it receives. A poller that loses the broker mid-pass may end that pass while the
next holder starts: the files of one pass may be announced twice, none is missed.

Notices are sr2's: baseUrl ``post_base_url`` (default: the destination, without password),
relPath ``/<directory>/<name>``, ``parts 1,<size>,1,0,0`` and ``sum z,d`` (the subscriber
computes the md5 while downloading) unless ``sum`` says ``z,s``, ``n`` or ``0``; with ``sum d``
or ``s`` each file announced is read through the transport to compute its sum (and its size
is the length read).

Plugins (:mod:`sarra.flow.hooks`): ``on_line`` sees every listed entry and may leave it out or
give another size or time; ``on_html_page`` reads the index pages of an http(s) destination in
place of :func:`~sarra.transfer.htmlindex.parse_index`. A plugin that raises fails that
directory's listing for the pass, like an unreadable directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from sarra import osport
from sarra.broker.election import Election
from sarra.codec import v02
from sarra.codec.fields import has_lone_surrogate, shown
from sarra.codec.timestamps import format_timestamp_ns, now_timestamp
from sarra.config.masks import Mask
from sarra.config.settings import Settings
from sarra.errors import (
    BrokerError,
    ConfigError,
    Interrupted,
    SarraError,
    TransportUnavailable,
)
from sarra.flow.hooks import Plugins
from sarra.flow.posting import PostSettings, Publisher
from sarra.integrity.sums import name_sum, new_hasher, random_sum
from sarra.notice import Checksum, Notice, PartSpec
from sarra.transfer.base import RemoteEntry, Transport, listed_name
from sarra.transfer.htmlindex import parse_index
from sarra.transfer.http import HttpTransport
from sarra.transfer.url import retrieval_url

log = logging.getLogger(__name__)

#: sums a poll announces: ``d``/``s`` read each file announced through the transport (a
#: download, as sr3's poll does when asked); the others are computed without reading it
POLL_SUMS = frozenset({"z,d", "z,s", "n", "0", "d", "s"})
#: deepest subdirectory level listed under a polled directory
MAX_DEPTH = 16
#: shortest time between the starts of two passes (``sleep 0`` would spin)
MIN_SLEEP = 0.1
#: longest time without a heartbeat while sleeping between passes
BEAT_EVERY = 30.0
#: how often a stand-by poller tries to take the lock
STANDBY_RETRY = 2.0

#: what was announced: relPath -> (size, mtime) as the listing showed them
Seen = dict[str, tuple[int | None, float | None]]


@dataclass(frozen=True, slots=True)
class Target:
    """One polled directory and the accept/reject lines that apply to its files."""

    directory: str
    masks: tuple[Mask, ...]


def poll_targets(cfg: Settings) -> list[Target]:
    """sr3's form when ``path`` is given: each ``path`` is polled with all the accept/reject
    lines (``directory`` is then not a remote directory). Otherwise sr2's: each accept/reject
    line applies to the ``directory`` in force before it."""
    if cfg.path:
        return [Target(path, tuple(cfg.masks)) for path in dict.fromkeys(cfg.path)]
    targets: dict[str, list[Mask]] = {}
    for mask in cfg.masks:
        if mask.directory:
            targets.setdefault(mask.directory, []).append(mask)
    if not targets and cfg.directory:
        targets[cfg.directory] = list(cfg.masks)
    if not targets:
        raise ConfigError("nothing to poll: give directory (sr2) or path (sr3)", option="path")
    return [Target(d, tuple(m)) for d, m in targets.items()]


def public_url(url: str) -> str:
    """``url`` without its password (the default ``post_base_url``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url.rstrip("/")
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc)).rstrip("/")


def check_sum(cfg: Settings) -> str:
    if cfg.sum not in POLL_SUMS:
        raise ConfigError(
            f"sr_poll cannot announce sum {cfg.sum!r}; use one of "
            f"{', '.join(sorted(POLL_SUMS))} (z,d, the default: the subscriber computes md5 "
            "while downloading; d or s: sr_poll reads each file to compute it)",
            option="sum",
        )
    return cfg.sum


def unlisted(source: str, rel_dir: str, name: str, what: str = "file") -> str:
    """The log line of a listed name that is not valid UTF-8 (a lone surrogate: bytes a
    transport decoded with ``surrogateescape``): it cannot be announced."""
    return (
        f"in {source}{shown(rel_dir) or '/'}: {shown(name)} skipped: {what} name is not "
        "valid UTF-8: cannot be announced"
    )


def _seen_json(seen: Seen) -> str:
    return json.dumps({"version": 1, "seen": {k: list(v) for k, v in sorted(seen.items())}})


def _seen_from_json(text: str) -> Seen:
    try:
        raw = json.loads(text)
        return {str(k): (v[0], v[1]) for k, v in raw.get("seen", {}).items()}
    except (ValueError, TypeError, AttributeError, IndexError) as e:
        log.error("poll state in the election token unreadable (%s): starting afresh", e)
        return {}


class SeenState:
    """What was announced, kept in a JSON file replaced atomically (temp file, fsync,
    rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Seen:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            log.error(
                "poll state %s unreadable (%s): everything listed is announced", self.path, err
            )
            return {}
        return {str(k): (v[0], v[1]) for k, v in raw.get("seen", {}).items()}

    def save(self, seen: Seen) -> None:
        data = _seen_json(seen)
        # named as every atomic state write is, so a start removes it after a kill (cli.instances)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class PollLock:
    """An exclusive, non-blocking ``flock`` on a local file, held until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            osport.lock(fd, exclusive=True, blocking=False)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing drops the lock


class Poller:
    """The loop of one sr_poll instance (see the module docstring)."""

    def __init__(
        self,
        cfg: Settings,
        settings: PostSettings,
        publisher: Publisher,
        transport: Callable[[], Transport],
        state_dir: Path,
        stop: threading.Event,
        heartbeat: Callable[[str], None] = lambda note: None,
        plugins: Plugins | None = None,
        election: Election | None = None,
    ) -> None:
        self.cfg = cfg
        self.settings = settings
        self.publisher = publisher
        self.new_transport = transport
        self.targets = poll_targets(cfg)
        self.sum = check_sum(cfg)
        self.source = (cfg.destination or "").rstrip("/")
        self.state = SeenState(state_dir / "poll_seen.json")
        self.lock = PollLock(state_dir / "poll.lock")
        self.stop = stop
        self.heartbeat = heartbeat
        self.seen: Seen = {}
        self.announced = 0
        self.plugins = plugins if plugins is not None and not plugins.empty else None
        self.election = election
        self.elected = False
        self._handed: Seen | None = None
        #: subdirectories not walked for a name that is not valid UTF-8 (each logged once)
        self._unwalked: set[tuple[str, str]] = set()

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        transport: Transport | None = None
        try:
            while not self.stop.is_set():
                if not self.lock.held:
                    if not self.lock.acquire():
                        # status shows the state "stand-by"
                        self.heartbeat("stand-by: another instance of this poll holds the lock")
                        self.stop.wait(STANDBY_RETRY)
                        continue
                    log.info("polling %s (this instance holds %s)", self.source, self.lock.path)
                    self.seen = self.state.load()
                if self.election is not None and not self._elected_now():
                    self.heartbeat(
                        f"stand-by: another poller holds the election {self.election.spec.name}"
                    )
                    self.stop.wait(STANDBY_RETRY)
                    continue
                if transport is None:
                    transport = self._open()
                started = time.monotonic()
                try:
                    self.poll_once(transport)
                except SarraError as err:
                    log.error("poll of %s failed: %s", self.source, err)
                    transport.close()
                    transport = None
                self.heartbeat("")  # status shows "running"
                due = started + max(MIN_SLEEP, self.cfg.sleep)
                # beating while it sleeps: a long sleep is not a hung instance (sanity)
                while not self.stop.wait(max(0.0, min(BEAT_EVERY, due - time.monotonic()))):
                    if time.monotonic() >= due:
                        break
                    self.heartbeat("")
        finally:
            if transport is not None:
                transport.close()
            self.lock.release()
        return 0

    def _elected_now(self) -> bool:
        """Whether this poller holds the election; on taking it, the state of the token
        received replaces the local one (unless the token is the first, which has none)."""
        assert self.election is not None
        if not self.election.active:
            if self.elected:
                log.warning("lost the election %s: standing by", self.election.spec.name)
                self.elected = False
            return False
        if not self.elected:
            token = self.election.payload
            if token is not None and token[0] > 0:
                self.seen = _seen_from_json(token[1])
                self._handed = dict(self.seen)
            log.info(
                "holding the election %s: polling %s (state of token %d, %d files)",
                self.election.spec.name,
                self.source,
                token[0] if token is not None else -1,
                len(self.seen),
            )
            self.elected = True
        return True

    def _open(self) -> Transport:
        """A new transport; an http(s) one reads index pages through the ``on_html_page``
        plugins first (see :mod:`sarra.flow.hooks`)."""
        transport = self.new_transport()
        plugins = self.plugins
        if plugins is not None and plugins.implements("on_html_page"):
            if not isinstance(transport, HttpTransport):  # resolved() refuses it first
                raise ConfigError("on_html_page applies to http(s) destinations only")

            def read(page: str, url: str) -> list[RemoteEntry]:
                try:
                    entries = plugins.on_html_page(page, url)
                except Exception as e:
                    log.exception("on_html_page plugin failed on %s", url)
                    raise SarraError(f"on_html_page plugin failed: {e}") from e
                return parse_index(page, url) if entries is None else entries

            transport.index_parser = read
        return transport

    def _line(self, entry: RemoteEntry, directory: str) -> RemoteEntry | None:
        """``entry`` through the ``on_line`` plugins: kept, replaced, or None (left out)."""
        if self.plugins is None:
            return entry
        try:
            return self.plugins.on_line(entry, directory)
        except Exception as e:
            log.exception("on_line plugin failed on %s/%s", directory.rstrip("/"), entry.name)
            raise SarraError(f"on_line plugin failed: {e}") from e

    def poll_once(self, transport: Transport) -> int:
        """One pass over every target; returns how many files were announced (confirmed)."""
        seen = dict(self.seen)
        fresh: list[tuple[str, RemoteEntry]] = []
        fresh_rels: set[str] = set()
        for target in self.targets:
            try:
                self._list_target(transport, target, seen, fresh, fresh_rels)
            except TransportUnavailable:
                raise  # the connection is gone: the pass is done again on a new one
            except SarraError as err:
                # a missing or unreadable directory does not keep the others from being polled
                log.error("listing %s%s failed: %s", self.source, target.directory, err)
            if self.stop.is_set():
                return 0
        if self.election is not None and not self.election.active:
            return 0  # lost the election while listing: the next holder announces them
        pubtime = now_timestamp()
        queued: list[tuple[str, RemoteEntry]] = []
        for rel, entry in fresh:
            try:
                notice = self.notice(transport, rel, entry, pubtime)
            except TransportUnavailable:
                raise
            except SarraError as err:  # e.g. gone before its size was asked: next pass
                log.error("not announced: %s: %s", shown(rel), err)
                continue
            self.publisher.add([notice], item=rel)
            queued.append((rel, entry))
        fresh = queued
        try:
            self.publisher.flush()
        except BrokerError as err:
            log.error("announcements not confirmed, kept for the next pass: %s", err)
            raise
        for rel, entry in fresh:
            seen[rel] = (entry.size, entry.mtime)
        self.state.save(seen)
        self.seen = seen
        if self.election is not None and seen != self._handed:
            self.election.hand_over(_seen_json(seen))
            self._handed = dict(seen)
        self.announced += len(fresh)
        if fresh:
            log.info("announced %d new or changed file(s) of %s", len(fresh), self.source)
        return len(fresh)

    def _list_target(
        self,
        transport: Transport,
        target: Target,
        seen: Seen,
        fresh: list[tuple[str, RemoteEntry]],
        fresh_rels: set[str],
    ) -> None:
        """List one target (and its subdirectories): what is new or changed goes to
        ``fresh``, the rest is recorded in ``seen``, and what left a directory listed is
        forgotten."""
        for rel_dir, entries in self._walk(transport, target.directory, 0):
            if self.stop.is_set():
                return
            listed: Seen = {}
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}"
                key = (entry.size, entry.mtime)
                listed[rel] = key
                if has_lone_surrogate(entry.name):
                    # recorded as seen (so logged once, again only if it changes), never fresh
                    if seen.get(rel) != key:
                        log.error(unlisted(self.source, rel_dir, entry.name))
                    continue
                if seen.get(rel) != key and self._wanted(target, entry):
                    fresh.append((rel, entry))
                    fresh_rels.add(rel)
            # forget what left this directory: if it comes back, it is announced again
            for rel in [r for r in seen if r.rsplit("/", 1)[0] == rel_dir]:
                if rel not in listed:
                    del seen[rel]
            # recorded now: what is unchanged or not wanted; the fresh once confirmed
            seen.update({r: k for r, k in listed.items() if r not in fresh_rels})

    def _url(self, rel: str) -> str:
        """The URL of ``rel`` (a decoded path under the destination; empty for its root) on
        the polled server, each segment percent-encoded, so a name holding ``?``, ``#`` or
        ``%`` is neither cut nor decoded on the way (:func:`sarra.transfer.url.retrieval_url`)."""
        if not rel.strip("/"):
            return f"{self.source}/"
        return retrieval_url(self.source, rel.lstrip("/"))

    def _walk(
        self, transport: Transport, directory: str, depth: int
    ) -> Iterator[tuple[str, list[RemoteEntry]]]:
        """The files of ``directory`` and, recursively, of its subdirectories. A subdirectory
        that cannot be listed is logged and left out of this pass (what was seen in it is kept,
        not forgotten); the target's own directory failing ends the walk (SarraError)."""
        rel_dir = "/" + directory.strip("/") if directory.strip("/") else ""
        try:
            listed = transport.listdir(self._url(rel_dir))
            entries = [k for k in (self._line(e, rel_dir or "/") for e in listed) if k is not None]
        except TransportUnavailable:
            raise  # the connection is gone: the whole pass is done again on a new one
        except SarraError as err:
            if depth == 0:
                raise
            log.error(
                "listing %s failed (the other directories are polled): %s", self._url(rel_dir), err
            )
            return
        files = [e for e in entries if not e.is_dir and listed_name(e.name)]
        yield rel_dir, files
        if depth >= MAX_DEPTH:
            return
        for sub in entries:
            if sub.is_dir and not sub.is_link and listed_name(sub.name):
                if has_lone_surrogate(sub.name):
                    if (rel_dir, sub.name) not in self._unwalked:
                        self._unwalked.add((rel_dir, sub.name))
                        log.error(unlisted(self.source, rel_dir, sub.name, "directory"))
                    continue
                yield from self._walk(transport, f"{rel_dir}/{sub.name}", depth + 1)

    def _wanted(self, target: Target, entry: RemoteEntry) -> bool:
        limit = self.cfg.file_time_limit
        if limit > 0 and entry.mtime is not None and entry.mtime < time.time() - limit:
            log.debug("%s: older than file_time_limit, not announced", entry.name)
            return False
        for mask in target.masks:
            if mask.matches(entry.name):
                if not mask.accept and self.cfg.log_reject:
                    log.info("rejected, not announced: %s", entry.name)
                return mask.accept
        return self.cfg.accept_unmatch

    def notice(self, transport: Transport, rel: str, entry: RemoteEntry, pubtime: str) -> Notice:
        size = entry.size
        url = self._url(rel)
        if self.sum in ("d", "s"):
            checksum, size = self._read_sum(transport, url)
        else:
            if size is None:  # the listing rounds sizes (Apache): ask the server
                size = transport.stat(url).size
            checksum = self._checksum(rel)
        headers = dict(self.settings.headers)
        if self.settings.rename:
            headers["rename"] = self.settings.rename
        if entry.mtime is not None and self.settings.preserve_time:
            headers["mtime"] = format_timestamp_ns(int(entry.mtime * 1_000_000_000))
        s = self.settings
        return v02.make_notice(
            exchange=s.exchange,
            topic_prefix=s.topic_prefix,
            pubtime=pubtime,
            base_url=s.base_url,
            path=rel,
            checksum=checksum,
            parts=PartSpec("1", size, 1, 0, 0),
            headers=headers,
            topic_override=s.topic_override,
        )

    def _read_sum(self, transport: Transport, url: str) -> tuple[Checksum, int]:
        """The ``d``/``s`` sum and the length of what the server sends for ``url``."""
        hasher = new_hasher(self.sum)
        size = 0
        body = transport.get(url)
        try:
            for chunk in body:
                if self.stop.is_set():
                    raise Interrupted(f"{url}: stopping while it was read for its sum")
                hasher.update(chunk)
                size += len(chunk)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return Checksum(self.sum, hasher.hexdigest()), size

    def _checksum(self, rel: str) -> Checksum:
        if self.sum == "n":
            return name_sum("n", rel)
        if self.sum == "0":
            return random_sum()
        return Checksum("z", self.sum[2:])
