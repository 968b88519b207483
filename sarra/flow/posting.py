"""Building notices about local files, and publishing them: the core of sr_post and sr_watch.

A :class:`NoticeBuilder` turns a local path into v02 notices (one per block for split files,
a link notice for symlinks, a remove notice for deletions, the two halves of a rename). It
reads each file once, hashing every block while streaming. A :class:`Publisher` sends
notices in batches with publisher confirms.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import ntpath
import os
import posixpath
import random
import stat as statmod
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from sarra.broker.base import Broker
from sarra.broker.session import backoff_delays
from sarra.codec import v02, v03
from sarra.codec.build import PostTemplate
from sarra.codec.fields import has_lone_surrogate, shown
from sarra.codec.timestamps import format_timestamp_ns, now_timestamp
from sarra.config.masks import Mask, match
from sarra.config.settings import Settings
from sarra.errors import (
    AccessRefused,
    BrokerError,
    ConfigError,
    LocalError,
    MalformedMessage,
    MessageError,
)
from sarra.flow.growing import GrowthFollower, follow
from sarra.integrity.sums import BUFFER_SIZE, name_sum, new_hasher, random_sum, v02_to_v03
from sarra.notice import Checksum, Notice, PartSpec, WireMessage
from sarra.osport import O_BINARY, O_CLOEXEC
from sarra.parts.arithmetic import effective_block_size, split

if TYPE_CHECKING:  # imported where used: a poster without plugins never loads pluggy
    from sarra.flow.hooks import Plugins
    from sarra.flow.nodupe import DuplicateCache

log = logging.getLogger(__name__)

#: files up to this size are read and hashed in one call (:meth:`NoticeBuilder._small_sum`)
SMALL_FILE = 64 * 1024

#: sum option values accepted for posting (spec 5.1)
POST_SUMS = frozenset({"d", "s", "n", "0", "z,d", "z,s"})


@dataclass(frozen=True, slots=True)
class PostSettings:
    """The options a poster needs, resolved once from the configuration."""

    exchange: str
    topic_prefix: str
    base_url: str
    base_dir: str | None
    sum: str
    blocksize: int
    headers: tuple[tuple[str, str], ...]  # to_clusters, from_cluster, source, user headers
    rename: str | None
    preserve_time: bool
    preserve_mode: bool
    follow_symlinks: bool
    randomize: bool
    topic_override: str | None
    header_value_max: int
    persistent: bool
    message_ttl_ms: int | None
    exchange_split: int
    realpath_post: bool = False
    #: accept/reject: a notice whose URL the masks reject is not posted (sr2 and sr3 alike)
    masks: tuple[Mask, ...] = ()
    accept_unmatch: bool = True
    #: ``v02`` or ``v03`` (:func:`sarra.codec.v02.publish_wire`)
    post_format: str = "v02"
    log_reject: bool = False

    @classmethod
    def from_config(cls, cfg: Settings, broker_user: str, broker_host: str) -> PostSettings:
        """Resolve post options with the v2 defaults (exchange ``xs_<user>``, sum ``d``)."""
        base_url = cfg.post_base_url
        if not base_url:
            raise ConfigError("post_base_url (-pbu) is required", option="post_base_url")
        exchange = cfg.post_exchange or f"xs_{broker_user}"
        suffix = cfg.post_exchange_suffix
        if suffix and not cfg.post_exchange:
            exchange = f"{exchange}_{suffix}"
        sum_opt = cfg.sum
        if sum_opt not in POST_SUMS:
            raise ConfigError(
                f"unsupported sum {sum_opt!r}; use one of {', '.join(sorted(POST_SUMS))}",
                option="sum",
            )
        headers: list[tuple[str, str]] = []
        to_clusters = cfg.to_clusters or broker_host
        headers.append(("to_clusters", to_clusters))
        if cfg.cluster:
            headers.append(("from_cluster", cfg.cluster))
        if cfg.source:
            headers.append(("source", cfg.source))
        for name, value in cfg.headers_add.items():
            headers.append((name, value))
        base_dir = cfg.post_base_dir
        if base_dir and cfg.realpath_post:
            base_dir = os.path.realpath(base_dir)
        ttl = cfg.message_ttl
        return cls(
            exchange=exchange,
            topic_prefix=cfg.post_topic_prefix or cfg.topic_prefix,
            base_url=base_url,
            base_dir=base_dir or None,
            sum=sum_opt,
            blocksize=cfg.blocksize,
            headers=tuple(headers),
            rename=cfg.rename or None,
            preserve_time=cfg.preserve_time,
            preserve_mode=cfg.preserve_mode,
            follow_symlinks=cfg.follow_symlinks,
            randomize=cfg.randomize,
            topic_override=_topic_override(cfg),
            header_value_max=cfg.header_value_max,
            persistent=cfg.persistent,
            message_ttl_ms=int(ttl * 1000) if ttl else None,
            exchange_split=cfg.post_exchange_split,
            realpath_post=cfg.realpath_post,
            post_format=cfg.post_format,
            masks=tuple(cfg.masks),
            accept_unmatch=cfg.accept_unmatch,
            log_reject=cfg.log_reject,
        )


def post_paths(cfg: Settings) -> list[str]:
    """Paths given with ``path``/``-path`` options and on the command line, in order; with
    ``realpath_post``, each with its symbolic links resolved (:func:`os.path.realpath`)."""
    result: dict[str, None] = {}  # ordered, duplicates dropped in O(1)
    for p in cfg.path:
        result.setdefault(os.path.realpath(p) if cfg.realpath_post else p, None)
    return list(result)


def outage_max(cfg: Settings) -> float | None:
    """``post_outage_max``: how long posting waits for an unreachable broker (None: forever)."""
    return cfg.post_outage_max if cfg.post_outage_max > 0 else None


def _topic_override(cfg: Settings) -> str | None:
    """sr_post ``-sub``: the last ``subtopic`` given replaces the topic derived from the path."""
    return cfg.bindings[-1].subtopic if cfg.bindings else None


def announced_path(abs_path: str, base_dir: str | None, *, windows: bool = os.name == "nt") -> str:
    r"""The path a notice carries for the local file ``abs_path``: below ``base_dir``
    (post_base_dir) with a leading ``/``, or the whole absolute path without one.

    The announced path always uses ``/``. With ``windows`` (a parameter, so this is tested on
    any platform) native paths are read the Windows way: ``\`` or ``/`` separators, drive
    and names compared case-insensitively. So ``C:\data\obs\a.txt`` under ``C:\data`` is
    ``/obs/a.txt`` and, without a base, ``/C:/data/obs/a.txt`` (as in ``file:///C:/...``).

    Raises:
        LocalError: the path is not under ``base_dir``, or is ``base_dir`` itself.
    """
    pathmod = ntpath if windows else posixpath
    sep = "\\" if windows else "/"
    path = pathmod.abspath(abs_path) if windows else os.path.abspath(abs_path)
    base = pathmod.abspath(base_dir) if base_dir else None
    if base is None or base == sep:
        return "/" + path.replace("\\", "/").lstrip("/") if windows else path
    norm, norm_base = pathmod.normcase(path), pathmod.normcase(base)
    prefix = norm_base.rstrip(sep) + sep
    if norm == norm_base or norm + sep == prefix:
        raise LocalError(f"{abs_path}: is post_base_dir itself, not a file under it")
    if not norm.startswith(prefix):
        raise LocalError(f"{abs_path}: not under post_base_dir {base_dir}")
    rest = path[len(prefix) :]  # normcase keeps lengths: slice the original spelling
    return "/" + (rest.replace("\\", "/") if windows else rest)


def unannounceable(abs_path: str) -> str:
    """Why ``abs_path`` is skipped: the log line naming its directory and its name, each
    as the repr of its bytes when it is not valid UTF-8 (v02 and v03 notices carry text)."""
    directory, name = os.path.split(abs_path)
    what = "file name" if has_lone_surrogate(name) else "directory name"
    return (
        f"in {shown(directory)}: {shown(name)} skipped: {what} is not valid UTF-8: "
        "cannot be announced"
    )


def _with_manifest(
    notices: list[Notice], blocks: Sequence[PartSpec], sums: Sequence[Checksum]
) -> list[Notice]:
    """v03 block posts as sr3 writes them: every message carries the whole ``manifest``
    (each block's size and identity), which sr3's subscriber needs (docs/interop.md). Only
    for digest sums (a ``z``/``n``/``0`` sum has no per-block identity) and when the manifest
    reads back as the same parts (not when the last block is full: sr3 then gives it
    ``size`` = blocksize, which reads as another remainder)."""
    try:
        values = [v02_to_v03(c) for c in sums]
    except MalformedMessage:
        return notices
    if any(c.letter not in ("d", "s") for c in sums):
        return notices
    manifest = {
        str(spec.block_number): {"size": spec.length, "identity": value}
        for spec, (_method, value) in zip(blocks, values, strict=True)
    }
    out = []
    for notice, spec in zip(notices, blocks, strict=True):
        table = {
            "method": "inplace" if spec.method == "i" else "partitioned",
            "size": spec.block_size,
            "number": spec.block_number,
            "manifest": manifest,
        }
        if not v03.same_blocks(table, spec):
            return notices
        out.append(dataclasses.replace(notice, v03_fields=json.dumps({"blocks": table})))
    return out


#: the sums whose data notices :class:`~sarra.codec.build.PostTemplate` builds
TEMPLATE_SUMS = ("d", "s")


def _template_for(settings: PostSettings) -> PostTemplate | None:
    """The template of ``settings``' data notices, or None when its shared fields need the
    general path (:func:`sarra.codec.v02.make_notice`, which then refuses each notice with
    the reason, or builds it)."""
    headers = dict(settings.headers)
    if settings.rename:
        headers["rename"] = settings.rename
    try:
        return PostTemplate(
            exchange=settings.exchange,
            topic_prefix=settings.topic_prefix,
            base_url=settings.base_url,
            headers=headers,
            topic_override=settings.topic_override,
        )
    except MalformedMessage as e:
        log.debug("data notices take the general path: %s", e)
        return None


#: directories whose announced-path prefix :class:`NoticeBuilder` keeps
_DIR_PREFIX_MAX = 4096


class NoticeBuilder:
    """Makes notices about local files according to :class:`PostSettings`."""

    def __init__(self, settings: PostSettings) -> None:
        self.settings = settings
        self._base_dir = os.path.abspath(settings.base_dir) if settings.base_dir else None
        #: announced-path prefix per absolute directory (see :meth:`logical_path`)
        self._dir_prefix: dict[str, str | None] = {}
        #: the checked shared fields of data notices, or None when they need the general path
        self._template = _template_for(settings)

    # -- paths ---------------------------------------------------------------------------------

    def accepts(self, notice: Notice) -> bool:
        """Whether the accept/reject masks let ``notice`` be posted (matched on its URL, as
        consumers match; first match wins, ``accept_unmatch`` when none matches)."""
        s = self.settings
        if not s.masks:  # the usual case: no mask, accept_unmatch decides (no URL to build)
            if s.accept_unmatch:
                return True
        elif match(s.masks, notice.url, s.accept_unmatch) is not None:
            return True
        if s.log_reject:
            log.info("rejected by masks, not posted: %s", notice.url)
        return False

    def logical_path(self, abs_path: str) -> str:
        """The announced path: relative to post_base_dir with a leading ``/`` (absolute for
        ``file:`` URLs without a base dir); see :func:`announced_path`.

        Raises:
            LocalError: the path is not under post_base_dir, or the announced path is not
                valid UTF-8 (see :func:`unannounceable`).
        """
        if os.name != "nt":
            head, _sep, name = abs_path.rpartition("/")
            if head.startswith("/") and name and name != "." and name != "..":
                prefix = self._dir_prefix.get(head, "")
                if prefix == "":
                    prefix = self._prefix_of(head)
                if prefix is not None and not has_lone_surrogate(name):
                    return prefix + name
        logical = announced_path(abs_path, self._base_dir)
        if has_lone_surrogate(logical):
            raise LocalError(unannounceable(abs_path))
        return logical

    def _prefix_of(self, head: str) -> str | None:
        """What :func:`announced_path` puts before the name of any file in the absolute
        directory ``head`` (cached: a run posts many files from few directories), or None
        when it refuses them or their path is not valid UTF-8 (the caller then takes the
        uncached way, which raises as usual). Normalising ``head/name`` normalises ``head``
        alone when ``name`` is one plain component, so a probe name stands for every name.
        """
        try:
            probe = announced_path(head + "/x", self._base_dir, windows=False)
        except LocalError:
            prefix = None
        else:
            prefix = None if has_lone_surrogate(probe) else probe[:-1]
        if len(self._dir_prefix) >= _DIR_PREFIX_MAX:
            self._dir_prefix.clear()
        self._dir_prefix[head] = prefix
        return prefix

    def _headers(
        self, st: os.stat_result | None, extra: Iterable[tuple[str, str]] = ()
    ) -> dict[str, str]:
        h = dict(self.settings.headers)
        if self.settings.rename:
            h["rename"] = self.settings.rename
        if st is not None:
            if self.settings.preserve_time:
                h["mtime"] = format_timestamp_ns(st.st_mtime_ns)
                h["atime"] = format_timestamp_ns(st.st_atime_ns)
            if self.settings.preserve_mode:
                h["mode"] = "%o" % (st.st_mode & 0o7777)
        h.update(extra)
        return h

    def _notice(
        self,
        logical: str,
        checksum: Checksum,
        parts: PartSpec | None,
        headers: dict[str, str],
        pubtime: str,
    ) -> Notice:
        s = self.settings
        return v02.make_notice(
            exchange=s.exchange,
            topic_prefix=s.topic_prefix,
            pubtime=pubtime,
            base_url=s.base_url,
            path=logical,
            checksum=checksum,
            parts=parts,
            headers=headers,
            topic_override=s.topic_override,
        )

    # -- notices -------------------------------------------------------------------------------

    def file_notices(
        self,
        abs_path: str,
        extra: Iterable[tuple[str, str]] = (),
        *,
        lstat: os.stat_result | None = None,
    ) -> list[Notice]:
        """Notices for one regular file (one per block), or its link notice if it is a symlink.

        ``lstat``: the caller's ``os.lstat`` of ``abs_path``, just taken (saves a system call).

        Raises:
            LocalError: the file cannot be read (missing, permission, not a regular file).
        """
        try:
            st = os.lstat(abs_path) if lstat is None else lstat
            if statmod.S_ISLNK(st.st_mode):
                if not self.settings.follow_symlinks:
                    return [self.link_notice(abs_path, extra)]
                st = os.stat(abs_path)
        except OSError as e:
            raise LocalError(f"{abs_path}: cannot read: {e.strerror}") from e
        if not statmod.S_ISREG(st.st_mode):
            raise LocalError(f"{abs_path}: not a regular file")
        s = self.settings
        logical = self.logical_path(abs_path)
        pubtime = now_timestamp()
        size = st.st_size
        blocks = split(size, effective_block_size(s.blocksize, size))
        sums = self._block_sums(abs_path, blocks, logical)
        template = self._template
        if template is not None and not extra and s.sum in TEMPLATE_SUMS:
            times = None
            if s.preserve_time:
                times = (format_timestamp_ns(st.st_mtime_ns), format_timestamp_ns(st.st_atime_ns))
            mode = "%o" % (st.st_mode & 0o7777) if s.preserve_mode else None
            notices = [
                template.data_notice(logical, pubtime, times, mode, checksum, spec)
                for spec, checksum in zip(blocks, sums, strict=True)
            ]
        else:
            headers = self._headers(st, extra)
            notices = [
                self._notice(logical, checksum, spec, headers, pubtime)
                for spec, checksum in zip(blocks, sums, strict=True)
            ]
        if self.settings.post_format == "v03" and len(blocks) > 1:
            notices = _with_manifest(notices, blocks, sums)
        if self.settings.randomize:
            random.shuffle(notices)
        return notices

    def block_notices(
        self, abs_path: str, blocks: Sequence[PartSpec], extra: Iterable[tuple[str, str]] = ()
    ) -> list[Notice]:
        """Notices for the given blocks of a regular file (a growing file's, see
        :mod:`sarra.parts.growing`), each with its own block's sum, in block order.

        Raises:
            LocalError: the file cannot be read, or is shorter than the blocks.
        """
        try:
            st = os.stat(abs_path)
        except OSError as e:
            raise LocalError(f"{abs_path}: cannot read: {e.strerror}") from e
        logical = self.logical_path(abs_path)
        pubtime = now_timestamp()
        headers = self._headers(st, extra)
        sums = self._block_sums(abs_path, blocks, logical)
        return [
            self._notice(logical, checksum, spec, headers, pubtime)
            for spec, checksum in zip(blocks, sums, strict=True)
        ]

    def _block_sums(
        self, abs_path: str, blocks: Sequence[PartSpec], logical: str
    ) -> list[Checksum]:
        algo = self.settings.sum
        if len(blocks) == 1 and algo in TEMPLATE_SUMS:  # the usual case first: a small file
            spec = blocks[0]  # (or a growing file's first block)
            if spec.offset == 0 and spec.length <= SMALL_FILE:
                return [Checksum(algo, self._small_sum(abs_path, spec.length, algo))]
        if algo == "n":
            return [name_sum("n", os.path.basename(logical))] * len(blocks)
        if algo == "0":
            return [random_sum() for _ in blocks]
        if algo.startswith("z,"):
            return [Checksum("z", algo[2:])] * len(blocks)
        sums: list[Checksum] = []
        try:
            with open(abs_path, "rb", buffering=0) as f:
                buf = bytearray(min(BUFFER_SIZE, max(blocks[0].length, 1)))
                view = memoryview(buf)
                for spec in blocks:
                    if f.tell() != spec.offset:  # growing files: blocks from the middle
                        f.seek(spec.offset)
                    hasher = new_hasher(algo)
                    remaining = spec.length
                    while remaining > 0:
                        n = f.readinto(view[: min(len(buf), remaining)])
                        if not n:
                            raise LocalError(f"{abs_path}: file shrank while being read")
                        hasher.update(view[:n])
                        remaining -= n
                    sums.append(Checksum(algo, hasher.hexdigest()))
        except OSError as e:
            raise LocalError(f"{abs_path}: cannot read: {e.strerror}") from e
        return sums

    @staticmethod
    def _small_sum(abs_path: str, length: int, algo: str) -> str:
        """The ``algo`` digest of the ``length`` bytes of a small file, read in one call
        without a file object (most of the cost of a small file is the per-file overhead)."""
        try:
            fd = os.open(abs_path, os.O_RDONLY | O_BINARY | O_CLOEXEC)
            try:
                data = os.read(fd, length)
                while len(data) < length:  # a short read: keep reading until EOF
                    more = os.read(fd, length - len(data))
                    if not more:
                        raise LocalError(f"{abs_path}: file shrank while being read")
                    data += more
            finally:
                os.close(fd)
        except OSError as e:
            raise LocalError(f"{abs_path}: cannot read: {e.strerror}") from e
        hasher = new_hasher(algo)
        hasher.update(data)
        return hasher.hexdigest()

    def link_notice(self, abs_path: str, extra: Iterable[tuple[str, str]] = ()) -> Notice:
        """The notice for a symlink: ``sum L`` of its target and a ``link`` header (spec 7.1)."""
        try:
            target = os.readlink(abs_path)
        except OSError as e:
            raise LocalError(f"{abs_path}: cannot read link: {e.strerror}") from e
        logical = self.logical_path(abs_path)
        if has_lone_surrogate(target):
            raise LocalError(
                f"{shown(abs_path)} skipped: its link target {shown(target)} is not valid "
                "UTF-8: cannot be announced"
            )
        headers = self._headers(None, extra)
        headers["link"] = target
        return self._notice(logical, name_sum("L", target), None, headers, now_timestamp())

    def remove_notice(self, abs_path: str, extra: Iterable[tuple[str, str]] = ()) -> Notice:
        """The notice for a removed path: ``sum R`` of its basename (spec 7.2)."""
        logical = self.logical_path(abs_path)
        headers = self._headers(None, extra)
        return self._notice(
            logical, name_sum("R", os.path.basename(logical)), None, headers, now_timestamp()
        )

    def rename_notices(self, old_abs: str, new_abs: str) -> list[Notice]:
        """The v2 two-message rename (spec 7.3): R of the old name with ``newname``, then the
        new name as a normal post with ``oldname``.

        An old name that is not valid UTF-8 was never announced: the new name (once renamed
        to a valid one) is posted as a new file, and the rename is logged."""
        new_logical = self.logical_path(new_abs)
        try:
            old_logical = self.logical_path(old_abs)
        except LocalError:
            if not has_lone_surrogate(announced_path(old_abs, self._base_dir)):
                raise
            log.info(
                "%s: renamed from %s, which is not valid UTF-8: posted as a new file",
                new_abs,
                shown(old_abs),
            )
            return self.file_notices(new_abs)
        first = self.remove_notice(old_abs, [("newname", new_logical)])
        rest = self.file_notices(new_abs, [("oldname", old_logical)])
        return [first, *rest]

    def tree(self, abs_path: str) -> Iterator[str]:
        """Every file and symlink under a directory, depth first, sorted by name."""
        try:
            entries = sorted(os.scandir(abs_path), key=lambda e: e.name)
        except OSError as e:
            raise LocalError(f"{abs_path}: cannot list: {e.strerror}") from e
        for entry in entries:
            if entry.is_dir(follow_symlinks=self.settings.follow_symlinks):
                sub = self._subtree(abs_path, entry)
                if sub is not None:
                    yield from self.tree(sub)
            else:
                yield entry.path

    def _subtree(self, parent: str, entry: os.DirEntry[str]) -> str | None:
        """The directory to walk for ``entry``: with ``realpath_post``, a linked directory is
        walked (and its files posted) under its resolved path; one that resolves to the
        directory being walked or one of its ancestors is a loop, skipped (None)."""
        if not (self.settings.realpath_post and entry.is_symlink()):
            return entry.path
        real = os.path.realpath(entry.path)
        if parent == real or parent.startswith(real.rstrip(os.sep) + os.sep):
            log.warning("%s: links to %s, an ancestor: not walked", entry.path, real)
            return None
        return real

    def wire(self, notice: Notice) -> WireMessage:
        """Encode a notice for publishing, applying post_exchange_split (spec 1.3)."""
        return v02.publish_wire(notice, notice.exchange, self.settings)


#: queued notices handed to the broker ahead of a flush (:meth:`Publisher._send_ahead`)
SEND_AHEAD = 50

#: longest pause between two attempts to reach an unreachable broker: a refused connection
#: costs nothing, and posting should resume within seconds of the broker's return
RETRY_CAP = 5.0
#: how often a continuing outage is reported in the log (each attempt is logged at debug)
PROGRESS_EVERY = 30.0


class Publisher:
    """Publishes notices in batches with publisher confirms and rides out broker outages.

    A notice counts as posted only once the broker confirmed it; until then it stays queued
    here, and a batch that failed is republished whole (duplicates are tolerable, loss is
    not). After a failure, attempts are spaced by jittered backoff capped at
    :data:`RETRY_CAP`, and the outage is logged with what is waiting every
    :data:`PROGRESS_EVERY` seconds. ``outage_max`` (seconds, None or 0: forever) bounds how
    long :meth:`flush` waits and when :meth:`exhausted` turns true.

    Callers may name an *item* (a file) with each :meth:`add`; items whose notices were all
    confirmed are counted in ``items_posted``, the others are listed by
    :meth:`pending_items`. ``on_connect`` runs after every (re)connect, before publishing
    (declaring exchanges: a broker that lost its state gets them back).
    """

    def __init__(
        self,
        session: Broker,
        builder: NoticeBuilder,
        batch: int = 500,
        nodupe: DuplicateCache | None = None,
        *,
        outage_max: float | None = None,
        on_connect: Callable[[Broker], None] | None = None,
        stop: threading.Event | None = None,
        backlog: Callable[[], str] | None = None,
        plugins: Plugins | None = None,
    ) -> None:
        self.session = session
        #: their ``on_post`` sees each notice before it is queued, and may suppress it
        self.plugins = plugins
        self.builder = builder
        self.batch = batch
        self.nodupe = nodupe
        #: a cache checked by the caller (sr_watch) with ``persist=False``: persisted here too
        self.confirm_cache: DuplicateCache | None = None
        self.outage_max = outage_max if outage_max and outage_max > 0 else None
        self.on_connect = on_connect
        self.stop = stop
        self.backlog = backlog  # what else waits, for the progress lines (sr_watch)
        self._pending: list[WireMessage] = []
        #: how many of ``_pending`` (the first ones) were sent ahead, and on which connection
        self._sent = 0
        self._sent_generation = 0
        self._connect_ahead = True
        self._pending_paths: list[str] = []
        self._pending_items: list[str] = []
        self.published = 0
        self.items_posted = 0
        #: bytes announced by the confirmed notices (each notice's block or whole file)
        self.bytes_posted = 0
        self._pending_bytes = 0
        self.suppressed = 0
        self.rejected = 0  # notices the accept/reject masks kept from being posted
        self._outage_since: float | None = None
        self._next_attempt = 0.0
        self._delays: Iterator[float] = iter(())
        self._last_report = 0.0
        self.last_error = ""

    # -- state ---------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Notices queued and not yet confirmed."""
        return len(self._pending)

    @property
    def in_outage(self) -> bool:
        """True from a failed publish until the next confirmed one."""
        return self._outage_since is not None

    def outage_seconds(self, now: float | None = None) -> float:
        if self._outage_since is None:
            return 0.0
        return (time.monotonic() if now is None else now) - self._outage_since

    def due(self, now: float | None = None) -> bool:
        """Whether the backoff allows the next attempt now."""
        return (time.monotonic() if now is None else now) >= self._next_attempt

    def exhausted(self, now: float | None = None) -> bool:
        """The broker has been unreachable for longer than ``outage_max``."""
        return self.outage_max is not None and self.outage_seconds(now) > self.outage_max

    def pending_items(self) -> list[str]:
        """Items (as given to :meth:`add`) whose notices are not all confirmed yet."""
        return list(self._pending_items)

    def pending_paths(self) -> list[str]:
        """The notice paths not confirmed yet."""
        return list(self._pending_paths)

    # -- publishing ----------------------------------------------------------------------------

    def add(self, notices: Iterable[Notice], item: str | None = None, *, wait: bool = True) -> None:
        """Queue the notices of one item; once a batch is full, publish it: with
        :meth:`flush` when ``wait`` (raising as it does), else with one :meth:`try_flush`
        (a failure leaves everything queued)."""
        wires: list[WireMessage] = []
        paths: list[str] = []
        for notice in notices:
            if not self.builder.accepts(notice):
                self.rejected += 1
                continue
            # persisted once confirmed (_confirmed): see sarra.flow.nodupe, crash windows
            if self.nodupe is not None and self.nodupe.check(notice, persist=False):
                log.info("not posting %s: unchanged since it was last posted", notice.path)
                self.suppressed += 1
                continue
            plugins = self.plugins
            if plugins is not None and not plugins.empty:
                from sarra.flow.work import WorkItem

                if not plugins.on_post(WorkItem(notice)):
                    log.info("not posting %s: an on_post plugin suppressed it", notice.path)
                    self.suppressed += 1
                    continue
            try:
                wires.append(self.builder.wire(notice))
            except MalformedMessage as e:
                log.error("not posting %s: %s", notice.path, e)
                raise
            paths.append(notice.path)
            self._pending_bytes += notice.parts.length if notice.parts is not None else 0
        # all of an item's notices or none: a half-queued file would be half announced
        self._pending.extend(wires)
        self._pending_paths.extend(paths)
        if item is not None:
            self._pending_items.append(item)
        if len(self._pending) >= self.batch:
            if wait:
                self.flush()
            else:
                self.try_flush()
        elif len(self._pending) - self._sent >= SEND_AHEAD:
            self._send_ahead()

    def connect_ahead(self) -> None:
        """Connect now, once, before the first flush (and run ``on_connect``), so that the
        broker gets to work from the start. A failure changes nothing: the next flush
        connects (and waits out an outage) as usual."""
        if self.session.connected or not self._connect_ahead:
            return
        self._connect_ahead = False
        try:
            self.session.connect()
            if self.on_connect is not None:
                self.on_connect(self.session)
        except BrokerError as e:  # AccessRefused included: try_flush meets it again
            log.debug("connecting ahead failed (%s); the next flush connects", e)
            self.session.close()

    def _send_ahead(self) -> None:
        """Hand the queued notices not yet sent to the broker now, without waiting for
        confirms, so that it works on them while the next ones are built; :meth:`try_flush`
        then waits for them all. Only on a connection that is up and outside an outage; a
        failure here changes nothing but the next flush (which republishes everything)."""
        if self._outage_since is not None:
            return
        if not self.session.connected:
            if not self._connect_ahead:
                return
            self.connect_ahead()
            if not self.session.connected:
                return
        try:
            if self._sent and self.session.generation != self._sent_generation:
                self._sent = 0  # a reconnect lost what was sent on the old connection
            self.session.send(self._pending[self._sent :])
        except BrokerError as e:  # AccessRefused included: try_flush meets it again
            log.debug("sending ahead failed (%s); the next flush publishes everything", e)
            self.session.close()
            self._sent = 0
            return
        self._sent = len(self._pending)
        self._sent_generation = self.session.generation

    def flush(self) -> None:
        """Publish everything queued and return once the broker confirmed it all, waiting
        through broker outages.

        Raises:
            AccessRefused: the broker refused the login or the exchange (at once).
            BrokerError: the broker stayed unreachable longer than ``outage_max``, or ``stop``
                was set while waiting; the unconfirmed notices stay queued
                (:meth:`pending_items`) and are forgotten by the duplicate cache.
        """
        while not self.try_flush():
            if self.exhausted():
                self._give_up()
                raise BrokerError(
                    f"broker unreachable for {self.outage_seconds():.0f}s "
                    f"(post_outage_max {self.outage_max:g}s): {self.last_error}"
                )
            delay = max(0.0, self._next_attempt - time.monotonic())
            if self.outage_max is not None:  # do not sleep past the bound
                delay = min(delay, max(0.0, self.outage_max - self.outage_seconds()) + 0.01)
            if self.stop is not None:
                if self.stop.wait(delay):
                    self._give_up()
                    raise BrokerError(
                        f"stopped while the broker was unreachable: {self.last_error}"
                    )
            else:
                time.sleep(delay)

    def try_flush(self) -> bool:
        """One attempt to publish what is queued: True once nothing is left unconfirmed.

        A broker fault starts (or continues) an outage and returns False; the notices stay
        queued for the next attempt (see :meth:`due`).

        Raises:
            AccessRefused: retrying cannot help (the queued notices stay queued).
        """
        if not self._pending:
            self._confirmed()
            return True
        # a connection left idle may have been closed by the broker meanwhile (missed
        # heartbeats): that alone is no outage, so a fresh connection is tried at once
        fresh_retry = self.session.connected and self._outage_since is None
        while True:
            now = time.monotonic()
            try:
                if not self.session.connected:
                    self.session.connect()
                    if self.on_connect is not None:
                        self.on_connect(self.session)
                if self._sent and self.session.generation != self._sent_generation:
                    self._sent = 0  # sent on an earlier connection: publish them again
                self.session.publish(self._pending[self._sent :])
            except AccessRefused:
                self.session.close()
                self._sent = 0
                raise
            except BrokerError as e:
                self.session.close()
                self._sent = 0
                if fresh_retry:
                    fresh_retry = False
                    log.debug("publishing on an old connection failed (%s); reconnecting", e)
                    continue
                self._failed(e, now)
                return False
            self._confirmed()
            return True

    def _confirmed(self) -> None:
        if self._outage_since is not None:
            log.info(
                "broker %s reachable again after %.0fs; %d waiting notice(s) posted",
                self.session.url,
                self.outage_seconds(),
                len(self._pending),
            )
            self._outage_since = None
        self._sent = 0
        self.published += len(self._pending)
        self.items_posted += len(self._pending_items)
        self.bytes_posted += self._pending_bytes
        self._pending_bytes = 0
        self._pending.clear()
        self._pending_paths.clear()
        self._pending_items.clear()
        for cache in (self.nodupe, self.confirm_cache):
            if cache is not None:
                cache.persist()

    def _failed(self, error: BrokerError, now: float) -> None:
        self.last_error = str(error)
        more = f", {self.backlog()}" if self.backlog is not None else ""
        if self._outage_since is None:
            self._outage_since = self._last_report = now
            self._delays = backoff_delays(0.5, RETRY_CAP)
            log.warning(
                "cannot publish: %s; %d notice(s) waiting%s; retrying", error, self.waiting, more
            )
        elif now - self._last_report >= PROGRESS_EVERY:
            self._last_report = now
            log.warning(
                "broker %s unreachable for %.0fs, %d notice(s) waiting%s; retrying (%s)",
                self.session.url,
                now - self._outage_since,
                self.waiting,
                more,
                error,
            )
        else:
            log.debug("publish attempt failed: %s", error)
        self._next_attempt = now + next(self._delays)

    def _give_up(self) -> None:
        # not posted: must not count as seen, so a later run posts them
        if self.nodupe is not None:
            for path in self._pending_paths:
                self.nodupe.forget(path)


#: ``outlet`` values: publish to the post broker, or print each notice on standard output
OUTLETS = ("post", "json", "url")


def outlet_line(outlet: str, wire: WireMessage) -> str:
    """One notice as ``outlet json`` or ``outlet url`` prints it, as sr2 does for v02.

    json: ``[topic, headers, body]`` as one JSON array with the header names sorted (the
    message a ``post`` outlet would publish); url: baseUrl and the path as in the body
    (percent-escaped), joined by one ``/``: the URL to retrieve the file from.
    """
    body = wire.body.decode("utf-8")
    if outlet == "json":
        return json.dumps((wire.routing_key, dict(wire.headers), body), sort_keys=True)
    if outlet == "url":
        _, base_url, rel_path = body.split(" ", 2)
        return base_url.rstrip("/") + "/" + rel_path.lstrip("/")
    raise ValueError(f"outlet {outlet!r} prints nothing; use one of json, url")


class PrintingPublisher(Publisher):
    """``outlet json`` or ``outlet url``: each notice is printed as one line on ``out``
    (:func:`outlet_line`) instead of being published. The broker is never reached (its URL
    still gives the notices their defaults, such as to_clusters, as it does when posting)."""

    def __init__(
        self,
        session: Broker,
        builder: NoticeBuilder,
        outlet: str,
        out: TextIO | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(session, builder, **kwargs)
        self.outlet = outlet
        self.out = out

    def connect_ahead(self) -> None:
        """The broker is never reached."""

    def _send_ahead(self) -> None:
        """Nothing goes to a broker."""

    def try_flush(self) -> bool:
        out = self.out if self.out is not None else sys.stdout
        for wire in self._pending:
            out.write(outlet_line(self.outlet, wire) + "\n")
        out.flush()
        self._confirmed()
        return True


def make_publisher(
    cfg: Settings, session: Broker, builder: NoticeBuilder, **kwargs: Any
) -> Publisher:
    """The publisher for ``outlet``: :class:`Publisher` for ``post``, else a
    :class:`PrintingPublisher` (``kwargs`` go to the constructor either way)."""
    if cfg.outlet == "post":
        return Publisher(session, builder, **kwargs)
    return PrintingPublisher(session, builder, cfg.outlet, **kwargs)


def post_files(
    builder: NoticeBuilder,
    publisher: Publisher,
    paths: list[str],
    stop: threading.Event,
    complain: Callable[[str], None],
    follower: GrowthFollower | None = None,
    idle: float = 5.0,
) -> tuple[list[str], str]:
    """sr_post's pass: post every file under ``paths`` (a tree is listed when reached) until
    ``stop``, then flush. Returns what was not posted (unreadable, never confirmed by the
    broker, or never tried) and why ("" when nothing went wrong as a whole); each unreadable
    file or unlistable directory is also given to ``complain``.

    With a ``follower`` (``growing on``) each file is followed block by block until it has
    not grown for ``idle`` seconds (:func:`sarra.flow.growing.follow`)."""
    unposted: list[str] = []
    why = ""

    def files() -> Iterator[tuple[str, os.stat_result | None]]:
        """Each file with its lstat when one was taken (None: file_notices takes it)."""
        for path in paths:
            abs_path = os.path.abspath(path)
            # one lstat (isdir and islink would be two calls), handed on to file_notices;
            # a missing path is no directory: file_notices reports it
            try:
                st: os.stat_result | None = os.lstat(abs_path)
            except OSError:
                st = None
            if st is not None and statmod.S_ISDIR(st.st_mode):
                try:
                    tree = list(builder.tree(abs_path))
                except LocalError as e:
                    complain(str(e))
                    unposted.append(abs_path)
                    continue
                for f in tree:
                    yield f, None
            else:
                yield abs_path, st

    todo = files()
    try:
        for f, st in todo:
            if stop.is_set():
                unposted.append(f)
                why = "stopped"
                break
            try:
                if follower is None:
                    publisher.add(builder.file_notices(f, lstat=st), item=f)
                elif not follow(follower, f, _growth_publisher(publisher, f), idle, stop):
                    unposted.append(f)
                    why = "stopped while the file was growing"
                    break
            except (LocalError, MessageError) as e:
                complain(str(e))
                unposted.append(f)
        publisher.flush()
    except BrokerError as e:
        why = str(e)
        log.error("giving up: %s", e)
    # what the broker never confirmed, then what was never tried
    unposted.extend(publisher.pending_items())
    unposted.extend(f for f, _ in todo)
    return unposted, why


def _growth_publisher(publisher: Publisher, item: str) -> Callable[[list[Notice], bool], None]:
    """How sr_post hands a growing file's notices over: each provisional batch is flushed
    at once (receivers fetch blocks as they complete); the final one completes ``item``."""

    def publish(notices: list[Notice], final: bool) -> None:
        publisher.add(notices, item=item if final else None)
        if not final:
            publisher.flush()

    return publish
