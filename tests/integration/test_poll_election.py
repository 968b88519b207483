"""sr_poll with ``single_active_consumer on``: pollers on two "hosts" (separate config and
state directories, one real RabbitMQ, one nginx) elect one poller through a
single-active-consumer queue; the other stands by. When the active one is SIGKILLed, or
stopped, the broker hands the token (and the poll state in it) to the other, which goes on
where the first left: every file announced, none twice."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import amqp
import pytest

from sarra.broker.election import Token
from tests.integration.flowkit import Site, make_files, unique, wait_for
from tests.integration.test_poll import NoticeTap, Source, write_poll

pytestmark = [pytest.mark.servers, pytest.mark.timeout(180)]


class Node:
    """One host's sr_poll: its own site (config, state) and a ``foreground`` process."""

    def __init__(
        self,
        root: Path,
        port: int,
        name: str,
        src: Source,
        site: Site | None = None,
        extra: str = "",
    ) -> None:
        self.site = site or Site(root, port).setup()
        (self.site.config_dir / "poll").mkdir(parents=True)
        write_poll(self.site, name, src, f"single_active_consumer on\n{extra}")
        self.name = name
        self.log = root / "poll.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        command = str(Path(sys.executable).parent / "sr_poll")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [command, "foreground", self.name],
                env={**os.environ, **self.site.env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def active(self) -> bool:
        return "holding the election" in self.text()

    def end(self, sig: int) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(60)


@contextmanager
def two_nodes(root: Path, port: int, src: Source) -> Iterator[tuple[Node, Node]]:
    name = unique("elect")
    a = Node(root / "a", port, name, src).start()
    b = Node(root / "b", port, name, src)
    try:
        wait_for(a.active, 30, "the first poller elected")
        b.start()
        yield a, b
    finally:
        for n in (a, b):
            if n.proc is not None and n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait(30)


def announced(tap: NoticeTap) -> collections.Counter[str]:
    return collections.Counter(n.path for n in tap.notices)


def take_token(port: int, queue: str) -> Token | None:
    """The token left in the election queue (taken, and the queue deleted)."""
    conn = amqp.Connection(host=f"127.0.0.1:{port}", userid="guest", password="guest")
    conn.connect()
    try:
        ch = conn.channel()
        msg = ch.basic_get(queue, no_ack=True)
        ch.queue_delete(queue)
        return None if msg is None else Token.decode(msg.body)
    finally:
        conn.close()


def test_one_poller_of_two_hosts_announces_and_the_other_takes_over_with_its_state(
    rabbitmq, nginx, tmp_path: Path
) -> None:
    tag = unique("el")
    local = nginx.root / "listing" / tag
    local.mkdir(parents=True)
    src = Source("http", nginx.base_url, local, f"/listing/{tag}")
    first = [f"a{i}.txt" for i in range(5)]
    make_files(local, first)
    site = Site(tmp_path / "tap", rabbitmq.port).setup()
    tap = NoticeTap(site.broker_url(), "xs_guest").start()
    try:
        with two_nodes(tmp_path, rabbitmq.port, src) as (a, b):
            wait_for(lambda: len(tap.notices) >= 5, 30, "the first files announced")
            wait_for(lambda: "handed over token" in a.text(), 30, "a hand-over of the state")
            wait_for(lambda: "candidate" in b.text(), 30, "the second poller a candidate")
            make_files(local, ["b0.txt"])
            wait_for(lambda: len(tap.notices) >= 6, 30, "the new file announced")
            wait_for(lambda: a.text().count("handed over token") >= 2, 30, "its hand-over")
            assert not b.active(), b.text()[-2000:]  # stood by all along
            assert "lost the election" not in a.text()
            # SIGKILL: nothing handed over at the end; the broker requeues the token held
            a.end(signal.SIGKILL)
            make_files(local, ["c0.txt", "c1.txt"])
            wait_for(b.active, 60, f"the second poller elected\n{b.text()[-2000:]}")
            wait_for(lambda: len(tap.notices) >= 8, 30, "the files made after the kill")
            # the first comes back as a stand-by; a clean stop of the second hands over
            wait_for(lambda: b.text().count("handed over token") >= 1, 30, "b's hand-over")
            a.log.write_text("")
            a.start()
            wait_for(lambda: "candidate" in a.text(), 30, "the first poller back, standing by")
            make_files(local, ["d0.txt"])
            wait_for(lambda: len(tap.notices) >= 9, 30, "the file made before the stop")
            wait_for(lambda: b.text().count("handed over token") >= 2, 30, "b's hand-over")
            assert not a.active(), a.text()[-2000:]
            b.end(signal.SIGTERM)
            assert b.proc is not None and b.proc.returncode == 0, b.text()[-2000:]
            make_files(local, ["e0.txt"])
            wait_for(a.active, 60, f"the first poller elected again\n{a.text()[-2000:]}")
            wait_for(lambda: len(tap.notices) >= 10, 30, "the file made after the stop")
            wait_for(lambda: "handed over token" in a.text(), 30, "a's hand-over")
            a.end(signal.SIGTERM)
            token = take_token(rabbitmq.port, f"q_guest.sr_poll.{a.name}.election")
    finally:
        tap.stop()
    counts = announced(tap)
    names = [*first, "b0.txt", "c0.txt", "c1.txt", "d0.txt", "e0.txt"]
    assert sorted(counts) == sorted(f"{src.directory.strip('/')}/{n}" for n in names)
    assert set(counts.values()) == {1}, f"announced twice: {counts}"
    # the state went back to the broker: the last token holds every file, for the next poller
    assert token is not None and token.seq >= 4, token
    held = sorted(json.loads(token.payload)["seen"])
    assert held == sorted(f"{src.directory}/{n}" for n in names)
