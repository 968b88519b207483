"""File names that are not valid UTF-8, against a real RabbitMQ (and nginx for the
subscriber): sr_post skips such a file with one clear line and exits 1 after posting the
others (sr_watch: tests/integration/test_watch.py, sr_poll: test_poll.py); a notice that
holds a lone surrogate (a v03 ``\\udcff`` escape, an AMQP header py-amqp decodes with
``surrogatepass``) is dropped and logged by a subscriber, which goes on to the good notice
behind it."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
from pathlib import Path

import amqp
import pytest

from sarra.codec.timestamps import now_timestamp
from tests.integration.flowkit import Site, make_files, running_subscriber, unique, wait_for
from tests.integration.test_post import Capture, _sr_post

pytestmark = pytest.mark.servers

#: the bytes of a Latin-1 name, not valid UTF-8
BAD = b"bad\xff.txt"
SKIPPED = "file name is not valid UTF-8: cannot be announced"


@pytest.fixture
def site(tmp_path: Path, rabbitmq) -> Site:  # type: ignore[no-untyped-def]
    return Site(tmp_path / "site", rabbitmq.port).setup()


def _write_bytes_name(directory: Path, name: bytes, data: bytes) -> None:
    with open(os.fsencode(directory) + b"/" + name, "wb") as f:
        f.write(data)


@pytest.mark.parametrize("post_format", ["v02", "v03"])
def test_sr_post_skips_a_name_that_is_not_utf8_posts_the_rest_and_exits_1(  # type: ignore[no-untyped-def]
    site, tmp_path, post_format
) -> None:
    tag = unique("nonutf8")
    data = tmp_path / "data"
    make_files(data / tag, ["good.txt", "sub/also.txt"])
    _write_bytes_name(data / tag, BAD, b"latin-1 name\n")
    os.mkdir(os.fsencode(data / tag) + b"/dir\xe9")  # a directory named in Latin-1 too
    _write_bytes_name(data / tag / os.fsdecode(b"dir\xe9"), b"inside.txt", b"x")
    prefix = "v03" if post_format == "v03" else "v02.post"
    cap = Capture(site, "xs_guest", f"{prefix}.{tag}.#")
    try:
        done = _sr_post(
            site,
            "-pb",
            site.broker,
            "-pbu",
            "http://h",
            "-pbd",
            str(data),
            "-post_format",
            post_format,
            "-path",
            str(data / tag),
        )
        notices = cap.collect(2)
    finally:
        cap.close()
    assert sorted(n.path for n in notices) == [f"{tag}/good.txt", f"{tag}/sub/also.txt"]
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    # one clear line each: the directory, the name as its bytes, and why
    assert f"in {data / tag}: {BAD!r} skipped: {SKIPPED}" in done.stderr, done.stderr
    # a directory so named: the directory as its bytes, and why
    bad_dir = os.fsencode(data / tag) + b"/dir\xe9"
    assert f"in {bad_dir!r}: inside.txt skipped: directory name is not valid UTF-8" in (
        done.stderr
    ), done.stderr
    assert "2 file(s) not posted" in done.stderr


def _raw_publish(site: Site, exchange: str, messages: list[tuple[str, bytes, dict, str]]) -> None:
    """Publish with py-amqp itself: its header encoder writes a lone surrogate with
    ``surrogatepass`` (bytes ED B3 BF), which sarra's own frame writer refuses to send."""
    url = site.broker_url()
    conn = amqp.Connection(host=f"{url.host}:{url.port}", userid=url.user, password=url.password)
    conn.connect()
    try:
        ch = conn.channel()
        ch.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        for key, body, headers, ctype in messages:
            ch.basic_publish(
                amqp.Message(body, application_headers=headers, content_type=ctype),
                exchange=exchange,
                routing_key=key,
            )
    finally:
        conn.close()


def test_a_subscriber_drops_notices_holding_a_lone_surrogate_and_goes_on(  # type: ignore[no-untyped-def]
    rabbitmq, nginx, tmp_path, caplog
) -> None:
    site = Site(tmp_path / "site", rabbitmq.port).setup()
    tag = unique("surr")
    (good,) = make_files(nginx.root / tag, ["good.txt"])
    data = good.read_bytes()
    digest = hashlib.md5(data).hexdigest()
    ts = now_timestamp()
    ident = {"method": "md5", "value": base64.b64encode(bytes.fromhex(digest)).decode()}

    def v03(rel: str) -> bytes:
        obj = {
            "pubTime": ts[:8] + "T" + ts[8:],
            "baseUrl": nginx.base_url,
            "relPath": f"{tag}/{rel}",
            "identity": ident,
            "size": len(data),
        }
        return json.dumps(obj).encode()

    v02_headers = {"sum": f"d,{digest}", "parts": f"1,{len(data)},1,0,0"}
    v02_body = f"{ts} {nginx.base_url} /{tag}/v02bad.txt".encode()
    dest = tmp_path / "dest"
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\ntopic_prefix v03\nsubtopic {tag}.#\ndirectory {dest}\n"
        "mirror on\nstrip 1\n"
        "expire 10m\naccept .*\n",
    )
    caplog.set_level(logging.INFO)
    with running_subscriber(site, name):
        _raw_publish(
            site,
            "xs_guest",
            [
                # a v03 body whose relPath escapes a lone surrogate (valid JSON, no text)
                (
                    f"v03.{tag}",
                    v03("bad\\udcff.txt").replace(b"\\\\udcff", b"\\udcff"),
                    {},
                    "application/json",
                ),
                (
                    f"v03.{tag}",
                    v03("other\\ud800.txt").replace(b"\\\\ud800", b"\\ud800"),
                    {},
                    "application/json",
                ),
                # a v02 notice whose header carries the CESU bytes of a lone surrogate
                (
                    f"v03.{tag}",
                    v02_body,
                    {**v02_headers, "from_cluster": "c\udcff"},
                    "text/plain",
                ),
                (f"v03.{tag}", v03("good.txt"), {}, "application/json"),
            ],
        )
        wait_for(lambda: (dest / "good.txt").exists(), 60, "the good file")
        threading.Event().wait(1.0)  # anything else would land now
    assert (dest / "good.txt").read_bytes() == data
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == ["good.txt"]
    rejected = [r.getMessage() for r in caplog.records if "rejected malformed" in r.getMessage()]
    assert len(rejected) == 3, rejected
    assert sum("lone surrogate escape" in line for line in rejected) == 2, rejected
    assert sum("header 'from_cluster' is not valid UTF-8" in line for line in rejected) == 1
    assert "Traceback" not in caplog.text
