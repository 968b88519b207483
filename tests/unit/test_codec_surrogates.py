"""Text that is not valid UTF-8 (a lone surrogate: a file name decoded with
``surrogateescape``, a JSON ``\\ud800`` escape, an AMQP string py-amqp decoded with
``surrogatepass``) is refused as MalformedMessage by every encoder and decoder, never a
UnicodeEncodeError; and the poster's log line names the skipped file safely."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from sarra.codec import fields, paths, v02, v03
from sarra.codec.build import build_notice
from sarra.errors import MalformedMessage
from sarra.flow.posting import unannounceable
from sarra.integrity.sums import name_sum
from sarra.notice import Checksum, Notice, PartSpec

#: what os.listdir gives for the bytes b"bad\xff.txt" (surrogateescape)
BAD = os.fsdecode(b"bad\xff.txt")
D = "d,6f5902ac237024bdd0c176cb93063dc4"
HEADERS = {"parts": "1,12,1,0,0", "sum": D}
STAMP = "20261123071900.0711872578"


def good_notice(path: str = "/a/b/hello.txt") -> Notice:
    return v02.make_notice(
        exchange="xs_guest",
        topic_prefix="v02.post",
        pubtime=STAMP,
        base_url="sftp://user@host",
        path=path,
        checksum=Checksum("d", D[2:]),
        parts=PartSpec("1", 12, 1, 0, 0),
    )


def test_the_crash_case_a_surrogate_file_name_is_refused_by_make_notice() -> None:
    assert BAD == "bad\udcff.txt"
    with pytest.raises(MalformedMessage, match=r"relPath .*not valid UTF-8"):
        good_notice(f"/tmp/surr/{BAD}")


def test_a_surrogate_directory_name_is_refused_not_a_topic_crash() -> None:
    with pytest.raises(MalformedMessage, match="not valid UTF-8"):
        good_notice(f"/tmp/{BAD}/good.txt")
    with pytest.raises(MalformedMessage, match=r"topic .*not valid UTF-8"):
        paths.cut_topic(f"v02.post.{BAD}")


@pytest.mark.parametrize("where", ["rel_path", "base_url", "header", "header_name", "topic"])
def test_build_notice_refuses_a_lone_surrogate_in_any_field(where: str) -> None:
    kw: dict[str, object] = {
        "exchange": "xs",
        "topic": "v02.post.a",
        "pubtime": STAMP,
        "base_url": "http://host",
        "rel_path": "/a/f.txt",
        "headers": dict(HEADERS),
        "post": True,
    }
    if where == "rel_path":
        kw["rel_path"] = f"/a/{BAD}"
    elif where == "base_url":
        kw["base_url"] = "http://host/\udcff"
    elif where == "header":
        kw["headers"] = {**HEADERS, "from_cluster": "x\ud800"}
    elif where == "header_name":
        kw["headers"] = {**HEADERS, "n\udcff": "x"}
    else:
        kw["topic"] = "v02.post.\udcff"
    with pytest.raises(MalformedMessage, match="not valid UTF-8"):
        build_notice(**kw)  # type: ignore[arg-type]


def forged(**changes: object) -> Notice:
    """A notice whose fields were changed after validation (what a plugin may do)."""
    return dataclasses.replace(good_notice(), **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("post_format", ["v02", "v03"])
@pytest.mark.parametrize(
    "change",
    [
        {"rel_path": f"/a/{BAD}"},
        {"base_url": "sftp://user@h\udcffst"},
        {"pubtime": "2026\udcff"},
        {"topic": "v02.post.\udcff"},  # v03 rebuilds a v02 topic from relPath ...
        {"topic": "v03.\udcff"},  # ... and keeps any other
    ],
)
def test_both_encoders_refuse_a_surrogate_with_malformed_message(
    post_format: str, change: dict[str, object]
) -> None:
    notice = forged(**change)
    encode = v02.to_wire if post_format == "v02" else v03.to_wire
    if post_format == "v03" and change.get("topic", "").startswith("v02."):  # type: ignore[union-attr]
        assert json.loads(encode(notice).body)["relPath"] == "/a/b/hello.txt"
        return
    with pytest.raises(MalformedMessage, match="UTF-8"):
        encode(notice)


@pytest.mark.parametrize("name,value", [("from_cluster", "c\udcffd"), ("x\ud800", "v")])
def test_check_emittable_refuses_a_surrogate_header(name: str, value: str) -> None:
    with pytest.raises(MalformedMessage, match="not valid UTF-8"):
        fields.check_emittable({name: value}, 255)
    notice = forged(headers={**good_notice().headers, name: value})
    with pytest.raises(MalformedMessage, match="UTF-8"):
        v02.to_wire(notice)
    with pytest.raises(MalformedMessage, match="UTF-8"):
        v03.to_wire(notice)


def test_valid_non_ascii_text_still_encodes() -> None:
    notice = good_notice("/a/été/ünï 😀.txt")
    wire = v02.to_wire(notice)
    assert "ünï%20😀.txt".encode() in wire.body
    fields.check_emittable({"from_cluster": "crème"}, 255)
    assert json.loads(v03.to_wire(notice).body)["relPath"] == "/a/été/ünï 😀.txt"  # sr3: decoded


def v03_body(rel: str) -> str:
    return json.dumps(
        {
            "pubTime": "20261123T071900.0711872578",
            "baseUrl": "http://host",
            "relPath": rel,
            "identity": {"method": "md5", "value": "b1kCrCNwJL3QwXbLkwY9xA=="},
            "size": 12,
        }
    )


@pytest.mark.parametrize("escape", ["\\ud800", "\\udcff", "\\uDFFF", "\\udbff"])
def test_a_v03_lone_surrogate_escape_is_malformed(escape: str) -> None:
    body = v03_body("/a/f.txt").replace("f.txt", f"f{escape}.txt")
    with pytest.raises(MalformedMessage, match="surrogate"):
        v03.decode("xs", "v03.a", body, {})


def test_a_v03_lone_surrogate_in_an_extra_field_is_malformed() -> None:
    obj = json.loads(v03_body("/a/f.txt"))
    obj["extra"] = {"deep": ["x\\ud800"]}
    body = json.dumps(obj).replace("\\\\ud800", "\\ud800")
    assert "\\ud800" in body
    with pytest.raises(MalformedMessage, match="surrogate"):
        v03.decode("xs", "v03.a", body, {})


def test_a_v03_escaped_surrogate_pair_is_a_character_and_accepted() -> None:
    body = v03_body("/a/f.txt").replace("f.txt", "f\\ud83d\\ude00.txt")
    notice = v03.decode("xs", "v03.a", body, {})
    assert isinstance(notice, Notice)
    assert notice.path == "a/f😀.txt"
    v02.to_wire(notice)  # and it goes out again


def test_a_v02_header_or_topic_with_a_surrogate_from_amqp_is_malformed() -> None:
    body = f"{STAMP} sftp://user@host /a/b/hello.txt".encode()
    # py-amqp decodes AMQP strings with surrogatepass: b"\xed\xb3\xbf" arrives as "\udcff"
    with pytest.raises(MalformedMessage, match="UTF-8"):
        v02.decode("xs", "v02.post.a.b", body, {**HEADERS, "from_cluster": "c\udcff"})
    with pytest.raises(MalformedMessage, match="UTF-8"):
        v02.decode("xs", "v02.post.a.\udcff", body, HEADERS)


def test_a_file_op_notice_with_a_surrogate_is_refused_too() -> None:
    with pytest.raises(MalformedMessage, match="not valid UTF-8"):
        v02.make_notice(
            exchange="xs",
            topic_prefix="v02.post",
            pubtime=STAMP,
            base_url="file:",
            path=f"/tmp/{BAD}",
            checksum=name_sum("R", f"/tmp/{BAD}"),
            parts=None,
        )


def test_shown_gives_the_bytes_of_a_bad_name_and_leaves_good_text_alone() -> None:
    assert fields.shown("crème") == "crème"
    assert fields.shown(BAD) == "b'bad\\xff.txt'"
    assert fields.shown("x\ud800") == "'x\\ud800'"  # no byte explains it: its ASCII repr
    assert fields.has_lone_surrogate(BAD)
    assert not fields.has_lone_surrogate("😀")


def test_the_poster_line_names_the_directory_and_the_bytes() -> None:
    line = unannounceable(f"/tmp/surr/{BAD}")
    assert line == (
        "in /tmp/surr: b'bad\\xff.txt' skipped: file name is not valid UTF-8: cannot be announced"
    )
    line.encode("utf-8")  # the line itself can be logged anywhere
    bad_dir = unannounceable(f"/tmp/{BAD}/good.txt")
    assert "directory name is not valid UTF-8" in bad_dir
    assert "b'/tmp/bad\\xff.txt'" in bad_dir


def test_an_ftp_listing_keeps_a_bad_name_as_surrogates_for_the_poll_to_skip() -> None:
    from sarra.transfer.ftp import _entries, _mlsd_entry

    lines = [b"type=file;size=3;modify=20261123071900; bad\xff.txt", b"type=file;size=1; ok.txt"]
    found = _entries(lines, _mlsd_entry, "ftp://h/d")
    assert [e.name for e in found] == [BAD, "ok.txt"]
    assert fields.has_lone_surrogate(found[0].name) and found[0].size == 3


def test_the_poll_line_names_a_skipped_listed_name_by_its_bytes() -> None:
    from sarra.flow.poll import unlisted

    assert unlisted("sftp://h", "/d", BAD) == (
        "in sftp://h/d: b'bad\\xff.txt' skipped: file name is not valid UTF-8: cannot be announced"
    )
    assert "directory name" in unlisted("sftp://h", "", BAD, "directory")
