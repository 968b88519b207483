"""FTP and FTPS end to end: sr_post announces ftp:// URLs and sr_subscribe downloads them
(whole files and blocks); sr_sender pushes files to an FTP/FTPS server and announces them.
Real RabbitMQ and pyftpdlib servers on loopback; ftps trusts the servers' throwaway CA through
``SSL_CERT_FILE`` (the system store path OpenSSL reads), so certificates are really checked."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from sarra.broker.base import Delivery, QueueSpec
from sarra.broker.session import BrokerSession
from sarra.codec import v02
from sarra.notice import Notice
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
from tests.integration.test_sender import running_sender
from tests.servers.ftpd import Ftpd

pytestmark = pytest.mark.servers


@pytest.fixture(params=["ftp", "ftps"])
def server(
    request: pytest.FixtureRequest, site: Site, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Ftpd]:
    made: Ftpd = request.getfixturevalue("ftpsd" if request.param == "ftps" else "ftpd")
    if made.ca_file is not None:
        monkeypatch.setenv("SSL_CERT_FILE", str(made.ca_file))
    with open(site.config_dir / "credentials.conf", "a") as f:
        f.write(f"{made.credentials_line}\n")
    yield made


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and ("~sr" in p.name or p.suffix == ".tmp")]


def test_announced_ftp_urls_are_downloaded_verified_and_reported(
    site: Site, server: Ftpd, tmp_path: Path
) -> None:
    tag = unique("ftpflow")
    src = server.root / tag
    make_files(src, AWKWARD, size=5000)
    dest = tmp_path / "dest"
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, site.mirror_subscription(tag, dest)):
            # sr2's form: the base URL names the server, paths are absolute on it
            assert post(site, server.url, server.root, [src]) == 0
            wait_for(lambda: len(tap.about("")) >= len(AWKWARD), what="a report per file")
    finally:
        tap.stop()
    assert md5_tree(dest) == md5_tree(src)
    ours = [r for r in tap.reports if r.notice.path.startswith(tag)]
    assert sorted(r.notice.path for r in ours) == sorted(f"{tag}/{n}" for n in AWKWARD)
    assert {(r.code, r.message) for r in ours} == {(201, "Downloaded")}
    assert {r.notice.base_url for r in ours} == {server.url}
    assert _leftovers(dest) == []


def test_a_file_posted_in_blocks_is_fetched_by_ranges_and_reassembled(
    site: Site, server: Ftpd, tmp_path: Path
) -> None:
    tag = unique("ftpblk")
    (src,) = make_files(server.root / tag, ["big.bin"], size=700_000)
    dest = tmp_path / "dest"
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, site.mirror_subscription(tag, dest)):
            assert post(site, server.url, server.root, [src], ("blocksize", "128K")) == 0
            wait_for(lambda: len(tap.about("big.bin")) >= 6, what="a report per block")
    finally:
        tap.stop()
    assert (dest / "big.bin").read_bytes() == src.read_bytes()
    assert {r.code for r in tap.about("big.bin")} == {201}
    assert _leftovers(dest) == []


def test_sr_sender_pushes_files_to_the_ftp_server_and_announces_them(
    site: Site, server: Ftpd, tmp_path: Path
) -> None:
    tag = unique("ftpsend")
    exchange, announced_on = f"x_send_{tag}", f"x_sent_{tag}"
    local = tmp_path / "local"
    remote = server.root / tag
    (site.config_dir / "sender").mkdir(parents=True, exist_ok=True)
    (site.config_dir / "sender" / f"snd_{tag}.conf").write_text(
        f"broker {site.broker}\nexchange {exchange}\ndestination {server.url}/\n"
        f"base_dir {local}\ndirectory /{tag}\nexpire 10m\n"
        f"post_broker {site.broker}\npost_exchange {announced_on}\naccept .*\n"
    )
    watcher = BrokerSession(site.broker_url(), name="announcements")
    watcher.connect()
    watcher.declare_exchange(announced_on)
    queue = QueueSpec(f"q_guest.ann.{tag}", ((announced_on, "#"),), durable=False)
    watcher.declare_queue(queue)
    names = [f"{tag}/{n}" for n in AWKWARD]
    make_files(local, names, size=70_000)
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_sender(site, f"snd_{tag}"):
            assert (
                post(site, "http://localhost", local, [local / tag], ("post_exchange", exchange))
                == 0
            )
            wait_for(
                lambda: (
                    [r.code for r in tap.reports if tag in r.notice.path].count(201) == len(names)
                ),
                60,
                "a 201 report per file",
            )
    finally:
        tap.stop()
    assert md5_tree(remote) == md5_tree(local)
    assert _leftovers(remote) == []
    got: list[Delivery] = []
    watcher.consume(queue.name, 100, got.append)
    wait_for(lambda: watcher.poll(0.1) >= 0 and len(got) == len(names), 30, "announcements")
    notices = [
        v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        for m in (d.message for d in got)
    ]
    urls = sorted(unquote(n.url) for n in notices if isinstance(n, Notice))
    assert urls == sorted(f"{server.url}/{tag}/{n}" for n in names)
    watcher.delete_queue(queue.name)
    watcher.close()
    assert not os.path.exists(server.root.parent / tag)  # nothing outside the served root


def test_a_sender_writes_under_the_path_of_its_ftp_destination_and_never_outside_it(
    site: Site, server: Ftpd, tmp_path: Path
) -> None:
    tag = unique("ftproot")
    exchange = f"x_send_{tag}"
    local = tmp_path / "local"
    (server.root / tag).mkdir()
    (site.config_dir / "sender").mkdir(parents=True, exist_ok=True)
    (site.config_dir / "sender" / f"snd_{tag}.conf").write_text(
        f"broker {site.broker}\nexchange {exchange}\ndestination {server.url}/{tag}\n"
        f"base_dir {local}\ndirectory in\nexpire 10m\naccept .*\n"
    )
    names = [f"{tag}/one.txt", f"{tag}/sub/two.bin"]
    make_files(local, names, size=10_000)
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_sender(site, f"snd_{tag}"):
            assert (
                post(site, "http://localhost", local, [local / tag], ("post_exchange", exchange))
                == 0
            )
            wait_for(
                lambda: [r.code for r in tap.reports if tag in r.notice.path].count(201) == 2,
                60,
                "a 201 report per file",
            )
    finally:
        tap.stop()
    assert md5_tree(server.root / tag / "in") == md5_tree(local)
    assert not (server.root / "in").exists()  # not the login directory


def test_delete_on_removes_ftp_sources_once_their_copies_are_in_place(
    site: Site, server: Ftpd, tmp_path: Path
) -> None:
    tag = unique("ftpdel")
    src = server.root / tag
    files = make_files(src, ["a.txt", "sub/b.txt"], size=5000)
    before = md5_tree(src)
    dest = tmp_path / "dest"
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        "expire 10m\ndelete on\naccept .*\n",
    )
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            assert post(site, server.url, server.root, [src]) == 0
            wait_for(lambda: len(tap.about(".txt")) >= 2, what="a report per file")
            wait_for(lambda: not any(f.exists() for f in files), what="the sources deleted")
    finally:
        tap.stop()
    assert md5_tree(dest) == before
    assert sorted(r.code for r in tap.about(".txt")) == [201, 201]


@pytest.mark.parametrize("rigour", ["normal", "lax"])
def test_a_sender_checks_the_ftps_certificate_unless_tls_rigour_is_lax(
    site: Site, ftpsd: Ftpd, tmp_path: Path, rigour: str
) -> None:
    # no SSL_CERT_FILE here: the server's CA is not trusted
    with open(site.config_dir / "credentials.conf", "a") as f:
        f.write(f"{ftpsd.credentials_line}\n")
    tag = unique("ftpstls")
    local = tmp_path / "local"
    (site.config_dir / "sender").mkdir(parents=True, exist_ok=True)
    (site.config_dir / "sender" / f"snd_{tag}.conf").write_text(
        f"broker {site.broker}\nexchange x_send_{tag}\ndestination {ftpsd.url}/\n"
        f"base_dir {local}\ndirectory /{tag}\nexpire 10m\ntls_rigour {rigour}\n"
        "attempts 1\naccept .*\n"
    )
    make_files(local, [f"{tag}/f.txt"], size=1000)
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_sender(site, f"snd_{tag}"):
            assert (
                post(site, "http://x", local, [local / tag], ("post_exchange", f"x_send_{tag}"))
                == 0
            )
            wait_for(lambda: len(tap.about("f.txt")) >= 1, 60, "a report")
    finally:
        tap.stop()
    (report,) = tap.about("f.txt")
    if rigour == "lax":
        assert report.code == 201
        assert (ftpsd.root / tag / tag / "f.txt").read_bytes() == (
            local / tag / "f.txt"
        ).read_bytes()
    else:
        assert report.code == 499 and "certificate" in report.message
        assert not (ftpsd.root / tag).exists()
