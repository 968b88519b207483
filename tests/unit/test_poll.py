"""sr_poll's parts without servers: index pages, the seen-state file, the lock, the
configuration forms and one pass of the poller over a listing double (the real servers are in
tests/integration/test_poll.py)."""

from __future__ import annotations

import calendar
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sarra.components.poll import resolved
from sarra.config.settings import load_settings
from sarra.errors import ConfigError
from sarra.flow.poll import Poller, PollLock, SeenState, poll_targets, public_url
from sarra.flow.posting import PostSettings
from sarra.notice import Notice
from sarra.transfer.base import RemoteEntry
from sarra.transfer.htmlindex import parse_index

NGINX_PAGE = """<html>
<head><title>Index of /listing/x/</title></head>
<body>
<h1>Index of /listing/x/</h1><hr><pre><a href="../">../</a>
<a href="sub/">sub/</a>                          06-Dec-2026 22:41       -
<a href="hash%23mark.txt">hash#mark.txt</a>      06-Dec-2026 22:41    3008
<a href="r%C3%A9sum%C3%A9.dat">résumé.dat</a>    06-Dec-2026 22:42    3008
<a href="with%20space.txt">with space.txt</a>    06-Dec-2026 20:43    3008
</pre><hr></body>
</html>
"""

APACHE_PAGE = """<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">
<html><head><title>Index of /pub</title></head><body>
<h1>Index of /pub</h1>
<table>
<tr><th valign="top"><img src="/icons/blank.gif" alt="[ICO]"></th>
<th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th>
<th><a href="?C=S;O=A">Size</a></th></tr>
<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]"></td>
<td><a href="/">Parent Directory</a></td><td>&nbsp;</td><td align="right">  - </td></tr>
<tr><td valign="top"><img src="/icons/text.gif" alt="[TXT]"></td>
<td><a href="a.txt">a.txt</a></td><td align="right">2026-12-06 22:41  </td>
<td align="right"> 12 </td></tr>
<tr><td valign="top"><img src="/icons/unknown.gif" alt="[   ]"></td>
<td><a href="big.bin">big.bin</a></td><td align="right">2026-12-05 01:02  </td>
<td align="right">1.2K</td></tr>
<tr><td valign="top"><img src="/icons/folder.gif" alt="[DIR]"></td>
<td><a href="data/">data/</a></td><td align="right">2026-12-04 00:00  </td>
<td align="right">  - </td></tr>
</table></body></html>
"""

HOSTILE_PAGE = """<html><body><pre>
<a href="good.txt">good.txt</a> 06-Dec-2026 22:41 5
<a href="..%2F..%2Fetc%2Fpasswd">x</a> 06-Dec-2026 22:41 5
<a href="a%2Fb">x</a> 06-Dec-2026 22:41 5
<a href="%2e%2e">x</a> 06-Dec-2026 22:41 5
<a href="nul%00x">x</a> 06-Dec-2026 22:41 5
<a href="cr%0Dlf%0A">x</a> 06-Dec-2026 22:41 5
<a href="/etc/passwd">x</a> 06-Dec-2026 22:41 5
<a href="http://evil.example/x">x</a> 06-Dec-2026 22:41 5
<a href="sub/../../x">x</a> 06-Dec-2026 22:41 5
<a href="bad%FFutf8">x</a> 06-Dec-2026 22:41 5
</pre></body></html>
"""


def _utc(text: str, fmt: str = "%Y-%m-%d %H:%M") -> float:
    return float(calendar.timegm(time.strptime(text, fmt)))


def test_nginx_autoindex_page_gives_names_sizes_and_utc_minutes() -> None:
    entries = {e.name: e for e in parse_index(NGINX_PAGE, "test")}
    assert set(entries) == {"sub", "hash#mark.txt", "résumé.dat", "with space.txt"}
    assert entries["sub"].is_dir and entries["sub"].size is None
    assert entries["with space.txt"] == RemoteEntry(
        "with space.txt", 3008, _utc("2026-12-06 20:43"), is_dir=False
    )
    assert entries["résumé.dat"].mtime == _utc("2026-12-06 22:42")


