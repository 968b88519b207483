"""Directory index pages (nginx ``autoindex``, Apache ``mod_autoindex``) read as listings.

Each link of the page whose target is a plain name in the listed directory becomes a
:class:`~sarra.transfer.base.RemoteEntry`: a target ending in ``/`` is a directory. The text
that follows a link up to the next one is searched for a time and a size:

* nginx: ``06-Dec-2026 22:41`` (UTC unless ``autoindex_localtime on``) then the size in bytes
  (``autoindex_exact_size on``, the default) or ``-`` for a directory;
* Apache: ``2026-12-06 22:41`` (or the ``06-Dec-2026 22:41`` form) then a size that may be
  rounded (``1.2K``): a rounded size is given as unknown (``None``), since it is not the
  file's length.

Times are read as UTC at the minute (or second) the page shows. Links that leave the
directory (absolute paths, other hosts, ``../``, query strings such as Apache's sort links,
names holding ``/``, NUL or CR/LF once decoded) are not entries; those that look like entries
but could escape are logged.
"""

from __future__ import annotations

import calendar
import logging
import re
import time
from html.parser import HTMLParser
from urllib.parse import unquote

from sarra.transfer.base import RemoteEntry, listed_name

log = logging.getLogger(__name__)

_DATE = re.compile(
    r"(?P<date>\d{1,2}-[A-Za-z]{3}-\d{4}|\d{4}-\d{2}-\d{2})\s+(?P<time>\d{2}:\d{2}(?::\d{2})?)"
    r"\s+(?P<size>\d+(?:\.\d+)?[KMGTP]?|-)?"
)
_FORMATS = {
    (True, False): "%d-%b-%Y %H:%M",
    (True, True): "%d-%b-%Y %H:%M:%S",
    (False, False): "%Y-%m-%d %H:%M",
    (False, True): "%Y-%m-%d %H:%M:%S",
}


class _Links(HTMLParser):
    """Collects (href, text after the link up to the next link) pairs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        href = dict(attrs).get("href")
        if href is not None:
            self.links.append((href, []))

    def handle_data(self, data: str) -> None:
        if self.links:
            self.links[-1][1].append(data)


def _when(date: str, clock: str) -> float | None:
    fmt = _FORMATS[(date[:4].isdigit() is False, clock.count(":") == 2)]
    try:
        return float(calendar.timegm(time.strptime(f"{date} {clock}", fmt)))
    except ValueError:
        return None


def _details(text: str) -> tuple[float | None, int | None]:
    found = _DATE.search(text)
    if found is None:
        return None, None
    size_text = found.group("size")
    size = int(size_text) if size_text is not None and size_text.isdigit() else None
    return _when(found.group("date"), found.group("time")), size


def _target(href: str) -> tuple[str, bool] | None:
    """The decoded name and directory flag of a link into the listed directory, or None for
    links elsewhere (parent, absolute, other hosts, queries, fragments)."""
    if not href or href.startswith(("/", "?", "#")) or "://" in href or href.startswith("//"):
        return None
    if "?" in href or "#" in href or href.startswith(("mailto:", "javascript:")):
        return None
    if href.startswith("./"):
        href = href[2:]
    is_dir = href.endswith("/")
    return unquote(href[:-1] if is_dir else href, errors="strict"), is_dir


def parse_index(page: str, where: str) -> list[RemoteEntry]:
    """The entries of an index page (see the module docstring); ``where`` names the page in
    log lines."""
    parser = _Links()
    parser.feed(page)
    parser.close()
    entries: dict[str, RemoteEntry] = {}
    for href, texts in parser.links:
        try:
            target = _target(href)
        except UnicodeDecodeError:
            log.warning("index %s: link %r left out (not UTF-8)", where, href)
            continue
        if target is None:
            continue
        name, is_dir = target
        if name in ("..", "."):
            continue
        if not listed_name(name):
            log.warning("index %s: link %r left out (could escape the directory)", where, href)
            continue
        mtime, size = _details("".join(texts))
        entries.setdefault(
            name, RemoteEntry(name=name, size=None if is_dir else size, mtime=mtime, is_dir=is_dir)
        )
    return list(entries.values())
