"""sr_post -> RabbitMQ -> sr_subscribe -> nginx, end to end against real servers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sarra.codec.timestamps import now_timestamp
from sarra.notice import WireMessage
from tests.integration.flowkit import (
    AWKWARD,
    ReportTap,
    Site,
    make_files,
    md5_tree,
    post,
    publish_raw,
    running_subscriber,
    unique,
    wait_for,
)


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and "~sr" in p.name]


def test_files_posted_by_sr_post_arrive_verified_and_each_is_reported(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("flow")
    src = nginx.root / tag
    make_files(src, AWKWARD, size=5000)
    dest = tmp_path / "dest"
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, site.mirror_subscription(tag, dest)):
            assert post(site, nginx.base_url, nginx.root, [src]) == 0
            wait_for(lambda: len(tap.about("")) >= len(AWKWARD), what="a report per file")
    finally:
        tap.stop()
    assert md5_tree(dest) == md5_tree(src)
    ours = [r for r in tap.reports if r.notice.path.startswith(tag)]
    assert sorted(r.notice.path for r in ours) == sorted(f"{tag}/{n}" for n in AWKWARD)
    assert {r.code for r in ours} == {201}
    assert all(r.message == "Downloaded" and r.user == "guest" for r in ours)
    assert _leftovers(dest) == []


def test_reposting_unchanged_files_gives_304_and_no_second_download(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("same")
    src = nginx.root / tag
    make_files(src, ["a.txt", "b.txt"])
    dest = tmp_path / "dest"
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, site.mirror_subscription(tag, dest)):
            post(site, nginx.base_url, nginx.root, [src])
            wait_for(lambda: len(tap.about(".txt")) >= 2, what="first reports")
            first = {p: p.stat().st_ino for p in dest.rglob("*.txt")}
            post(site, nginx.base_url, nginx.root, [src])
            wait_for(lambda: len(tap.about(".txt")) >= 4, what="second reports")
    finally:
        tap.stop()
    codes = sorted(r.code for r in tap.reports if r.notice.path.startswith(tag))
    assert codes == [201, 201, 304, 304]
    assert {p: p.stat().st_ino for p in dest.rglob("*.txt")} == first


def test_with_overwrite_on_unchanged_files_are_downloaded_again(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("over")
    src = nginx.root / tag
    make_files(src, ["a.txt", "b.txt"])
    dest = tmp_path / "dest"
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, site.mirror_subscription(tag, dest, "overwrite on\n")):
            post(site, nginx.base_url, nginx.root, [src])
            wait_for(lambda: len(tap.about(".txt")) >= 2, what="first reports")
            first = {p: p.stat().st_ino for p in dest.rglob("*.txt")}
            post(site, nginx.base_url, nginx.root, [src])
            wait_for(lambda: len(tap.about(".txt")) >= 4, what="second reports")
    finally:
        tap.stop()
    codes = sorted(r.code for r in tap.reports if r.notice.path.startswith(tag))
    assert codes == [201, 201, 201, 201]
    again = {p: p.stat().st_ino for p in dest.rglob("*.txt")}
    assert again.keys() == first.keys()
    assert all(again[p] != first[p] for p in first)  # each placed anew under its name
    assert md5_tree(dest) == md5_tree(src)


def _raw(tag: str, body: bytes, headers: dict[str, object]) -> WireMessage:
    return WireMessage(
        exchange="xs_guest",
        routing_key=f"v02.post.{tag}",
        body=body,
        headers=headers,  # type: ignore[arg-type]  # raw, possibly invalid, on purpose
    )


def _good_headers(data: bytes) -> dict[str, object]:
    return {
        "parts": f"1,{len(data)},1,0,0",
        "sum": "d," + hashlib.md5(data).hexdigest(),
    }


def test_malformed_messages_get_417_and_the_subscriber_keeps_running(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("bad")
    (good,) = make_files(nginx.root / tag, ["good.txt"])
    data = good.read_bytes()
    ts = now_timestamp()
    base = nginx.base_url
    bad = [
        _raw(tag, f"{ts} {base}".encode(), _good_headers(data)),  # two fields
        _raw(tag, f"2026-11-25 {base} /{tag}/x.txt".encode(), _good_headers(data)),  # pubTime
        _raw(tag, f"{ts} {base} /{tag}/y.txt".encode(), {**_good_headers(data), "sum": "Q,abc"}),
        _raw(tag, f"{ts} {base} /{tag}/z.txt".encode(), {**_good_headers(data), "parts": "i,0,1"}),
        _raw(tag, f"{ts} {base} /{tag}/\xff.txt".encode("latin-1"), _good_headers(data)),
        _raw(
            tag, f"{ts} {base} /{tag}/h.txt".encode(), {**_good_headers(data), "big": "x" * 70000}
        ),
        _raw(tag, f"{ts} {base} /{tag}/n.txt".encode(), {**_good_headers(data), "when": 3.5}),
    ]
    good_msg = _raw(tag, f"{ts} {base} /{tag}/good.txt".encode(), _good_headers(data))
    dest = tmp_path / "dest"
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, site.mirror_subscription(tag, dest)):
            publish_raw(site.broker_url(), [*bad, good_msg])
            wait_for(lambda: (dest / "good.txt").exists(), what="the good file")
            wait_for(lambda: any(r.code == 201 for r in tap.about("good.txt")), what="201")
            wait_for(
                lambda: tap.codes().get(417, 0) >= 3, what=f"417s {tap.reports} {tap.undecodable}"
            )
    finally:
        tap.stop()
    assert (dest / "good.txt").read_bytes() == data
    # reportable ones (three body fields, valid pubTime and sum) get 417; none is placed
    assert {r.notice.path for r in tap.reports if r.code == 417} == {
        f"{tag}/z.txt",
        f"{tag}/h.txt",
        f"{tag}/n.txt",
    }
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == ["good.txt"]
    assert tap.undecodable == []  # our 417 reports are themselves well-formed
    messages, _consumers = _queue_counts(site, f"sub_{tag}")
    assert messages == 0


def _queue_counts(site: Site, name: str) -> tuple[int, int]:
    from sarra.broker.session import BrokerSession
    from sarra.config.loader import resolve_queue_name

    cfg = site.load("subscribe", name)
    s = BrokerSession(site.broker_url())
    s.connect()
    try:
        return s.queue_counts(resolve_queue_name(cfg, env={**os.environ, **site.env}))
    finally:
        s.close()


@pytest.mark.parametrize(
    "rel_path, headers, reported",
    [
        ("/{tag}/../../../escape.txt", {}, True),
        ("/{tag}/ok.txt", {"rename": "../../../escape.txt"}, True),
        # a NUL cannot even be written back in a report: refused, logged, acked
        ("/{tag}/nul\x00/../../../escape.txt", {}, False),
        ("/{tag}/link.txt", {"link": "../../../../etc/passwd", "sum": "L," + "0" * 128}, True),
        ("/{tag}/link2.txt", {"link": "/etc/passwd", "sum": "L," + "0" * 128}, True),
    ],
)
def test_hostile_paths_are_refused_and_nothing_is_written_outside(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path, rel_path, headers, reported
):
    tag = unique("evil")
    (src,) = make_files(nginx.root / tag, ["ok.txt"])
    data = src.read_bytes()
    outer = tmp_path / "outer"
    dest = outer / "a" / "b" / "dest"
    dest.mkdir(parents=True)
    before = sorted(p for p in outer.rglob("*"))
    h: dict[str, object] = {**_good_headers(data), **headers}
    if "link" in headers:
        h.pop("parts")
    msg = _raw(tag, f"{now_timestamp()} {nginx.base_url} {rel_path.format(tag=tag)}".encode(), h)
    marker = _raw(
        tag, f"{now_timestamp()} {nginx.base_url} /{tag}/ok.txt".encode(), _good_headers(data)
    )
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, site.mirror_subscription(tag, dest)):
            publish_raw(site.broker_url(), [msg, marker])
            expected = 2 if reported else 1
            wait_for(
                lambda: len([r for r in tap.reports if r.notice.path.startswith(tag)]) >= expected,
                what="the reports",
            )
            wait_for(lambda: _queue_counts(site, f"sub_{tag}")[0] == 0, what="an empty queue")
    finally:
        tap.stop()
    after = sorted(p for p in outer.rglob("*") if not str(p).startswith(str(dest) + "/"))
    assert after == before
    assert not (outer / "escape.txt").exists() and not (tmp_path / "escape.txt").exists()
    codes = sorted(r.code for r in tap.reports if r.notice.path.startswith(tag))
    assert codes == ([201, 417] if reported else [201])
    assert not any(p.is_symlink() for p in dest.rglob("*"))


def test_a_file_url_is_not_fetched_without_base_url_accept(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("pol")
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"top secret\n")
    data = secret.read_bytes()
    msg = _raw(tag, f"{now_timestamp()} file: {secret}".encode(), _good_headers(data))
    # the topic of an absolute path does not carry our tag: bind on it explicitly
    msg = WireMessage(msg.exchange, f"v02.post.{tag}", msg.body, msg.headers)
    dest = tmp_path / "dest"
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, site.mirror_subscription(tag, dest)):
            publish_raw(site.broker_url(), [msg])
            wait_for(lambda: any(r.code == 503 for r in tap.reports), what="503")
    finally:
        tap.stop()
    assert not any(p.is_file() for p in dest.rglob("*")) if dest.exists() else True


@pytest.mark.parametrize("prefix", ["status/404", "corrupt", "truncate"])
def test_origin_failures_are_reported_499_and_nothing_is_placed(  # type: ignore[no-untyped-def]
    site, broken_http, tmp_path, prefix
):
    tag = unique("fail")
    content = os.urandom(20000)
    target = broken_http.root / tag / "f.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(content)
    # the server answers badly for its prefix; the notice announces the true content
    base = f"{broken_http.base_url}/{prefix}"
    msg = _raw(tag, f"{now_timestamp()} {base} /{tag}/f.bin".encode(), _good_headers(content))
    dest = tmp_path / "dest"
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, site.mirror_subscription(tag, dest, "attempts 2\n")):
            publish_raw(site.broker_url(), [msg])
            wait_for(lambda: any(r.code == 499 for r in tap.about("f.bin")), what="499")
    finally:
        tap.stop()
    assert not (dest / "f.bin").exists()
    assert _leftovers(dest) == [] if dest.exists() else True


def test_large_whole_files_take_the_direct_path_and_arrive_identical(site, nginx, tmp_path):  # type: ignore[no-untyped-def]
    tag = unique("whole")
    src = nginx.root / tag
    # over sarra.localfs.streaming.DIRECT_MIN, one with an unaligned tail; posted unsplit
    make_files(src, ["a.bin"], size=3 * 1024 * 1024)
    make_files(src, ["b.bin"], size=2 * 1024 * 1024 + 12345)
    dest = tmp_path / "dest"
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, site.mirror_subscription(tag, dest)):
            assert post(site, nginx.base_url, nginx.root, [src], ("blocksize", "1")) == 0
            wait_for(lambda: len(tap.about(".bin")) >= 2, what="a report per file")
    finally:
        tap.stop()
    assert {r.code for r in tap.about(".bin")} == {201}
    assert md5_tree(dest) == md5_tree(src)
    assert _leftovers(dest) == []


def test_with_bind_queue_off_the_queue_gets_nothing_until_an_administrator_binds_it(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path
):
    import dataclasses
    import time

    from sarra.broker.session import BrokerSession
    from sarra.components.common import queue_spec
    from sarra.components.runner import default_bindings
    from sarra.components.subscribe import SubscribeComponent
    from tests.integration.flowkit import site_env

    tag = unique("nobind")
    src = nginx.root / tag
    make_files(src, ["first.txt"])
    dest = tmp_path / "dest"
    name = site.mirror_subscription(tag, dest, "bind_queue off\n")
    with site_env(site):
        cfg = site.load("subscribe", name)
    assert cfg.bind_queue is False
    admin = BrokerSession(site.broker_url(), name="admin")
    admin.connect()
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            assert post(site, nginx.base_url, nginx.root, [src]) == 0  # confirmed: routed
            time.sleep(3)
            assert not dest.exists() and tap.about("first.txt") == []
            # the queue exists, empty: the notice had nowhere to go
            queue = SubscribeComponent().queue_name(cfg)
            assert admin.queue_counts(queue)[0] == 0
            # the administrator binds it as the configuration asked
            spec = queue_spec(cfg, queue, default_bindings(cfg))
            assert spec.bind is False and spec.bindings == (("xs_guest", f"v02.post.{tag}.#"),)
            admin.declare_queue(dataclasses.replace(spec, bind=True))
            make_files(src, ["second.txt"])
            assert post(site, nginx.base_url, nginx.root, [src / "second.txt"]) == 0
            wait_for(lambda: len(tap.about("second.txt")) >= 1, what="report of second.txt")
    finally:
        tap.stop()
        admin.close()
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == ["second.txt"]
    assert tap.about("first.txt") == []
