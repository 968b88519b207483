"""Files of the config corpus (tests/configs) run end to end against the suite's servers.

Each test takes a corpus file as users wrote it, rewrites only what points at the outside
world (the broker, the directories, the URL posted) to the suite's loopback RabbitMQ, nginx
and a temporary directory, runs the component in-process and checks that the files land where
the configuration says, with the behaviour its other options ask for (issue 11 item 7).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sarra.broker import BrokerSession, Delivery, QueueSpec
from sarra.broker.admin import declare_and_bind
from sarra.codec import v02
from sarra.components.sender import SenderComponent
from sarra.components.watch import WatchComponent
from sarra.notice import Notice
from tests.integration.flowkit import (
    ReportTap,
    Site,
    make_files,
    md5_tree,
    post,
    running_subscriber,
    site_env,
    unique,
    wait_for,
)

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "configs"


def rewrite(corpus_file: str, **lines: str) -> str:
    """The corpus file with each ``option value`` line whose option is a key of ``lines``
    replaced by ``option <new value>``; every other line is kept as written."""
    out = []
    for raw in (CORPUS / corpus_file).read_text(encoding="utf-8").splitlines():
        word = raw.split(" ", 1)[0]
        out.append(f"{word} {lines[word]}" if word in lines and raw.strip() else raw)
    return "\n".join(out) + "\n"


def _subscription(site: Site, corpus_file: str, dest: Path, folder: Path) -> str:
    """Install a corpus subscription in ``folder`` (a component directory) under a new name,
    pointed at the test broker and ``dest``. ``base_url_private on`` lets it fetch from the
    loopback nginx, which subscribers refuse by default."""
    name = unique("corpus")
    text = rewrite(corpus_file, broker=site.broker, directory=str(dest))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.conf").write_text("base_url_private on\n" + text, encoding="utf-8")
    return name


def test_v2_dd_swob_mirrors_the_xml_observations_and_rejects_the_rest(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("swob")
    src = nginx.root / "observations" / "swob-ml" / tag
    make_files(src, ["CYUL/obs.xml", "CYYZ/obs.xml", "CYUL/obs.txt", "readme.txt"])
    dest = tmp_path / "data" / "swob"
    name = _subscription(site, "subscribe/v2_dd_swob.conf", dest, site.config_dir / "subscribe")
    tap = ReportTap(site.broker_url(), "xs_guest").start()  # reports: xs_<user>
    try:
        with running_subscriber(site, name):
            assert post(site, nginx.base_url, nginx.root, [src], ("post_exchange", "xpublic")) == 0
            wait_for(lambda: len(tap.about(".xml")) >= 2, what="a report per xml file")
            time.sleep(1.0)  # time enough for a wrongly accepted .txt to land as well
    finally:
        tap.stop()
    # mirror on: the remote tree under directory; accept .*\.xml$ and nothing else
    assert md5_tree(dest) == {
        f"observations/swob-ml/{tag}/CYUL/obs.xml": _md5(src / "CYUL" / "obs.xml"),
        f"observations/swob-ml/{tag}/CYYZ/obs.xml": _md5(src / "CYYZ" / "obs.xml"),
    }
    assert {r.code for r in tap.about(".xml")} == {201}
    assert tap.about(".txt") == []


def test_sr3_dd_swob_runs_from_the_sr3_tree_and_suppresses_duplicates_by_name(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path, monkeypatch
):
    """The sr3 file read from sr3's tree (SR_CONFIG_TREE=sr3, what --sr3 sets): credentials
    come from the sr3 tree too, state goes under sarra's state dir in sr3/, and
    ``nodupe_basis name`` drops the same data posted again under another directory."""
    xdg = tmp_path / "xdg"
    sr3 = xdg / "sr3"
    sr3.mkdir(parents=True)
    (sr3 / "credentials.conf").write_text(
        (site.config_dir / "credentials.conf").read_text(encoding="utf-8")
    )
    (sr3 / "credentials.conf").chmod(0o600)
    (site.config_dir / "credentials.conf").unlink()  # sarra's tree must not be the one read
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.setenv("SR_CONFIG_TREE", "sr3")
    tag = unique("sr3")
    src = nginx.root / "observations" / "swob-ml" / tag
    first, sentinel = make_files(src, ["CYUL/obs.xml", "sentinel.xml"])
    again = src / "CYYZ" / "obs.xml"  # the same data under the same name, elsewhere
    again.parent.mkdir()
    again.write_bytes(first.read_bytes())
    dest = tmp_path / "data" / "swob"
    name = _subscription(site, "subscribe/sr3_dd_swob.conf", dest, sr3 / "subscribe")
    extra = ("post_exchange", "xpublic")
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            assert post(site, nginx.base_url, nginx.root, [first], extra) == 0
            wait_for(lambda: len(tap.about("obs.xml")) >= 1, what="the first download")
            assert post(site, nginx.base_url, nginx.root, [again], extra) == 0
            assert post(site, nginx.base_url, nginx.root, [sentinel], extra) == 0
            wait_for(lambda: len(tap.about("sentinel.xml")) >= 1, what="the sentinel")
            time.sleep(0.5)
    finally:
        tap.stop()
    # the repost was a duplicate by name: no second outcome (not even 304) for obs.xml
    assert [(r.notice.path, r.code) for r in tap.about("obs.xml")] == [
        (f"observations/swob-ml/{tag}/CYUL/obs.xml", 201)
    ]
    # mirror off (sr3's default): flat in directory
    assert md5_tree(dest) == {"obs.xml": _md5(first), "sentinel.xml": _md5(sentinel)}
    assert (site.state_dir / "sr3" / "subscribe" / name).is_dir()
    assert not (site.state_dir / "subscribe" / name).exists()


def test_sr3_rate_limited_caps_the_download_at_byte_rate_max(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("rdps")
    src = nginx.root / "model_gem_regional" / tag
    (big,) = make_files(src, ["rdps.grib2"], size=1_500_000)
    size = big.stat().st_size
    dest = tmp_path / "data" / "rdps"
    name = _subscription(
        site, "subscribe/sr3_rate_limited.conf", dest, site.config_dir / "subscribe"
    )
    with running_subscriber(site, name):
        started = time.monotonic()
        assert post(site, nginx.base_url, nginx.root, [src], ("post_exchange", "xpublic")) == 0
        wait_for(lambda: (dest / "rdps.grib2").exists(), timeout=60, what="the capped download")
        elapsed = time.monotonic() - started
    assert (dest / "rdps.grib2").read_bytes() == big.read_bytes()
    cap = 500_000  # byteRateMax 500k, sr3's decimal units
    rate = size / elapsed
    assert abs(rate - cap) <= 0.15 * cap, f"measured {rate:,.0f} bytes/s, cap {cap:,} bytes/s"


class _Notices:
    """A queue bound to everything on ``exchange``, read on demand."""

    def __init__(self, site: Site, exchange: str) -> None:
        self.session = BrokerSession(site.broker_url(), name="corpus-watch-test")
        self.session.connect()
        self.session.declare_exchange(exchange)
        queue = f"q_guest.corpus.{secrets.token_hex(4)}"
        spec = QueueSpec(queue, ((exchange, "#"),), durable=False, auto_delete=True)
        declare_and_bind(self.session, spec)
        self.received: list[Notice] = []
        self.session.consume(queue, 100, self._on)

    def _on(self, d: Delivery) -> None:
        m = d.message
        notice = v02.decode(m.exchange, m.routing_key, m.body, m.headers)
        assert isinstance(notice, Notice)
        self.received.append(notice)
        self.session.ack(d)

    def until(self, pred: Callable[[list[Notice]], bool], what: str) -> None:
        deadline = time.monotonic() + 30
        while not pred(self.received):
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.session.poll(0.2)

    def paths(self) -> list[str]:
        return [n.path for n in self.received]


def test_v2_outgoing_watch_posts_created_files_with_sha512_and_skips_tmp_and_deletes(
    site, tmp_path
):  # type: ignore[no-untyped-def]
    root = tmp_path / "var" / "data"
    outgoing = root / "outgoing"
    outgoing.mkdir(parents=True)
    (outgoing / ".ready").write_text("ready\n")
    (site.config_dir / "watch").mkdir(parents=True, exist_ok=True)
    text = rewrite(
        "watch/v2_outgoing.conf",
        post_broker=site.broker,
        post_base_dir=str(root),
        path=str(outgoing),
    )
    name = unique("corpus")
    (site.config_dir / "watch" / f"{name}.conf").write_text(text + "sleep 0.5\n")
    notices = _Notices(site, "xs_guest_output")  # post_exchange_suffix output
    stop = threading.Event()
    status: list[int] = []
    cfg = site.load("watch", name)

    def run() -> None:
        with site_env(site):
            status.append(WatchComponent().run(cfg, 1, stop))

    thread = threading.Thread(target=run, name="corpus-watch", daemon=True)
    thread.start()
    try:
        notices.until(lambda got: any(n.path.endswith(".ready") for n in got), "the start-up post")
        (outgoing / "a.dat").write_bytes(b"payload\n" * 100)
        (outgoing / "b.tmp").write_bytes(b"partial\n")
        notices.until(lambda got: any(n.path.endswith("a.dat") for n in got), "a.dat")
        (outgoing / "a.dat").unlink()  # events create|modify: not posted
        (outgoing / "c.dat").write_bytes(b"sentinel\n")
        notices.until(lambda got: any(n.path.endswith("c.dat") for n in got), "the sentinel")
    finally:
        stop.set()
        thread.join(30)
        notices.session.close()
    assert status == [0]
    posted = {n.path: n for n in notices.received}
    assert sorted(posted) == ["outgoing/.ready", "outgoing/a.dat", "outgoing/c.dat"]
    assert [n.path for n in notices.received if n.checksum.letter == "R"] == []  # no delete
    a = posted["outgoing/a.dat"]
    assert a.checksum.letter == "s"  # sum s: SHA-512
    assert a.url == "sftp://tsource@localhost/outgoing/a.dat"  # post_base_url as written
    assert a.checksum.value == hashlib.sha512(b"payload\n" * 100).hexdigest()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _sr_subscribe(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sarra.cli.main", "subscribe", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_sr_subscribe_sr3_start_runs_a_daemon_from_the_sr3_tree(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    """``sr_subscribe --sr3 start NAME``: the instance process it launches finds the sr3 file
    and sr3's credentials.conf too, downloads, and ``--sr3 stop`` stops it."""
    xdg = tmp_path / "xdg"
    sr3 = xdg / "sr3"
    sr3.mkdir(parents=True)
    (sr3 / "credentials.conf").write_text(
        (site.config_dir / "credentials.conf").read_text(encoding="utf-8")
    )
    (sr3 / "credentials.conf").chmod(0o600)
    dest = tmp_path / "data" / "swob"
    name = _subscription(site, "subscribe/sr3_dd_swob.conf", dest, sr3 / "subscribe")
    env = {k: v for k, v in os.environ.items() if k not in ("SR_CONFIG_TREE", "SR_CONFIG_DIR")}
    env.update(
        XDG_CONFIG_HOME=str(xdg),
        SR_STATE_DIR=str(site.state_dir),
        PYTHONPATH=str(ROOT),
    )
    tag = unique("daemon")
    src = nginx.root / "observations" / "swob-ml" / tag
    files = make_files(src, ["CYUL/a.xml", "CYYZ/b.xml"])
    started = _sr_subscribe(env, "--sr3", "start", name)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        pid_files = list((site.state_dir / "sr3" / "subscribe" / name).glob("*.pid"))
        assert len(pid_files) == 1
        # the daemon declares its queue once it runs: wait for it before posting
        qname = site.state_dir / "sr3" / "subscribe" / name
        wait_for(lambda: any(qname.glob("*.qname")), what="the instance's queue")
        time.sleep(1.0)
        assert post(site, nginx.base_url, nginx.root, [src], ("post_exchange", "xpublic")) == 0
        wait_for(lambda: len(list(dest.glob("*.xml"))) == 2, what="both files from the daemon")
        status = _sr_subscribe(env, "--sr3", "status", name)
        assert status.returncode == 0 and "running" in status.stdout, status.stdout
    finally:
        stopped = _sr_subscribe(env, "--sr3", "stop", name)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert md5_tree(dest) == {f.name: _md5(f) for f in files}
    assert list((site.state_dir / "sr3" / "log").glob(f"*{name}*"))


