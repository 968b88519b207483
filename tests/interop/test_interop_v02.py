"""v02 interoperability with the reference sr2 (metpx-sarracenia 2.24.08) run as a peer.

Every test runs against the suite's throwaway RabbitMQ and nginx; the peer runs as a
subprocess from its own venv (tests/interop/peers.py). What each test proves, and the sr2
limitations found on the way, are written down in docs/interop.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import amqp
import pytest

from sarra.codec import v02
from sarra.notice import Report
from tests.integration.flowkit import (
    AWKWARD,
    ReportTap,
    Site,
    make_files,
    md5_tree,
    post,
    running_subscriber,
    unique,
    wait_for,
)
from tests.interop.peers import (
    SR2_POSTED_LINE,
    Sr2Reporter,
    Sr2Subscriber,
    count_lines,
    mgmt_bindings,
    sr2_post,
    write_sr2_plugin,
)

pytestmark = [pytest.mark.servers, pytest.mark.interop, pytest.mark.timeout(120)]


# -- raw capture of what a peer publishes ---------------------------------------------------


@dataclass(frozen=True)
class Captured:
    """One delivery exactly as the broker handed it over."""

    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    content_type: str | None


class Capture:
    """A private auto-delete queue bound to ``exchange`` with ``key``, drained on demand."""

    def __init__(self, rabbitmq: Any, exchange: str, key: str) -> None:
        self.conn = amqp.Connection(
            f"{rabbitmq.host}:{rabbitmq.port}", userid="guest", password="guest"
        )
        self.conn.connect()
        self.channel = self.conn.channel()
        # declared as the peers declare it, so their own declare does not clash
        self.channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        self.queue = f"q_guest.capture.{secrets.token_hex(4)}"
        self.channel.queue_declare(self.queue, durable=False, auto_delete=True)
        self.channel.queue_bind(self.queue, exchange, key)
        self.messages: list[Captured] = []

    def drain(self) -> list[Captured]:
        while (msg := self.channel.basic_get(self.queue, no_ack=True)) is not None:
            body = msg.body if isinstance(msg.body, bytes) else msg.body.encode("utf-8")
            self.messages.append(
                Captured(
                    exchange=msg.delivery_info["exchange"],
                    routing_key=msg.delivery_info["routing_key"],
                    body=bytes(body),
                    headers=dict(msg.properties.get("application_headers") or {}),
                    content_type=msg.properties.get("content_type"),
                )
            )
        return self.messages

    def close(self) -> None:
        self.conn.close()


# -- 1. sr2 sr_post -> our sr_subscribe ------------------------------------------------------


def test_files_posted_by_sr2_are_downloaded_verified_and_reported_by_our_subscriber(
    site: Site, rabbitmq: Any, nginx: Any, tmp_path: Path
) -> None:
    tag = unique("sr2p")
    src = nginx.root / tag
    make_files(src, AWKWARD, size=5000)
    (src / "deep" / "link.txt").symlink_to("../plain.txt")
    dest = tmp_path / "dest"
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        "expire 10m\naccept .*\n",
    )
    expected = sorted(f"{tag}/{n}" for n in [*AWKWARD, "deep/link.txt"])
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            proc = sr2_post(tmp_path / "sr2", rabbitmq.url(), nginx.base_url, nginx.root, [src])
            assert count_lines(proc.stdout + proc.stderr, SR2_POSTED_LINE) == len(expected)
            wait_for(
                lambda: (
                    len([r for r in tap.reports if r.notice.path.startswith(tag)]) >= len(expected)
                ),
                timeout=60,
                what="a report per posted path",
            )
    finally:
        tap.stop()
    ours = [r for r in tap.reports if r.notice.path.startswith(f"{tag}/")]
    assert sorted(r.notice.path for r in ours) == expected
    assert {r.code for r in ours} == {201}, [(r.notice.path, r.code, r.message) for r in ours]
    assert all(r.user == "guest" for r in ours)
    link = dest / "deep" / "link.txt"
    assert link.is_symlink()
    assert os.readlink(link) == "../plain.txt"
    assert link.resolve() == (dest / "plain.txt").resolve()
    # md5_tree follows the link on both sides, so it also checks what the link points at
    assert md5_tree(dest) == md5_tree(src)
    assert [p for p in dest.rglob("*") if "~sr" in p.name or p.name.endswith(".tmp")] == []


# -- 2. our sr_post -> sr2 sr_subscribe; 3. sr2's reports -> our codec ------------------------

#: names sr2 fetches over HTTP
HTTP_OK = ["plain.txt", "deep/er/nested.bin"]
#: names sr2 cannot fetch over HTTP (spec Q9; non-ASCII found here): it puts the decoded
#: name into the URL unencoded, so `#` starts a fragment (404), and a space or a non-ASCII
#: character makes urllib refuse the request
HTTP_BROKEN = ["with space.txt", "hash#mark.txt", "résumé.dat"]
#: a relative symlink, announced as an L notice with a link header
LINK, LINK_TARGET = "deep/link.txt", "../plain.txt"


@dataclass(frozen=True)
class Sr2Run:
    """One sr2 sr_subscribe run fed by our sr_post, shared by the tests that inspect it."""

    tag: str
    http_src: Path
    file_src: Path
    dest: Path
    log: str
    downloaded: int
    reports: list[Captured]


@pytest.fixture(scope="module")
def sr2_download_run(
    rabbitmq: Any, nginx: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sr2Run]:
    """Our sr_post announces HTTP files and ``file:`` files; sr2 downloads and reports them.

    The HTTP files are served by nginx; every name of AWKWARD is also posted with the
    ``file:`` base URL (relPath = the absolute path), which sr2 reads without a URL.
    """
    tmp = tmp_path_factory.mktemp("sr2sub")
    site = Site(tmp / "site", rabbitmq.port).setup()
    tag = unique("ourp")
    http_src = nginx.root / tag
    make_files(http_src, HTTP_OK + HTTP_BROKEN)
    (http_src / LINK).symlink_to(LINK_TARGET)
    file_src = tmp / "files" / tag
    make_files(file_src, AWKWARD)
    dest = tmp / "dest"
    # sr2 escapes every '#' of a subtopic but a trailing '.#' (sr_config.py), so there is
    # no "anywhere" wildcard: one subtopic for the HTTP tree, one for the file: tree
    file_topic = ".".join(file_src.parts[1:])
    cap = Capture(rabbitmq, "xs_guest", "v02.report.#")
    probe = mgmt_bindings(rabbitmq.mgmt_get)
    sub = Sr2Subscriber(
        tmp / "sr2",
        rabbitmq.url(),
        "xs_guest",
        dest,
        subtopic=f"{tag}.#",
        extra=[f"subtopic {file_topic}.#"],
        bindings=probe,
    )
    # one per file, one for the link, and 3 per broken name (one per attempt)
    want_reports = len(HTTP_OK) + 1 + len(AWKWARD) + 3 * len(HTTP_BROKEN)
    try:
        with sub:
            wait_for(
                lambda: ("xs_guest", f"v02.post.{file_topic}.#") in set(probe(sub.queue)),
                what="the second binding",
            )
            assert post(site, nginx.base_url, nginx.root, [http_src]) == 0
            assert post(site, "file:", Path("/"), [file_src]) == 0
            sub.wait_downloaded(len(HTTP_OK) + len(AWKWARD), timeout=60)
            deadline = time.monotonic() + 30
            while len(cap.drain()) < want_reports and time.monotonic() < deadline:
                time.sleep(0.2)
        yield Sr2Run(
            tag=tag,
            http_src=http_src,
            file_src=file_src,
            dest=dest,
            log=sub.log_text(),
            downloaded=sub.downloaded(),
            reports=[m for m in cap.drain() if tag in m.routing_key],
        )
    finally:
        cap.close()


def test_files_posted_by_us_are_downloaded_by_sr2_over_http_and_from_file_urls(
    sr2_download_run: Sr2Run,
) -> None:
    run = sr2_download_run
    assert run.downloaded == len(HTTP_OK) + len(AWKWARD), run.log[-4000:]
    http_dest = run.dest / run.tag
    # md5_tree follows the link on both sides
    fetched = [*HTTP_OK, LINK]
    assert md5_tree(http_dest) == {k: v for k, v in md5_tree(run.http_src).items() if k in fetched}
    assert (http_dest / LINK).is_symlink()
    assert os.readlink(http_dest / LINK) == LINK_TARGET
    # sr2 mirrors the absolute relPath of a file: notice under its directory
    assert md5_tree(run.dest / run.file_src.relative_to("/")) == md5_tree(run.file_src)
    assert "Traceback" not in run.log


def test_sr2_cannot_fetch_names_with_space_hash_or_non_ascii_over_http(
    sr2_download_run: Sr2Run,
) -> None:
    """Pins the limitation documented in docs/interop.md: a change in sr2 shows up here."""
    run = sr2_download_run
    failed = [line for line in run.log.splitlines() if "appended to retry list file" in line]
    assert len(failed) == len(HTTP_BROKEN), run.log[-4000:]
    for name in HTTP_BROKEN:
        assert not (run.dest / run.tag / name).exists()
    # the 404 proves sr2 sent the name unencoded: '#' cut the URL short
    assert "Error code: 404" in run.log


def _decoded_reports(run: Sr2Run) -> list[Report]:
    out = []
    for m in run.reports:
        decoded = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        assert isinstance(decoded, Report), (m.routing_key, m.body)
        out.append(decoded)
    return out


def test_reports_published_by_sr2_decode_with_our_codec(sr2_download_run: Sr2Run) -> None:
    run = sr2_download_run
    assert run.reports, "sr2 published no report"
    reports = _decoded_reports(run)
    file_root = str(run.file_src.relative_to("/"))
    by_path: dict[str, set[int]] = {}
    for r in reports:
        by_path.setdefault(r.notice.path, set()).add(r.code)
        assert r.user == "guest"
        assert r.host
        assert r.elapsed >= 0
        assert r.notice.exchange == "xs_guest"
        assert r.notice.topic.startswith("v02.report.")
        assert r.notice.header("source") == "guest"
        # the sum we posted comes back in the report
        src = (
            run.http_src.parent / r.notice.path
            if r.notice.base_url.startswith("http")
            else Path("/") / r.notice.path
        )
        if r.notice.path.endswith(LINK):
            # sr2 may carry the previous message's parts on a link report (Q7): ignored
            assert r.notice.checksum.letter == "L"
            assert r.notice.header("link") == LINK_TARGET
            assert r.notice.checksum.value == hashlib.sha512(LINK_TARGET.encode()).hexdigest()
            assert r.message == "linked"
            continue
        assert r.notice.checksum.letter == "d"
        assert r.notice.checksum.value == _md5(src)
    expected = {f"{run.tag}/{n}": {201} for n in [*HTTP_OK, LINK]}
    expected |= {f"{run.tag}/{n}": {499} for n in HTTP_BROKEN}
    expected |= {f"{file_root}/{n}": {201} for n in AWKWARD}
    assert by_path == expected
    http_ok = [r for r in reports if r.code == 201 and r.notice.checksum.letter == "d"]
    assert {r.message for r in http_ok if r.notice.base_url != "file:"} == {"Downloaded"}
    # sr2 "downloads" a file: URL by hard-linking it (sr_file.py file_link)
    assert {r.message for r in http_ok if r.notice.base_url == "file:"} == {"Linked"}
    assert {r.message for r in reports if r.code == 499} == {"http download failed"}
    assert {r.notice.base_url for r in reports} == {_http_base(run), "file:"}


def _http_base(run: Sr2Run) -> str:
    for r in run.reports:
        first_line = r.body.decode("utf-8").split(" ")
        if first_line[1].startswith("http://"):
            return first_line[1]
    raise AssertionError("no HTTP report")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# -- 4. our reports -> sr2 sr_report ---------------------------------------------------------

#: An sr2 on_message plugin (sr2's plugin API: the file sets self.on_message) that logs the
#: fields sr2's own parser (sarra.sr_message) extracted from each report, as JSON.
REPORT_LOG_PLUGIN = """
import json


