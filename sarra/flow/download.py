"""What a subscriber does with one accepted notice: select it, then transfer it.

:class:`Downloader` provides the two callables the :class:`~sarra.flow.engine.ConsumingLoop`
needs: ``select`` (flow thread: masks, destination, confinement, policy, plugins, duplicate
suppression) and ``work`` (pool thread: download, link, remove, mkdir, rmdir).
"""

from __future__ import annotations

import logging
import re
import threading
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
from sarra.flow.partial import PartReceiver
from sarra.flow.plugin_get import PluginGetTransport
from sarra.flow.ratelimit import TokenBucket, read_size, throttled
from sarra.flow.wholefile import download_to, is_unchanged
from sarra.flow.work import PartState, Staged, WorkItem
from sarra.localfs.confined import SafeRoot, sync_files
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

log = logging.getLogger(__name__)

#: schemes fetched when no base_url_accept line is configured (spec 9.4)
DEFAULT_SCHEMES = frozenset({"http", "https", "sftp", "ftp", "ftps"})


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
        resolver: baseurl.Resolver = resolve_host,
        interrupt: threading.Event | None = None,
        limiter: TokenBucket | None = None,
    ) -> None:
        self.settings = settings
        #: set when the instance stops: transfers are abandoned between two chunks
        self.interrupt = interrupt
        #: the instance's byte rate limit, shared by every transfer thread (None: unlimited)
        self.limiter = limiter
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

    # -- flow thread ---------------------------------------------------------------------------

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
        if self.nodupe is not None and item.retry is None and self.nodupe.check(notice):
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
            existed = root.remove(rel)
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
        progress = (
            _Progress(rel, size) if size and size >= self.settings.progress_threshold else None
        )
        chunks: Iterable[bytes | memoryview] = (
            aligned_chunks(transport, url, buffer_size=read_size(self.limiter))
            if size and size >= DIRECT_MIN
            else transport.get(url)
        )
        result = download_to(
            root,
            rel,
            interruptible(throttled(chunks, self.limiter), self.interrupt),
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
        if not result.verified and notice.checksum.letter != "z":
            log.info("%s: placed unverified (sum %s)", rel, notice.checksum.letter)
        if notice.checksum.letter == "z":
            item.settle(205, "Downloaded (checksum computed on download)")
        else:
            item.settle(201, "Downloaded")
        self.run_on_file(item)

    def _receive_part(self, item: WorkItem, root: SafeRoot, rel: str) -> None:
        notice = item.notice
        if self.parts is None:
            raise MalformedMessage("multi-part notices need a part receiver (state directory)")
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
        cache: dict[Any, Transport] | None = getattr(self._local, "transports", None)
        if cache is None:
            cache = {}
            self._local.transports = cache
        origin = origin_of(url)
        transport = cache.get(origin)
        if transport is None:

            def builtin() -> Transport:
                return open_transport(
                    url,
                    credentials=self.settings.credentials(str(origin)),
                    timeout=self.settings.timeout,
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
        return transport

    def commit_batch(self, items: list[WorkItem]) -> None:
        """Place the files staged by ``work`` for these items: one data barrier for the
        batch (:func:`~sarra.localfs.confined.sync_files`: the batch's own files, not the
        whole file system, and one journal commit instead of one per file), then each
        rename. The renames are made durable by ``sync`` (directory fsyncs) before anything
        is reported or acked, so a crash at any point leaves either no final name or a final
        name over complete, durable data. An item whose file cannot be placed gets that
        outcome instead, its ``error`` set for the loop to decide between the retry queue
        and a drop (``on_failure``).

        Raises:
            LocalError: the barrier failed; nothing was renamed and the call can be repeated.
        """
        staged = [i for i in items if i.staged is not None]
        if not staged:
            return
        sync_files([i.staged.inflight for i in staged if i.staged is not None])
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
