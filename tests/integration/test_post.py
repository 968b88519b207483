"""sr_post against a real broker: the v2 command line, errors, caching, topics."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from sarra.broker.base import Delivery, QueueSpec
from sarra.broker.session import BrokerSession
from sarra.codec import v02
from sarra.notice import Notice
from tests.integration.flowkit import Site, make_files, unique


class Capture:
    """A queue bound to an exchange; collects decoded notices."""

    def __init__(self, site: Site, exchange: str, key: str = "#") -> None:
        self.session = BrokerSession(site.broker_url())
        self.session.connect()
        self.session.declare_exchange(exchange)
        self.queue = f"q_guest.capture.{secrets.token_hex(4)}"
        self.session.declare_queue(
            QueueSpec(self.queue, ((exchange, key),), durable=False, auto_delete=True)
        )
        self.notices: list[Notice] = []
        self.session.consume(self.queue, 1000, self._on)

    def _on(self, d: Delivery) -> None:
        m = d.message
        decoded = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        assert isinstance(decoded, Notice)
        self.notices.append(decoded)
        self.session.ack(d)

    def collect(self, count: int, timeout: float = 20) -> list[Notice]:
        deadline = time.monotonic() + timeout
        while len(self.notices) < count and time.monotonic() < deadline:
            self.session.poll(0.2)
        self.session.poll(0.3)  # anything extra would show up now
        return self.notices

    def close(self) -> None:
        self.session.close()


def _sr_post(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "sr_post"), *args],
        env={**os.environ, **site.env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_v2_command_line_of_existing_scripts_posts_a_tree(site, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("cli")
    data = tmp_path / "data"
    make_files(data / tag, ["a/one.txt", "a/b/two.txt", "three.txt"])
    cap = Capture(site, "xs_guest", f"v02.post.{tag}.#")
    try:
        done = _sr_post(
            site, "-pb", site.broker, "-pbu", "sftp://user@files.example.com/", "-pbd",
            str(data), "-to", "pumpA", "-sum", "s", "-blocksize", "0", "-path", str(data / tag),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        notices = cap.collect(3)
    finally:
        cap.close()
    assert sorted(n.path for n in notices) == sorted(
        f"{tag}/{p}" for p in ["a/one.txt", "a/b/two.txt", "three.txt"]
    )
    for n in notices:
        assert n.base_url == "sftp://user@files.example.com"
        assert n.rel_path.startswith("/")
        assert n.checksum.letter == "s" and len(n.checksum.value) == 128
        assert n.header("to_clusters") == "pumpA"
        assert n.header("mode") and n.header("mtime") and n.header("atime")
        assert n.parts is not None and n.parts.whole
    assert {n.topic for n in notices} == {
        f"v02.post.{tag}.a",
        f"v02.post.{tag}.a.b",
        f"v02.post.{tag}",
    }


def test_an_unreadable_file_is_named_and_the_others_are_still_posted(site, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("unread")
    data = tmp_path / "data"
    (good,) = make_files(data / tag, ["good.txt"])
    fifo = data / tag / "pipe.fifo"  # not a regular file: cannot be posted
    os.mkfifo(fifo)
    missing = data / tag / "missing.txt"
    cap = Capture(site, "xs_guest", f"v02.post.{tag}")
    try:
        done = _sr_post(
            site, "-pb", site.broker, "-pbu", "http://h", "-pbd", str(data), str(fifo),
            str(missing), str(good),
        )  # fmt: skip
        notices = cap.collect(1)
    finally:
        cap.close()
    assert done.returncode == 1
    assert "missing.txt" in done.stderr and "pipe.fifo" in done.stderr
    assert [n.path for n in notices] == [f"{tag}/good.txt"]


def test_caching_suppresses_reposting_unchanged_files_but_not_changed_ones(site, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("cache")
    data = tmp_path / "data"
    _a, b = make_files(data / tag, ["a.txt", "b.txt"])
    cap = Capture(site, "xs_guest", f"v02.post.{tag}")
    args = ["-pb", site.broker, "-pbu", "http://h", "-pbd", str(data), "-caching", "1h"]
    try:
        assert _sr_post(site, *args, str(data / tag)).returncode == 0
        b.write_bytes(b"changed")
        assert _sr_post(site, *args, str(data / tag)).returncode == 0
        notices = cap.collect(3)
    finally:
        cap.close()
    assert sorted(n.path.rsplit("/", 1)[1] for n in notices) == ["a.txt", "b.txt", "b.txt"]


def test_sub_overrides_the_topic_and_file_urls_announce_absolute_paths(site, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("sub")
    (f,) = make_files(tmp_path / "abs", ["x.txt"])
    cap = Capture(site, "xs_guest", f"v02.post.{tag}.special")
    try:
        done = _sr_post(site, "-pb", site.broker, "-pbu", "file:", "-sub", f"{tag}.special",
                        "-path", str(f))  # fmt: skip
        assert done.returncode == 0, done.stderr
        (n,) = cap.collect(1)
    finally:
        cap.close()
    assert n.base_url == "file:"
    assert n.rel_path == str(f)
    assert n.topic == f"v02.post.{tag}.special"


def test_a_missing_broker_password_is_a_clear_error_naming_the_credentials(site, tmp_path):  # type: ignore[no-untyped-def]
    (site.config_dir / "credentials.conf").write_text("")
    (f,) = make_files(tmp_path / "d", ["x.txt"])
    done = _sr_post(site, "-pb", site.broker, "-pbu", "http://h", "-pbd", str(tmp_path), str(f))
    assert done.returncode == 2
    assert "credentials" in done.stderr and "guest" in done.stderr
    assert "Traceback" not in done.stderr


def test_three_hundred_paths_on_the_command_line_are_each_posted_once(site, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("many")
    files = make_files(tmp_path / tag, [f"f{i:04d}.txt" for i in range(300)], size=100)
    cap = Capture(site, "xs_guest", f"v02.post.{tag}")
    try:
        args = ["-pb", site.broker, "-pbu", "http://h", "-pbd", str(tmp_path)]
        done = _sr_post(site, *args, *map(str, files))
        assert done.returncode == 0, done.stderr
        notices = cap.collect(300)
    finally:
        cap.close()
    assert len(notices) == 300
    assert len({n.path for n in notices}) == 300


def _closed_port_broker(site: Site) -> str:
    """A broker URL (with its password in the site's credentials) on a loopback port nothing
    listens on: connecting to it fails at once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (site.config_dir / "credentials.conf").open("a") as cred:
        cred.write(f"amqp://guest:guest@127.0.0.1:{port}/\n")
    return f"amqp://guest@127.0.0.1:{port}/"


def test_outlet_json_prints_what_post_publishes_without_reaching_the_broker(site, tmp_path):  # type: ignore[no-untyped-def]
    import json

    tag = unique("json")
    data = tmp_path / "data"
    make_files(data / tag, ["a/one.txt", "two.txt"])
    base = ["-pbu", "http://files.example.com/", "-pbd", str(data), "-to", "pumpA"]
    base += ["-sum", "s", "-path", str(data / tag)]
    printed = _sr_post(site, "-pb", _closed_port_broker(site), "-outlet", "json", *base)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert len(lines) == 2, printed.stdout
    # sr2's v02 json outlet: [topic, headers, body], header names sorted
    decoded = [json.loads(line) for line in lines]
    for line, (topic, headers, body) in zip(lines, decoded, strict=True):
        assert list(headers) == sorted(headers)
        assert line == json.dumps([topic, headers, body], sort_keys=True)
    by_path = {body.split(" ")[2]: (topic, headers, body) for topic, headers, body in decoded}
    assert set(by_path) == {f"/{tag}/a/one.txt", f"/{tag}/two.txt"}
    # the same file posted for real: the broker gets the same topic, body and headers
    cap = Capture(site, "xs_guest", f"v02.post.{tag}.#")
    try:
        posted = _sr_post(site, "-pb", site.broker, *base)
        assert posted.returncode == 0, posted.stderr
        assert posted.stdout == ""
        notices = cap.collect(2)
    finally:
        cap.close()
    assert len(notices) == 2
    for n in notices:
        topic, headers, body = by_path["/" + n.path]
        assert n.topic == topic
        assert body.split(" ")[1:] == [n.base_url, n.rel_path]
        same = {k: v for k, v in n.headers.items() if k not in ("atime", "mtime")}
        assert same == {k: v for k, v in headers.items() if k not in ("atime", "mtime")}
        assert headers["to_clusters"] == "pumpA"


def test_outlet_url_prints_the_retrieval_url_of_each_file(site, tmp_path):  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    make_files(data, ["d/one#file.txt"])
    done = _sr_post(
        site, "-pb", _closed_port_broker(site), "-outlet", "url", "-pbu", "http://h.example/pub/",
        "-pbd", str(data), str(data / "d" / "one#file.txt"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "http://h.example/pub/d/one%23file.txt\n"


def test_outlet_post_is_the_default_and_a_bad_outlet_does_not_load(site, tmp_path):  # type: ignore[no-untyped-def]
    f = tmp_path / "f.txt"
    f.write_text("x")
    done = _sr_post(site, "-pb", site.broker, "-outlet", "mail", "-pbu", "http://h", str(f))
    assert done.returncode != 0
    assert "outlet" in done.stderr


def test_realpath_post_posts_resolved_paths_and_keeps_them_under_post_base_dir(site, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("real")
    data = tmp_path / "data"
    make_files(data / tag / "real", ["one.txt"])
    outside = tmp_path / "outside"
    make_files(outside, ["secret.txt"])
    (data / tag / "alias").symlink_to(data / tag / "real")
    (data / tag / "leak.txt").symlink_to(outside / "secret.txt")
    link_base = tmp_path / "base-link"
    link_base.symlink_to(data)
    args = ["-pb", site.broker, "-pbu", "http://h/", "-to", "pumpA"]
    cap = Capture(site, "xs_guest", f"v02.post.{tag}.#")
    try:
        # given through a linked directory, base dir through a link: both resolved
        done = _sr_post(
            site, *args, "-pbd", str(link_base), "-realpath_post", "on",
            str(link_base / tag / "alias" / "one.txt"),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert [n.path for n in cap.collect(1)] == [f"{tag}/real/one.txt"]
        cap.notices.clear()
        # without it, the path is posted as given
        done = _sr_post(site, *args, "-pbd", str(data), str(data / tag / "alias" / "one.txt"))
        assert done.returncode == 0, done.stderr
        assert [n.path for n in cap.collect(1)] == [f"{tag}/alias/one.txt"]
        cap.notices.clear()
        # a link leading outside post_base_dir: a link notice without realpath_post, refused
        # with it (confinement applies to the resolved path)
        done = _sr_post(site, *args, "-pbd", str(data), str(data / tag / "leak.txt"))
        assert done.returncode == 0, done.stderr
        [link] = cap.collect(1)
        assert link.path == f"{tag}/leak.txt" and link.header("link") == str(outside / "secret.txt")
        cap.notices.clear()
        done = _sr_post(site, *args, "-pbd", str(data), "-real", "on", str(data / tag / "leak.txt"))
        assert done.returncode == 1
        assert "not under post_base_dir" in done.stderr
        assert cap.collect(1, timeout=2) == []
    finally:
        cap.close()


def test_realpath_post_walks_a_linked_directory_under_its_real_path(site, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("walk")
    data = tmp_path / "data"
    make_files(data / tag / "real", ["one.txt"])
    (data / tag / "top").mkdir()
    (data / tag / "top" / "alias").symlink_to(data / tag / "real")
    (data / tag / "top" / "loop").symlink_to(data / tag)
    cap = Capture(site, "xs_guest", f"v02.post.{tag}.#")
    try:
        done = _sr_post(
            site, "-pb", site.broker, "-pbu", "http://h/", "-pbd", str(data), "-fs", "on",
            "-real", "on", str(data / tag / "top"),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        paths = sorted(n.path for n in cap.collect(2, timeout=5))
    finally:
        cap.close()
    assert paths == [f"{tag}/real/one.txt"]  # the loop back to an ancestor is not walked


def test_a_path_with_spaces_on_the_command_line_is_one_file(site, tmp_path):  # type: ignore[no-untyped-def]
    # a shell script's sr_post "$file": one argument is one path, whatever it holds
    data = tmp_path / "data"
    make_files(data, ["d/two words.txt", "d/-path x.txt"])
    done = _sr_post(
        site, "-pb", _closed_port_broker(site), "-outlet", "url", "-pbu", "http://h.example/pub/",
        "-pbd", str(data), str(data / "d" / "two words.txt"),
        "-path", str(data / "d" / "-path x.txt"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "http://h.example/pub/d/two%20words.txt",
        "http://h.example/pub/d/-path%20x.txt",
    ]
