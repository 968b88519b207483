"""The plugin contract: every hook a plugin may implement, declared in this one file.

A plugin is a Python module (a ``.py`` file path, or a dotted module name) that defines
functions named after these hooks; ``on_message``/``on_file``/... config lines name plugins.
Signatures are checked by pluggy when the plugin is registered: a function whose argument
names are not those declared here is refused with a :class:`~sarra.errors.ConfigError`.

Hooks (``work`` is always the per-message :class:`~sarra.flow.work.WorkItem`, ``config`` the
instance's loaded :class:`~sarra.config.settings.Settings`):

``on_message(work) -> bool | None``
    Called in the flow thread after a notice is accepted by the masks, before any transfer.
    Return ``False`` to drop the notice (it is acked, nothing is downloaded). The destination
    is already resolved: ``work.dest_rel`` is the path under the configured directory
    (``work.dest_root``, which a plugin must not change). A plugin may replace ``work.dest_rel``
    to change where the file goes; the new path is confined under the same directory (a path
    that escapes it is refused, 417). For example, a plugin file named by
    ``on_message /path/to/flatten.py`` that drops the subdirectories::

        def on_message(work):
            work.dest_rel = work.dest_rel.rsplit("/", 1)[-1]

``on_file(work) -> None``
    Called once, in a transfer thread, after a file is verified and placed under its final name
    (``work.local_path``). An exception is logged and reported as 500; the file stays.
``on_part(work) -> None``
    Called once per block of a multi-part file, in a transfer thread, after the block was
    verified and written (marked present, or kept as its own ``.Part`` file), before the
    file's ``on_file`` when that block completed it. An exception is logged and reported as
    500 (the block stays).
``on_post(work) -> bool | None``
    Called before a notice is published: by sr_post/sr_watch once per notice (``work.notice``
    is the notice to publish), by sr_sarra/sr_sender once per received notice that has
    announcements to publish (``work.notice`` is the received notice). ``False`` suppresses
    that post. An exception is logged and the notice is posted.
``on_report(work) -> bool | None``
    Called in the flow thread when the report of ``work``'s outcome (``work.code``,
    ``work.message``) is about to be queued for publishing. ``False`` suppresses that report.
    An exception is logged and the report is published.
``on_heartbeat(config) -> None``
    Called in the flow thread about every ``heartbeat`` seconds (checked at the runner's
    housekeeping tick, every few seconds). An exception is logged.
``do_get(url, path) -> bool | None``
    Called in a transfer thread before each download (subscribe, sarra), with the retrieval
    URL and the path of a new empty local file. Return True once the whole object is written
    to ``path``: sarra then verifies and places it as if its own transport had fetched it.
    Return None to leave the URL to the built-in transport of its scheme; return False or
    raise when the fetch failed (reported 499 and retried like a transfer failure). The
    first plugin that does not return None wins (see :mod:`sarra.flow.plugin_get`).
``do_put(local_path, url) -> bool | None``
    Called in a transfer thread (sender) before each file is pushed, with the local file and
    the destination URL of its **final** remote name (``sftp://user@host:port/abs/path``, or
    ``.../~/rel/path`` for a path relative to the login directory). Return True once the whole
    file is there under that name: the plugin makes the directories it needs and sends
    however it likes (an in-flight name of its own, renamed when complete); sarra makes no
    directory, no in-flight name, no rename and no size check, and reports 201. Return None
    to leave the file to the built-in transport; False or raise when the send failed
    (reported 499 and retried). The first plugin that does not return None wins. Removals
    and directory creations always use the built-in transport (see :mod:`sarra.flow.send`).
``on_line(entry, directory) -> RemoteEntry | bool | None``
    sr_poll only: called for each entry of a remote listing (nginx/Apache index pages, SFTP,
    FTP(S); files and subdirectories), with the :class:`~sarra.transfer.base.RemoteEntry`
    (``name``, ``size``, ``mtime``, ``is_dir``, ``is_link``) and the listed directory as the
    poll names it (``/data/incoming``). Return ``False`` to leave the entry out (a file is not
    announced, a directory is not descended into); return a ``RemoteEntry`` to use in its place
    (another ``size`` or ``mtime``, e.g. ``mtime=None`` to announce a file again only when its
    size changes); None or True keeps it. The name cannot change (the announced URL must be
    the server's): a replacement with another name, or anything else returned, leaves the
    entry out with a warning. With several plugins a ``False`` wins, then the first
    replacement in configuration order. An exception fails that directory's listing for this
    pass (logged; the next pass lists it again; nothing is forgotten or announced).
``on_html_page(page, url) -> list[RemoteEntry] | None``
    sr_poll with an ``http(s)`` destination only: called with the text of each directory
    index page and its URL. Return the entries of the page (a list of ``RemoteEntry``) to use
    them in place of sarra's own reading (nginx ``autoindex``, Apache index pages), or None
    to leave the page to it. Each entry's name must be one plain segment (no ``/``, NUL,
    CR/LF, ``.`` or ``..``), else it is left out with a warning; a directory entry
    (``is_dir=True``) is listed in turn. The first plugin that does not return None wins. An
    exception fails that page's listing for this pass (logged, tried again next pass).
``on_start(config) -> None`` / ``on_stop(config) -> None``
    Called when an instance starts and stops (every component, sr_post and sr_watch
    included); ``on_stop`` only after an ``on_start`` that returned.

Plugins run inside the component's process with its privileges: install only trusted ones.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

import pluggy

from sarra.config.settings import Settings
from sarra.errors import ConfigError, SarraError, TransportUnavailable
from sarra.flow.work import WorkItem
from sarra.transfer.base import RemoteEntry, listed_name

log = logging.getLogger(__name__)

PROJECT = "sarra"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class HookSpecs:
    """Declarations only (pluggy reads the signatures)."""

    @hookspec
    def on_message(self, work: WorkItem) -> bool | None:
        """Accept (None/True) or drop (False) a notice before transfer."""

    @hookspec
    def on_file(self, work: WorkItem) -> None:
        """A file was placed and verified."""

    @hookspec
    def on_part(self, work: WorkItem) -> None:
        """A block of a multi-part file was verified and written."""

    @hookspec
    def on_post(self, work: WorkItem) -> bool | None:
        """Post (None/True) or suppress (False) the notice(s) of ``work``."""

    @hookspec
    def on_report(self, work: WorkItem) -> bool | None:
        """Publish (None/True) or suppress (False) the report of ``work``'s outcome."""

    @hookspec
    def on_heartbeat(self, config: Settings) -> None:
        """The periodic tick, about every ``heartbeat`` seconds."""

    @hookspec(firstresult=True)
    def do_get(self, url: str, path: str) -> bool | None:
        """Fetch ``url`` into ``path`` (True), or leave it to sarra (None)."""

    @hookspec(firstresult=True)
    def do_put(self, local_path: str, url: str) -> bool | None:
        """Send ``local_path`` to ``url`` (True), or leave it to sarra (None)."""

    @hookspec
    def on_line(self, entry: RemoteEntry, directory: str) -> RemoteEntry | bool | None:
        """Keep (None/True), replace (a RemoteEntry) or leave out (False) a listed entry."""

    @hookspec(firstresult=True)
    def on_html_page(self, page: str, url: str) -> list[RemoteEntry] | None:
        """The entries of an index page, or None to leave the page to sarra's reader."""

    @hookspec
    def on_start(self, config: Settings) -> None:
        """The instance starts."""

    @hookspec
    def on_stop(self, config: Settings) -> None:
        """The instance stops."""


