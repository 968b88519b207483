"""``delete`` (remove the source) and ``discard`` (remove the local copy) end to end:
sr_post -> RabbitMQ -> sr_subscribe fetching from sshd (sftp, can delete) or nginx (cannot)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from tests.integration.flowkit import (
    ReportTap,
    Site,
    make_files,
    md5_tree,
    post,
    running_subscriber,
    unique,
    wait_for,
)
from tests.servers.sshd import Sshd

BLOCK = 64 * 1024


@pytest.fixture
def tap(site: Site):  # type: ignore[no-untyped-def]
    t = ReportTap(site.broker_url(), "xs_guest").start()
    yield t
    t.stop()


def _subscription(site: Site, tag: str, dest: Path, extra: str) -> str:
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        f"expire 10m\n{extra}accept .*\n",
    )
    return name


def _sftp_base(site: Site, sshd: Sshd) -> str:
    """The sftp URL of sshd's root directory, with the subscriber's key for it."""
    origin = f"sftp://{sshd.user}@127.0.0.1:{sshd.port}/"
    with open(site.config_dir / "credentials.conf", "a") as f:
        f.write(f"{origin} ssh_keyfile={sshd.key_path}\n")
    return origin + str(sshd.root_dir).lstrip("/")


def _plugin(tmp_path: Path, watched: Path) -> tuple[Path, Path]:
    """An on_file plugin logging, per call: the md5 of the local file, and whether the file
    ``watched`` (a source) still existed then."""
    log = tmp_path / "on_file.log"
    plugin = tmp_path / "record_on_file.py"
    plugin.write_text(
        "import hashlib, os\n"
        f"LOG, WATCHED = {str(log)!r}, {str(watched)!r}\n"
        "def on_file(work):\n"
        "    with open(work.local_path, 'rb') as f:\n"
        "        md5 = hashlib.md5(f.read()).hexdigest()\n"
        "    with open(LOG, 'a') as f:\n"
        "        f.write(f'{md5} {os.path.exists(WATCHED)}\\n')\n"
    )
    return plugin, log


def _content(size: int) -> bytes:
    out = bytearray()
    block = b"seed"
    while len(out) < size:
        block = hashlib.sha512(block).digest()
        out += block
    return bytes(out[:size])


def test_delete_removes_sftp_sources_once_their_copies_are_in_place(  # type: ignore[no-untyped-def]
    site, sshd, tap, tmp_path
):
    tag = unique("del")
    src = sshd.root_dir / tag
    files = make_files(src, ["a.txt", "sub/b.txt"], size=5000)
    before = md5_tree(src)
    dest = tmp_path / "dest"
    base = _sftp_base(site, sshd)
    with running_subscriber(site, _subscription(site, tag, dest, "delete on\n")):
        assert post(site, base, sshd.root_dir, files) == 0
        wait_for(lambda: len(tap.about(".txt")) >= 2, what="a report per file")
        wait_for(lambda: not any(f.exists() for f in files), what="the sources deleted")
    assert md5_tree(dest) == before  # verified copies, under their final names
    assert sorted(r.code for r in tap.about(".txt")) == [201, 201]


def test_delete_keeps_http_sources_warns_once_and_reports_each_and_discard_removes_copies(  # type: ignore[no-untyped-def]
    site, nginx, tap, tmp_path, caplog
):
    tag = unique("keep")
    src = nginx.root / tag
    files = make_files(src, ["a.txt", "b.txt", "c.txt"])
    dest = tmp_path / "dest"
    name = _subscription(site, tag, dest, "delete on\ndiscard on\n")
    with (
        caplog.at_level(logging.INFO, logger="sarra.flow.download"),
        running_subscriber(site, name),
    ):
        assert post(site, nginx.base_url, nginx.root, [src]) == 0
        wait_for(lambda: len(tap.about(".txt")) >= 6, what="201 and 501 per file")
        wait_for(lambda: dest.exists() and not any(dest.rglob("*.txt")), what="copies discarded")
    codes = sorted(r.code for r in tap.about(".txt"))
    assert codes == [201, 201, 201, 501, 501, 501]
    assert all(
        r.message == "source not deleted: the transport cannot delete"
        for r in tap.about(".txt")
        if r.code == 501
    )
    assert all(f.exists() for f in files)  # nginx cannot delete: the sources stay
    warned = [r for r in caplog.records if "transport cannot delete" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    discarded = [r for r in caplog.records if "discarded (discard on)" in r.getMessage()]
    assert len(discarded) == 3


def test_discard_removes_each_file_after_on_file_saw_it(site, nginx, tap, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("disc")
    src = nginx.root / tag
    files = make_files(src, ["a.txt", "b.txt"])
    dest = tmp_path / "dest"
    plugin, log = _plugin(tmp_path, src / "a.txt")
    name = _subscription(site, tag, dest, f"discard on\non_file {plugin}\n")
    with running_subscriber(site, name):
        assert post(site, nginx.base_url, nginx.root, [src]) == 0
        wait_for(lambda: len(tap.about(".txt")) >= 2, what="a report per file")
        wait_for(lambda: dest.exists() and not any(dest.rglob("*.txt")), what="copies discarded")
    sums = sorted(line.split()[0] for line in log.read_text().splitlines())
    assert sums == sorted(hashlib.md5(f.read_bytes()).hexdigest() for f in files)
    assert {r.code for r in tap.about(".txt")} == {201}
    assert all(f.exists() for f in files)  # discard alone never touches the source


def test_a_file_in_parts_is_deleted_at_the_source_and_discarded_only_once_complete(  # type: ignore[no-untyped-def]
    site, sshd, tap, tmp_path
):
    tag = unique("pdel")
    data = _content(5 * BLOCK + 777)
    src = sshd.root_dir / tag / "big.bin"
    src.parent.mkdir(parents=True)
    src.write_bytes(data)
    dest = tmp_path / "dest"
    plugin, log = _plugin(tmp_path, src)
    base = _sftp_base(site, sshd)
    name = _subscription(site, tag, dest, f"delete on\ndiscard on\non_file {plugin}\n")
    with running_subscriber(site, name):
        assert post(site, base, sshd.root_dir, [src], ("blocksize", str(BLOCK))) == 0
        wait_for(lambda: not src.exists(), what="the source deleted")
        wait_for(lambda: not (dest / "big.bin").exists(), what="the copy discarded")
    # on_file saw the whole file once, while the source was still there
    assert log.read_text().splitlines() == [f"{hashlib.md5(data).hexdigest()} True"]
    reports = tap.about("big.bin")
    assert len(reports) == 6 and {r.code for r in reports} == {201}
    assert [p for p in dest.rglob("*") if p.is_file()] == []