def test_apache_index_page_skips_sort_links_and_rounded_sizes_are_unknown() -> None:
    entries = {e.name: e for e in parse_index(APACHE_PAGE, "test")}
    assert set(entries) == {"a.txt", "big.bin", "data"}
    assert entries["a.txt"].size == 12 and entries["a.txt"].mtime == _utc("2026-12-06 22:41")
    assert entries["big.bin"].size is None  # 1.2K is not a length
    assert entries["big.bin"].mtime == _utc("2026-12-05 01:02")
    assert entries["data"].is_dir


def test_hostile_links_are_not_entries(caplog: pytest.LogCaptureFixture) -> None:
    assert [e.name for e in parse_index(HOSTILE_PAGE, "test")] == ["good.txt"]
    assert "could escape" in caplog.text


def test_seen_state_survives_and_is_replaced_atomically(tmp_path: Path) -> None:
    state = SeenState(tmp_path / "poll_seen.json")
    assert state.load() == {}
    state.save({"d/a": (5, 1.5), "d/b": (None, None)})
    assert SeenState(tmp_path / "poll_seen.json").load() == {"d/a": (5, 1.5), "d/b": (None, None)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["poll_seen.json"]  # no temp left
    (tmp_path / "poll_seen.json").write_text("{not json")
    assert state.load() == {}  # unreadable: announce again rather than crash


def test_only_one_holder_of_the_poll_lock(tmp_path: Path) -> None:
    first, second = PollLock(tmp_path / "poll.lock"), PollLock(tmp_path / "poll.lock")
    assert first.acquire() and first.held
    assert not second.acquire() and not second.held
    first.release()
    assert second.acquire()
    second.release()


def _settings(tmp_path: Path, options: list[tuple[str, str]]) -> Any:
    env = {**os.environ, "SR_CONFIG_DIR": str(tmp_path / "c"), "SR_STATE_DIR": str(tmp_path / "s")}
    return load_settings("poll", None, options, env=env)


def test_sr2_and_sr3_forms(tmp_path: Path) -> None:
    sr2 = _settings(
        tmp_path,
        [
            ("destination", "sftp://u:secret@h/"),
            ("directory", "/a"),
            ("accept", r".*\.txt"),
            ("directory", "/b"),
            ("reject", r".*\.tmp"),
            ("accept", ".*"),
            ("file_time_limit", "2h"),
        ],
    )
    targets = poll_targets(sr2)
    assert [t.directory for t in targets] == ["/a", "/b"]
    assert [m.pattern for m in targets[1].masks] == [r".*\.tmp", ".*"]
    assert sr2.file_time_limit == 7200.0 and sr2.sum == "z,d" and sr2.sleep == 300.0
    assert resolved(sr2).post_base_url == "sftp://u@h"  # no password in the notices
    sr3 = _settings(
        tmp_path,
        [("pollUrl", "http://h:8080"), ("path", "/x"), ("fileAgeMax", "1d"), ("accept", ".*")],
    )
    assert sr3.destination == "http://h:8080" and sr3.file_time_limit == 86400.0
    assert [(t.directory, len(t.masks)) for t in poll_targets(sr3)] == [("/x", 1)]
    both = _settings(
        tmp_path,
        [("pollUrl", "http://h"), ("directory", "/local"), ("accept", ".*"), ("path", "/x"),
         ("path", "/y")],
    )  # fmt: skip
    assert [(t.directory, len(t.masks)) for t in poll_targets(both)] == [("/x", 1), ("/y", 1)]
    assert public_url("ftp://u:p@h:2121/") == "ftp://u@h:2121"


def test_unknown_sums_and_missing_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot announce sum 'a'"):
        resolved(_settings(tmp_path, [("destination", "ftp://h"), ("path", "/"), ("sum", "a")]))
    with pytest.raises(ConfigError, match="destination"):
        resolved(_settings(tmp_path, [("path", "/")]))
    with pytest.raises(ConfigError, match="nothing to poll"):
        resolved(_settings(tmp_path, [("destination", "ftp://h")]))


class _Listing:
    """A transport double: a listing per URL."""

    def __init__(self, pages: dict[str, list[RemoteEntry]]) -> None:
        self.pages = pages

    def listdir(self, url: str) -> list[RemoteEntry]:
        return self.pages[url]

    def close(self) -> None:
        pass


class _Publisher:
    def __init__(self) -> None:
        self.sent: list[Notice] = []
        self.queued: list[Notice] = []

    def add(self, notices: list[Notice], item: str | None = None) -> None:
        self.queued.extend(notices)

    def flush(self) -> None:
        self.sent.extend(self.queued)
        self.queued.clear()


def test_a_pass_announces_new_changed_and_recent_files_once(tmp_path: Path) -> None:
    cfg = resolved(
        _settings(
            tmp_path,
            [
                ("post_broker", "amqp://u@b/"),
                ("destination", "ftp://h"),
                ("directory", "/d"),
                ("reject", r".*\.tmp"),
                ("accept", ".*"),
                ("file_time_limit", "1h"),
                ("sum", "0"),
            ],
        )
    )
    now = time.time()
    pages = {
        "ftp://h/d": [
            RemoteEntry("new.txt", 3, now),
            RemoteEntry("old.txt", 3, now - 7200),  # older than file_time_limit
            RemoteEntry("x.tmp", 3, now),  # rejected
            RemoteEntry("s", None, now, is_dir=True),
        ],
        "ftp://h/d/s": [RemoteEntry("deep.bin", 9, now)],
    }
    publisher = _Publisher()
    settings = PostSettings.from_config(cfg, "u", "b")
    poller = Poller(
        cfg,
        settings,
        publisher,
        lambda: _Listing(pages),
        tmp_path,
        threading.Event(),  # type: ignore[arg-type]
    )
    transport = _Listing(pages)
    assert poller.poll_once(transport) == 2  # type: ignore[arg-type]
    assert sorted(n.path for n in publisher.sent) == ["d/new.txt", "d/s/deep.bin"]
    assert all(n.checksum.letter == "0" for n in publisher.sent)
    assert poller.poll_once(transport) == 0  # type: ignore[arg-type]
    pages["ftp://h/d"][0] = RemoteEntry("new.txt", 4, now)
    assert poller.poll_once(transport) == 1  # type: ignore[arg-type]
    seen = json.loads((tmp_path / "poll_seen.json").read_text())["seen"]
    assert seen["/d/new.txt"] == [4, now]
    # gone from the listing: forgotten, so its return is announced
    del pages["ftp://h/d"][0]
    assert poller.poll_once(transport) == 0  # type: ignore[arg-type]
    pages["ftp://h/d"].append(RemoteEntry("new.txt", 4, now))
    assert poller.poll_once(transport) == 1  # type: ignore[arg-type]


def test_a_directory_that_cannot_be_listed_does_not_stop_the_others(tmp_path: Path) -> None:
    from sarra.errors import NotFound

    cfg = resolved(
        _settings(
            tmp_path,
            [
                ("post_broker", "amqp://u@b/"),
                ("destination", "ftp://h"),
                ("directory", "/gone"),
                ("accept", ".*"),
                ("directory", "/here"),
                ("accept", ".*"),
            ],
        )
    )

    class Partial(_Listing):
        def listdir(self, url: str) -> list[RemoteEntry]:
            if url.endswith("/gone"):
                raise NotFound(f"{url}: 550 no such directory")
            return super().listdir(url)

    publisher = _Publisher()
    transport = Partial({"ftp://h/here": [RemoteEntry("f.txt", 1, time.time())]})
    poller = Poller(
        cfg,
        PostSettings.from_config(cfg, "u", "b"),
        publisher,  # type: ignore[arg-type]
        lambda: transport,  # type: ignore[arg-type,return-value]
        tmp_path,
        threading.Event(),
    )
    assert poller.poll_once(transport) == 1  # type: ignore[arg-type]
    assert [n.path for n in publisher.sent] == ["here/f.txt"]


def test_a_subdirectory_that_cannot_be_listed_is_skipped_and_what_it_held_not_forgotten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sarra.errors import NotFound

    cfg = resolved(
        _settings(
            tmp_path,
            [("post_broker", "amqp://u@b/"), ("destination", "ftp://h"), ("directory", "/d"),
             ("accept", ".*"), ("sum", "0")],
        )
    )  # fmt: skip
    now = time.time()
    pages = {
        "ftp://h/d": [
            RemoteEntry("a", None, now, is_dir=True),
            RemoteEntry("b", None, now, is_dir=True),
            RemoteEntry("c", None, now, is_dir=True),
        ],
        "ftp://h/d/a": [RemoteEntry("1.txt", 1, now)],
        "ftp://h/d/b": [RemoteEntry("2.txt", 1, now)],
        "ftp://h/d/c": [RemoteEntry("3.txt", 1, now)],
    }
    failing: set[str] = set()

    class Flaky(_Listing):
        def listdir(self, url: str) -> list[RemoteEntry]:
            if url in failing:
                raise NotFound(f"{url}: 550 cannot list")
            return super().listdir(url)

    publisher = _Publisher()
    transport = Flaky(pages)
    poller = Poller(
        cfg,
        PostSettings.from_config(cfg, "u", "b"),
        publisher,  # type: ignore[arg-type]
        lambda: transport,  # type: ignore[arg-type,return-value]
        tmp_path,
        threading.Event(),
    )
    assert poller.poll_once(transport) == 3  # type: ignore[arg-type]
    failing.add("ftp://h/d/b")
    pages["ftp://h/d/c"].append(RemoteEntry("4.txt", 1, now))
    with caplog.at_level(logging.ERROR):
        assert poller.poll_once(transport) == 1  # type: ignore[arg-type]
    assert "listing ftp://h/d/b failed" in caplog.text
    assert [n.path for n in publisher.sent][3:] == ["d/c/4.txt"]
    failing.clear()  # listed again: what it held was not forgotten, so not announced again
    assert poller.poll_once(transport) == 0  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("destination", "directory", "url"),
    [
        ("http://h:8080", "/d/q?mark", "http://h:8080/d/q%3Fmark"),
        ("http://h", "/d/h#ash", "http://h/d/h%23ash"),
        ("http://h", "/d/pct%41", "http://h/d/pct%2541"),
        ("ftp://h", "/d/q?m#h", "ftp://h/d/q%3Fm%23h"),
        ("sftp://h/~", "in/q?m", "sftp://h/~/in/q%3Fm"),
    ],
)
def test_listing_urls_percent_encode_each_directory_name(
    tmp_path: Path, destination: str, directory: str, url: str
) -> None:
    cfg = resolved(
        _settings(
            tmp_path,
            [("post_broker", "amqp://u@b/"), ("destination", destination),
             ("directory", directory), ("accept", ".*"), ("sum", "0")],
        )
    )  # fmt: skip
    publisher = _Publisher()
    transport = _Listing({url: [RemoteEntry("f.txt", 1, time.time())]})
    poller = Poller(
        cfg,
        PostSettings.from_config(cfg, "u", "b"),
        publisher,  # type: ignore[arg-type]
        lambda: transport,  # type: ignore[arg-type,return-value]
        tmp_path,
        threading.Event(),
    )
    assert poller.poll_once(transport) == 1  # type: ignore[arg-type]
    assert [n.path for n in publisher.sent] == [f"{directory.strip('/')}/f.txt"]


