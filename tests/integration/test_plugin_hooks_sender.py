"""sr_sender's plugins against RabbitMQ and sshd: an on_post returning False keeps a delivered
file from being announced on post_exchange (the delivery and its report are unchanged); a
do_put plugin (the example of docs/plugins.md, OpenSSH's sftp client) sends in place of the
built-in transport."""

from __future__ import annotations

import re
import subprocess
import textwrap
import time
from pathlib import Path

from sarra.broker.base import Delivery, QueueSpec
from sarra.broker.session import BrokerSession
from sarra.codec import v02
from sarra.notice import Notice
from tests.integration.flowkit import ReportTap, Site, make_files, md5_tree, wait_for
from tests.integration.test_sender import Setup, running_sender
from tests.servers.sshd import Sshd


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


def _documented_do_put() -> str:
    """The do_put example of docs/plugins.md, as written there."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
    after = doc.split("A `do_put` plugin that sends with OpenSSH's `sftp` client", 1)[1]
    block = re.search(r"\n\n((?:    .*\n|\n)+)", after)
    assert block is not None, "docs/plugins.md shows no do_put example"
    return textwrap.dedent(block.group(1))


def test_a_do_put_plugin_sends_with_sftp_in_place_of_the_builtin_transport(
    site: Site, sshd: Sshd, tmp_path: Path
) -> None:
    # the sender's own credentials name a key sshd refuses: only the plugin can deliver
    refused_key = tmp_path / "refused_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(refused_key)], check=True
    )
    s = Setup(site, sshd, tmp_path, key=refused_key)
    calls = tmp_path / "do_put.log"
    code = _documented_do_put()
    login = '["sftp", "-q",'
    assert login in code
    code = code.replace(
        login,
        f'["sftp", "-q", "-i", {str(sshd.key_path)!r}, "-o", "StrictHostKeyChecking=no", '
        '"-o", "UserKnownHostsFile=/dev/null",',
    )
    code += (
        "\n_documented = do_put\n\n"
        "def do_put(local_path, url):\n"
        f"    with open({str(calls)!r}, 'a') as f:\n"
        "        f.write(url + '\\n')\n"
        "    return _documented(local_path, url)\n"
    )
    plugin = tmp_path / "sftp_put.py"
    plugin.write_text(code)
    s.write(f"do_put {plugin}\n")
    names = [f"{s.tag}/a.txt", f"{s.tag}/sub/deeper/b.bin"]
    files = make_files(s.local, names, size=3_000_000)
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
    assert md5_tree(s.remote) == md5_tree(s.local)  # intact, under their final names
    assert s.leftovers() == []
    origin = f"sftp://{sshd.user}@127.0.0.1:{sshd.port}"
    assert sorted(calls.read_text().splitlines()) == [
        f"{origin}{s.remote}/{s.tag}/a.txt",
        f"{origin}{s.remote}/{s.tag}/sub/deeper/b.bin",
    ]
    assert {r.code for r in tap.reports if s.tag in r.notice.path} == {201}
