"""sr_subscribe: consume notices and download the files into local directories."""

from __future__ import annotations

import os
import re

from sarra.components.common import MaskResolver, credential_store, current_umask
from sarra.components.runner import ConsumerComponent, Flow, Instance
from sarra.config.settings import Settings
from sarra.flow.download import Destination, Downloader, DownloadSettings
from sarra.flow.journal import InflightJournal
from sarra.flow.nodupe import DuplicateCache


def download_settings(s: Settings) -> DownloadSettings:
    """How a downloader (subscribe, sarra) fetches and places files.

    An ``inflight`` age (a number) makes no sense when writing: the temporary suffix ``.tmp``
    is used instead; ``inflight NONE`` writes final names directly. ``chmod 0`` and
    ``chmod_dir 0`` leave modes to the umask (as the option table says).
    """
    umask = current_umask()
    inflight = s.inflight if isinstance(s.inflight, str) and s.inflight else ".tmp"
    return DownloadSettings(
        inflight=None if inflight.upper() == "NONE" else inflight,
        events=frozenset(s.events.replace(",", "|").split("|")),
        base_url_accept=tuple(re.compile(p) for p in s.base_url_accept),
        preserve_time=s.preserve_time,
        preserve_mode=s.preserve_mode,
        chmod=s.chmod or 0o666 & ~umask,
        chmod_dir=s.chmod_dir or 0o777 & ~umask,
        timeout=s.timeout,
        credentials=credential_store().find,
        tls_verify=s.tls_rigour != "lax",
        part_expiry=s.part_expiry,
        base_url_private=s.base_url_private,
        file_size_max=s.file_size_max,
        overwrite=s.overwrite,
    )


class SubscribeComponent(ConsumerComponent):
    """sr_subscribe: the declaration (defaults live in the option table)."""

    name = "subscribe"

    def build(self, run: Instance) -> Flow:
        s, n = run.settings, run.number
        nodupe = None
        if s.suppress_duplicates > 0:
            nodupe = DuplicateCache(
                run.state_dir / f"recent_files_{n:03d}.cache",
                ttl=s.suppress_duplicates,
                basis=s.cache_basis,
            )
        journal = InflightJournal(run.state_dir / f"inflight_{n:03d}.journal")
        downloader = Downloader(
            download_settings(s),
            MaskResolver(s, Destination, directory=s.directory or os.getcwd()),
            run.plugins,
            nodupe,
            journal,
            parts_state=run.state_dir,
            inplace=s.inplace,
            batch_commit=True,
            interrupt=run.stop,
            limiter=run.limiter,
        )
        downloader.recover_leftovers()

        def housekeeping() -> None:
            if nodupe is not None:
                nodupe.expire()
            downloader.housekeeping(run.report)

        flow = Flow(
            downloader.select,
            downloader.work,
            before_settle=downloader.sync,
            commit_batch=downloader.commit_batch,
            housekeeping=housekeeping,
            abort=downloader.abort,
            close=[downloader.close, journal.close],
        )
        if nodupe is not None:
            flow.close.append(nodupe.close)
        return flow
