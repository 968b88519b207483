"""Two sr_sender "hosts" (separate config and state directories, one real RabbitMQ, one sshd)
share a queue declared with ``single_active_consumer on``: one sends, the other stands by;
SIGKILL the one sending and the broker hands the queue, with the notices it held
unacknowledged, to the other. Every file arrives whole; the doubles stay within the prefetch."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from sarra.flow.metrics import read_metrics
from tests.integration.flowkit import ReportTap, Site, make_files, md5_tree, post, unique, wait_for
from tests.servers.sshd import Sshd

pytestmark = [pytest.mark.servers, pytest.mark.timeout(240)]

PREFETCH = 5
FILES = 40


class SenderNode:
    def __init__(self, root: Path, port: int, sshd: Sshd, conf: str, name: str) -> None:
        self.site = Site(root, port).setup()
        destination = f"sftp://{sshd.user}@127.0.0.1:{sshd.port}/"
        with open(self.site.config_dir / "credentials.conf", "a") as f:
            f.write(f"{destination} ssh_keyfile={sshd.key_path}\n")
        (self.site.config_dir / "sender").mkdir()
        (self.site.config_dir / "sender" / f"{name}.conf").write_text(
            f"broker {self.site.broker}\ndestination {destination}\n{conf}"
        )
        self.name = name
        self.log = root / "sender.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "sr_sender"), "foreground", self.name],
                env={**os.environ, **self.site.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def sent(self) -> int:
        path = self.site.state_dir / "sender" / self.name
        docs = [read_metrics(p) for p in path.glob("*.metrics.json")]
        return sum(int(d["files"]) for d in docs if d is not None)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def queue_info(rabbitmq, name: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The management API's view of queue ``name``; {} while it does not exist."""
    try:
        info: dict[str, Any] = rabbitmq.queue_info(name)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return {}
        raise
    return info


def test_one_sender_of_two_hosts_sends_and_the_other_takes_over_when_it_is_killed(
    rabbitmq, sshd: Sshd, tmp_path: Path
) -> None:
    tag = unique("sac")
    exchange = f"x_sac_{tag}"
    local = tmp_path / "local"
    remote = sshd.root_dir / tag
    remote.mkdir()
    queue = f"q_guest.sr_sender.{tag}"
    conf = (
        f"exchange {exchange}\nqueue_name {queue}\nsingle_active_consumer on\n"
        f"prefetch {PREFETCH}\nbyte_rate_max 6000\nbase_dir {local}\ndirectory {remote}\n"
        "expire 10m\naccept .*\n"
    )
    name = f"snd_{tag}"
    a = SenderNode(tmp_path / "a", rabbitmq.port, sshd, conf, name)
    b = SenderNode(tmp_path / "b", rabbitmq.port, sshd, conf, name)
    source = Site(tmp_path / "src", rabbitmq.port).setup()
    tap = ReportTap(source.broker_url(), "xs_guest").start()
    files = make_files(local, [f"{tag}/f{i:02d}.bin" for i in range(FILES)], size=1000)
    try:
        a.start()
        wait_for(lambda: bool(queue_info(rabbitmq, queue)), 30, "the queue declared")
        b.start()
        wait_for(lambda: queue_info(rabbitmq, queue).get("consumers") == 2, 60, "2 consumers")
        assert queue_info(rabbitmq, queue)["arguments"]["x-single-active-consumer"] is True
        options = ("post_exchange", exchange)
        assert post(source, "http://localhost", local, files, options) == 0
        wait_for(lambda: len(list(remote.rglob("*.bin"))) >= 10, 60, "ten files sent")
        assert b.sent() == 0, "the stand-by sent files"
        a.stop()  # SIGKILL: its unacknowledged notices go back to the queue, to b
        wait_for(
            lambda: md5_tree(remote) == md5_tree(local),
            120,
            f"every file, sent by the second sender\n{b.log.read_text()[-2000:]}",
        )
        wait_for(lambda: b.sent() > 0, 30, "the second sender's metrics")
    finally:
        a.stop()
        b.stop()
        tap.stop()
    assert not [p for p in remote.rglob("*") if p.is_file() and p.suffix != ".bin"], "leftovers"
    delivered = collections.Counter(r.notice.path for r in tap.reports if r.code == 201)
    assert len(delivered) == FILES
    doubles = sum(n - 1 for n in delivered.values())
    assert doubles <= PREFETCH, f"{doubles} files sent twice: more than the prefetch"
