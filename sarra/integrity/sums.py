"""Checksum algorithms by v02 ``sum`` letter (spec 5).

The registry is a literal dict. ``d`` and ``s`` hash data (the whole file, or one block);
``n``, ``L``, ``R``, ``m`` and ``r`` hash a name; ``0`` is random; ``a`` and ``z`` carry text.
The internal letter ``x`` (xxhash) serves dedupe keys and caches only and is never emitted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import random
from collections.abc import Callable
from typing import Protocol

from sarra.errors import LocalError, MalformedMessage
from sarra.notice import Checksum

#: read buffer of :func:`file_checksum`
BUFFER_SIZE = 1 << 20


class Hasher(Protocol):
    """A streaming digest."""

    def update(self, data: bytes | memoryview, /) -> None:
        """Add ``data`` to the digest."""

    def hexdigest(self) -> str:
        """The digest of everything added so far, lowercase hex."""


def _xxh3_128() -> Hasher:
    """xxhash's XXH3 128-bit, imported when first used (posting never needs it)."""
    import xxhash

    return xxhash.xxh3_128()


#: hashers by letter; ``x`` is internal and never appears in a message
HASHERS: dict[str, Callable[[], Hasher]] = {
    "d": hashlib.md5,
    "s": hashlib.sha512,
    "x": _xxh3_128,
}
#: letters whose value is a hash of a name, and the hash they use
NAME_HASHERS: dict[str, Callable[[], Hasher]] = {
    "n": hashlib.md5,
    "L": hashlib.sha512,
    "R": hashlib.sha512,
    "m": hashlib.sha512,
    "r": hashlib.sha512,
}
#: v02 letter -> v03 ``identity.method`` (L/R/m/r become v03 ``fileOp`` instead)
V03_METHODS: dict[str, str] = {
    "d": "md5",
    "s": "sha512",
    "n": "md5name",
    "0": "random",
    "a": "arbitrary",
    "z": "cod",
}
_V02_LETTERS = {method: letter for letter, method in V03_METHODS.items()}
#: cod (z) values: v02 carries a letter, v03 an algorithm name
_COD_NAMES = {"d": "md5", "s": "sha512"}
_COD_LETTERS = {name: letter for letter, name in _COD_NAMES.items()}
#: letters whose value is hex of a digest (converted to base64 for v03)
_DIGEST_LETTERS = frozenset("dsnLRmr")


def new_hasher(letter: str) -> Hasher:
    """A fresh hasher for a data letter (``d``, ``s`` or the internal ``x``).

    Raises:
        KeyError: ``letter`` does not hash data.
    """
    return HASHERS[letter]()


def name_sum(letter: str, name: str) -> Checksum:
    """The sum of a name: ``n`` (md5), ``R``/``m``/``r`` (sha512) of the basename of ``name``;
    ``L`` (sha512) of the whole link target ``name``.

    Raises:
        KeyError: ``letter`` is not a name-sum letter.
    """
    hasher = NAME_HASHERS[letter]()
    text = name if letter == "L" else os.path.basename(name.rstrip("/"))
    # surrogatepass: a name that is not valid UTF-8 still hashes (the notice that would
    # carry it is refused by build_notice, with a clear reason, not a UnicodeEncodeError)
    hasher.update(text.encode("utf-8", "surrogatepass"))
    return Checksum(letter, hasher.hexdigest())


def random_sum() -> Checksum:
    """A ``0`` sum: four random decimal digits, for load spreading only."""
    return Checksum("0", f"{random.randint(0, 9999):04d}")


def file_checksum(
    path: str | os.PathLike[str], letter: str, offset: int = 0, length: int | None = None
) -> Checksum:
    """The ``d``/``s`` sum of ``length`` bytes of a file from ``offset`` (to EOF if None).

    Raises:
        KeyError: ``letter`` does not hash data.
        LocalError: the file cannot be read.
    """
    hasher = new_hasher(letter)
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                want = BUFFER_SIZE if remaining is None else min(BUFFER_SIZE, remaining)
                chunk = f.read(want)
                if not chunk:
                    break
                hasher.update(chunk)
                if remaining is not None:
                    remaining -= len(chunk)
    except OSError as exc:
        raise LocalError(f"cannot checksum {os.fspath(path)}: {exc}") from exc
    return Checksum(letter, hasher.hexdigest())


def matches(expected: Checksum, hexdigest: str) -> bool:
    """True when ``hexdigest`` equals the value of ``expected`` (hex case-insensitive)."""
    return expected.value.lower() == hexdigest.lower()


def v02_to_v03(checksum: Checksum) -> tuple[str, str]:
    """Convert a v02 sum to a v03 ``identity`` (method, value): digests hex -> base64.

    Raises:
        MalformedMessage: a file-operation letter (no v03 identity) or a bad value.
    """
    method = V03_METHODS.get(checksum.letter)
    if method is None:
        raise MalformedMessage(f"sum letter {checksum.letter!r} has no v03 identity")
    if checksum.letter == "z":
        name = _COD_NAMES.get(checksum.value)
        if name is None:
            raise MalformedMessage(f"bad cod sum value {checksum.value!r}")
        return method, name
    if checksum.letter in _DIGEST_LETTERS:
        try:
            raw = bytes.fromhex(checksum.value)
        except ValueError as exc:
            raise MalformedMessage(f"sum value is not hex: {checksum.value!r}") from exc
        return method, base64.b64encode(raw).decode("ascii")
    return method, checksum.value


def v03_to_v02(method: str, value: str) -> Checksum:
    """Convert a v03 ``identity`` (method, value) to a v02 sum: base64 -> hex digests.

    Raises:
        MalformedMessage: unknown method or undecodable value.
    """
    letter = _V02_LETTERS.get(method)
    if letter is None:
        raise MalformedMessage(f"unknown v03 identity method {method!r}")
    if letter == "z":
        cod = _COD_LETTERS.get(value)
        if cod is None:
            raise MalformedMessage(f"unsupported cod algorithm {value!r}")
        return Checksum("z", cod)
    if letter in _DIGEST_LETTERS:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedMessage(f"identity value is not base64: {value!r}") from exc
        return Checksum(letter, raw.hex())
    return Checksum(letter, value)
