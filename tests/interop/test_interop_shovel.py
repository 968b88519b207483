"""A shovel between sr3 and sarra: sr3 ``sr3_post`` announces v03 on ``xs_guest``, our
sr_shovel copies it to another exchange as v02 (``post_format v02``, topic prefix rewritten
from ``v03`` to ``v02.post``), and our sr_subscribe, bound there with the v02 prefix, downloads
every file from the origin the notices name (names with spaces, ``#``, non-ASCII, nested)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sarra.codec import v02
from sarra.notice import Notice
from tests.integration.flowkit import (
    AWKWARD,
    Site,
    make_files,
    md5_tree,
    running_subscriber,
    unique,
    wait_for,
)
from tests.integration.test_shovel import Running
from tests.interop.peers import SR3_POSTED_LINE, count_lines, sr3_post
from tests.interop.test_interop_v02 import Capture

pytestmark = [pytest.mark.servers, pytest.mark.interop, pytest.mark.timeout(180)]


def test_sr3_v03_posts_shovelled_to_v02_are_downloaded_by_our_subscriber(
    rabbitmq: Any, nginx: Any, tmp_path: Path
) -> None:
    tag = unique("shv")
    site = Site(tmp_path / "site", rabbitmq.port).setup()
    src = nginx.root / tag
    make_files(src, AWKWARD, size=3000)
    dest = tmp_path / "dest"
    (site.config_dir / "shovel").mkdir()
    (site.config_dir / "shovel" / f"s_{tag}.conf").write_text(
        f"broker {site.broker}\nexchange xs_guest\ntopic_prefix v03\nsubtopic {tag}.#\n"
        f"expire 10m\nreport_back off\npost_exchange xshv_{tag}\npost_topic_prefix v02.post\n"
        "post_format v02\n"
    )
    site.write_subscribe(
        f"sub_{tag}",
        f"exchange xshv_{tag}\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        "expire 10m\naccept .*\n",
    )
    cap = Capture(rabbitmq, f"xshv_{tag}", f"v02.post.{tag}.#")
    try:
        with Running(site, tag), running_subscriber(site, f"sub_{tag}"):
            proc = sr3_post(
                tmp_path / "sr3", rabbitmq.url(), nginx.base_url, nginx.root, [src],
                post_format="v03",
            )  # fmt: skip
            assert count_lines(proc.stdout + proc.stderr, SR3_POSTED_LINE) >= len(AWKWARD)
            wanted = [dest / n for n in AWKWARD]
            wait_for(lambda: all(p.exists() for p in wanted), 60, "every file downloaded")
        copies = cap.drain()
    finally:
        cap.close()
    assert md5_tree(dest) == md5_tree(src)
    # the copies are v02: a body line and headers, text/plain, on v02.post.<dirs>
    paths = set()
    for m in copies:
        assert m.content_type == "text/plain" and m.routing_key.startswith(f"v02.post.{tag}")
        assert m.body.count(b" ") == 2  # pubTime baseUrl relPath
        n = v02.decode(m.exchange, m.routing_key, m.body, m.headers, m.content_type)
        assert isinstance(n, Notice)
        paths.add(n.path)
    assert {f"{tag}/{n}" for n in AWKWARD} <= paths
