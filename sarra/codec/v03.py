"""Decoding of sr3's v03 JSON posts into v02 notices (facts 1.11, spec 5.3).

Only what a v02 relay or receiver needs is mapped: pubTime/baseUrl/relPath, ``identity``
(or the older ``integrity``), ``fileOp``, ``blocks`` or ``size``, timestamps without the
``T``, and every other string or integer field as a header. Nested fields such as
``content``, ``geometry`` or ``report`` are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from sarra.codec.build import build_notice
from sarra.codec.paths import decode_relpath, escape_relpath
from sarra.errors import MalformedMessage
from sarra.integrity.sums import name_sum, v03_to_v02
from sarra.notice import Checksum, Notice, PartSpec

#: fields mapped explicitly, never copied as headers
_MAPPED = frozenset(
    {
        "pubTime",
        "baseUrl",
        "relPath",
        "identity",
        "integrity",
        "fileOp",
        "blocks",
        "size",
        "mtime",
        "atime",
        "topic",
        "content",
    }
)
_BLOCK_METHODS = {"inplace": "i", "partitioned": "p", "i": "i", "p": "p"}


def decode(exchange: str, routing_key: str | None, text: str, headers: Mapping[str, str]) -> Notice:
    """Decode a v03 body into a v02-form notice (topic rebuilt under ``v02.post``).

    Raises:
        MalformedMessage: invalid JSON, missing fields or values that do not map to v02.
    """
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise MalformedMessage(f"v03 body is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise MalformedMessage("v03 body is not a JSON object")
    pubtime, base_url, rel = (_text(obj, k) for k in ("pubTime", "baseUrl", "relPath"))
    hdrs = dict(headers)
    for key, value in obj.items():
        if key in _MAPPED:
            continue
        if isinstance(value, str):
            hdrs[key] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            hdrs[key] = str(value)
    for key in ("mtime", "atime"):
        if key in obj:
            hdrs[key] = _text(obj, key).replace("T", "", 1)
    checksum = _checksum(obj, decode_relpath(rel), hdrs)
    hdrs["sum"] = checksum.wire()
    if not checksum.file_op:
        parts = _parts(obj)
        if parts is not None:
            hdrs["parts"] = parts.wire()
    return build_notice(
        exchange=exchange,
        topic=None,
        pubtime=pubtime.replace("T", "", 1),
        base_url=base_url,
        rel_path=escape_relpath(rel),
        headers=hdrs,
        post=True,
    )


def _text(obj: Mapping[str, object], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise MalformedMessage(f"v03 field {key!r} missing or not a string")
    return value


def _checksum(obj: Mapping[str, object], path: str, hdrs: dict[str, str]) -> Checksum:
    """The v02 sum: from ``fileOp`` for links, removals and directories, else ``identity``."""
    op = obj.get("fileOp")
    if op is not None:
        if not isinstance(op, dict):
            raise MalformedMessage("v03 fileOp is not an object")
        if isinstance(op.get("rename"), str):
            hdrs["oldname"] = op["rename"]
        if isinstance(op.get("link"), str):
            hdrs["link"] = op["link"]
            return name_sum("L", op["link"])
        if "directory" in op:
            return name_sum("r" if "remove" in op else "m", path)
        if "remove" in op:
            return name_sum("R", path)
    ident = obj.get("identity", obj.get("integrity"))
    if not isinstance(ident, dict):
        raise MalformedMessage("v03 post without identity or a mappable fileOp")
    method, value = ident.get("method"), ident.get("value")
    if not isinstance(method, str) or not isinstance(value, str):
        raise MalformedMessage("v03 identity needs string method and value")
    return v03_to_v02(method, value)


def _int(value: object, what: str) -> int:
    """An integer from a v03 number or numeric string (sr2 writes strings)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise MalformedMessage(f"v03 {what} is not an integer")


def _parts(obj: Mapping[str, object]) -> PartSpec | None:
    """``blocks`` (sr3 manifest form or sr2 string form) or ``size`` as a PartSpec."""
    blocks = obj.get("blocks")
    if isinstance(blocks, dict):
        method = _BLOCK_METHODS.get(str(blocks.get("method")))
        if method is None:
            raise MalformedMessage(f"unknown v03 blocks method {blocks.get('method')!r}")
        bs = _int(blocks.get("size"), "blocks.size")
        number = _int(blocks.get("number"), "blocks.number")
        manifest = blocks.get("manifest")
        if isinstance(manifest, dict) and manifest:
            count = len(manifest)
            last = manifest.get(str(count - 1))
            rem = _int(last.get("size") if isinstance(last, dict) else None, "manifest size")
        else:
            count = _int(blocks.get("count"), "blocks.count")
            rem = _int(blocks.get("remainder"), "blocks.remainder")
        return PartSpec(method, bs, count, rem, number)
    if "size" in obj:
        return PartSpec("1", _int(obj["size"], "size"), 1, 0, 0)
    return None
