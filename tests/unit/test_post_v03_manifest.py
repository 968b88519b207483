"""sr_post's v03 block posts carry sr3's manifest (sarra.flow.posting): when, and in what form."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from sarra.codec import v02
from sarra.flow.posting import NoticeBuilder, PostSettings


def _builder(tmp_path: Path, post_format: str, sum_: str = "d") -> NoticeBuilder:
    return NoticeBuilder(
        PostSettings(
            exchange="xs_u", topic_prefix="v03" if post_format == "v03" else "v02.post",
            base_url="http://h/", base_dir=str(tmp_path), sum=sum_, blocksize=1000,
            headers=(), rename=None, preserve_time=False, preserve_mode=False,
            follow_symlinks=False, randomize=False, topic_override=None,
            header_value_max=252, persistent=True, message_ttl_ms=None, exchange_split=0,
            post_format=post_format,
        )
    )  # fmt: skip


def test_v03_blocks_carry_the_whole_manifest_in_every_message(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10  # 2560 bytes: blocks of 1000, 1000, 560
    (tmp_path / "f.bin").write_bytes(data)
    notices = _builder(tmp_path, "v03").file_notices(str(tmp_path / "f.bin"))
    assert len(notices) == 3
    for n in notices:
        body = json.loads(v02.encode(n, "xs_u", post_format="v03").body)
        blocks = body["blocks"]
        k = blocks["number"]
        assert (blocks["method"], blocks["size"]) == ("inplace", 1000)
        expected = {
            str(i): {
                "size": len(data[i * 1000 : (i + 1) * 1000]),
                "identity": base64.b64encode(
                    hashlib.md5(data[i * 1000 : (i + 1) * 1000]).digest()
                ).decode(),
            }
            for i in range(3)
        }
        assert blocks["manifest"] == expected
        assert body["identity"]["value"] == expected[str(k)]["identity"]
        assert body["size"] == expected[str(k)]["size"]
        # and it reads back as the same notice parts
        back = v02.decode("xs_u", "v03.x", json.dumps(body).encode(), None, "application/json")
        assert back.parts == n.parts  # type: ignore[union-attr]


def test_no_manifest_in_v02_for_cod_sums_or_when_the_last_block_is_full(
    tmp_path: Path,
) -> None:
    (tmp_path / "f.bin").write_bytes(b"x" * 2500)
    (tmp_path / "g.bin").write_bytes(b"x" * 3000)
    assert all(not n.v03_fields for n in _builder(tmp_path, "v02").file_notices(
        str(tmp_path / "f.bin")))  # fmt: skip
    assert all(not n.v03_fields for n in _builder(tmp_path, "v03", "z,d").file_notices(
        str(tmp_path / "f.bin")))  # fmt: skip
    # 3000 = 3 full blocks: a manifest would read back as other parts, so the plain form
    full = _builder(tmp_path, "v03").file_notices(str(tmp_path / "g.bin"))
    assert len(full) == 3 and all(not n.v03_fields for n in full)
