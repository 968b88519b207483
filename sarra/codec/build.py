"""The one place that validates fields and constructs a :class:`~sarra.notice.Notice`."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from sarra.codec.fields import check_known_headers, check_text, data_parts, parse_checksum, shown
from sarra.codec.paths import escape_relpath, logical_path, topic_for
from sarra.codec.timestamps import check_timestamp
from sarra.errors import MalformedMessage
from sarra.notice import Notice, frozen_headers
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
    if not rel_path or " " in rel_path or "\n" in rel_path or "\r" in rel_path:
        raise MalformedMessage(f"bad relPath {rel_path[:80]!r}")
    path = logical_path(rel_path)
    if not path:
        raise MalformedMessage(f"relPath {rel_path!r} names no file")
    if "\0" in path:
        raise MalformedMessage("NUL in relPath")
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
