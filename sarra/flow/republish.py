"""What a pump's sarra does with one notice: police it, download it, re-announce it.

:class:`Republisher` wraps a :class:`~sarra.flow.download.Downloader` (which selects and places
files exactly as a subscriber does) with the pump's rules:

- anti-spoofing (spec 9.3): on an ``xs_*`` exchange the owner is the longest declared user
  ``u`` with exchange ``xs_u`` or ``xs_u_*``; ``source`` is overwritten with it,
  ``from_cluster`` replaced by the local cluster, a missing ``to_clusters`` added. A notice
  whose exchange no declared user owns is not forwarded (acked, logged, counted, recorded).
  On any other exchange (another pump's ``xpublic``) ``source``/``from_cluster`` are kept and
  a notice whose ``from_cluster`` is the local cluster is dropped (a loop);
- ``to_clusters`` (spec 9.3): the pump takes notices naming it, an alias, a cluster it is a
  gateway for, or ``ALL``;
- baseUrl policy for republishers (spec 9.4): hosts resolving to loopback, link-local or
  unspecified addresses are refused (503) unless the baseUrl matches a ``base_url_accept``
  line or its host is the host of the pump's broker, post_broker or ``post_base_url``;
- re-announcement: each placed file (and each link, removal, mkdir, rmdir carried out) is
  re-announced with the pump's ``post_base_url`` and its path under ``post_base_dir``, on
  ``post_exchange``, through ``WorkItem.outgoing``: the loop publishes it with confirms
  before the delivery is acked.

Kill safety: a delivery is acked only after its re-announcement is confirmed. An instance
killed after placing a file but before the announcement was confirmed leaves the delivery
unacked, so the broker redelivers it (``redelivered`` set). The redelivered notice finds the
file unchanged (304): **an unchanged file is re-announced when the delivery is marked
redelivered, or comes from the disk retry queue**; a fresh duplicate of an unchanged file is
not (its first copy was announced before being acked). Duplicates downstream are possible
after a crash, losses are not.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sarra.codec import v02
from sarra.codec.fields import parse_checksum
from sarra.config.settings import Settings
from sarra.errors import ConfigError, LocalError, SarraError
from sarra.flow.baseurl import REPUBLISHER_REFUSED, HostGuard, Resolver, resolve_host
from sarra.flow.download import Downloader
from sarra.flow.work import PartState, WorkItem
from sarra.notice import Checksum, Notice, PartSpec, WireMessage
from sarra.parts import growing
from sarra.parts.arithmetic import split
from sarra.security_events import FORGED_SOURCE, record_event

log = logging.getLogger(__name__)

#: outcomes that placed something (or carried out a file operation)
_DONE = frozenset({201, 205})


@dataclass(frozen=True, slots=True)
class PumpIdentity:
    """Who this pump is: its cluster names and its declared users (any role)."""

    cluster: str
    aliases: frozenset[str] = frozenset()
    gateway_for: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()

    def is_local(self, cluster: str | None) -> bool:
        """True when ``cluster`` names this pump."""
        return cluster is not None and (cluster == self.cluster or cluster in self.aliases)

    def accepts(self, to_clusters: str | None) -> bool:
        """True when a notice with this ``to_clusters`` is for this pump (None: no header)."""
        if to_clusters is None:
            return True
        wanted = {c.strip() for c in to_clusters.split(",") if c.strip()}
        mine = {self.cluster, "ALL", *self.aliases, *self.gateway_for}
        return bool(wanted & mine)

    def owner_of(self, exchange: str) -> str | None:
        """The longest declared user ``u`` whose exchange this is (``xs_u`` or ``xs_u_*``)."""
        if not exchange.startswith("xs_"):
            return None
        rest = exchange[3:]
        best: str | None = None
        for u in self.users:
            if (rest == u or rest.startswith(u + "_")) and (best is None or len(u) > len(best)):
                best = u
        return best


#: roles of ``declare`` lines that name users (``declare exchange X`` does not)
USER_ROLES = frozenset({"source", "subscriber", "subscribe", "feeder", "admin", "user"})


def declared_users(s: Settings) -> frozenset[str]:
    """Every user the pump declares, any role, plus its admin and feeder accounts."""
    users: set[str] = set()
    for role, names in s.declared.items():
        if role in USER_ROLES:
            users.update(names)
    for text in (s.admin, s.feeder):
        user = urlsplit(text).username if text else None
        if user:
            users.add(user)
    return frozenset(users)


@dataclass(frozen=True, slots=True)
class RepublishSettings:
    """Where and how re-announcements are made."""

    post_exchange: str
    post_base_url: str
    post_base_dir: str
    exchange_split: int = 0
    header_value_max: int = 252
    persistent: bool = True
    message_ttl_ms: int | None = None
    source_from_exchange: bool = True
    #: hosts a loopback/link-local baseUrl may name (the pump's own broker and web server)
    trusted_hosts: frozenset[str] = frozenset()
    base_url_accept: tuple[re.Pattern[str], ...] = ()
    #: headers added to every re-announcement (``header`` option)
    extra_headers: tuple[tuple[str, str], ...] = ()
    drop_headers: tuple[str, ...] = ()
    #: ``v02`` or ``v03`` (:func:`sarra.codec.v02.publish_wire`)
    post_format: str = "v02"

    @classmethod
    def from_config(cls, s: Settings, trusted: Iterable[str] = ()) -> RepublishSettings:
        """sr_sarra's options; ``trusted``: the pump's broker hosts (its ``post_base_url``
        host is trusted as well).

        Raises:
            ConfigError: no ``post_base_url``, or no ``post_base_dir`` and no plain
                ``directory`` to take it from.
        """
        if not s.post_base_url:
            raise ConfigError("sr_sarra needs post_base_url", option="post_base_url")
        base_dir = s.post_base_dir
        if not base_dir:
            if not s.directory or "${" in s.directory:
                raise ConfigError(
                    "sr_sarra needs post_base_dir (the root of the tree post_base_url serves)",
                    option="post_base_dir",
                )
            base_dir = s.directory
        hosts = {*(h.lower() for h in trusted), (urlsplit(s.post_base_url).hostname or "").lower()}
        return cls(
            post_exchange=s.post_exchange or "xpublic",
            post_base_url=s.post_base_url,
            post_base_dir=os.path.abspath(base_dir),
            exchange_split=s.post_exchange_split,
            header_value_max=s.header_value_max,
            persistent=s.persistent,
            message_ttl_ms=int(s.message_ttl * 1000) if s.message_ttl else None,
            source_from_exchange=s.source_from_exchange,
            trusted_hosts=frozenset(h for h in hosts if h),
            base_url_accept=tuple(re.compile(p) for p in s.base_url_accept),
            extra_headers=tuple(s.headers_add.items()),
            drop_headers=s.headers_del,
            post_format=s.post_format,
        )


@dataclass(slots=True)
class RepublishCounts:
    """What was refused or dropped, for logs and the final summary."""

    forged: int = 0
    loops: int = 0
    not_for_us: int = 0
    announced: int = 0
    reannounced: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def summary(self) -> str:
        """The words sr_sarra adds to its stop summary."""
        return (
            f"announced {self.announced}, re-announced {self.reannounced}, "
            f"forged {self.forged}, loops {self.loops}, not for this cluster {self.not_for_us}"
        )


def record_forged(exchange: str, claimed: str | None, reason: str) -> None:
    """Tell sr_police about a refused notice (recording logs, never raises, on failure)."""
    record_event(FORGED_SOURCE, exchange=exchange, claimed=claimed, reason=reason)


class Republisher:
    """select/work/sync for sr_sarra, around a subscriber's :class:`Downloader`."""

    def __init__(
        self,
        downloader: Downloader,
        pump: PumpIdentity,
        settings: RepublishSettings,
        *,
        resolver: Resolver = resolve_host,
    ) -> None:
        self.downloader = downloader
        self.pump = pump
        self.settings = settings
        self.resolver = resolver
        self.counts = RepublishCounts()
        self._hosts = HostGuard(
            REPUBLISHER_REFUSED,
            hint="list it in base_url_accept",
            trusted_hosts=settings.trusted_hosts,
            resolver=resolver,
        )

    # -- flow thread ---------------------------------------------------------------------------

    def select(self, item: WorkItem) -> bool:
        """Police the notice (rewriting its routing headers), then select it as a subscriber."""
        notice = self._police(item)
        if notice is None:
            return False
        item.notice = notice
        self._check_base_url(notice)
        return self.downloader.select(item)

    def _police(self, item: WorkItem) -> Notice | None:
        """The notice with its routing headers fixed, or None when it was settled (dropped)."""
        notice = item.notice
        exchange = notice.exchange
        if self.settings.source_from_exchange and exchange.startswith("xs_"):
            owner = self.pump.owner_of(exchange)
            if owner is None:
                claimed = notice.header("source")
                log.warning(
                    "not forwarding %s from %s: no declared user owns that exchange "
                    "(claimed source %r)",
                    notice.path,
                    exchange,
                    claimed,
                )
                self.counts.add("forged")
                record_forged(exchange, claimed, "no declared user owns the exchange")
                item.settle(0, "exchange owned by no declared user")
                return None
            claimed = notice.header("source")
            if claimed is not None and claimed != owner:
                log.warning(
                    "%s on %s claimed source %r: overwritten with %r",
                    notice.path,
                    exchange,
                    claimed,
                    owner,
                )
                self.counts.add("forged")
                record_forged(exchange, claimed, f"source overwritten with {owner}")
            fixed = {"source": owner, "from_cluster": self.pump.cluster}
            if notice.header("to_clusters") is None:
                fixed["to_clusters"] = self.pump.cluster
            notice = v02.derive(notice, set_headers=fixed)
        elif self.pump.is_local(notice.header("from_cluster")):
            self.counts.add("loops")
            item.settle(0, "from_cluster is this pump (loop)")
            log.info("dropping %s: it came from this cluster (loop)", notice.path)
            return None
        if not self.pump.accepts(notice.header("to_clusters")):
            self.counts.add("not_for_us")
            item.settle(0, "to_clusters does not name this pump")
            log.info("%s: to_clusters %s is not for us", notice.path, notice.header("to_clusters"))
            return None
        return notice

    def _check_base_url(self, notice: Notice) -> None:
        """Spec 9.4, republishers: no fetching of internal services on a source's word."""
        if notice.checksum.file_op:
            return
        base = notice.base_url
        if any(p.match(base) for p in self.settings.base_url_accept):
            return  # listed explicitly
        self._hosts.check(base)

    # -- pool threads --------------------------------------------------------------------------

    def work(self, item: WorkItem) -> None:
        """Download (or apply the file operation), then queue the re-announcement."""
        self.downloader.work(item)
        self._queue_announcement(item)

    # -- flow thread, right after select ---------------------------------------------------

    def work_inline(self, item: WorkItem) -> bool:
        """:meth:`work` in the flow thread for a small whole file
        (:meth:`Downloader.work_inline <sarra.flow.download.Downloader.work_inline>`: same
        conditions, same fallback to the pool). Returns True when the item is settled, with
        its re-announcement queued; False (the item as it was) to send it to the pool.

        The announcement goes out with its batch exactly as for pool work: after the batch
        commit (fsyncs, renames) and ``sync``, published with confirms, and only then is the
        delivery acked. Never raises: an announcement that cannot be built settles the item
        with the error's code, as the pool's error handling would.

        A file whose source has a quota goes to the pool: a refusal (507) is an error the
        inline attempt would leave to the pool, which would then count it a second time in
        the ledger (and keep the origin out of the flow thread for nothing).
        """
        quota = self.downloader.quota
        if quota is not None and item.notice.header("source") in quota.quotas:
            return False
        if not self.downloader.work_inline(item):
            return False
        try:
            self._queue_announcement(item)
        except SarraError as e:
            item.settle(e.report_code, str(e))
            item.error = e  # the loop decides at the flush: retry queue or drop
        except Exception as e:  # a bug: retried later, never acked as lost work
            log.exception("announcing %s failed", item.notice.path)
            item.settle(500, f"internal error: {type(e).__name__}: {e}")
            item.error = e
        return True

    def _queue_announcement(self, item: WorkItem) -> None:
        """Queue on ``item.outgoing`` what :meth:`work` announces for its outcome."""
        code = item.code
        part = item.part
        if part in (PartState.INSERTED, PartState.COMPLETE, PartState.DONE):
            # inplace on: blocks are assembled here. Each block's own announcement would point
            # at a file that is not there yet, so the whole file is announced once complete,
            # block by block with their verified sums (spec 6.8), like a poster would.
            redelivered = item.retry is not None or (
                item.delivery is not None and item.delivery.redelivered
            )
            if part is PartState.COMPLETE or (part is PartState.DONE and redelivered):
                self._announce_blocks(item)
            return
        if code in _DONE:
            item.outgoing.append(self.announcement(item))
            self.counts.add("announced")
        elif code == 304 and (
            item.retry is not None or (item.delivery is not None and item.delivery.redelivered)
        ):
            # a predecessor may have placed it and died before its announcement was confirmed
            item.outgoing.append(self.announcement(item))
            self.counts.add("reannounced")
            item.message = "not modified (re-announced after a redelivery)"

    def _announce_blocks(self, item: WorkItem) -> None:
        whole = item.whole
        if whole is None:
            log.warning(
                "%s: complete, but not every block's sum is known (blocks received before an "
                "upgrade?): not announced",
                item.notice.path,
            )
            return
        file_size, sums = whole
        spec = item.notice.parts
        assert spec is not None
        for block, text in zip(split(file_size, spec.block_size), sums, strict=True):
            # complete now: announced as an ordinary file (a growth's header would make the
            # next hop wait for a final notice, and sr2/sr3 understand the blocks as they are)
            wire = self.announcement(
                item, parts=block, checksum=parse_checksum(text), drop=(growing.HEADER,)
            )
            item.outgoing.append(wire)
        self.counts.add("announced" if item.code in _DONE else "reannounced")
        if item.code == 304:
            item.message = "not modified (re-announced after a redelivery)"

    def announcement(
        self,
        item: WorkItem,
        *,
        parts: PartSpec | None = None,
        checksum: Checksum | None = None,
        drop: tuple[str, ...] = (),
    ) -> WireMessage:
        """The re-announcement of the file ``item`` placed, as the pump publishes it
        (without the headers named in ``drop``)."""
        s = self.settings
        local = item.local_path
        if local is None:
            raise LocalError(f"{item.notice.path}: no local path to announce")
        rel = os.path.relpath(local, s.post_base_dir)
        if rel == ".." or rel.startswith("../"):
            raise LocalError(f"{local} is outside post_base_dir {s.post_base_dir}")
        notice = item.notice
        computed = item.computed if notice.checksum.letter == "z" else None
        if checksum is not None:
            computed = checksum
        if parts is None:
            parts = notice.parts
        if item.part is PartState.KEPT and parts is not None:
            # a block kept as its own .Part object is announced as such (spec 6.7, GM-11)
            parts = PartSpec(
                "p", parts.block_size, parts.block_count, parts.remainder, parts.block_number
            )
        out = v02.derive(
            notice,
            exchange=s.post_exchange,
            base_url=s.post_base_url,
            path=rel,
            set_headers=dict(s.extra_headers),
            drop_headers=("rename", *s.drop_headers, *drop),
            checksum=computed,
            parts=parts,
        )
        return v02.publish_wire(out, s.post_exchange, s)

    def sync(self) -> None:
        """Make placed files durable before their announcements and acks."""
        self.downloader.sync()
