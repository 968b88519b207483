"""sr_poll's plugin hooks against real listings: ``on_line`` rewrites or rejects entries of
nginx index pages, SFTP (the suite's sshd) and FTP (pyftpdlib) listings; ``on_html_page``
reads an index page of a format sarra does not know; ``do_poll`` and ``on_html_page`` on a
non-http destination are refused. Notices are read back from a real RabbitMQ."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import pytest

from sarra.errors import ConfigError
from sarra.transfer.htmlindex import parse_index
from tests.integration import test_poll
from tests.integration.flowkit import Site, make_files, site_env, unique, wait_for
from tests.integration.test_poll import (
    NoticeTap,
    Source,
    passes,
    rel,
    running_poll,
    write_poll,
)

# the polled servers and the site, as test_poll makes them
site = test_poll.site
source = test_poll.source
http_source = test_poll.http_source

pytestmark = pytest.mark.servers

ON_LINE = """
import dataclasses

def on_line(entry, directory):
    if entry.name.endswith(".tmp") or (entry.is_dir and entry.name == "private"):
        return False
    if entry.name.endswith(".stable"):
        # announced again only when its size changes
        return dataclasses.replace(entry, mtime=None)
    if entry.name == "renamed.txt":
        return dataclasses.replace(entry, name="other.txt")
    return None
"""


def test_on_line_rejects_and_rewrites_entries_of_every_listing(
    site: Site, source: Source, tmp_path: Path
) -> None:
    make_files(source.local, ["good.txt", "skip.tmp", "keep.stable", "renamed.txt"], size=100)
    make_files(source.local, ["private/secret.txt", "public/open.txt"], size=100)
    plugin = tmp_path / "lines.py"
    plugin.write_text(ON_LINE)
    name = unique("p")
    write_poll(site, name, source, f"on_line {plugin}\n")
    tap = NoticeTap(site.broker_url(), "xs_guest").start()
    try:
        with running_poll(site, name):
            expected = sorted(
                rel(source, n) for n in ["good.txt", "keep.stable", "public/open.txt"]
            )
            wait_for(lambda: len(tap.notices) >= len(expected), what="the kept entries")
            passes(site, name)
            assert tap.paths() == expected
            # a time change: good.txt is announced again, keep.stable (mtime dropped) is not;
            # a size change of keep.stable is
            old = time.time() - 7200
            for n in ("good.txt", "keep.stable"):
                os.utime(source.local / n, (old, old))
            wait_for(lambda: len(tap.notices) >= len(expected) + 1, what="good.txt again")
            passes(site, name)
            assert sorted(n.path for n in tap.notices[len(expected) :]) == [rel(source, "good.txt")]
            with open(source.local / "keep.stable", "ab") as f:
                f.write(b"more")
            wait_for(lambda: len(tap.notices) >= len(expected) + 2, what="keep.stable again")
            passes(site, name)
        assert tap.notices[-1].path == rel(source, "keep.stable")
        assert len(tap.notices) == len(expected) + 2
    finally:
        tap.stop()


PAGE = """<html><body><h1>files</h1><table>
<tr class="f"><td>alpha.txt</td><td>{a}</td><td>{t}</td></tr>
<tr class="f"><td>beta one.bin</td><td>{b}</td><td>{t}</td></tr>
<tr class="f"><td>..</td><td>1</td><td>1700000000</td></tr>
<tr class="f"><td>../../etc/passwd</td><td>1</td><td>1700000000</td></tr>
</table></body></html>
"""

ON_HTML_PAGE = """
import re
from sarra.transfer.base import RemoteEntry

ROW = re.compile(r'<tr class="f"><td>([^<]*)</td><td>(\\d+)</td><td>(\\d+)</td></tr>')

def on_html_page(page, url):
    if "<h1>files</h1>" not in page:
        return None  # not ours: sarra's own reader
    return [RemoteEntry(name=n, size=int(s), mtime=float(t)) for n, s, t in ROW.findall(page)]
"""


def test_on_html_page_reads_a_page_format_sarra_does_not_know(
    site: Site, http_source: Source, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = http_source
    a, b = make_files(src.local, ["alpha.txt", "beta one.bin"], size=321)
    page = PAGE.format(a=a.stat().st_size, b=b.stat().st_size, t=int(time.time()) - 60)
    (src.local / "index.html").write_text(page)  # nginx serves it in place of autoindex
    assert parse_index(page, "x") == []  # sarra's own reader finds nothing there
    plugin = tmp_path / "page.py"
    plugin.write_text(ON_HTML_PAGE)
    name = unique("p")
    write_poll(site, name, src, f"on_html_page {plugin}\n")
    tap = NoticeTap(site.broker_url(), "xs_guest").start()
    caplog.set_level(logging.WARNING)
    try:
        with running_poll(site, name):
            wait_for(lambda: len(tap.notices) >= 2, what="the page's entries")
            passes(site, name)
    finally:
        tap.stop()
    assert tap.paths() == [rel(src, "alpha.txt"), rel(src, "beta one.bin")]
    sizes = {rel(src, f.name): f.stat().st_size for f in (a, b)}
    for n in tap.notices:
        # the size the page shows (the page's own, not a HEAD's)
        assert n.parts is not None and n.parts.wire() == f"1,{sizes[n.path]},1,0,0"
    assert any("../../etc/passwd" in r.getMessage() for r in caplog.records)


def test_on_html_page_on_an_sftp_destination_and_do_poll_are_refused(
    site: Site, tmp_path: Path
) -> None:
    plugin = tmp_path / "page.py"
    plugin.write_text(ON_HTML_PAGE)
    src = Source("sftp", "sftp://127.0.0.1:1/", tmp_path, "/x")
    for extra, words in (
        (f"on_html_page {plugin}\n", "on_html_page reads http(s) index pages"),
        (f"do_poll {plugin}\n", "is not replaceable"),
    ):
        name = unique("p")
        write_poll(site, name, src, extra)
        with pytest.raises(ConfigError, match=re.escape(words)), site_env(site):
            from sarra.components.poll import PollComponent

            PollComponent().declare(site.load("poll", name))


RAISING = """
import os

def on_line(entry, directory):
    if os.path.exists({marker!r}):
        raise RuntimeError("plugin bug")
"""


def test_an_on_line_plugin_that_raises_fails_the_pass_and_forgets_nothing(
    site: Site, http_source: Source, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = http_source
    make_files(src.local, ["first.txt"])
    marker = tmp_path / "broken"
    plugin = tmp_path / "raising.py"
    plugin.write_text(RAISING.format(marker=str(marker)))
    name = unique("p")
    write_poll(site, name, src, f"on_line {plugin}\n")
    tap = NoticeTap(site.broker_url(), "xs_guest").start()
    caplog.set_level(logging.ERROR)
    try:
        with running_poll(site, name):
            wait_for(lambda: len(tap.notices) == 1, what="first.txt")
            marker.touch()
            make_files(src.local, ["second.txt"])
            wait_for(
                lambda: any("on_line plugin failed" in r.getMessage() for r in caplog.records),
                what="the plugin's failure logged",
            )
            time.sleep(1.0)  # several passes (sleep 0.3) while the plugin fails
            assert len(tap.notices) == 1
            marker.unlink()
            wait_for(lambda: len(tap.notices) >= 2, what="second.txt")
            passes(site, name)
    finally:
        tap.stop()
    # first.txt was not forgotten while the listing failed: announced once only
    assert tap.paths() == [rel(src, "first.txt"), rel(src, "second.txt")]
