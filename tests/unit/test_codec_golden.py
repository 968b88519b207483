"""Golden messages GM-1..GM-15 of spec section 10: parsed, re-emitted and rebuilt."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pytest

from sarra.codec import v02
from sarra.integrity.sums import name_sum
from sarra.notice import Checksum, Notice, PartSpec, Report, WireMessage
from sarra.parts.arithmetic import part_suffix, split

HELLO_D = "d,6f5902ac237024bdd0c176cb93063dc4"
BIG_SUMS = (
    "d,8f293a2f6c19b345152f7a49bb4c643c",
    "d,b66f7bda0d9b13d834b1b87ede0a33bb",
    "d,d753f03ae9ab80f0aa595b781db2904b",
)
L_HELLO = (
    "L,acec329f80cc50edbab0dfbc2283d427ac673f84e6d8b949101791867b9b7771"
    "a53d2ffb1f8386189227beed4395b9a78171a1349700e2885c70ae14358d72ff"
)
R_F1 = (
    "R,fbcf201977e5cf3c4e6086d0bf05b221008c450df4eb1795bbd615b1b5ba9939"
    "ee6a860a4ae6dfe3c15625cca3f687a642024f67a3d37f4f0feea47f10b29fd1"
)
R_F2 = (
    "R,8b0215cb92afafbf1577d8eac6696d1edb1f0149ffdc1f23bfd4ee07da21f5a5"
    "030bafd462e86e7206e251c2779f90c1800d2ef75f56cbf5d6ad4857d98771c5"
)
S_HELLO = (
    "s,db3974a97f2407b7cae1ae637c0030687a11913274d578492558e39c16c017de"
    "84eacdc8c62fe34ee4e12b4b1428817f09b6a2760c3f8a664ceae94d2434a593"
)
S14 = (
    "s,67dad569eefc986a3b2424f5516d5a0284bb53d7b52d75f5ed881a6830a95765"
    "ccc82bc48752fb693422579f11dc9a400561ec1885af9eeef703dbbd312d4fd0",
    "s,5b39b5a4c5e701f1ea2226366e67f398079daf6a12a10b775cbfd6d58bdd5a00"
    "b6ba37042612947ffdbcb81c201415e0ebc1eba1d9c65cfa184871e9f369a897",
    "s,a6f6a9695b28932824e65e3792aeaf10eb76f48166616983019d549b8fbc2729"
    "1389a228a6fe79de5a03c89fdc64c0abcedc6e02f4159b43729988a2b86cc515",
)
T1 = "20261123071847.471170187"
T2 = "20261123071847.617987394"
GM3_H = {
    "to_clusters": "127.0.0.1",
    "mtime": "20261123083216.659139156",
    "atime": "20261123083216.659139156",
    "mode": "644",
    "parts": "1,2,1,0,0",
    "sum": "d,c3be117041a113540deb0ff532b19543",
}
GM10_H = {**GM3_H, "parts": "1,4,1,0,0", "sum": "d,facdca2fa68795a4937fd54f654c3f9d"}
GM4_BASE = {"to_clusters": "127.0.0.1", "from_cluster": "testcluster", "mtime": T1, "atime": T2}
REPORT_FILL = {"source": "guest", "from_cluster": "127.0.0.1"}


@dataclass(frozen=True)
class Golden:
    """One captured message: exchange, routing key, headers (wire order), body."""

    name: str
    exchange: str
    key: str
    headers: dict[str, str]
    body: str
    receive_only: bool = False

    @property
    def raw(self) -> bytes:
        return self.body.encode()


def _big(n: int, total: int, sums: tuple[str, ...] = BIG_SUMS) -> dict[str, str]:
    rem = total % 1048576
    cnt = -(-total // 1048576)
    return {**GM4_BASE, "mode": "644", "parts": f"i,1048576,{cnt},{rem},{n}", "sum": sums[n]}


GM4_B = "20261123082721.89293766 sftp://user@host /a/b/big.bin"
GM5_H = {"to_clusters": "127.0.0.1", "from_cluster": "testcluster"}
GM5_T = {"mtime": "20261123071847", "atime": "20261123071847", "mode": "644"}
GM6_H = {**GM4_BASE, "atime": "20261123082658.795141459", "mode": "644", "parts": "1,12,1,0,0"}
GM11_IN_H = {
    "to_clusters": "127.0.0.1",
    "from_cluster": "faraway",
    "source": "evil",
    "mtime": T1,
    "atime": "20261123082721.891141176",
    "mode": "644",
}
GM14_H = {
    "from_cluster": "testcluster",
    "source": "guest",
    "mode": "644",
    "mtime": T1,
    "atime": "20261123082653.819141388",
}
GM14_PARTS = ("i,1048576,3,1048576,0", "i,1048576,3,1048576,1", "i,1048576,3,524288,2")
GM2_H = {"mtime": T1, "atime": "20261123082658.766844988", "mode": "644"}
GM2_H |= {"parts": "1,1,1,0,0", "sum": "d,9dd4e461268c8034f5c8564e155c67a6"}

GOLDEN: list[Golden] = [
    Golden(
        "GM-1",
        "xs_guest",
        "v02.post.a.b",
        {"mtime": T1, "atime": T2, "mode": "644", "parts": "1,12,1,0,0", "sum": HELLO_D},
        "20261123071900.0711872578 sftp://user@host/ /a/b/hello.txt",
    ),
    Golden(
        "GM-2",
        "xs_guest",
        "v02.post.a.b",
        GM2_H,
        "20261123082716.0793294907 sftp://user@host/ /a/b/sp%20ace%23hash.txt",
    ),
    Golden(
        "GM-3",
        "xs_guest",
        "v02.post.d%20ir%23x",
        GM3_H,
        "20261123083221.952717781 http://127.0.0.1:18190 /d%20ir%23x/q.txt",
    ),
    *(Golden(f"GM-4.{n}", "xs_guest", "v02.post.a.b", _big(n, 2621440), GM4_B) for n in range(3)),
    *(
        Golden(
            f"GM-5.{n}",
            "xs_guest",
            "v02.post.a.b",
            {**GM5_H, **GM5_T, "parts": f"i,1048576,2,0,{n}", "sum": BIG_SUMS[n]},
            "20261123082729.24379611 sftp://user@host /a/b/exact.bin",
        )
        for n in range(2)
    ),
    *(
        Golden(
            f"GM-6.{s[0]}",
            "xs_guest",
            "v02.post.a.b",
            {**GM6_H, "sum": s},
            "20261123082728.628021479 sftp://user@host /a/b/hello.txt",
        )
        for s in (S_HELLO, "n,2e54144ba487ae25d03a3caba233da71", "0,3414", "z,d")
    ),
    Golden(
        "GM-7",
        "xs_guest",
        "v02.post.a.b",
        {"to_clusters": "127.0.0.1", "from_cluster": "testcluster", "link": "hello.txt"}
        | {"sum": L_HELLO},
        "20261123082721.902762651 sftp://user@host /a/b/link.txt",
    ),
    Golden(
        "GM-8.old",
        "xs_guest",
        "v02.post.wdir",
        {"to_clusters": "127.0.0.1", "sum": R_F1, "newname": "/wdir/f2.txt"},
        "20261123082854.0312981606 sftp://user@host /wdir/f1.txt",
    ),
    Golden(
        "GM-8.new",
        "xs_guest",
        "v02.post.wdir",
        {"to_clusters": "127.0.0.1", "mtime": "20261123082850.891140461"}
        | {"atime": "20261123082851.0231406689", "mode": "644", "parts": "1,12,1,0,0"}
        | {"sum": HELLO_D, "oldname": "/wdir/f1.txt"},
        "20261123082854.0334303379 sftp://user@host /wdir/f2.txt",
    ),
    Golden(
        "GM-9",
        "xs_guest",
        "v02.post.wdir",
        {"to_clusters": "127.0.0.1", "sum": R_F2},
        "20261123082900.0430729389 sftp://user@host /wdir/f2.txt",
    ),
    Golden(
        "GM-10",
        "xs_guest",
        "v02.post",
        GM10_H,
        "20261123083221.94990468 http://127.0.0.1:18190 /top.txt",
    ),
    Golden(
        "GM-11.in",
        "xs_guest",
        "v02.post.a.b",
        {**GM11_IN_H, "parts": "i,1048576,3,524288,0", "sum": BIG_SUMS[0]},
        "20261123082921.936393738 http://127.0.0.1:18190 /a/b/big.bin",
    ),
    *(
        Golden(
            f"GM-11.out.{n}",
            "xpublic",
            "v02.post.a.b",
            {"to_clusters": "127.0.0.1", "source": "guest", "mtime": T1}
            | {"atime": "20261123082721.891141176", "mode": "644"}
            | {"parts": f"p,1048576,3,524288,{n}", "sum": BIG_SUMS[n], "from_cluster": "pumpA"},
            "20261123082921.936393738 http://127.0.0.1:18191 "
            f"/a/b/big.bin.1048576.3.524288.{n}.d.Part",
        )
        for n in range(3)
    ),
    Golden(
        "GM-12",
        "xs_guest",
        "v02.report.a.b",
        {"to_clusters": "127.0.0.1", "mtime": T1, "atime": "20261123082658.795141459"}
        | {"mode": "644", "parts": "1,12,1,0,0", "sum": HELLO_D, **REPORT_FILL}
        | {"message": "Downloaded"},
        "20261123082751.458331108 http://127.0.0.1:18190 /a/b/hello.txt"
        " 201 localhost guest 0.001729",
    ),
    Golden(
        "GM-13a",
        "xs_guest",
        "v02.post",
        {**GM10_H, **REPORT_FILL, "message": "Downloaded"},
        "20261123083221.94990468 http://127.0.0.1:18190 /top.txt 201 localhost guest 0.004481",
        receive_only=True,
    ),
    Golden(
        "GM-13b",
        "xs_guest",
        "v02.report.d ir#x",
        {**GM3_H, **REPORT_FILL, "message": "http download failed"},
        "20261123083221.952717781 http://127.0.0.1:18190 /d ir#x/q.txt"
        " 499 localhost guest 0.000813",
        receive_only=True,
    ),
    *(
        Golden(
            f"GM-14.{n}",
            "xs_guest",
            "v02.post.a.b",
            {**GM14_H, "parts": GM14_PARTS[n], "sum": S14[n]},
            "20261123083004.762742996 sftp://user@host a/b/big.bin",
            receive_only=True,
        )
        for n in range(3)
    ),
    Golden(
        "GM-15",
        "xpublic",
        "v02.post.a.b",
        {"to_clusters": "ALL", "from_cluster": "testcluster", "mtime": T1, "atime": T2}
        | {"mode": "644", "x-custom": "kept?", "source": "guest", "parts": "1,1,1,0,0"}
        | {"sum": "d,9dd4e461268c8034f5c8564e155c67a6"},
        "20261123082716.0793294907 sftp://user@host a/b/sp%20ace%23hash.txt",
        receive_only=True,
    ),
]
BY_NAME = {g.name: g for g in GOLDEN}
POSTS = [g for g in GOLDEN if g.name not in ("GM-12", "GM-13a", "GM-13b")]
REPORTS = [g for g in GOLDEN if g.name in ("GM-12", "GM-13a", "GM-13b")]


def decode(g: Golden) -> Notice | Report:
    x = v02.decode(g.exchange, g.key, g.raw, g.headers, "text/plain")
    assert isinstance(x, Notice | Report)
    return x


def assert_wire(msg: WireMessage, g: Golden) -> None:
    assert (msg.exchange, msg.routing_key, msg.body) == (g.exchange, g.key, g.raw)
    assert dict(msg.headers) == g.headers
    assert msg.content_type == "text/plain"
    assert msg.delivery_mode == 2
    assert msg.expiration is None


@pytest.mark.parametrize("g", POSTS, ids=lambda g: g.name)
def test_every_golden_post_decodes_to_a_notice_with_its_fields(g: Golden) -> None:
    n = decode(g)
    assert isinstance(n, Notice)
    pubtime, base_url, rel_path = g.body.split(" ")
    assert (n.exchange, n.topic, n.pubtime, n.base_url, n.rel_path) == (
        g.exchange,
        g.key,
        pubtime,
        base_url,
        rel_path,
    )
    assert list(n.headers.items()) == list(g.headers.items())
    assert n.checksum.wire() == g.headers["sum"]


@pytest.mark.parametrize("g", POSTS, ids=lambda g: g.name)
def test_every_golden_post_is_re_emitted_byte_identical(g: Golden) -> None:
    n = decode(g)
    assert isinstance(n, Notice)
    assert_wire(v02.to_wire(n), g)


@pytest.mark.parametrize("g", REPORTS, ids=lambda g: g.name)
def test_every_golden_report_decodes_to_a_report(g: Golden) -> None:
    r = decode(g)
    assert isinstance(r, Report)
    fields = g.body.split(" ")
    assert r.code == int(fields[-4])
    assert (r.host, r.user, r.elapsed) == ("localhost", "guest", float(fields[-1]))
    assert r.message == g.headers["message"]
    assert "message" not in r.notice.headers


def test_the_golden_report_is_re_emitted_byte_identical() -> None:
    g = BY_NAME["GM-12"]
    r = decode(g)
    assert isinstance(r, Report)
    assert_wire(v02.report_to_wire(r, "xs_guest"), g)


def test_a_root_level_report_on_the_post_topic_is_a_report_and_re_emitted_on_report() -> None:
    r = decode(BY_NAME["GM-13a"])
    assert isinstance(r, Report)
    assert r.code == 201
    assert r.notice.path == "top.txt"
    assert v02.report_to_wire(r, "xs_guest").routing_key == "v02.report"


def test_a_decoded_report_relpath_is_escaped_back_into_wire_form() -> None:
    r = decode(BY_NAME["GM-13b"])
    assert isinstance(r, Report)
    assert r.notice.rel_path == "/d%20ir%23x/q.txt"
    assert r.notice.path == "d ir#x/q.txt"
    assert r.code == 499
    wire = v02.report_to_wire(r, "xs_guest")
    assert wire.routing_key == "v02.report.d%20ir%23x"
    assert wire.body.split(b" ")[2] == b"/d%20ir%23x/q.txt"


def test_the_facts_after_the_golden_block_hold() -> None:
    gm1 = decode(BY_NAME["GM-1"])
    assert isinstance(gm1, Notice)
    assert gm1.url == "sftp://user@host/a/b/hello.txt"
    gm5 = decode(BY_NAME["GM-5.1"])
    assert isinstance(gm5, Notice) and gm5.parts is not None
    assert (gm5.parts.length, gm5.parts.file_size) == (1048576, 2097152)
    specs = []
    for n in range(3):
        gm14 = decode(BY_NAME[f"GM-14.{n}"])
        assert isinstance(gm14, Notice) and gm14.parts is not None
        assert gm14.path == "a/b/big.bin"
        specs.append(gm14.parts)
    assert [p.offset for p in specs] == [0, 1048576, 2097152]
    assert [p.length for p in specs] == [1048576, 1048576, 524288]
    assert specs[-1].file_size == 2621440
    gm15 = decode(BY_NAME["GM-15"])
    assert isinstance(gm15, Notice)
    assert gm15.path == "a/b/sp ace#hash.txt"
    assert gm15.header("x-custom") == "kept?"
    gm4 = decode(BY_NAME["GM-4.2"])
    assert isinstance(gm4, Notice) and gm4.parts is not None
    assert (gm4.parts.offset, gm4.parts.length) == (2097152, 524288)


def test_a_link_notice_has_no_parts_and_keeps_its_target() -> None:
    n = decode(BY_NAME["GM-7"])
    assert isinstance(n, Notice)
    assert n.parts is None and n.checksum.file_op
    assert n.header("link") == "hello.txt"


def test_the_bare_n_and_0_sums_of_sr2_parts_are_accepted() -> None:
    g = BY_NAME["GM-4.1"]
    for bare in ("n", "0"):
        n = v02.decode(g.exchange, g.key, g.raw, {**g.headers, "sum": bare})
        assert isinstance(n, Notice)
        assert n.checksum == Checksum(bare, "")
        assert v02.to_wire(n).headers["sum"] == bare


# --- our posters and relays rebuild the goldens ---------------------------------------


def _post(g: Golden, base_url: str, path: str, **kw: object) -> Notice:
    headers = {k: v for k, v in g.headers.items() if k not in ("sum", "parts")}
    return v02.make_notice(
        exchange=g.exchange,
        topic_prefix="v02.post",
        pubtime=g.body.split(" ")[0],
        base_url=base_url,
        path=path,
        headers=headers,
        **kw,  # type: ignore[arg-type]
    )


def test_make_notice_rebuilds_the_escaped_golden_post() -> None:
    g = BY_NAME["GM-3"]
    md5 = hashlib.md5(b"q\n").hexdigest()
    (part,) = split(2, 209715200)
    n = _post(g, "http://127.0.0.1:18190/", "d ir#x/q.txt", checksum=Checksum("d", md5), parts=part)
    assert_wire(v02.to_wire(n), g)


def test_make_notice_rebuilds_the_golden_block_posts() -> None:
    for n, part in enumerate(split(2621440, 1048576)):
        g = BY_NAME[f"GM-4.{n}"]
        letter, value = BIG_SUMS[n].split(",")
        notice = _post(
            g, "sftp://user@host", "/a/b/big.bin", checksum=Checksum(letter, value), parts=part
        )
        assert_wire(v02.to_wire(notice), g)


def test_make_notice_rebuilds_the_root_level_post() -> None:
    g = BY_NAME["GM-10"]
    letter, value = g.headers["sum"].split(",")
    n = _post(
        g,
        "http://127.0.0.1:18190",
        "top.txt",
        checksum=Checksum(letter, value),
        parts=split(4, 0)[0],
    )
    assert_wire(v02.to_wire(n), g)


def test_make_notice_rebuilds_the_link_and_the_rename_pair() -> None:
    g7 = BY_NAME["GM-7"]
    n = _post(
        g7, "sftp://user@host", "/a/b/link.txt", checksum=name_sum("L", "hello.txt"), parts=None
    )
    assert_wire(v02.to_wire(n), g7)
    old = BY_NAME["GM-8.old"]
    n = _post(
        old, "sftp://user@host", "/wdir/f1.txt", checksum=name_sum("R", "/wdir/f1.txt"), parts=None
    )
    assert_wire(v02.to_wire(n), old)
    g9 = BY_NAME["GM-9"]
    n = _post(
        g9, "sftp://user@host", "/wdir/f2.txt", checksum=name_sum("R", "wdir/f2.txt"), parts=None
    )
    assert_wire(v02.to_wire(n), g9)


def test_derive_rebuilds_the_sarra_part_re_announcement() -> None:
    notice = decode(BY_NAME["GM-11.in"])
    assert isinstance(notice, Notice) and notice.parts is not None
    p = notice.parts
    out = v02.derive(
        notice,
        exchange="xpublic",
        base_url="http://127.0.0.1:18191/",
        path=part_suffix("/" + notice.path, p, notice.checksum.letter),
        drop_headers=("from_cluster",),
        set_headers={"source": "guest", "from_cluster": "pumpA"},
        parts=PartSpec("p", p.block_size, p.block_count, p.remainder, p.block_number),
    )
    assert out.pubtime == notice.pubtime
    assert_wire(v02.to_wire(out), BY_NAME["GM-11.out.0"])


def test_make_report_rebuilds_the_golden_report() -> None:
    g = BY_NAME["GM-12"]
    post_headers = {k: v for k, v in g.headers.items() if k not in ("message", *REPORT_FILL)}
    pubtime, base_url, rel_path = g.body.split(" ")[:3]
    post = v02.decode(
        "xs_guest", "v02.post.a.b", f"{pubtime} {base_url} {rel_path}".encode(), post_headers
    )
    assert isinstance(post, Notice)
    report = v02.make_report(
        post,
        code=201,
        message="Downloaded",
        host="localhost",
        user="guest",
        elapsed=0.001729,
        source="guest",
        from_cluster="127.0.0.1",
        to_clusters="elsewhere",
    )
    assert report.notice.header("to_clusters") == "127.0.0.1"
    assert_wire(v02.encode(report, "xs_guest"), g)


def test_make_notice_rebuilds_the_other_sums_and_the_rename_new_half() -> None:
    one = split(12, 209715200)[0]
    for letter in "sn0z":
        g = BY_NAME[f"GM-6.{letter}"]
        value = g.headers["sum"].partition(",")[2]
        n = _post(
            g, "sftp://user@host", "/a/b/hello.txt", checksum=Checksum(letter, value), parts=one
        )
        assert_wire(v02.to_wire(n), g)
    new = BY_NAME["GM-8.new"]
    n = _post(
        new, "sftp://user@host", "/wdir/f2.txt", checksum=Checksum("d", HELLO_D[2:]), parts=one
    )
    assert_wire(v02.to_wire(n), new)
    assert n.header("oldname") == "/wdir/f1.txt"
