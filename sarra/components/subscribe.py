"""sr_subscribe: consume notices and download the files into local directories."""

from __future__ import annotations

import os
from pathlib import Path

from sarra.components.common import MaskResolver, download_settings, group_sync_for
from sarra.components.runner import ConsumerComponent, Flow, Instance
from sarra.flow.download import Destination, Downloader
from sarra.flow.journal import InflightJournal
from sarra.flow.nodupe import DuplicateCache
from sarra.flow.sharedstore import SharedDuplicateCache, open_store


class SubscribeComponent(ConsumerComponent):
    """sr_subscribe: the declaration (defaults live in the option table)."""

    name = "subscribe"

    def build(self, run: Instance) -> Flow:
        s, n = run.settings, run.number
        nodupe: DuplicateCache | None = None
        store = open_store(s, self.name, run.stop) if s.suppress_duplicates > 0 else None
        if store is not None:
            nodupe = SharedDuplicateCache(store, s.suppress_duplicates, s.cache_basis)
        elif s.suppress_duplicates > 0:
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
            parts_state=Path(s.parts_dir) if s.parts_dir else run.state_dir,
            inplace=s.inplace,
            batch_commit=True,
            commit_thread=True,
            # one syncfs per barrier, shared by the instances (sync_barrier filesystem)
            group_sync=group_sync_for(s, run.state_dir),
            interrupt=run.stop,
            limiter=run.limiter,
            bandwidth=run.bandwidth,
        )
        downloader.recover_leftovers()

        def housekeeping() -> None:
            if nodupe is not None:
                nodupe.expire()
            downloader.housekeeping(run.report)

        flow = Flow(
            downloader.select,
            downloader.work,
            inline=downloader.work_inline,
            before_settle=downloader.sync,
            commit_batch=downloader.commit_batch,
            commit_async=True,  # the barrier beside the flow thread (see Downloader)
            after_settle=lambda items: downloader.after_settle(items, run.report),
            housekeeping=housekeeping,
            abort=downloader.abort,
            close=[downloader.close, journal.close],
        )
        if nodupe is not None:
            flow.close.append(nodupe.close)
        return flow
