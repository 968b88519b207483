"""sr2's ``sr_poll`` and ours poll the same FTP directory (the suite's pyftpdlib server) and
their notices, decoded from the broker, are compared field by field. (FTP, not SFTP: the sr2
peer's venv has no paramiko, which its sftp poll imports.)"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from sarra.notice import Notice
from tests.integration.flowkit import Site, make_files, unique, wait_for
from tests.integration.test_poll import NoticeTap, Source, running_poll, write_poll
from tests.interop.peers import peer_bin, peer_env, write_credentials
from tests.servers.ftpd import Ftpd

pytestmark = pytest.mark.servers

NAMES = ["plain.txt", "with space.txt", "hash#mark.txt", "résumé.dat", "-dash.bin"]


def _sr2_poll(home: Path, rabbitmq: Any, ftpd: Ftpd, directory: str, exchange: str) -> Path:
    """Write sr2's poll configuration (sr2's own form) and credentials; returns the log path."""
    cfg_dir = home / ".config" / "sarra"
    write_credentials(
        cfg_dir,
        [
            f"amqp://guest:guest@127.0.0.1:{rabbitmq.port}/",
            ftpd.credentials_line,
        ],
    )
    (cfg_dir / "poll").mkdir(parents=True, exist_ok=True)
    (cfg_dir / "poll" / "peerpoll.conf").write_text(
        f"post_broker amqp://guest@127.0.0.1:{rabbitmq.port}/\n"
        f"post_exchange {exchange}\n"
        f"destination {ftpd.url}\n"
        "sleep 1\non_line None\n"
        f"directory {directory}\n"
        "accept .*\n"
    )
    return home / "sr2poll.log"


def _fields(notice: Notice) -> tuple[str, str, str | None]:
    parts = notice.parts.wire() if notice.parts is not None else None
    return notice.path, notice.checksum.wire(), parts


def test_sr2_and_our_poll_announce_an_ftp_directory_the_same_way(
    site: Site, rabbitmq: Any, ftpd: Ftpd, tmp_path: Path
) -> None:
    tag = unique("ipoll")
    directory = ftpd.root / tag
    make_files(directory, NAMES, size=2000)
    sr2_exchange = f"xs_guest_{unique('sr2')}"
    home = tmp_path / "sr2home"
    home.mkdir()
    log_path = _sr2_poll(home, rabbitmq, ftpd, f"/{tag}", sr2_exchange)
    theirs = NoticeTap(site.broker_url(), sr2_exchange).start()
    ours = NoticeTap(site.broker_url(), "xs_guest").start()
    try:
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [str(peer_bin("sr_poll")), "foreground", "peerpoll"],
                env=peer_env(home),
                cwd=home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for(
                lambda: len(theirs.notices) >= len(NAMES) or proc.poll() is not None,
                timeout=30,
                what="sr2's notices",
            )
            time.sleep(3)  # a few more sr2 passes: nothing more is announced
        finally:
            proc.terminate()
            proc.wait(20)
        text = log_path.read_text(errors="replace")
        assert len(theirs.notices) == len(NAMES), text[-3000:]
        with open(site.config_dir / "credentials.conf", "a") as f:
            f.write(f"{ftpd.credentials_line}\n")
        (site.config_dir / "poll").mkdir(parents=True, exist_ok=True)
        src = Source("ftp", ftpd.url, directory, f"/{tag}")
        write_poll(site, "ipoll", src)
        with running_poll(site, "ipoll"):
            wait_for(lambda: len(ours.notices) >= len(NAMES), what="our notices")
            time.sleep(2)
    finally:
        theirs.stop()
        ours.stop()
    assert sorted(map(_fields, ours.notices)) == sorted(map(_fields, theirs.notices))
    for mine, peer in zip(
        sorted(ours.notices, key=lambda n: n.path),
        sorted(theirs.notices, key=lambda n: n.path),
        strict=True,
    ):
        assert mine.topic == peer.topic
        # sr2 takes its default baseUrl from the credentials line, trailing '/' included
        # (its URLs then hold '//'); ours is the destination, without it
        assert peer.base_url == f"{ftpd.url}/" and mine.base_url == ftpd.url
        # sr2's poll sends no mtime; ours sends the listed one (from MLSD)
        assert "mtime" not in peer.headers and "mtime" in mine.headers
        assert mine.headers.get("to_clusters") == peer.headers.get("to_clusters")
