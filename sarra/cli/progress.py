"""A live progress line for people: ``sr_subscribe foreground`` and ``sr_post`` on a terminal.

Contract: :class:`ProgressLine` reads a counters callable (:class:`Counts`) from its own
thread every ``every`` seconds and redraws one line on ``stream`` with ``tqdm`` (files,
bytes, rate, blocks, notices, failures); :meth:`ProgressLine.close` erases it and prints a
one-line summary. The counters are the flow's plain integers, read without a lock (a value
a moment old is fine for a display). :func:`progress_for` decides whether there is one at
all: only on a terminal, and not with ``-q`` (``quiet``). While the line shows, log records
of the root logger's console handlers are written above it (``logging_redirect_tqdm``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from sarra.components.base import Component
    from sarra.config.settings import Settings


@dataclass(frozen=True, slots=True)
class Counts:
    """What the line shows."""

    files: int = 0
    bytes: int = 0
    blocks: int = 0
    notices: int = 0
    failures: int = 0


def _size(n: float) -> str:
    from tqdm import tqdm

    return str(tqdm.format_sizeof(n, "B", 1024))


class ProgressLine:
    """One self-updating line on ``stream`` until :meth:`close`."""

    def __init__(
        self, read: Callable[[], Counts], stream: TextIO, label: str, every: float = 0.5
    ) -> None:
        self.read = read
        self.stream = stream
        self.label = label
        self.every = every
        self.started = time.monotonic()
        # tqdm (about 20 ms of imports) only once a line is shown: progress_for returns None
        # off a terminal, which is how sr_post and the daemons run
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._bar = tqdm(
            total=None,
            desc=label,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=stream,
            dynamic_ncols=True,
            leave=False,
            # tqdm puts ", " before the postfix: "sub/feed/000, 3 files, 5 notices | 12.0kB ..."
            bar_format="{desc}{postfix} | {n_fmt}B [{elapsed}, {rate_fmt}]",
        )
        self._shown = 0
        # log lines on the same terminal are written above the line, not through it
        self._redirect = contextlib.ExitStack()
        self._redirect.enter_context(logging_redirect_tqdm())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    @staticmethod
    def describe(c: Counts) -> str:
        parts = [f"{c.files} files"]
        if c.blocks:
            parts.append(f"{c.blocks} blocks")
        parts.append(f"{c.notices} notices")
        if c.failures:
            parts.append(f"{c.failures} failed")
        return ", ".join(parts)

    def update(self) -> Counts:
        """Redraw from the counters now; returns what was read."""
        c = self.read()
        if c.bytes > self._shown:
            self._bar.update(c.bytes - self._shown)
            self._shown = c.bytes
        self._bar.set_postfix_str(self.describe(c), refresh=False)
        self._bar.refresh()
        return c

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.update()

    def close(self) -> Counts:
        """Stop, erase the line and print the summary; returns the last counts."""
        self._stop.set()
        self._thread.join(5)
        c = self.read()
        self._bar.close()
        self._redirect.close()
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = _size(c.bytes / elapsed)
        print(
            f"{self.label}: {self.describe(c)}, {_size(c.bytes)} in {elapsed:.1f}s ({rate}/s)",
            file=self.stream,
            flush=True,
        )
        return c


def progress_for(
    component: Component, cfg: Settings, stream: TextIO, label: str
) -> ProgressLine | None:
    """A progress line for ``component`` on ``stream`` when it is a terminal and ``quiet``
    is off, for the components that count what they do (consumers, sr_post); else None."""
    if cfg.quiet or not stream.isatty():
        return None
    from sarra.components.post import PostComponent
    from sarra.components.runner import ConsumerComponent
    from sarra.flow.metrics import FlowMetrics

    if isinstance(component, ConsumerComponent):
        metrics = FlowMetrics()
        component.metrics = metrics

        def flow() -> Counts:
            return Counts(
                metrics.files, metrics.bytes, metrics.blocks, metrics.notices_in, metrics.failures
            )

        return ProgressLine(flow, stream, label)
    if isinstance(component, PostComponent):
        post = component

        def posted() -> Counts:
            pub = post.publisher
            if pub is None:
                return Counts()
            return Counts(files=pub.items_posted, bytes=pub.bytes_posted, notices=pub.published)

        return ProgressLine(posted, stream, label)
    return None
