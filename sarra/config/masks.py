"""accept/reject masks, destination paths and per-notice directory variables.

A :class:`Mask` records an ``accept`` or ``reject`` line together with the destination options
(``directory``, ``mirror``, ``strip``, ``flatten``, ``base_dir``, ``rename``, ``filename``) in
force when it appeared: in the v2 config language the order of lines matters.

:func:`match` applies masks as sr2 does: ``re.match`` (anchored at the start) on the full URL
(baseUrl + relPath), first match wins, ``accept_unmatch`` decides when nothing matches.

:func:`destination_relpath` is the pure part of placing a file: strip, flatten and mirror a
logical path into a path relative to the mask's directory. It never returns a path containing
``..``; the flow still confines the joined result under its root.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from sarra.errors import ConfigError, HostilePath


@dataclass(frozen=True, slots=True)
class Mask:
    """One accept/reject line and the destination options captured with it."""

    pattern: str
    accept: bool
    directory: str | None = None
    mirror: bool = False
    strip: int | str = 0
    flatten: str = "/"
    base_dir: str | None = None
    rename: str | None = None
    filename: str | None = None
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiled once; frozen dataclass, hence object.__setattr__.
        object.__setattr__(self, "regex", re.compile(self.pattern))

    def matches(self, url: str) -> bool:
        """True if the pattern matches at the start of ``url`` (``re.match``)."""
        return self.regex.match(url) is not None


class DestinationOptions(Protocol):
    """What :func:`destination_relpath` reads: a :class:`Mask` or any look-alike."""

    @property
    def mirror(self) -> bool: ...
    @property
    def strip(self) -> int | str: ...
    @property
    def flatten(self) -> str: ...
    @property
    def rename(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class MatchResult:
    """The outcome of :func:`explain`: the accepting mask (or None) and why, for log_reject."""

    mask: Mask | None
    reason: str

    @property
    def accepted(self) -> bool:
        return self.mask is not None


def explain(
    masks: Iterable[Mask], url: str, accept_unmatch: bool, default: Mask | None = None
) -> MatchResult:
    """Like :func:`match`, with a reason suitable for a ``log_reject`` line."""
    for mask in masks:
        if mask.matches(url):
            if mask.accept:
                return MatchResult(mask, f"accepted by {mask.pattern!r}")
            return MatchResult(None, f"rejected by {mask.pattern!r}")
    if accept_unmatch:
        return MatchResult(default or Mask("", True), "no mask matched; accept_unmatch on")
    return MatchResult(None, "no mask matched; accept_unmatch off")


def match(
    masks: Iterable[Mask], url: str, accept_unmatch: bool, default: Mask | None = None
) -> Mask | None:
    """The mask that accepts ``url``, or None if it is rejected.

    First match wins. When nothing matches and ``accept_unmatch`` is on, ``default`` (usually
    ``Config.default_mask``, carrying the destination options in force at the end of the file)
    or a plain accepting mask is returned.
    """
    return explain(masks, url, accept_unmatch, default).mask


def destination_relpath(
    options: DestinationOptions, logical_path: str, *, rename_header: str | None = None
) -> str:
    """Where, relative to the mask's directory, a notice's file goes.

    ``logical_path`` is the notice's relPath; ``rename_header`` its ``rename`` header, which
    replaces it as in sr2. Then, in order: ``strip`` (N leading ``/``-separated elements, sr2
    counting an empty element before a leading ``/``; or the first match of a regex removed),
    ``flatten`` (elements joined by the flatten string into one name), ``mirror`` (keep the
    directories, else only the file name), ``rename`` (a path: ending in ``/`` gives the
    directory, else the whole relative path). A strip that removes everything keeps the file
    name.

    Raises:
        HostilePath: a ``..`` element, or no file name at all.
    """
    relpath = rename_header or logical_path
    tokens = relpath.split("/")
    filename = tokens[-1]
    if isinstance(options.strip, int):
        if options.strip > 0:
            tokens = tokens[options.strip :] or [filename]
    elif options.strip:
        stripped = re.sub(options.strip, "", relpath, count=1)
        tokens = stripped.split("/") if filename in stripped else [filename]
    if options.flatten != "/":
        tokens = [options.flatten.join(t for t in tokens if t)]
    parts = tokens if options.mirror else tokens[-1:]
    if options.rename:
        name = parts[-1]
        target = options.rename.split("/")
        parts = [*target[:-1], name] if options.rename.endswith("/") else target
    clean = [p for p in parts if p not in ("", ".")]
    if ".." in clean:
        raise HostilePath(f"destination of {logical_path!r} would contain '..'")
    if not clean or not parts or parts[-1] in ("", ".", ".."):
        raise HostilePath(f"no file name in {logical_path!r}")
    return "/".join(clean)


#: Variables expanded per notice in ``directory`` (date ones take offsets: ``${YYYYMMDD-2d}``).
DATE_VARIABLES: Mapping[str, str] = {
    "YYYYMMDD": "%Y%m%d",
    "YYYY": "%Y",
    "MM": "%m",
    "DD": "%d",
    "HH": "%H",
    "JJJ": "%j",
}
NOTICE_VARIABLES = frozenset({*DATE_VARIABLES, "SOURCE"})

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:([+-])(\d+)([smhdwDHMSW]?))?\}")
_OFFSET_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "": 86400}


def expand_variables(
    text: str,
    lookup: Callable[[str], str | None],
    *,
    now: float | None = None,
    keep: frozenset[str] = frozenset(),
) -> str:
    """Replace ``${NAME}`` in ``text``.

    Date variables (:data:`DATE_VARIABLES`, UTC, with optional ``+N``/``-N`` offsets and a
    s/m/h/d/w unit, days by default) use ``now``; any other name goes to ``lookup``. Names in
    ``keep`` are left as written (they are expanded later, per notice).

    Raises:
        ConfigError: ``lookup`` returned None for a name (unknown variable).
    """
    instant = time.time() if now is None else now

    def replace(found: re.Match[str]) -> str:
        name, sign, amount, unit = found.groups()
        if name in keep:
            return found.group(0)
        if name in DATE_VARIABLES:
            offset = 0
            if sign:
                offset = int(amount) * _OFFSET_UNITS[unit.lower()] * (-1 if sign == "-" else 1)
            return time.strftime(DATE_VARIABLES[name], time.gmtime(instant + offset))
        value = lookup(name) if not sign else None
        if value is None:
            raise ConfigError(f"unknown variable ${{{name}}}")
        return value

    return _VARIABLE.sub(replace, text)


def expand_directory(directory: str, *, source: str | None, now: float | None = None) -> str:
    """Expand the per-notice variables left in a ``directory`` (dates, ``${SOURCE}``).

    Raises:
        ConfigError: ``${SOURCE}`` used but the notice has no source.
    """
    return expand_variables(directory, lambda name: source if name == "SOURCE" else None, now=now)
