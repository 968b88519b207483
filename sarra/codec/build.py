"""The one place that validates fields and constructs a :class:`~sarra.notice.Notice`."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from sarra.codec.fields import (
    PARTS_VALUE_MAX,
    V03_NAMES,
    check_known_headers,
    check_text,
    data_parts,
    parse_checksum,
    shown,
)
from sarra.codec.paths import cut_topic, escape_relpath, logical_path, topic_for
from sarra.codec.timestamps import check_timestamp
from sarra.errors import MalformedMessage
from sarra.notice import Checksum, Notice, PartSpec, frozen_headers
from sarra.parts.arithmetic import parse_part_suffix

log = logging.getLogger(__name__)

#: the topic prefix of restored messages and of topics rebuilt from relPath
DEFAULT_TOPIC_PREFIX = "v02.post"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S*", re.ASCII)


def build_notice(
    *,
    exchange: str,
    topic: str | None,
    pubtime: str,
    base_url: str,
    rel_path: str,
    headers: Mapping[str, str],
    post: bool,
    v03_fields: str = "",
) -> Notice:
    """Validate the fields of a notice and construct it.

    ``topic`` None rebuilds it from relPath under ``v02.post``. ``post`` applies the rules
    for posts (``parts`` required on data, ``link`` required on ``L``); reports relax them.

    Raises:
        MalformedMessage: any field breaks the v02 grammar (spec 3, 4, 5, 6, 7.1), or is
            not valid UTF-8 text (a lone surrogate: an undecodable file name, a JSON
            ``\\ud800`` escape), which no encoder could send.
    """
    check_text("relPath", rel_path)
    check_text("baseUrl", base_url)
    check_text("pubTime", pubtime)
    for name, value in headers.items():
        if not (name.isascii() and value.isascii()):
            check_text("header name", name)
            check_text(f"header {shown(name)!r}", value)
    if topic is not None:
        check_text("topic", topic)
    check_timestamp(pubtime)
    _check_base_url(base_url)
    path = _logical_of(rel_path)
    for name in ("mtime", "atime"):
        if name in headers:
            check_timestamp(headers[name])
    check_known_headers(headers)
    sum_text = headers.get("sum")
    if sum_text is None:
        raise MalformedMessage("no sum header")
    checksum = parse_checksum(sum_text)
    parts = data_parts(checksum, headers, required=post)
    if post and checksum.letter == "L" and "link" not in headers:
        raise MalformedMessage("link post without a link header")
    if parts is not None and parts.method == "p":
        found = parse_part_suffix(path)
        if found is None:
            raise MalformedMessage(f"p part without a .Part relPath: {rel_path[:80]!r}")
        _target, spec, letter = found
        if spec != parts or letter != checksum.letter:
            raise MalformedMessage(
                f".Part suffix of {rel_path[-80:]!r} disagrees with parts {parts.wire()} "
                f"and sum {checksum.letter}"
            )
    if topic is None:
        topic = topic_for(DEFAULT_TOPIC_PREFIX, path)
    return Notice(
        exchange=exchange,
        topic=topic,
        pubtime=pubtime,
        base_url=base_url,
        rel_path=rel_path,
        path=path,
        headers=frozen_headers(headers),
        checksum=checksum,
        parts=parts,
        v03_fields=v03_fields,
    )


def _logical_of(rel_path: str) -> str:
    """The logical path of a wire relPath (spec 3.4).

    Raises:
        MalformedMessage: the relPath is empty or holds a space or a line break, or its
            path names no file or holds a NUL.
    """
    if not rel_path or " " in rel_path or "\n" in rel_path or "\r" in rel_path:
        raise MalformedMessage(f"bad relPath {rel_path[:80]!r}")
    path = logical_path(rel_path)
    if not path:
        raise MalformedMessage(f"relPath {rel_path!r} names no file")
    if "\0" in path:
        raise MalformedMessage("NUL in relPath")
    return path


@functools.lru_cache(maxsize=256)
def _check_base_url(base_url: str) -> None:
    """Raise MalformedMessage unless ``base_url`` has a scheme and a valid authority.

    Cached (a valid URL only: an exception is not cached): a burst of notices shares a few
    base URLs, and the check costs more than the rest of a notice's fields.
    """
    if not _SCHEME.fullmatch(base_url):
        raise MalformedMessage(f"bad baseUrl {base_url[:80]!r}")
    try:
        # an unbalanced IPv6 bracket or a port out of range would only surface later, as a
        # ValueError deep in the transfer: refuse it here, with the other malformed fields
        urlsplit(base_url).port  # noqa: B018 (evaluated for its ValueError)
    except ValueError as exc:
        raise MalformedMessage(f"bad baseUrl {base_url[:80]!r}: {exc}") from exc


@functools.lru_cache(maxsize=256)
def poster_base_url(base_url: str) -> str:
    """A baseUrl as emitted (3.3): trailing ``/`` removed, ``file:`` kept.

    Raises:
        MalformedMessage: it contains a space, ``#`` or a password, or has no scheme.
    """
    if " " in base_url or "#" in base_url:
        raise MalformedMessage(f"baseUrl {base_url!r} contains a space or '#'")
    if not _SCHEME.fullmatch(base_url):
        raise MalformedMessage(f"bad baseUrl {base_url!r}")
    try:
        has_password = urlsplit(base_url).password is not None
    except ValueError as exc:
        raise MalformedMessage(f"bad baseUrl {base_url!r}") from exc
    if has_password:
        raise MalformedMessage("baseUrl must not contain a password")
    # "file:/" and "file://" both become the bare "file:"
    return base_url.rstrip("/")


def poster_rel_path(path: str) -> str:
    """The wire relPath of a logical (or absolute) path: leading ``/``, escaped (3.4).

    Names that literally contain ``%20``/``%23`` are logged: every peer corrupts them.
    """
    if "%20" in path or "%23" in path:
        log.warning("name %r contains %%20 or %%23: receivers will decode it", path)
    return "/" + escape_relpath(path.lstrip("/"))


#: headers a poster computes for each file: never among a :class:`PostTemplate`'s constants
_PER_FILE = frozenset(("mtime", "atime", "mode", "link", "parts", "sum", "oldname", "newname"))
#: the constant headers that sr2's order (4.5) puts before the per-file ones
_LEADING = ("to_clusters", "from_cluster", "source", "rename")


class PostTemplate:
    """What every data notice of one poster shares, checked once, so that a notice about one
    file checks and builds only what varies: its path, times, mode, sum and parts.

    Contract: :meth:`data_notice` returns a notice equal to what
    :func:`sarra.codec.v02.make_notice` returns for the same fields, and refuses (with
    :class:`MalformedMessage`) what it refuses (``tests/unit/test_post_template.py``
    compares the two over names, headers and sizes), given that the caller made:

    - ``pubtime``, ``mtime`` and ``atime`` with
      :func:`~sarra.codec.timestamps.format_timestamp_ns` (valid by construction),
    - ``mode`` as octal digits,
    - ``checksum`` from a digest of the data (letter ``d`` or ``s``),
    - ``parts`` with :func:`~sarra.parts.arithmetic.split` (``1`` or ``i``).

    Construction raises :class:`MalformedMessage` when the shared fields would make every
    notice invalid, or when they hold what only the general path handles (a constant header
    named like a per-file one or a v03 field): the poster then uses ``make_notice``, which
    refuses such notices one by one with the reason.
    """

    __slots__ = ("_base_url", "_exchange", "_leading", "_prefix", "_topic", "_trailing")

    def __init__(
        self,
        *,
        exchange: str,
        topic_prefix: str,
        base_url: str,
        headers: Mapping[str, str],
        topic_override: str | None,
    ) -> None:
        for name, value in headers.items():
            if name in _PER_FILE or name in V03_NAMES:
                raise MalformedMessage(f"header {name!r} is set per notice")
            check_text("header name", name)
            check_text(f"header {shown(name)!r}", value)
        self._base_url = poster_base_url(base_url)
        check_text("baseUrl", self._base_url)
        _check_base_url(self._base_url)
        self._exchange = exchange
        self._prefix = topic_prefix
        self._topic: str | None = None
        if topic_override is not None:
            self._topic = cut_topic(
                f"{topic_prefix}.{topic_override}" if topic_override else topic_prefix
            )
            check_text("topic", self._topic)
        self._leading = tuple((k, headers[k]) for k in _LEADING if k in headers)
        self._trailing = tuple((k, v) for k, v in headers.items() if k not in _LEADING)

    def data_notice(
        self,
        path: str,
        pubtime: str,
        times: tuple[str, str] | None,
        mode: str | None,
        checksum: Checksum,
        parts: PartSpec,
    ) -> Notice:
        """The notice for one block of the file at logical ``path`` (see the class contract);
        ``times`` is (mtime, atime) or None.

        Raises:
            MalformedMessage: as :func:`~sarra.codec.v02.make_notice` would.
        """
        if checksum.letter not in ("d", "s") or parts.method not in ("1", "i"):
            raise ValueError(f"outside the template's contract: {checksum.letter} {parts.method}")
        rel_path = poster_rel_path(path)
        check_text("relPath", rel_path)
        logical = _logical_of(rel_path)
        if max(parts.block_size, parts.block_count, parts.file_size) > PARTS_VALUE_MAX:
            raise MalformedMessage(f"parts value out of range in {parts.wire()!r}")
        topic = self._topic
        if topic is None:
            topic = topic_for(self._prefix, path.lstrip("/"))
        headers = dict(self._leading)
        if times is not None:
            headers["mtime"], headers["atime"] = times
        if mode is not None:
            headers["mode"] = mode
        headers["parts"] = parts.wire()
        headers["sum"] = checksum.wire()
        headers.update(self._trailing)
        return Notice(
            exchange=self._exchange,
            topic=topic,
            pubtime=pubtime,
            base_url=self._base_url,
            rel_path=rel_path,
            path=logical,
            headers=frozen_headers(headers),
            checksum=checksum,
            parts=parts,
        )
