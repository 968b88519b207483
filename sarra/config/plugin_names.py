"""sr2's bundled plugins and sr3's built-in callbacks, by the names configurations give them.

An sr2 file names a bundled plugin by its bare name (``on_message msg_log``, ``plugin
msg_delay``); an sr3 file names a built-in callback as ``callback log`` or ``flowcb
sarracenia.flowcb.log.Log``. Sarra cannot run that code; each name here either maps to one of
sarra's own plugins (a module under :mod:`sarra.plugins`), or is refused at load time with the
reason and what to use instead. ``docs/plugins.md`` shows this table (a test compares them).

Only bare names are looked up: a path (``/etc/sarra/plugins/msg_log.py``) or a dotted module
name of the user's own is loaded as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

_MEMORY = (
    "sarra does not restart an instance whose memory grows: its memory is bounded by prefetch "
    "and transfer_threads; remove the line"
)


@dataclass(frozen=True, slots=True)
class PluginName:
    """One sr2 or sr3 plugin name. ``builtin`` is the sarra module it maps to, or ``None``
    if it is refused; ``note`` says what the built-in does, or why it is refused."""

    name: str
    origin: str  # "sr2" or "sr3"
    builtin: str | None
    note: str


def _m(name: str, origin: str, builtin: str, note: str) -> PluginName:
    return PluginName(name, origin, f"sarra.plugins.{builtin}", note)


def _r(name: str, origin: str, why: str) -> PluginName:
    return PluginName(name, origin, None, why)


_ACCEL = (
    "sarra downloads http, https, sftp, ftp and ftps itself, transfer_threads at a time; "
    "remove the line"
)
_NODUPE = (
    "duplicate suppression is built in: remove the line and set nodupe_ttl "
    "(suppress_duplicates) and nodupe_basis (cache_basis)"
)
_TOTALS = (
    "sarra logs the outcome counts of each instance when it stops and 'sr_subscribe status' "
    "shows the queue backlog; remove the line, or log per notice with msg_log"
)

#: The table, in the order docs/plugins.md shows it.
PLUGIN_NAMES: tuple[PluginName, ...] = (
    _m(
        "msg_log",
        "sr2",
        "msg_log",
        "on_message: logs each notice accepted (pubtime, URL, topic, lag)",
    ),
    _m("file_log", "sr2", "file_log", "on_file: logs each file placed, with its local path"),
    _m(
        "log",
        "sr3",
        "log",
        "on_message and on_file: logs each notice accepted and each file placed",
    ),
    _m(
        "msg_delay",
        "sr2",
        "msg_delay",
        "on_message: holds each notice until it is msg_delay seconds old (default 300)",
    ),
    _m(
        "msg_fdelay",
        "sr2",
        "msg_fdelay",
        "on_message: drops removals (sum R) and holds each notice, and then an existing local "
        "file, until msg_fdelay seconds old (default 300)",
    ),
    _m("filter.fdelay", "sr3", "msg_fdelay", "as msg_fdelay (sr3 name of the option: fdelay)"),
    _m(
        "msg_renamer",
        "sr2",
        "msg_renamer",
        "on_message: appends ':YYYYmmddHHMMSS' (local time of receipt) to the file name",
    ),
    _m("msg_rename_dmf", "sr2", "msg_renamer", "same as msg_renamer"),
    _m("accept.renamedmf", "sr3", "msg_renamer", "same as msg_renamer"),
    _m(
        "msg_rename_whatfn",
        "sr2",
        "msg_rename_whatfn",
        "on_message: drops everything from the first ':' of the file name (Sundew WHATFN)",
    ),
    _m("accept.renamewhatfn", "sr3", "msg_rename_whatfn", "same as msg_rename_whatfn"),
    _r(
        "msg_rename4jicc",
        "sr2",
        "a site-specific renamer; use the rename option, or an on_message plugin that sets "
        "work.dest_rel",
    ),
    _m(
        "file_rxpipe",
        "sr2",
        "file_rxpipe",
        "on_file: writes the path of each file placed, one per line, to the named pipe "
        "file_rxpipe_name",
    ),
    _m(
        "work.rxpipe",
        "sr3",
        "file_rxpipe",
        "same as file_rxpipe (sr3 name of the option: rxpipe_name)",
    ),
    _m("post_log", "sr2", "post_log", "on_post: logs each notice about to be posted"),
    _r("hb_memory", "sr2", _MEMORY),
    _r("housekeeping.resources", "sr3", _MEMORY),
    _r("accel_wget", "sr2", _ACCEL),
    _r("accel_scp", "sr2", _ACCEL),
    _r("msg_total", "sr2", _TOTALS),
    _r("msg_speedo", "sr2", _TOTALS),
    _r("accept.speedo", "sr3", _TOTALS),
    _r("nodupe", "sr3", _NODUPE),
    _r(
        "retry",
        "sr3",
        "the disk retry queue is built in (option retry, on by default); remove the line",
    ),
    _r("report", "sr3", "reports are built in: remove the line and set report_back on"),
)

_BY_NAME = MappingProxyType({p.name: p for p in PLUGIN_NAMES})
_SR3_PREFIX = "sarracenia.flowcb."


def lookup(spec: str) -> PluginName | None:
    """The table entry a plugin spec names, or ``None`` for the user's own plugins.

    ``msg_log`` and ``msg_log.py`` are sr2 names; ``log``, ``filter.fdelay`` and sr3's full
    class paths (``sarracenia.flowcb.log.Log``, ``sarracenia.flowcb.log``) are sr3 names.
    """
    word = spec.strip()
    if "/" in word or not word:
        return None
    if word.startswith(_SR3_PREFIX):
        word = word[len(_SR3_PREFIX) :]
        entry = _BY_NAME.get(word)
        if entry is None and "." in word:
            module, _, last = word.rpartition(".")
            if last[:1].isupper():  # a class name: sarracenia.flowcb.log.Log
                entry = _BY_NAME.get(module)
        return entry or _r(
            spec,
            "sr3",
            "sr3's callbacks are Python code sarra cannot run; "
            "see docs/plugins.md for the ones mapped to sarra's built-ins",
        )
    if word.endswith(".py"):
        word = word[: -len(".py")]
    return _BY_NAME.get(word)