def test_a_rounded_size_is_asked_of_the_server_when_announced(tmp_path: Path) -> None:
    from sarra.transfer.base import RemoteStat

    cfg = resolved(
        _settings(
            tmp_path,
            [("post_broker", "amqp://u@b/"), ("destination", "http://h"), ("path", "/pub"),
             ("accept", ".*")],
        )
    )  # fmt: skip

    asked: list[str] = []

    class Apache(_Listing):
        def stat(self, url: str) -> RemoteStat:
            asked.append(url)
            return RemoteStat(1234, None)

    transport = Apache({"http://h/pub": [RemoteEntry("big file.bin", None, time.time())]})
    publisher = _Publisher()
    poller = Poller(
        cfg,
        PostSettings.from_config(cfg, "u", "b"),
        publisher,  # type: ignore[arg-type]
        lambda: transport,  # type: ignore[arg-type,return-value]
        tmp_path,
        threading.Event(),
    )
    assert poller.poll_once(transport) == 1  # type: ignore[arg-type]
    assert asked == ["http://h/pub/big%20file.bin"]
    assert publisher.sent[0].parts is not None
    assert publisher.sent[0].parts.wire() == "1,1234,1,0,0"


def test_download_options_are_flagged_as_ignored_by_poll(tmp_path: Path) -> None:
    cfg = _settings(
        tmp_path,
        [("destination", "ftp://h"), ("path", "/"), ("mirror", "on"), ("chmod", "644"),
         ("blocksize", "1M"), ("plugin", "x.y")],
    )  # fmt: skip
    ignored = [w for w in cfg.warnings if "is ignored by poll" in w]
    assert len(ignored) == 4, cfg.warnings