def test_v2_to_remote_sftp_sends_only_grib2_flat_and_announces_them(site, sshd, tmp_path):  # type: ignore[no-untyped-def]
    """The v2 sender: ``accept .*\\.grib2$`` then ``reject .*``, ``mirror off``, files from
    ``base_dir`` pushed over sftp and announced on ``post_exchange`` with ``post_base_url``.

    The corpus names the remote directory in the destination URL (``.../incoming``), a path
    this sshd does not have: the test gives the destination without a path (sr2 and sr3 ignore
    it for sftp; sarra would write under it) and adds one line giving ``directory`` (every
    other line is the corpus file's)."""
    tag = unique("snd")
    local = tmp_path / "var" / "data" / "outgoing"
    files = make_files(local, [f"{tag}/model/a.grib2", f"{tag}/b.grib2", f"{tag}/notes.txt"])
    remote = sshd.root_dir / tag
    remote.mkdir()
    destination = f"sftp://{sshd.user}@127.0.0.1:{sshd.port}/"
    with open(site.config_dir / "credentials.conf", "a") as f:
        f.write(f"{destination} ssh_keyfile={sshd.key_path}\n")
    text = rewrite(
        "sender/v2_to_remote_sftp.conf",
        broker=site.broker,
        base_dir=str(local),
        destination=destination,
        post_broker=site.broker,
    )
    name = unique("corpus")
    (site.config_dir / "sender").mkdir(parents=True, exist_ok=True)
    (site.config_dir / "sender" / f"{name}.conf").write_text(f"directory {remote}\n{text}")
    announced = _Notices(site, "xs_tsource_delivered")
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    stop = threading.Event()
    errors: list[BaseException] = []
    try:
        with site_env(site):
            cfg = site.load("sender", name)
            component = SenderComponent()
            component.declare(cfg)

            def run() -> None:
                try:
                    component.run(cfg, 0, stop)
                except BaseException as e:  # surfaced below
                    errors.append(e)

            thread = threading.Thread(target=run, name="corpus-sender", daemon=True)
            thread.start()
            options = ("post_exchange", "xs_tsource_output")
            assert post(site, "http://localhost", local, [local / tag], options) == 0
            wait_for(lambda: len(tap.about(".grib2")) >= 2, 60, "a report per grib2 file")
            announced.until(lambda got: len(got) >= 2, "two announcements")
            time.sleep(1.0)  # time enough for a wrongly accepted notes.txt to be sent too
            stop.set()
            thread.join(60)
    finally:
        stop.set()
        tap.stop()
        announced.session.close()
    assert not errors
    # mirror off: flat under the remote directory; notes.txt rejected
    assert md5_tree(remote) == {"a.grib2": _md5(files[0]), "b.grib2": _md5(files[1])}
    assert {r.code for r in tap.about(".grib2")} == {201}
    assert tap.about(".txt") == []
    urls = sorted(n.url for n in announced.received)
    base = "sftp://partner@remote.example.com/incoming"  # post_base_url, as written
    assert [u.startswith(base) and u.endswith(".grib2") for u in urls] == [True, True]