HOOK_NAMES = (
    "on_message",
    "on_file",
    "on_part",
    "on_post",
    "on_report",
    "on_heartbeat",
    "do_get",
    "do_put",
    "on_line",
    "on_html_page",
    "on_start",
    "on_stop",
)


class _PlainFunctionManager(pluggy.PluginManager):
    """Accepts plain module functions named after a hook, so plugins need no decorator."""

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name in HOOK_NAMES and callable(getattr(plugin, name, None)):
            return {}
        return opts


_SR2_ASSIGNMENT = re.compile(r"^\s*self\.(on|do)_\w+\s*=", re.MULTILINE)


def _is_sr2_plugin(path: str) -> bool:
    """True for an sr2 plugin file: it registers itself by assigning ``self.on_<hook>``
    (``self`` is sr2's component object, which does not exist when sarra imports the file)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return _SR2_ASSIGNMENT.search(f.read()) is not None
    except OSError:
        return False


def load_module(spec: str) -> ModuleType:
    """Import a plugin from a file path or a dotted module name."""
    if spec.endswith(".py") or os.sep in spec:
        path = os.path.expanduser(spec)
        if not os.path.isfile(path):
            raise ConfigError(f"plugin file not found: {path}")
        name = "sarra_plugin_" + os.path.splitext(os.path.basename(path))[0]
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise ConfigError(f"cannot load plugin {path}")
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)
        except Exception as e:
            if _is_sr2_plugin(path):
                raise ConfigError(
                    f"plugin {path} is an sr2 plugin (it assigns self.on_...): sarra does not "
                    "run sr2 plugin files; use a built-in of the same name where docs/plugins.md "
                    "lists one, or port it to a module of hook functions (docs/plugins.md, "
                    "'Porting your own sr2 plugins')"
                ) from e
            raise ConfigError(f"plugin {path} failed to load: {e}") from e
        return module
    try:
        return importlib.import_module(spec)
    except ImportError as e:
        raise ConfigError(f"plugin module {spec!r} cannot be imported: {e}") from e


def transfer_by_plugin(call: Callable[[], bool | None], what: str) -> bool:
    """Ask a ``do_get``/``do_put`` plugin to do one transfer (``what`` names it in errors):
    True when a plugin did it, False when none took it (it answered None: the built-in
    transport does it). Raises TransportUnavailable (499, retried later) when a plugin
    answered False or raised; a SarraError it raised is passed on as it is."""
    try:
        done = call()
    except SarraError:
        raise
    except Exception as e:
        raise TransportUnavailable(f"{what} failed: {e}") from e
    if done is False:
        raise TransportUnavailable(f"{what} answered False")
    return done is not None


class Plugins:
    """The plugins of one instance, called in configuration order."""

    def __init__(self) -> None:
        self._pm = _PlainFunctionManager(PROJECT)
        self._pm.add_hookspecs(HookSpecs)
        self._specs: list[str] = []

    @classmethod
    def from_config(cls, plugins: Mapping[str, Sequence[str]] | None) -> Plugins:
        """Load every plugin named by ``on_*``/``plugin`` options, in order."""
        self = cls()
        seen: list[str] = []
        for _hook, specs in dict(plugins or {}).items():
            for spec in specs:
                if spec not in seen:
                    seen.append(spec)
        # pluggy calls the most recently registered first: register in reverse for config order
        for spec in reversed(seen):
            self.register(spec, load_module(spec))
        return self

    def register(self, name: str, plugin: object) -> None:
        """Register a module or object; its hook signatures are validated now."""
        try:
            self._pm.register(plugin, name=name)
        except pluggy.PluginValidationError as e:
            raise ConfigError(f"plugin {name}: {e}") from e
        unknown = [
            attr
            for attr in dir(plugin)
            if attr.startswith(("on_", "do_"))
            and attr not in HOOK_NAMES
            and not attr.startswith("__")
        ]
        if unknown and not self._pm.get_hookcallers(plugin):
            raise ConfigError(f"plugin {name} defines no known hook (has {', '.join(unknown)})")
        self._specs.append(name)

    @property
    def empty(self) -> bool:
        return not self._specs

    def on_message(self, work: WorkItem) -> bool:
        """False if any plugin drops the notice."""
        results = self._pm.hook.on_message(work=work)
        return all(r is not False for r in results)

    def on_file(self, work: WorkItem) -> None:
        self._pm.hook.on_file(work=work)

    def on_part(self, work: WorkItem) -> None:
        """Raises what a plugin raises (the caller reports it, like ``on_file``)."""
        self._pm.hook.on_part(work=work)

    def on_post(self, work: WorkItem) -> bool:
        """False if any plugin suppresses the post; a failing plugin is logged, not obeyed."""
        return self._vote("on_post", work, "posting")

    def on_report(self, work: WorkItem) -> bool:
        """False if any plugin suppresses the report; a failing plugin is logged, not obeyed."""
        return self._vote("on_report", work, "reporting")

    def _vote(self, hook: str, work: WorkItem, going_on: str) -> bool:
        """Call ``hook`` on every plugin: False if one returned False; True if none did or a
        plugin raised (logged, saying the component goes on ``going_on`` it)."""
        try:
            results = getattr(self._pm.hook, hook)(work=work)
        except Exception:
            log.exception("%s plugin failed for %s; %s it", hook, work.notice.path, going_on)
            return True
        return all(r is not False for r in results)

    def on_heartbeat(self, config: Settings) -> None:
        """A failing plugin is logged; the component carries on."""
        try:
            self._pm.hook.on_heartbeat(config=config)
        except Exception:
            log.exception("on_heartbeat plugin failed; carrying on")

    def implements(self, hook: str) -> bool:
        """True when some registered plugin implements ``hook``."""
        return bool(getattr(self._pm.hook, hook).get_hookimpls())

    def do_get(self, url: str, path: str) -> bool | None:
        """The first plugin answer that is not None (None: no plugin fetched it)."""
        result: bool | None = self._pm.hook.do_get(url=url, path=path)
        return result

    def do_put(self, local_path: str, url: str) -> bool | None:
        """The first plugin answer that is not None (None: no plugin sent it)."""
        result: bool | None = self._pm.hook.do_put(local_path=local_path, url=url)
        return result

    def on_line(self, entry: RemoteEntry, directory: str) -> RemoteEntry | None:
        """The entry to list in place of ``entry`` (itself, or a plugin's replacement), or
        None when a plugin leaves it out (see the module docstring). Raises what a plugin
        raises."""
        results = self._pm.hook.on_line(entry=entry, directory=directory)
        if any(r is False for r in results):
            return None
        for r in results:
            if r is None or r is True:
                continue
            if isinstance(r, RemoteEntry) and r.name == entry.name:
                return r
            log.warning(
                "on_line returned %r for %s/%s (a RemoteEntry of the same name, True, False or "
                "None is expected): the entry is left out",
                r,
                directory.rstrip("/"),
                entry.name,
            )
            return None
        return entry

    def on_html_page(self, page: str, url: str) -> list[RemoteEntry] | None:
        """The entries a plugin read from the page (hostile names left out, logged), or None
        when no plugin took it. Raises what a plugin raises."""
        result = self._pm.hook.on_html_page(page=page, url=url)
        if result is None:
            return None
        if isinstance(result, (str, bytes)) or not hasattr(result, "__iter__"):
            raise TypeError(f"on_html_page returned {type(result).__name__}, not a list")
        entries: dict[str, RemoteEntry] = {}
        for e in result:
            if not isinstance(e, RemoteEntry):
                raise TypeError(f"on_html_page returned a {type(e).__name__}, not a RemoteEntry")
            if e.name in (".", ".."):
                continue
            if not listed_name(e.name):
                log.warning("index %s: on_html_page entry %r left out (could escape)", url, e.name)
                continue
            entries.setdefault(e.name, e)
        return list(entries.values())

    def on_start(self, config: Settings) -> None:
        self._pm.hook.on_start(config=config)

    def on_stop(self, config: Settings) -> None:
        self._pm.hook.on_stop(config=config)


class HeartbeatTicker:
    """Calls the plugins' ``on_heartbeat`` at most every ``interval`` seconds; the runner
    calls :meth:`tick` from its housekeeping step (every few seconds)."""

    def __init__(self, plugins: Plugins, config: Settings, interval: float) -> None:
        self.plugins = plugins
        self.config = config
        self.interval = max(float(interval), 0.0)
        self._next: float | None = None

    def tick(self, now: float | None = None) -> bool:
        """Call ``on_heartbeat`` if an interval has passed since the first tick or the last
        call; True when it was called."""
        if self.plugins.empty:
            return False
        now = time.monotonic() if now is None else now
        if self._next is None:
            self._next = now + self.interval
        if now < self._next:
            return False
        self._next = now + self.interval
        self.plugins.on_heartbeat(self.config)
        return True
