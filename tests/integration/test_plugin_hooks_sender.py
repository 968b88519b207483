"""sr_sender's on_post against RabbitMQ and sshd: a plugin returning False keeps a delivered
file from being announced on post_exchange; the delivery and its report are unchanged."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sarra.broker.base import Delivery, QueueSpec
from sarra.broker.session import BrokerSession
from sarra.codec import v02
from sarra.notice import Notice
from tests.integration.flowkit import ReportTap, Site, make_files, md5_tree, wait_for
from tests.integration.test_sender import Setup, running_sender
from tests.servers.sshd import Sshd


@pytest.fixture
def site(tmp_path: Path, rabbitmq) -> Site:  # type: ignore[no-untyped-def]
    return Site(tmp_path / "site", rabbitmq.port).setup()


def test_on_post_false_keeps_the_sender_from_announcing_a_delivered_file(
    site: Site, sshd: Sshd, tmp_path: Path
) -> None:
    s = Setup(site, sshd, tmp_path)
    log = tmp_path / "on_post.log"
    plugin = tmp_path / "hold_back.py"
    plugin.write_text(
        "def on_post(work):\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(f'{work.code} {work.notice.path}\\n')\n"
        "    return not work.notice.path.endswith('.skip')\n"
    )
    announced_on = f"x_sent_{s.tag}"
    s.write(f"post_broker {site.broker}\npost_exchange {announced_on}\non_post {plugin}\n")
    watcher = BrokerSession(site.broker_url(), name="announcements")
    watcher.connect()
    watcher.declare_exchange(announced_on)
    queue = QueueSpec(f"q_guest.ann.{s.tag}", ((announced_on, "#"),), durable=False)
    watcher.declare_queue(queue)
    files = make_files(s.local, [f"{s.tag}/a.skip", f"{s.tag}/b.txt"], size=2000)
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_sender(site, s.name):
            s.post(files)
            wait_for(
                lambda: sum(r.code == 201 for r in tap.reports if s.tag in r.notice.path) == 2,
                60,
                "two 201 reports",
            )
    finally:
        tap.stop()
    assert md5_tree(s.remote) == md5_tree(s.local)  # both delivered
    got: list[Delivery] = []
    watcher.consume(queue.name, 100, got.append)
    wait_for(lambda: watcher.poll(0.1) >= 0 and len(got) >= 1, 30, "b.txt's announcement")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        watcher.poll(0.1)
    notices = [
        v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        for m in (d.message for d in got)
    ]
    assert [n.path.rsplit("/", 1)[-1] for n in notices if isinstance(n, Notice)] == ["b.txt"]
    assert sorted(log.read_text().splitlines()) == [
        f"201 {s.tag}/a.skip",
        f"201 {s.tag}/b.txt",
    ]
    watcher.delete_queue(queue.name)
    watcher.close()