class InteropReportLog(object):
    def __init__(self, parent):
        pass

    def on_message(self, parent):
        msg = parent.msg
        parent.logger.info("interop-report %s" % json.dumps({
            "code": msg.report_code,
            "host": msg.report_host,
            "user": msg.report_user,
            "elapsed": msg.report_elapse,
            "relpath": msg.relpath,
            "baseurl": msg.baseurl,
            "topic": msg.topic,
            "message": msg.headers.get("message"),
            "sum": msg.headers.get("sum"),
        }))
        return True


interop_report_log = InteropReportLog(self)
self.on_message = interop_report_log.on_message
"""
REPORT_LINE = "interop-report "


def test_reports_published_by_our_subscriber_are_parsed_by_sr2_sr_report(
    site: Site, rabbitmq: Any, nginx: Any, tmp_path: Path
) -> None:
    tag = unique("ourr")
    src = nginx.root / tag
    make_files(src, AWKWARD, size=3000)
    dest = tmp_path / "dest"
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        "expire 10m\naccept .*\n",
    )
    home = tmp_path / "sr2"
    plugin = write_sr2_plugin(home, "interop_report_log", REPORT_LOG_PLUGIN)
    reporter = Sr2Reporter(
        home,
        rabbitmq.url(),
        "xs_guest",
        tmp_path / "sr2_dest",
        subtopic=f"{tag}.#",
        extra=[f"on_message {plugin}"],
        bindings=mgmt_bindings(rabbitmq.mgmt_get),
    )
    tap = ReportTap(site.broker_url(), "xs_guest").start()

    def mine() -> list[Report]:
        return [r for r in tap.reports if r.notice.path.startswith(f"{tag}/")]

    try:
        with reporter, running_subscriber(site, name):
            assert post(site, nginx.base_url, nginx.root, [src]) == 0
            wait_for(lambda: len(mine()) >= len(AWKWARD), timeout=60, what="201s")
            # the same file again: unchanged, so a 304
            assert post(site, nginx.base_url, nginx.root, [src / "plain.txt"]) == 0
            wait_for(lambda: len(mine()) > len(AWKWARD), timeout=60, what="a 304")
            lines = reporter.wait_logged(REPORT_LINE, len(AWKWARD) + 1, timeout=60)
    finally:
        tap.stop()
    ours = sorted((r.notice.path, r.code) for r in mine())
    parsed = [json.loads(line.split(REPORT_LINE, 1)[1]) for line in lines]
    # sr2 decodes %20/%23 in relPath and keeps the leading '/'
    assert sorted((p["relpath"].lstrip("/"), p["code"]) for p in parsed) == ours
    assert ours == sorted([(f"{tag}/{n}", 201) for n in AWKWARD] + [(f"{tag}/plain.txt", 304)])
    for p in parsed:
        assert p["user"] == "guest"
        assert p["baseurl"] == nginx.base_url
        assert p["relpath"].startswith(f"/{tag}/")
        assert p["sum"].startswith("d,")
        assert p["elapsed"] >= 0
        assert p["topic"].startswith(f"v02.report.{tag}")
    assert {p["message"] for p in parsed if p["code"] == 201} == {"Downloaded"}
    assert {p["message"] for p in parsed if p["code"] == 304} == {"not modified"}
    assert "Traceback" not in reporter.log_text()
