"""sr_post's data notices built from a checked template (sarra.codec.build.PostTemplate) are
exactly those the general path (sarra.codec.v02.make_notice) builds, and are refused where it
refuses them; sr_post's file notices and their wire bytes do not depend on which path made them.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from sarra.codec import v02
from sarra.codec.build import PostTemplate
from sarra.errors import MalformedMessage
from sarra.flow import posting
from sarra.flow.posting import NoticeBuilder, PostSettings
from sarra.notice import Checksum, Notice
from sarra.parts.arithmetic import split

PUBTIME = "20261208001600.123456789"
TIMES = ("20261207230000.000000001", "20261207230001.999999999")
MD5 = Checksum("d", "0123456789abcdef0123456789abcdef")
SHA = Checksum("s", "ab" * 64)

NAMES = [
    "/a.txt",
    "/dir/sub/f.dat",
    "/with space/and #hash.txt",
    "/literal%20and%23.txt",
    "/dotted.dir/x.y.z",
    "/é/ü ñ.bin",
    "/" + "d" * 200 + "/" + "e" * 60 + "/long.txt",  # the topic is cut
    "/tmp/abs/path/without/base",
    "//double//slash",
]
CONSTANTS = [
    {},
    {"to_clusters": "ddsr", "from_cluster": "pump", "source": "me"},
    {"to_clusters": "ddsr", "rename": "/new/name", "x-user": "é value"},
    {"zz": "last", "to_clusters": "a", "aa": "first"},
]


def _general(path: str, headers: dict[str, str], times, mode, checksum, parts, **shared) -> Notice:
    h = dict(headers)
    if times is not None:
        h["mtime"], h["atime"] = times
    if mode is not None:
        h["mode"] = mode
    return v02.make_notice(
        pubtime=PUBTIME, path=path, checksum=checksum, parts=parts, headers=h, **shared
    )


def _same(a: Notice, b: Notice) -> None:
    assert a == b
    assert list(a.headers.items()) == list(b.headers.items())  # the order is on the wire
    assert v02.to_wire(a) == v02.to_wire(b)


@pytest.mark.parametrize("override", [None, "", "chosen.topic"])
def test_template_notices_equal_the_general_path(override: str | None) -> None:
    cases = itertools.product(
        NAMES,
        CONSTANTS,
        [None, TIMES],
        [None, "644", "4755"],
        [MD5, SHA],
        [split(0, 0)[0], split(10, 0)[0], *split(2500, 1000)],
    )
    checked = 0
    for path, headers, times, mode, checksum, parts in cases:
        shared = {
            "exchange": "xs_u",
            "topic_prefix": "v02.post",
            "base_url": "http://h:8080/base/",
            "topic_override": override,
        }
        template = PostTemplate(headers=headers, **shared)
        made = template.data_notice(path, PUBTIME, times, mode, checksum, parts)
        _same(made, _general(path, headers, times, mode, checksum, parts, **shared))
        checked += 1
    assert checked == len(NAMES) * len(CONSTANTS) * 2 * 3 * 2 * 5


@pytest.mark.parametrize("path", ["/bad\nname", "/bad\rname", "/nul\0name", "/", "/\udcffraw"])
def test_template_refuses_what_the_general_path_refuses(path: str) -> None:
    shared = {"exchange": "xs_u", "topic_prefix": "v02.post", "base_url": "http://h/"}
    parts = split(5, 0)[0]
    with pytest.raises(MalformedMessage):
        _general(path, {}, None, None, MD5, parts, topic_override=None, **shared)
    template = PostTemplate(headers={}, topic_override=None, **shared)
    with pytest.raises(MalformedMessage):
        template.data_notice(path, PUBTIME, None, None, MD5, parts)


@pytest.mark.parametrize(
    ("base_url", "headers"),
    [
        ("no-scheme", {}),
        ("http://h:99999/", {}),
        ("http://user:secret@h/", {}),
        ("http://h/", {"mtime": "20261208001600.1"}),  # set per file: the general path's
        ("http://h/", {"sum": "d,00"}),
        ("http://h/", {"identity": "x"}),  # a v03 name
        ("http://h/", {"x-bad": "\udcff"}),
    ],
)
def test_shared_fields_the_template_does_not_take(base_url: str, headers: dict) -> None:
    with pytest.raises(MalformedMessage):
        PostTemplate(
            exchange="xs_u", topic_prefix="v02.post", base_url=base_url, headers=headers,
            topic_override=None,
        )  # fmt: skip


def test_template_refuses_sums_and_parts_outside_its_contract() -> None:
    template = PostTemplate(
        exchange="x", topic_prefix="v02.post", base_url="http://h/", headers={},
        topic_override=None,
    )  # fmt: skip
    with pytest.raises(ValueError, match="contract"):
        template.data_notice("/a", PUBTIME, None, None, Checksum("n", "00"), split(1, 0)[0])


def _settings(tmp_path: Path, **changes) -> PostSettings:
    base = PostSettings(
        exchange="xs_u", topic_prefix="v02.post", base_url="http://h/", base_dir=str(tmp_path),
        sum="d", blocksize=0, headers=(("to_clusters", "c"), ("source", "s"), ("x-k", "v")),
        rename=None, preserve_time=True, preserve_mode=True, follow_symlinks=False,
        randomize=False, topic_override=None, header_value_max=252, persistent=True,
        message_ttl_ms=None, exchange_split=0,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"sum": "s", "blocksize": 1000},
        {"preserve_time": False, "preserve_mode": False, "rename": "/r"},
        {"topic_override": "t.u"},
        {"post_format": "v03", "blocksize": 1000},
    ],
)
def test_file_notices_do_not_depend_on_the_path_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, changes: dict
) -> None:
    monkeypatch.setattr(posting, "now_timestamp", lambda: PUBTIME)
    files = []
    for i, size in enumerate([0, 1, 999, 1000, 2500, 70_000]):
        f = tmp_path / f"d {i % 2}" / f"f#{i}.bin"
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
        f.read_bytes()  # the first read may move atime (relatime); the builders' reads do not
        files.append(str(f))
    fast = NoticeBuilder(_settings(tmp_path, **changes))
    general = NoticeBuilder(_settings(tmp_path, **changes))
    assert fast._template is not None
    general._template = None
    for f in files:
        a, b = fast.file_notices(f), general.file_notices(f)
        assert len(a) == len(b) >= 1
        for x, y in zip(a, b, strict=True):
            assert x == y
            assert list(x.headers.items()) == list(y.headers.items())
            assert fast.wire(x) == general.wire(y)


def test_a_constant_header_named_like_a_per_file_one_takes_the_general_path(
    tmp_path: Path,
) -> None:
    (tmp_path / "f").write_bytes(b"data")
    settings = _settings(tmp_path, headers=(("mode", "not octal"),), preserve_mode=False)
    builder = NoticeBuilder(settings)
    assert builder._template is None
    with pytest.raises(MalformedMessage, match="octal"):
        builder.file_notices(str(tmp_path / "f"))
