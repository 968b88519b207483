"""The progress line (sarra/cli/progress.py): drawn only on a terminal and without -q, kept
up to date from the counters, ending with a summary; through a real pseudo-terminal in
tests/integration/test_progress.py."""

from __future__ import annotations

import io
import logging
import threading
import time

from sarra.cli.progress import Counts, ProgressLine, progress_for
from sarra.components.post import PostComponent
from sarra.components.subscribe import SubscribeComponent
from sarra.config.settings import Settings, load_settings
from sarra.flow.metrics import FlowMetrics


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _cfg(*options: tuple[str, str]) -> Settings:
    return load_settings("subscribe", None, list(options), env={})


def test_no_line_when_not_a_terminal_or_quiet() -> None:
    assert progress_for(SubscribeComponent(), _cfg(), io.StringIO(), "x") is None
    assert progress_for(SubscribeComponent(), _cfg(("quiet", "on")), Terminal(), "x") is None


def test_a_consumer_line_reads_the_counters_the_run_will_keep() -> None:
    component = SubscribeComponent()
    term = Terminal()
    line = progress_for(component, _cfg(), term, "subscribe/feed/000")
    assert line is not None
    try:
        metrics = component.metrics
        assert isinstance(metrics, FlowMetrics)  # the run takes these (runner.py)
        metrics.files, metrics.bytes, metrics.notices_in = 2, 4096, 3
        metrics.failures = 1
        assert line.update() == Counts(2, 4096, 0, 3, 1)
        assert "subscribe/feed/000, 2 files, 3 notices, 1 failed | 4.00kB [" in term.getvalue()
    finally:
        summary = line.close()
    assert summary.files == 2
    last = term.getvalue().rstrip("\n").rsplit("\r", 1)[-1]  # the line, erased, then this
    assert last.startswith("subscribe/feed/000: 2 files, 3 notices, 1 failed, 4.00kB in ")


def test_the_post_line_follows_the_publisher_of_the_run() -> None:
    component = PostComponent()
    term = Terminal()
    line = progress_for(component, load_settings("post", None, [], env={}), term, "post/-")
    assert line is not None
    assert line.update() == Counts()  # before the run made its publisher

    class Pub:
        items_posted, bytes_posted, published = 5, 5000, 6

    component.publisher = Pub()  # type: ignore[assignment]
    assert line.update() == Counts(files=5, bytes=5000, notices=6)
    line.close()
    assert "post/-: 5 files, 6 notices, 4.88kB in" in term.getvalue()


def test_the_line_redraws_by_itself_and_log_lines_go_above_it() -> None:
    term = Terminal()
    counts = {"files": 0}
    handler = logging.StreamHandler(term)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        line = ProgressLine(lambda: Counts(files=counts["files"]), term, "t", every=0.05)
        counts["files"] = 7
        deadline = time.monotonic() + 10
        while "7 files" not in term.getvalue():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        logging.getLogger("sarra.x").warning("a log line")
        line.close()
    finally:
        root.removeHandler(handler)
    text = term.getvalue()
    assert "a log line\n" in text
    assert not any(t.name == "progress" for t in threading.enumerate())
