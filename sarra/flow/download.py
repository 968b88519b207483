"""What a subscriber does with one accepted notice: select it, then transfer it.

:class:`Downloader` provides the two callables the :class:`~sarra.flow.engine.ConsumingLoop`
needs: ``select`` (flow thread: masks, destination, confinement, policy, plugins, duplicate
suppression) and ``work`` (pool thread: download, link, remove, mkdir, rmdir).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sarra.codec.timestamps import parse_timestamp
from sarra.errors import MalformedMessage, PolicyRefused, SarraError
from sarra.flow import baseurl
from sarra.flow.baseurl import SUBSCRIBER_REFUSED, HostGuard, resolve_host
from sarra.flow.hooks import Plugins
from sarra.flow.journal import InflightJournal
from sarra.flow.nodupe import DuplicateCache
from sarra.flow.partial import PartReceiver, block_paths
from sarra.flow.plugin_get import PluginGetTransport
from sarra.flow.ratelimit import Limiter, TokenBucket, read_size, throttled
from sarra.flow.wholefile import WholeFileResult, download_to, is_unchanged
from sarra.flow.work import PartState, Staged, WorkItem
from sarra.localfs.confined import SafeRoot, sync_files
from sarra.localfs.groupsync import GroupSync
from sarra.localfs.streaming import DIRECT_MIN, interruptible
from sarra.notice import Notice, PartSpec
from sarra.parts.arithmetic import parse_part_suffix, part_suffix
from sarra.parts.tracker import DEFAULT_EXPIRY
from sarra.transfer import open_transport
from sarra.transfer.base import Transport
from sarra.transfer.chunks import aligned_chunks
from sarra.transfer.url import origin_of, retrieval_url

if TYPE_CHECKING:
    from sarra.config.credentials import Credential
    from sarra.flow.bandwidth import Bandwidth
    from sarra.flow.quota import QuotaGuard

log = logging.getLogger(__name__)

#: schemes fetched when no base_url_accept line is configured (spec 9.4)
DEFAULT_SCHEMES = frozenset({"http", "https", "sftp", "ftp", "ftps"})

#: whole files up to this size (bytes) may be fetched in the flow thread (:meth:`Downloader.
#: work_inline`): no hand-off to the pool, whose thread switches cost more than such a file
INLINE_MAX = 256 << 10
#: an origin whose inline fetches all took longer than this (s) in a window of
#: :data:`INLINE_WINDOW` fetches (the fastest of them: a busy machine's occasional stall does
#: not count, a far origin's round trip does), or whose inline fetch failed, is left to the
#: pool for :data:`INLINE_BACKOFF` s, where its transfers overlap; a near origin stays inline
INLINE_SLOW = 0.01
INLINE_WINDOW = 4
INLINE_BACKOFF = 60.0
#: socket timeout (s) of the flow thread's own connections, and the longest an inline fetch
#: may take in all (a watchdog aborts it then, as it does at once when the instance stops): a
#: stalled or trickling origin holds the flow thread (acks, heartbeats, stop) no longer than
#: about this before its notice goes to the pool
INLINE_TIMEOUT = 2.0
#: how often (s) the watchdog of inline fetches looks
_WATCH_EVERY = 0.25
#: a batch barrier (the fsyncs of a batch commit) longer than this (s) stops inline fetches
#: until one is quick again, when the flow thread runs the barrier: on a file system where
#: durability costs time (a disk) downloads must go on in the pool meanwhile (not with
#: ``commit_thread``: the barrier then runs beside the flow thread, which goes on fetching)
INLINE_BARRIER_MAX = 0.005
#: schemes fetched inline: a kept-alive HTTP connection costs nothing to reuse
_INLINE_SCHEMES = ("http:", "https:")


@dataclass(frozen=True, slots=True)
class Destination:
    """Where an accepted notice goes: a root directory and a path under it."""

    root: str
    rel: str


Resolver = Callable[[Notice], "Destination | None"]
"""Masks + path options: the destination of a notice, or None when it is rejected."""


@dataclass(slots=True)
class DownloadSettings:
    inflight: str | None = ".tmp"
    events: frozenset[str] = frozenset({"create", "modify", "delete", "link", "mkdir", "rmdir"})
    base_url_accept: tuple[re.Pattern[str], ...] = ()
    preserve_time: bool = True
    preserve_mode: bool = True
    chmod: int = 0o644
    chmod_dir: int = 0o755
    timeout: float = 30.0
    link_absolute_allow: tuple[str, ...] = ()
    credentials: Callable[[str], Credential | None] = field(default=lambda _url: None)
    #: https: check server certificates (off with ``tls_rigour lax``)
    tls_verify: bool = True
    #: https: file of trusted CA certificates (None: the system's)
    ca_file: str | None = None
    transport_options: dict[str, Any] = field(default_factory=dict)
    progress_threshold: int = 8 << 20
    #: a multi-part file with no progress for this long is abandoned and reported (499)
    part_expiry: float = DEFAULT_EXPIRY
    #: fetch from baseUrls on loopback/link-local/private/unspecified addresses (spec 9.4);
    #: off, such a notice is refused (503) unless it matches ``base_url_accept``
    base_url_private: bool = False
    #: refuse (503) a notice whose parts claim a file larger than this; 0: no bound
    file_size_max: int = 0
    #: download a whole file even when the local copy matches the notice (no 304)
    overwrite: bool = False
    #: ``delete``: remove the source once the verified copy is durable (see after_settle)
    delete_source: bool = False
    #: ``discard``: remove the local copy once on_file ran and its report was published
    discard: bool = False


class Downloader:
    """Selects and performs the work of a subscriber."""

    def __init__(
        self,
        settings: DownloadSettings,
        resolve: Resolver,
        plugins: Plugins,
        nodupe: DuplicateCache | None = None,
        journal: InflightJournal | None = None,
        parts_state: Path | None = None,
        inplace: bool = True,
        batch_commit: bool = False,
        commit_thread: bool = False,
        group_sync: GroupSync | None = None,
        resolver: baseurl.Resolver = resolve_host,
        interrupt: threading.Event | None = None,
        limiter: TokenBucket | None = None,
        quota: QuotaGuard | None = None,
        bandwidth: Bandwidth | None = None,
    ) -> None:
        self.settings = settings
        #: quotas per source (the pump's sarra): checked and charged before each write
        self.quota = quota
        #: set when the instance stops: transfers are abandoned between two chunks
        self.interrupt = interrupt
        #: the instance's byte rate limit, shared by every transfer thread (None: unlimited)
        self.limiter = limiter
        #: the pump-wide caps (sarra.flow.bandwidth); None: only ``limiter``
        self.bandwidth = bandwidth
        self._hosts = (
            None
            if settings.base_url_private
            else HostGuard(
                SUBSCRIBER_REFUSED,
                hint="set base_url_private on, or list it in base_url_accept",
                resolver=resolver,
            )
        )
        #: stage verified whole files for :meth:`commit_batch` (the loop must call it)
        self.batch_commit = batch_commit
        #: :meth:`commit_batch` runs in a thread of its own (the loop's ``commit_async``),
        #: not in the flow thread: a slow barrier then does not stop inline fetches
        self.commit_thread = commit_thread
        #: barriers shared with the other instances (:mod:`sarra.localfs.groupsync`), or None
        self.group_sync = group_sync
        self.journal = journal
        self.parts = (
            PartReceiver(
                parts_state,
                inplace=inplace,
                inflight=settings.inflight,
                on_file=self.run_on_file,
                on_part=self.run_on_part,
                expiry=settings.part_expiry,
                interrupt=interrupt,
                limiter=limiter,
                bandwidth=bandwidth,
            )
            if parts_state is not None
            else None
        )
        self.resolve = resolve
        self.plugins = plugins
        self.nodupe = nodupe
        self._roots: dict[str, SafeRoot] = {}
        self._roots_lock = threading.Lock()
        self._local = threading.local()
        self._all_transports: list[Transport] = []
        self._transports_lock = threading.Lock()
        #: origins already warned about: their transport cannot delete a source
        self._cannot_delete: set[str] = set()
        #: base URLs already warned about: their i blocks are kept as .Part files
        self._ranges_kept: set[str] = set()
        #: whole files up to this size may be fetched in the flow thread (0: never)
        self.inline_max = (
            INLINE_MAX if batch_commit and limiter is None and bandwidth is None else 0
        )
        #: origin -> monotonic time until which it is fetched by the pool only
        self._inline_off: dict[str, float] = {}
        #: origin -> (fetches, fastest of them in s) in its current window
        self._inline_window: dict[str, tuple[int, float]] = {}
        #: the inline fetch under way: when it must end, and its transport (for the watchdog)
        self._inline_deadline: float | None = None
        self._inline_transport: Transport | None = None
        self._watchdog: threading.Thread | None = None
        self._closing = threading.Event()
        #: the last batch barrier took longer than INLINE_BARRIER_MAX
        self._barrier_slow = False

    # -- flow thread ---------------------------------------------------------------------------

    def _limiter(self, notice: Notice) -> Limiter | None:
        """The limiter of a transfer for ``notice``: the pump-wide caps of its source (with
        the instance's own limit) when there are any, else the instance's limit."""
        if self.bandwidth is None:
            return self.limiter
        return self.bandwidth.limiter(notice.header("source"))

    def select(self, item: WorkItem) -> bool:
        """Decide whether ``item`` goes to the transfer pool; settle it if not."""
        notice = item.notice
        dest = self.resolve(notice)
        if dest is None:
            item.settle(0, "rejected by the configuration")
            return False
        root = self.root(dest.root)
        rel = dest.rel
        renamed = notice.header("rename")
        if renamed:
            rel = renamed.lstrip("/") if "/" in renamed else _replace_name(rel, renamed)
        root.check_relpath(rel)  # HostilePath -> 417
        item.dest_root, item.dest_rel = str(root.root), rel
        self._check_policy(notice)
        if not self.plugins.empty and not self.plugins.on_message(item):
            item.settle(0, "dropped by an on_message plugin")
            return False
        if item.dest_rel is not None and item.dest_rel != rel:
            root.check_relpath(item.dest_rel)  # plugins cannot escape either
        if self.nodupe is not None and item.retry is None:
            if _redelivered(item):
                # its entry may be this instance's own, recorded before a crash cut the
                # download short: processed, never suppressed (see sarra.flow.nodupe)
                self.nodupe.note(notice)
            elif self.nodupe.check(notice):
                log.info("duplicate suppressed: %s", notice.path)
                item.settle(0, "duplicate")
                return False
        letter = notice.checksum.letter
        if letter == "R" and "delete" not in self.settings.events and not notice.header("newname"):
            item.settle(0, "delete events are not processed")
            return False
        return True

    def _check_policy(self, notice: Notice) -> None:
        """Spec 9.4: only allowed baseUrls are fetched, and no file over ``file_size_max``.

        A baseUrl matching ``base_url_accept`` is allowed as listed; otherwise its scheme
        must be a known one and (unless ``base_url_private``) its host must not be, or
        resolve to, a loopback/link-local/private/unspecified address
        (:mod:`sarra.flow.baseurl`). Raises :class:`PolicyRefused` (503).
        """
        limit = self.settings.file_size_max
        if limit > 0 and notice.parts is not None and notice.parts.file_size > limit:
            raise PolicyRefused(
                f"parts {notice.parts.wire()} claim a file of {notice.parts.file_size} bytes, "
                f"over file_size_max {limit}"
            )
        base = notice.base_url
        if self.settings.base_url_accept:
            if not any(p.match(base) for p in self.settings.base_url_accept):
                raise PolicyRefused(f"baseUrl {base} not accepted by base_url_accept")
            return
        if notice.checksum.file_op:
            return  # nothing is fetched
        scheme = base.split(":", 1)[0].lower()
        if scheme not in DEFAULT_SCHEMES:
            raise PolicyRefused(f"baseUrl scheme {scheme!r} not allowed (see base_url_accept)")
        parts = urlsplit(base)
        if parts.password:
            raise PolicyRefused("baseUrl carries a password")
        if self._hosts is not None:
            self._hosts.check(base)

    def root(self, directory: str) -> SafeRoot:
        with self._roots_lock:
            root = self._roots.get(directory)
            if root is None:
                journal = self.journal
                root = SafeRoot(
                    directory,
                    dir_mode=self.settings.chmod_dir,
                    file_mode=self.settings.chmod,
                    on_inflight=(
                        None
                        if journal is None
                        else lambda rel, created: journal.note(directory, rel, created)
                    ),
                )
                self._roots[directory] = root
            return root

    def work_inline(self, item: WorkItem) -> bool:
        """Flow thread, right after :meth:`select`: fetch a small whole file here and now,
        as :meth:`work` does in the pool, without the hand-off to a pool thread and back
        (on a near origin the thread switches cost more than the file). Returns True when
        the item's work is done (settled), False when it must go to the pool: not a small
        whole file from an http(s) origin known to be fast, or this attempt failed, in which
        case the item is left as it was and its origin is left to the pool for
        :data:`INLINE_BACKOFF` s (the pool fetches it again with the usual timeout, attempts
        and failure handling). The same goes for an origin whose fetches are all slower than
        :data:`INLINE_SLOW` (see :data:`INLINE_WINDOW`): there the pool's transfers overlap,
        which is faster.

        Only when nothing may run between the transfer and the batch commit (no plugins,
        files staged for the commit), no byte rate limit nor bandwidth cap applies, and the
        last batch barrier was quick (:data:`INLINE_BARRIER_MAX`; on a disk the pool downloads
        while the flow thread waits for the barrier) or ran beside the flow thread
        (``commit_thread``).
        """
        notice = item.notice
        parts = notice.parts
        if (
            self.inline_max <= 0
            or self._barrier_slow
            or parts is None
            or not parts.whole
            or parts.file_size > self.inline_max
            or notice.checksum.file_op
            or not notice.base_url.startswith(_INLINE_SCHEMES)
            or not self.plugins.empty
        ):
            return False
        origin = notice.base_url
        off = self._inline_off.get(origin)
        started = time.monotonic()
        if off is not None:
            if started < off:
                return False
            del self._inline_off[origin]
            self._inline_window.pop(origin, None)  # probed afresh
        self._local.inline = True
        if self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watch_inline, name="inline-watchdog", daemon=True
            )
            self._watchdog.start()
        self._inline_deadline = started + INLINE_TIMEOUT
        try:
            self.work(item)
        except Exception as e:  # the pool does it again, with its attempts and error handling
            log.debug("%s: fetched by the pool after an inline attempt failed: %s", notice.path, e)
            self._inline_off[origin] = time.monotonic() + INLINE_BACKOFF
            self._inline_window.pop(origin, None)
            self._drop_inline_transport(notice.base_url)
            if item.staged is not None:
                item.staged.inflight.abort()
            item.staged, item.code, item.message = None, None, ""
            item.size, item.computed, item.error = 0, None, None
            return False
        finally:
            self._local.inline = False
            self._inline_deadline = None
        now = time.monotonic()
        count, fastest = self._inline_window.get(origin, (0, INLINE_BACKOFF))
        count, fastest = count + 1, min(fastest, now - started)
        if count < INLINE_WINDOW:
            self._inline_window[origin] = (count, fastest)
        else:
            del self._inline_window[origin]
            if fastest > INLINE_SLOW:
                log.debug("%s: fetched by the pool for %.0f s (inline fetches too slow)",
                          origin, INLINE_BACKOFF)  # fmt: skip
                self._inline_off[origin] = now + INLINE_BACKOFF
        return True

    def _watch_inline(self) -> None:
        """Abort an inline fetch that outlives :data:`INLINE_TIMEOUT` (a trickling origin
        never lets a read time out) or that the instance's stop finds running: the flow
        thread must stay free; the notice goes to the pool, which handles both."""
        while not self._closing.wait(_WATCH_EVERY):
            deadline = self._inline_deadline
            if deadline is None:
                continue
            stopping = self.interrupt is not None and self.interrupt.is_set()
            if stopping or time.monotonic() > deadline:
                transport = self._inline_transport
                if transport is not None and self._inline_deadline == deadline:
                    try:
                        transport.abort()
                    except Exception:  # best effort: the fetch then ends by its timeout
                        log.debug("aborting an inline fetch failed", exc_info=True)

    def _drop_inline_transport(self, url: str) -> None:
        cache: dict[Any, Transport] | None = getattr(self._local, "inline_transports", None)
        transport = None if cache is None else cache.pop(origin_of(url), None)
        if transport is not None:
            with self._transports_lock:
                if transport in self._all_transports:
                    self._all_transports.remove(transport)
            try:
                transport.close()
            except Exception:  # closing is best effort
                log.debug("closing a transport failed", exc_info=True)

    # -- pool threads --------------------------------------------------------------------------

    def work(self, item: WorkItem) -> None:
        """Perform the notice's operation; raises SarraError subclasses on failure."""
        notice = item.notice
        assert item.dest_root is not None and item.dest_rel is not None
        root = self.root(item.dest_root)
        rel = item.dest_rel
        letter = notice.checksum.letter
        if letter == "L":
            target = notice.header("link")
            if target is None:
                raise MalformedMessage("link notice without a link header")
            root.symlink(rel, target, allow_absolute_prefixes=self.settings.link_absolute_allow)
            item.settle(201, "Linked")
            return
        if letter == "R":
            before = self._quota_size(root, rel, notice)
            existed = root.remove(rel)
            if existed and self.quota is not None:
                self.quota.removed(notice.header("source"), before)
            if self.nodupe is not None:
                self.nodupe.forget(notice.path)
            item.settle(201, "removed" if existed else "removed (already absent)")
            return
        if letter == "m":
            root.mkdir(rel)
            item.settle(201, "directory created")
            return
        if letter == "r":
            root.remove(rel)
            item.settle(201, "directory removed")
            return
        parts = notice.parts
        if parts is not None and not parts.whole:
            self._receive_part(item, root, rel)
            return
        oldname = notice.header("oldname")
        if oldname is not None:
            log.debug("%s: rename from %s; downloading the new name", rel, oldname)
        if not self.settings.overwrite and is_unchanged(root, rel, notice):
            item.settle(304, "not modified")
            return
        url = retrieval_url(
            notice.base_url, notice.path, rel_path_absolute=notice.rel_path.startswith("/")
        )
        size = parts.file_size if parts is not None else None
        transport = self._transport(url)
        mtime = _header_time(notice, "mtime") if self.settings.preserve_time else None
        mode = _header_mode(notice) if self.settings.preserve_mode else None
        old_size = self._quota_size(root, rel, notice)
        charge = None
        if self.quota is not None:  # QuotaExceeded (507) before a byte is written
            charge = self.quota.admit(notice.header("source"), size or 0, old_size)
        try:
            result = self._download(item, root, rel, url, transport, size, mtime, mode)
        except BaseException:
            if self.quota is not None:
                self.quota.release(charge)
            raise
        if self.quota is not None:
            self.quota.adjust(charge, result.size - (old_size or 0))
            item.quota_charge = charge if result.staged is not None else None
        if not result.verified and notice.checksum.letter != "z":
            log.info("%s: placed unverified (sum %s)", rel, notice.checksum.letter)
        if notice.checksum.letter == "z":
            item.settle(205, "Downloaded (checksum computed on download)")
        else:
            item.settle(201, "Downloaded")
        self.run_on_file(item)

    def _quota_size(self, root: SafeRoot, rel: str, notice: Notice) -> int | None:
        """The size of the regular file at ``rel`` when its source has a quota (None: none,
        or no quota to keep: the stat is saved)."""
        if self.quota is None or notice.header("source") not in self.quota.quotas:
            return None
        st = root.stat(rel)
        return st.st_size if st is not None and stat.S_ISREG(st.st_mode) else None

    def _download(
        self,
        item: WorkItem,
        root: SafeRoot,
        rel: str,
        url: str,
        transport: Transport,
        size: int | None,
        mtime: float | None,
        mode: int | None,
    ) -> WholeFileResult:
        """Fetch ``url`` into ``rel`` (staged for the batch commit when it applies)."""
        notice = item.notice
        progress = (
            _Progress(rel, size) if size and size >= self.settings.progress_threshold else None
        )
        limiter = self._limiter(notice)
        chunks: Iterable[bytes | memoryview]
        if size and size >= DIRECT_MIN:
            chunks = aligned_chunks(transport, url, buffer_size=read_size(limiter))
        elif size is not None and getattr(self._local, "inline", False):
            # an inline small file: http(s)' lean path (one piece, a C response parser)
            get_small = getattr(transport, "get_small", None)
            chunks = transport.get(url) if get_small is None else get_small(url, size)
        else:
            chunks = transport.get(url)
        result: WholeFileResult = download_to(
            root,
            rel,
            interruptible(throttled(chunks, limiter), self.interrupt),
            expected_size=size,
            checksum=notice.checksum,
            inflight=self.settings.inflight,
            mtime=mtime,
            mode=mode,
            progress=progress,
            sync_dir=False,  # group commit: see sync()
            # batch commit (see commit_batch) unless on_file must run right after the file is placed
            stage=self.batch_commit and self.plugins.empty,
        )
        if result.staged is not None:
            item.staged = Staged(root, result.staged, rel, mtime, mode)
        item.size = result.size
        item.computed = result.checksum
        return result

    def _receive_part(self, item: WorkItem, root: SafeRoot, rel: str) -> None:
        """One block. Under a quota, a block kept as its own ``.Part`` file (``inplace off``)
        is charged as a file of its own before it is written; a block assembled into its
        file (``inplace on``) is refused when the whole file would not fit, and the whole
        file is charged when its last block completes it."""
        notice = item.notice
        if self.parts is None:
            raise MalformedMessage("multi-part notices need a part receiver (state directory)")
        spec = notice.parts
        assert spec is not None
        guard, source = self.quota, notice.header("source")
        if guard is None or source not in guard.quotas:
            self._receive_block(item, root, rel)
            return
        target, kept = block_paths(rel, spec, notice.checksum.letter)
        if not self.parts.inplace:
            old = self._quota_size(root, kept, notice)
            charge = guard.admit(source, spec.length, old)
            try:
                self._receive_block(item, root, rel)
            except BaseException:
                guard.release(charge)
                raise
            guard.adjust(charge, item.size - (old or 0))
            return
        old = self._quota_size(root, target, notice)
        guard.check(source, spec.file_size, old)
        self._receive_block(item, root, rel)
        if item.part is PartState.COMPLETE:
            guard.placed(source, item.size - (old or 0), 1 if old is None else 0)

    def _receive_block(self, item: WorkItem, root: SafeRoot, rel: str) -> None:
        notice = item.notice
        assert self.parts is not None
        url = retrieval_url(
            notice.base_url, notice.path, rel_path_absolute=notice.rel_path.startswith("/")
        )
        self.parts.receive(
            item,
            root,
            rel,
            url,
            self._transport(url),
            mtime=_header_time(notice, "mtime") if self.settings.preserve_time else None,
            mode=_header_mode(notice) if self.settings.preserve_mode else None,
        )

    def run_on_file(self, item: WorkItem) -> None:
        """The once-per-file hook: plugins' on_file (a failure is reported 500)."""
        self._run_item_hook("on_file", item, lambda: self.plugins.on_file(item))

    def run_on_part(self, item: WorkItem) -> None:
        """The per-block hook: plugins' on_part (a failure is reported 500, the block stays)."""
        self._run_item_hook("on_part", item, lambda: self.plugins.on_part(item))

    def _run_item_hook(self, hook: str, item: WorkItem, call: Callable[[], None]) -> None:
        if self.plugins.empty:
            return
        try:
            call()
        except Exception as e:
            log.exception("%s plugin failed for %s", hook, item.dest_rel)
            item.settle(500, f"{hook} plugin failed: {e}")

    def _transport(self, url: str) -> Transport:
        # the flow thread's inline fetches have connections of their own (shorter timeout)
        inline = getattr(self._local, "inline", False)
        attr = "inline_transports" if inline else "transports"
        cache: dict[Any, Transport] | None = getattr(self._local, attr, None)
        if cache is None:
            cache = {}
            setattr(self._local, attr, cache)
        origin = origin_of(url)
        transport = cache.get(origin)
        if transport is None:
            timeout = self.settings.timeout
            if inline:
                timeout = min(timeout, INLINE_TIMEOUT)

            def builtin() -> Transport:
                return open_transport(
                    url,
                    credentials=self.settings.credentials(str(origin)),
                    timeout=timeout,
                    tls_verify=self.settings.tls_verify,
                    ca_file=self.settings.ca_file,
                    options=self.settings.transport_options,
                )

            if self.plugins.implements("do_get"):
                # a do_get plugin is asked first; the built-in one is made if it declines
                plugins = self.plugins
                transport = PluginGetTransport(lambda u, p: plugins.do_get(u, p), builtin)
            else:
                transport = builtin()
            cache[origin] = transport
            with self._transports_lock:
                self._all_transports.append(transport)
        if inline:
            self._inline_transport = transport
        return transport

    def commit_batch(self, items: list[WorkItem]) -> None:
        """Place the files staged by ``work`` for these items: one data barrier for the
        batch (:func:`~sarra.localfs.confined.sync_files`: the batch's own files, not the
        whole file system, and one journal commit instead of one per file), then each
        rename. The renames are made durable by ``sync`` (directory fsyncs) before anything
        is reported or acked, so a crash at any point leaves either no final name or a final
        name over complete, durable data. With ``group_sync`` (``sync_barrier filesystem``,
        the default) a ``syncfs`` shared with the configuration's other instances comes
        before each of the two fsync rounds, which then find nothing left to write
        (:mod:`sarra.localfs.groupsync`).
        An item whose file cannot be placed gets that outcome instead, its ``error`` set for
        the loop to decide between the retry queue and a drop (``on_failure``).

        Raises:
            LocalError: the barrier failed; nothing was renamed and the call can be repeated.
        """
        staged = [i for i in items if i.staged is not None]
        if not staged:
            return
        started = time.monotonic()
        files = [i.staged.inflight for i in staged if i.staged is not None]
        if self.group_sync is not None:
            # one syncfs, shared with any other instances; the fsyncs below then find the data
            # written and the journal committed (the guarantee stays theirs)
            written = time.monotonic_ns()
            devs = {os.fstat(f.fd).st_dev: f.fd for f in files}
            for fd in devs.values():
                self.group_sync.barrier(fd, written)
        sync_files(files)
        if not self.commit_thread:
            self._barrier_slow = time.monotonic() - started > INLINE_BARRIER_MAX
        for item in staged:
            assert item.staged is not None
            inflight, rel = item.staged.inflight, item.staged.rel
            mtime, mode = item.staged.mtime, item.staged.mode
            item.staged = None
            try:
                inflight.commit(
                    rel, mtime=mtime, mode=mode, sync_dir=False, data_synced=True, metadata_set=True
                )
            except SarraError as e:
                log.error("%s: cannot place the file: %s", rel, e)
                item.settle(e.report_code, f"cannot place the file: {e}")
                item.error = e  # the loop decides: retry queue or drop (on_failure)
                item.requeue = e.retryable
                item.outgoing.clear()  # never announce a file that is not in place
                if self.quota is not None:
                    self.quota.release(item.quota_charge)
            item.quota_charge = None

    def after_settle(
        self, items: list[WorkItem], report: Callable[[Notice, int, str], None] | None = None
    ) -> None:
        """Flow thread, once the outcomes of ``items`` are durable (files fsync'd under their
        final names), published, reported and acked: ``delete`` removes the sources of the
        files placed and verified against a ``d``/``s`` sum, then ``discard`` removes the
        local copies.

        A file placed is a whole file downloaded (201/205), the block that completed a file
        assembled in place, or a block kept as its own ``.Part`` file (``inplace off``).
        A source that cannot be deleted is logged and reported (``report``) with the code of
        the error; an origin whose transport cannot delete at all is warned about once.
        """
        for item in items:
            if not _placed(item):
                continue
            if self.settings.delete_source:
                if item.notice.checksum.verifiable:
                    sources = self._sources(item)
                    for url in sources:
                        self._delete_source(item, url, report)
                    if not sources and item.notice.base_url not in self._ranges_kept:
                        self._ranges_kept.add(item.notice.base_url)
                        log.warning(
                            "delete on: sources under %s announced in i blocks stay: with "
                            "inplace off each block is kept as a .Part file, never the whole "
                            "file",
                            item.notice.base_url,
                        )
                else:
                    log.warning(
                        "%s: source kept: its sum %r cannot verify the copy (delete on)",
                        item.dest_rel,
                        item.notice.checksum.letter,
                    )
            if self.settings.discard:
                assert item.dest_root is not None and item.dest_rel is not None
                try:
                    self.root(item.dest_root).remove(item.dest_rel)
                    log.info("%s: discarded (discard on)", item.dest_rel)
                except SarraError as e:
                    log.error("%s: cannot discard: %s", item.dest_rel, e)

    def _sources(self, item: WorkItem) -> list[str]:
        """The source URLs whose data ``item`` placed (see :meth:`after_settle`)."""
        notice = item.notice
        url = retrieval_url(
            notice.base_url, notice.path, rel_path_absolute=notice.rel_path.startswith("/")
        )
        spec = notice.parts
        if spec is None or spec.whole or item.part is PartState.KEPT:
            if spec is not None and spec.method == "i" and not spec.whole:
                # a range of a remote file kept as a local .Part: the rest is still needed
                return []
            return [url]
        if spec.method == "i":
            return [url]  # the one remote file the blocks were ranges of
        # p blocks, assembled in place: every block is its own .Part object upstream, named
        # from the parts header (spec 6.7); the file is complete, so all of them are placed
        parsed = parse_part_suffix(notice.path)
        if parsed is None:
            return [url]
        target, _, letter = parsed
        return [
            retrieval_url(
                notice.base_url,
                part_suffix(
                    target,
                    PartSpec("p", spec.block_size, spec.block_count, spec.remainder, n),
                    letter,
                ),
                rel_path_absolute=notice.rel_path.startswith("/"),
            )
            for n in range(spec.block_count)
        ]

    def _delete_source(
        self, item: WorkItem, url: str, report: Callable[[Notice, int, str], None] | None
    ) -> None:
        try:
            transport = self._transport(url)
            if not transport.features.delete:
                origin = str(origin_of(url))
                if origin not in self._cannot_delete:
                    self._cannot_delete.add(origin)
                    log.warning(
                        "delete on: sources on %s are kept: its transport cannot delete", origin
                    )
                if report is not None:
                    report(item.notice, 501, "source not deleted: the transport cannot delete")
                return
            transport.delete(url)
        except SarraError as e:
            log.error("%s: cannot delete the source %s: %s", item.dest_rel, url, e)
            if report is not None:
                report(item.notice, e.report_code, f"source not deleted: {e}")
            return
        log.info("%s: source %s deleted (delete on)", item.dest_rel, url)

    def sync(self) -> None:
        """Make every rename since the last call durable (before reports and acks)."""
        with self._roots_lock:
            roots = list(self._roots.values())
        if self.group_sync is not None:
            written = time.monotonic_ns()  # after every rename to be made durable
            for root in roots:
                if root.has_dirty():
                    self.group_sync.barrier_dir(root.root, written)
        for root in roots:
            root.sync_dirs()

    def housekeeping(
        self,
        report: Callable[[Notice, int, str], None] | None = None,
        *,
        inflight_age: float = 3600,
    ) -> None:
        """Periodic upkeep: finish or expire multi-part files (expired ones are reported
        through ``report``), and remove in-flight files older than ``inflight_age``."""
        if self.parts is not None:
            self.parts.housekeeping(report)
        with self._roots_lock:
            roots = list(self._roots.values())
        for root in roots:
            try:
                root.sweep_inflight("", older_than=inflight_age)
            except Exception:
                log.debug("sweep of %s failed", root.root, exc_info=True)

    def recover_leftovers(self) -> int:
        """Remove in-flight files a killed predecessor left behind (see the journal)."""
        if self.journal is None:
            return 0

        def remove(directory: str, rel: str) -> bool:
            return SafeRoot(directory, create=False).remove(rel)

        return len(self.journal.recover(remove))

    def abort(self) -> None:
        """From the flow thread, when stopping: make every transfer still blocked on the
        network fail now (see :func:`~sarra.localfs.streaming.interruptible`); the transports
        are not used again."""
        with self._transports_lock:
            transports = list(self._all_transports)
        for t in transports:
            try:
                t.abort()
            except Exception:  # best effort: the instance is stopping
                log.debug("aborting a transport failed", exc_info=True)

    def close(self) -> None:
        """Close every transport of every thread, and the roots' descriptors."""
        self._closing.set()
        with self._roots_lock:
            roots = list(self._roots.values())
        for root in roots:
            root.close()
        with self._transports_lock:
            transports, self._all_transports = self._all_transports, []
        for t in transports:
            try:
                t.close()
            except Exception:  # closing is best effort
                log.debug("closing a transport failed", exc_info=True)


def _placed(item: WorkItem) -> bool:
    """Whether ``item`` placed a whole local file: downloaded and verified (201/205; a bad
    sum or size fails the download), not a link/remove/directory operation, and not a block
    of a file still being assembled."""
    if item.code not in (201, 205) or item.dest_root is None or item.dest_rel is None:
        return False
    if item.notice.checksum.file_op:
        return False
    spec = item.notice.parts
    if spec is None or spec.whole:
        return item.part is None
    return item.part in (PartState.COMPLETE, PartState.KEPT)


class _Progress:
    """Logs progress of a large download about every 10%."""

    def __init__(self, rel: str, size: int) -> None:
        self.rel = rel
        self.size = size
        self.next = size // 10

    def __call__(self, done: int) -> None:
        if done >= self.next:
            log.info(
                "%s: %d%% (%d of %d bytes)", self.rel, done * 100 // self.size, done, self.size
            )
            self.next += max(self.size // 10, 1)


def _replace_name(rel: str, name: str) -> str:
    head = rel.rsplit("/", 1)[0] if "/" in rel else ""
    return f"{head}/{name}" if head else name


def _header_time(notice: Notice, name: str) -> float | None:
    value = notice.header(name)
    if not value:
        return None
    try:
        return parse_timestamp(value)
    except MalformedMessage:
        return None


def _header_mode(notice: Notice) -> int | None:
    value = notice.header("mode")
    if not value:
        return None
    try:
        return int(value, 8) & 0o777
    except ValueError:
        return None


def _redelivered(item: WorkItem) -> bool:
    """Whether the broker gave ``item`` again (its consumer died or lost its connection)."""
    return item.delivery is not None and item.delivery.redelivered
