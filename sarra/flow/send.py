"""What a sender does with one accepted notice: select it, then push the local file.

:class:`Sender` provides the ``select``/``work`` pair for the
:class:`~sarra.flow.engine.ConsumingLoop`. The notices are about **local** files (posted by
sr_post, sr_watch or a sarra on this host): the local file is ``base_dir`` + the notice's
logical path (or, for a ``file:`` baseUrl without ``base_dir``, the absolute path itself).

Each file is written to an in-flight name on the remote side and renamed when complete, so
the final remote name never shows a partial file; on failure the in-flight file is removed
(best effort) so a full remote disk is not kept full by our own leftovers.

Confinement: both the local path (under ``base_dir``) and the remote path (under the
configured remote ``directory``) are checked with :func:`sarra.localfs.confined.check_relpath`
(no ``..``, NUL, invalid UTF-8...): a hostile notice is refused with 417 before any I/O.

The path of the ``destination`` URL, when it has one, is the remote tree everything is written
in (:func:`remote_root`, :func:`confine_directory`): ``sftp://u@h/data/out`` is the absolute
``/data/out``, ``sftp://u@h/~/out`` is ``out`` in the login directory (the URL convention of
:mod:`sarra.transfer.url`, the same for ftp/ftps). A relative ``directory`` is then taken under
it, an absolute one must lie inside it; any other directory (one a ``${...}`` expansion made,
for instance) is refused with 417, so nothing is written outside that tree. Without a path
(``sftp://u@h/``), ``directory`` is absolute or relative to the login directory, as before.

A ``do_put(local_path, url)`` plugin (:mod:`sarra.flow.hooks`) is asked first for every file
to push: ``url`` is the destination URL of the **final** remote name. When it returns True the
plugin has delivered the file under that name: sarra makes no directory, no in-flight name,
no rename and no size check, and reports 201. None leaves the file to the built-in transport
(all of the above then applies); False or an exception is a transfer failure (499, retried).
Removals (``R``) and directory creations (``m``) always use the built-in transport.

Blocks (``parts`` ``i``) of a local file: the whole file is pushed once per file version
(under the in-flight name, then renamed) when its first block is handled, provided the local
file has the announced size; every block is then reported and announced against the final
name with its own fields and sum. ``p`` blocks (``.Part`` objects) are refused with 417.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sarra.codec import v02
from sarra.errors import (
    HostilePath,
    LocalError,
    NotFound,
    SarraError,
    TransferError,
)
from sarra.flow.hooks import Plugins, transfer_by_plugin
from sarra.flow.ratelimit import TokenBucket, throttle_callback
from sarra.flow.work import WorkItem
from sarra.localfs.confined import check_relpath
from sarra.notice import Notice, WireMessage
from sarra.transfer import Transport, open_transport
from sarra.transfer.url import server_path

if TYPE_CHECKING:
    from sarra.config.credentials import Credential
    from sarra.flow.bandwidth import Bandwidth

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RemoteTarget:
    """Where an accepted notice goes on the remote side: a directory and a path under it.

    ``directory`` is a server path: absolute (``/data/in``) or relative to the login
    directory (``incoming``); ``""`` is the login directory itself.
    """

    directory: str
    rel: str

    @property
    def path(self) -> str:
        return f"{self.directory.rstrip('/')}/{self.rel}" if self.directory else self.rel


RemoteResolver = Callable[[Notice], "RemoteTarget | None"]
"""Masks + path options: the remote target of a notice, or None when it is rejected."""


@dataclass(frozen=True, slots=True)
class Announce:
    """How a sender announces what it sent (``post_broker`` set)."""

    exchange: str
    base_url: str
    #: remote directory the announced paths are relative to (``post_base_dir``)
    base_dir: str | None = None
    exchange_split: int = 0
    to_clusters: str | None = None
    header_value_max: int = 252
    persistent: bool = True
    #: ``v02`` or ``v03``
    post_format: str = "v02"


@dataclass(slots=True)
class SendSettings:
    destination: str
    #: ``.suffix``, ``prefix``, ``subdir/``; None writes the final name directly (unsafe)
    inflight: str | None = ".tmp"
    #: local directory the notice paths are relative to
    base_dir: str | None = None
    timeout: float = 30.0
    credentials: Callable[[str], Credential | None] = field(default=lambda _url: None)
    #: ftps: check the server certificate (``tls_rigour lax`` turns this off)
    tls_verify: bool = True
    #: ftps: trusted CA certificates (default: the system's)
    ca_file: str | None = None
    transport_options: dict[str, Any] = field(default_factory=dict)
    announce: Announce | None = None
    #: the path of ``destination``: every remote path stays under it (None: no path given)
    remote_root: str | None = None


def remote_root(destination: str) -> str | None:
    """The remote tree the path of ``destination`` names: ``/abs/dir`` (``sftp://h/abs/dir``),
    ``rel/dir`` under the login directory (``sftp://h/~/rel/dir``), or None when the URL has
    no path beyond ``/`` or ``/~``. Raises HostilePath for a path with ``..`` (and the like)."""
    path = server_path(destination)
    if path in (".", "/"):
        return None
    parts = check_relpath(path)
    joined = "/".join(parts)
    return f"/{joined}" if path.startswith("/") else joined


def confine_directory(root: str | None, directory: str) -> str:
    """The remote directory ``directory`` names under the destination's ``root``.

    Without a root it is ``directory`` itself. Otherwise a relative ``directory`` (or none) is
    taken under ``root``, an absolute one must name ``root`` or a directory inside it.
    Raises HostilePath for a directory outside the root or with a ``..`` component.
    """
    if root is None:
        return directory
    if directory in ("", ".", "./"):
        return root
    if not directory.startswith("/"):
        return f"{root}/{'/'.join(check_relpath(directory))}"
    inside = "/" + "/".join(check_relpath(directory)) if directory.strip("/") else "/"
    if root.startswith("/") and (inside == root or inside.startswith(root + "/")):
        return inside
    where = root if root.startswith("/") else f"~/{root}"
    raise HostilePath(
        f"directory {directory} is outside the destination's tree {where}: "
        "give a directory relative to it, or one inside it"
    )


def inflight_path(final: str, inflight: str | None) -> str:
    """The in-flight remote path for ``final`` (sr2 forms: ``.tmp`` suffix, ``tmp/``
    subdirectory of the file's directory, any other word a prefix)."""
    if not inflight:
        return final
    head, _, name = final.rpartition("/")
    prefix = f"{head}/" if head else ("/" if final.startswith("/") else "")
    if inflight.startswith("."):
        return f"{final}{inflight}"
    return f"{prefix}{inflight}{name}"  # "tmp/" puts it in a subdirectory, "tmp_" prefixes


class Sender:
    """Selects and performs the work of a sender (one transport per pool thread)."""

    def __init__(
        self,
        settings: SendSettings,
        resolve: RemoteResolver,
        plugins: Plugins | None = None,
        limiter: TokenBucket | None = None,
        bandwidth: Bandwidth | None = None,
    ) -> None:
        self.settings = settings
        #: the pump-wide caps (sarra.flow.bandwidth): each put then throttles by its source
        self.bandwidth = bandwidth
        #: the instance's byte rate limit, shared by every transport's put (None: unlimited)
        self.limiter = limiter
        self._throttle = throttle_callback(limiter)
        self.resolve = resolve
        self.plugins = plugins or Plugins.from_config({})
        self._local = threading.local()
        self._all: list[Transport] = []
        self._lock = threading.Lock()
        self._made_dirs: set[str] = set()
        #: (remote final path, version) of multi-part files already delivered whole
        self._sent_versions: set[tuple[str, str]] = set()
        self._file_locks: dict[str, threading.Lock] = {}

    # -- flow thread ---------------------------------------------------------------------------

    def local_path(self, notice: Notice) -> str:
        """The local file a notice is about, confined to ``base_dir`` when that is set."""
        parts = check_relpath(notice.path)  # HostilePath -> 417
        base = self.settings.base_dir
        if base:
            return os.path.join(base, *parts)
        if notice.base_url == "file:":
            return "/" + "/".join(parts)
        raise HostilePath(
            f"cannot locate {notice.url} locally: baseUrl is not file: and base_dir is not set"
        )

    def select(self, item: WorkItem) -> bool:
        """Decide whether ``item`` goes to the transfer pool; settle it if not."""
        notice = item.notice
        target = self.resolve(notice)
        if target is None:
            item.settle(0, "rejected by the configuration")
            return False
        check_relpath(target.rel)  # the remote path stays under the remote directory
        # ... and the remote directory under the destination's path (HostilePath: 417)
        directory = confine_directory(self.settings.remote_root, target.directory)
        item.dest_root, item.dest_rel = directory, target.rel
        letter = notice.checksum.letter
        if letter in ("L", "r"):
            item.settle(0, "links and directory removals are not sent")
            return False
        if letter not in ("R", "m"):
            item.local_source = self.local_path(notice)
        if not self.plugins.empty and not self.plugins.on_message(item):
            item.settle(0, "dropped by an on_message plugin")
            return False
        if item.dest_rel != target.rel:
            check_relpath(item.dest_rel or "")  # plugins cannot escape either
        parts = notice.parts
        if parts is not None and not parts.whole:
            if parts.method != "i":
                item.settle(417, "a sender sends local files: .Part (p) blocks are not sent")
                return False
            local = str(item.local_source)
            try:
                size = os.stat(local).st_size
            except OSError:
                size = -1
            if size != parts.file_size:
                item.settle(
                    499, f"local file {local} is {size} bytes, not the {parts.file_size} announced"
                )
                return False
        return True

    # -- pool threads --------------------------------------------------------------------------

    def work(self, item: WorkItem) -> None:
        """Push the file (or apply the file operation); raises SarraError on failure."""
        notice = item.notice
        assert item.dest_root is not None and item.dest_rel is not None
        final = RemoteTarget(item.dest_root, item.dest_rel).path
        letter = notice.checksum.letter
        if letter == "R":
            transport = self._transport()
            with contextlib.suppress(NotFound):  # already absent: the goal is reached
                transport.delete(final)
            item.settle(201, "removed")
            self._announce(item, final)
            return
        if letter == "m":
            self._mkdirs(self._transport(), final, force=True)
            item.settle(201, "directory created")
            return
        if self.bandwidth is not None:
            # this thread's transport, throttled as this notice's source is (a callback per
            # notice: under bandwidth_wait_max it counts this transfer's waits)
            self._transport().throttle = throttle_callback(
                self.bandwidth.limiter(notice.header("source"))
            )
        elif self.limiter is not None and self.limiter.wait_max > 0:
            self._transport().throttle = throttle_callback(self.limiter)
        local = str(item.local_source)
        if not os.path.isfile(local):
            raise LocalError(f"local file {local} is missing or not a regular file")
        parts = notice.parts
        if parts is not None and not parts.whole:
            self._send_block(item, local, final)
            return
        self._put_whole(item, local, final)
        item.settle(201, "Delivered")
        self._announce(item, final)

    def _send_block(self, item: WorkItem, local: str, final: str) -> None:
        """A block of a local file: the whole file is delivered once per version (under a
        temporary name, then renamed), then every block is announced against the final name
        with its own fields and sum (spec 6.8)."""
        notice = item.notice
        parts = notice.parts
        assert parts is not None
        version = notice.header("mtime") or notice.pubtime
        with self._lock:
            lock = self._file_locks.setdefault(final, threading.Lock())
        with lock:
            if (final, version) not in self._sent_versions:
                self._put_whole(item, local, final)
                with self._lock:
                    self._sent_versions.add((final, version))
        item.size = parts.length
        item.settle(201, f"Delivered (block {parts.block_number + 1} of {parts.block_count})")
        self._announce(item, final)

    def _put_whole(self, item: WorkItem, local: str, final: str) -> None:
        if self._plugin_put(local, final):
            item.size = os.stat(local).st_size
            return
        transport = self._transport()
        tmp = inflight_path(final, self.settings.inflight)
        self._mkdirs(transport, _parent(tmp))
        if _parent(final) != _parent(tmp):
            self._mkdirs(transport, _parent(final))
        try:
            try:
                item.size = transport.put(local, tmp)
            except NotFound:
                # a directory we made earlier was removed remotely: make it again, once
                self._mkdirs(transport, _parent(tmp), force=True)
                item.size = transport.put(local, tmp)
            self._verify(transport, tmp, item.size)
            if tmp != final:
                transport.rename(tmp, final)
        except SarraError:
            self._discard(transport, tmp)
            raise

    def _plugin_put(self, local: str, final: str) -> bool:
        """True when a ``do_put`` plugin delivered ``local`` under the remote ``final`` name;
        False when no plugin took it (the built-in transport sends it). Raises
        TransportUnavailable (499, retried) when a plugin answered False or raised."""
        if self.plugins.empty or not self.plugins.implements("do_put"):
            return False
        url = remote_url(self.settings.destination, final)
        return transfer_by_plugin(
            lambda: self.plugins.do_put(local, url), f"do_put plugin for {local} to {url}"
        )

    def _announce(self, item: WorkItem, final: str) -> None:
        a = self.settings.announce
        if a is None:
            return
        path = final
        if a.base_dir and (final + "/").startswith(a.base_dir.rstrip("/") + "/"):
            path = final[len(a.base_dir.rstrip("/")) :]
        elif not final.startswith("/") and a.base_url.startswith(("sftp:", "ftp:", "ftps:")):
            path = "~/" + final  # relative to the login directory (sftp/ftp URL convention)
        notice = item.notice
        missing = a.to_clusters is not None and notice.header("to_clusters") is None
        derived = v02.derive(
            notice,
            exchange=v02.split_exchange(a.exchange, notice.checksum, a.exchange_split),
            base_url=a.base_url,
            path=path,
            set_headers={"to_clusters": str(a.to_clusters)} if missing else None,
        )
        item.outgoing.append(self._wire(derived, a))

    @staticmethod
    def _wire(notice: Notice, a: Announce) -> WireMessage:
        return v02.encode(
            notice,
            notice.exchange,
            header_value_max=a.header_value_max,
            persistent=a.persistent,
            post_format=a.post_format,
        )

    def _mkdirs(self, transport: Transport, directory: str, force: bool = False) -> None:
        if not directory or directory == "/":
            return
        with self._lock:
            known = directory in self._made_dirs
        if known and not force:
            return
        if transport.features.mkdirs:
            transport.mkdirs(directory)
        with self._lock:
            self._made_dirs.add(directory)

    @staticmethod
    def _verify(transport: Transport, path: str, size: int) -> None:
        """Check the remote size before the rename: SFTP servers may fail pipelined writes
        (ENOSPC) without the client noticing, and a short file must never get its final name."""
        got = transport.stat(path).size
        if got != size:
            raise TransferError(f"{path}: remote has {got} of {size} bytes (remote disk full?)")

    @staticmethod
    def _discard(transport: Transport, tmp: str) -> None:
        """Remove a partial in-flight file (best effort: it may not exist)."""
        if not transport.features.delete:
            return
        try:
            transport.delete(tmp)
        except SarraError as e:
            log.debug("could not remove in-flight %s: %s", tmp, e)

    def _transport(self) -> Transport:
        transport: Transport | None = getattr(self._local, "transport", None)
        if transport is None:
            s = self.settings
            transport = open_transport(
                s.destination,
                credentials=s.credentials(s.destination),
                timeout=s.timeout,
                tls_verify=s.tls_verify,
                ca_file=s.ca_file,
                options=s.transport_options,
            )
            transport.throttle = self._throttle
            self._local.transport = transport
            with self._lock:
                self._all.append(transport)
        return transport

    def close(self) -> None:
        """Close every thread's transport."""
        with self._lock:
            transports, self._all = self._all, []
        for t in transports:
            try:
                t.close()
            except Exception:  # closing is best effort
                log.debug("closing a transport failed", exc_info=True)


def remote_url(destination: str, path: str) -> str:
    """The URL of the remote ``path`` on the server of ``destination`` (its scheme, user, host
    and port): an absolute path follows the host (``sftp://u@h:22/data/in/a``), a path relative
    to the login directory is written ``~/`` (``sftp://u@h/~/incoming/a``, the sftp and ftp URL
    convention)."""
    scheme, sep, rest = destination.partition("://")
    origin = f"{scheme}{sep}{rest.split('/', 1)[0]}"
    return f"{origin}{path}" if path.startswith("/") else f"{origin}/~/{path}"


def _parent(path: str) -> str:
    head, sep, _ = path.rpartition("/")
    return head if head else ("/" if sep else "")
