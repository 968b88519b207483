"""Following growing files for sr_post and sr_watch (``growing on``).

A :class:`GrowthFollower` remembers, per file, the growth id and how many full blocks were
announced; :meth:`~GrowthFollower.poll` announces each newly complete block once, and
:meth:`~GrowthFollower.finish` the final blocks once the caller decides the file settled
(sr_watch: its coalescing and ``inflight`` age rules; sr_post: ``growing_idle`` seconds
without growth). The wire format is :mod:`sarra.parts.growing`'s.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sarra.codec.timestamps import now_timestamp
from sarra.errors import ConfigError, LocalError
from sarra.notice import Notice
from sarra.parts import growing

if TYPE_CHECKING:
    from sarra.config.settings import Settings
    from sarra.flow.posting import NoticeBuilder

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Growth:
    growth_id: str
    posted: int = 0  #: full blocks announced
    size: int = -1  #: size at the last poll
    grew: float = 0.0  #: monotonic time the size last changed


class GrowthFollower:
    """Block accounting of the files being followed by one poster.

    ``builder`` is a :class:`~sarra.flow.posting.NoticeBuilder`; ``block_size`` the fixed
    block size (``blocksize``, at least 2 bytes).
    """

    def __init__(self, builder: NoticeBuilder, block_size: int) -> None:
        if block_size <= 1:
            raise ValueError("growing files need a fixed blocksize (not 0 or 1)")
        self.builder = builder
        self.block_size = block_size
        self._files: dict[str, _Growth] = {}

    def __contains__(self, abs_path: str) -> bool:
        return abs_path in self._files

    def poll(self, abs_path: str, now: float | None = None) -> list[Notice]:
        """Provisional notices for the blocks of ``abs_path`` completed since the last poll
        (none while no new block is complete). Raises LocalError when it cannot be read or
        shrank (then it is forgotten: :meth:`finish` announces it whole)."""
        now = time.monotonic() if now is None else now
        try:
            size = os.stat(abs_path).st_size
        except OSError as e:
            raise LocalError(f"{abs_path}: cannot read: {e.strerror}") from e
        g = self._files.get(abs_path)
        if g is None:
            g = self._files[abs_path] = _Growth(now_timestamp(), grew=now)
        if size != g.size:
            g.size, g.grew = size, now
        try:
            specs = growing.provisional_specs(size, self.block_size, g.posted)
        except ValueError as e:
            raise LocalError(f"{abs_path}: {e}") from e
        if not specs:
            return []
        extra = [(growing.HEADER, growing.header_value(g.growth_id, False))]
        notices = self.builder.block_notices(abs_path, specs, extra)
        g.posted += len(specs)
        log.debug("%s: growing, blocks %d to %d announced", abs_path, specs[0].block_number,
                  specs[-1].block_number)  # fmt: skip
        return notices

    def quiet_for(self, abs_path: str, now: float | None = None) -> float:
        """Seconds since ``abs_path`` last grew (as seen by :meth:`poll`)."""
        now = time.monotonic() if now is None else now
        g = self._files.get(abs_path)
        return 0.0 if g is None else now - g.grew

    def finish(self, abs_path: str) -> list[Notice]:
        """The notices that complete ``abs_path``: its final blocks when some were announced
        while it grew, else its ordinary notices (nothing new on the wire). A file that
        shrank is announced whole, as a new version. Forgets the file."""
        g = self._files.pop(abs_path, None)
        if g is None or g.posted == 0:
            return self.builder.file_notices(abs_path)
        try:
            size = os.stat(abs_path).st_size
        except OSError as e:
            raise LocalError(f"{abs_path}: cannot read: {e.strerror}") from e
        try:
            specs = growing.final_specs(size, self.block_size, g.posted)
        except ValueError as e:
            log.warning("%s: %s; announcing it whole instead", abs_path, e)
            return self.builder.file_notices(abs_path)
        extra = [(growing.HEADER, growing.header_value(g.growth_id, True))]
        log.info("%s: stopped growing at %d bytes (%d blocks)", abs_path, size,
                 specs[-1].block_count)  # fmt: skip
        return self.builder.block_notices(abs_path, specs, extra)

    def forget(self, abs_path: str) -> None:
        """Stop following ``abs_path`` (removed or renamed away): nothing more is announced
        for this growth; receivers expire its blocks (``part_expiry``)."""
        self._files.pop(abs_path, None)


def follow(
    follower: GrowthFollower,
    abs_path: str,
    publish: Callable[[list[Notice], bool], None],
    idle: float,
    stop: threading.Event,
    poll_every: float = 0.5,
) -> bool:
    """sr_post's loop for one file: announce blocks as they complete until the file has not
    grown for ``idle`` seconds, then its final notices. ``publish(notices, final)`` hands
    them to the publisher. Returns False when ``stop`` came first: the file is then not
    finished (never announced complete at a size it may not keep)."""
    while True:
        notices = follower.poll(abs_path)
        if notices:
            publish(notices, False)
        if follower.quiet_for(abs_path) >= idle:
            break
        if stop.wait(min(poll_every, max(idle / 4, 0.05))):
            follower.forget(abs_path)
            return False
    publish(follower.finish(abs_path), True)
    return True


def growth_follower(cfg: Settings, builder: NoticeBuilder) -> GrowthFollower | None:
    """The follower of a poster configuration with ``growing on`` (None when off).

    Raises ConfigError when ``blocksize`` is not a fixed size: blocks are announced as they
    complete, before the final size (which ``blocksize 0`` would need) is known.
    """
    if not cfg.growing:
        return None
    if cfg.blocksize <= 1:
        raise ConfigError(
            f"growing on needs a fixed blocksize (at least 2 bytes), not {cfg.blocksize}",
            option="blocksize",
        )
    return GrowthFollower(builder, cfg.blocksize)
