"""Which file names Windows cannot hold safely (a pure check, usable on any platform).

Windows silently rewrites or reinterprets some names instead of refusing them: ``a.txt:evil``
writes an alternate data stream of ``a.txt``, ``NUL`` or ``com1.log`` opens a device, a
trailing dot or space is stripped (so ``a.`` replaces ``a``), and ``\\``, ``/`` or ``C:``
start another path altogether. A received name with any of these is refused with a report,
never mangled into something else.
"""

from __future__ import annotations

import re

from sarra.errors import HostilePath

#: characters no Windows file name may contain (plus the controls 0-31)
INVALID_CHARS = frozenset('<>:"/\\|?*') | frozenset(chr(c) for c in range(32))
#: device names, reserved whatever the extension (``nul.txt`` is the device too)
_RESERVED = re.compile(r"(CON|PRN|AUX|NUL|CONIN\$|CONOUT\$|(COM|LPT)[0-9\u00b9\u00b2\u00b3])", re.I)


def windows_name_problem(name: str) -> str | None:
    """Why ``name`` (one path component) is unsafe as a Windows file name, or None."""
    bad = sorted({c for c in name if c in INVALID_CHARS})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        if ":" in bad:
            return f"has {shown} (':' names a drive or an alternate data stream on Windows)"
        return f"has characters invalid on Windows: {shown}"
    if name.endswith((".", " ")) and name not in (".", ".."):
        return "ends with a dot or a space (Windows strips them: another file would be written)"
    stem = name.split(".", 1)[0].rstrip(" ")
    if _RESERVED.fullmatch(stem):
        return f"is the reserved Windows device name {stem.upper()!r}"
    return None


def check_windows_name(name: str) -> None:
    """Raise :class:`~sarra.errors.HostilePath` if ``name`` is unsafe on Windows."""
    problem = windows_name_problem(name)
    if problem is not None:
        raise HostilePath(f"name {name!r} {problem}")
