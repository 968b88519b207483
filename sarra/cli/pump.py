"""``sr``: the pump-wide command, one verb over every configuration of every component.

``sr [--json] [--sr3] <action> [component[/config] ...]``

Without a selection the action applies to the configurations of every component of the
runtime's registry (:data:`sarra.components.IMPLEMENTED`) that the per-component command would
pick without one: the enabled ones for ``start``, ``restart``, ``sanity`` and ``reload``, all of
them for ``stop``, ``status`` and ``list``. A one-shot component (``post``) takes part only with
the configurations that set ``sleep > 0`` (the others are not daemons). A selection names
``component/config`` pairs, or a bare ``component`` for all its configurations; an unknown
component or configuration is a usage error (exit 2) naming it, and then nothing is done.

There is no second implementation of the verbs: for each (component, config) pair this calls the
same verb function ``sr_<component> <action> <config>`` runs (:data:`sarra.cli.verbs.VERBS`),
whose output lines already name ``component/config``. Exit status: the worst of the pairs
(0 all succeeded, 1 some action failed or some expected instance is not running, 2 a
configuration error), or 2 for a usage error of ``sr`` itself.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit

from sarra.cli import configs as cf
from sarra.cli import verbs
from sarra.cli.account import become_system_account
from sarra.cli.clusterstatus import cluster_section
from sarra.cli.downcause import why_down
from sarra.cli.instances import State, instance_pid, pid_file_numbers
from sarra.cli.logs import redact
from sarra.cli.runtime import Runtime, default_runtime
from sarra.cli.supervisor import Planned
from sarra.errors import ConfigError

#: actions of ``sr``; all but ``reload`` are the per-component verbs of the same name
ACTIONS: dict[str, str] = {
    "start": "start the missing instances of every enabled config",
    "stop": "stop every instance of every config",
    "restart": "stop, then start, every enabled config",
    "status": "instances and queues of every config (--json: machine-readable)",
    "sanity": "restart dead and hung instances, remove stale pid files",
    "list": "list every component's configs (component/config)",
    "reload": "restart the running configs whose file changed since they started",
    "supervise": "run every enabled config here, in the foreground, until SIGTERM (for systemd)",
    "web": "serve a status page, status.json and Prometheus metrics (--listen HOST:PORT)",
    "log": "follow one config's log across its instances (component/config, -n LINES)",
}

#: actions parsed by their own module (``main(argv, runtime, out, err)``)
OWN_OPTIONS = {"web": "sarra.cli.web", "log": "sarra.cli.follow"}

#: version of the ``sr status --json`` document (see docs/cli-verbs.md)
JSON_SCHEMA = 1

USAGE = (
    "usage: sr [--json] [--sr3] <action> [component[/config] ...]\n"
    "       sr [--sr3] web [--listen HOST:PORT] [--auth FILE] [--every SECONDS]\n"
    "       sr [--sr3] log [-n LINES] [--no-follow] component/config"
)


@dataclass(frozen=True, slots=True)
class Pair:
    """One configuration of one component."""

    component: str
    config: str
    enabled: bool

    @property
    def label(self) -> str:
        return f"{self.component}/{self.config}"


def main(
    argv: Sequence[str] | None = None,
    *,
    runtime: Runtime | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``sr`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    from sarra.cli.main import config_tree

    args = list(sys.argv[1:] if argv is None else argv)
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    first = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    if first is not None and args[first] in OWN_OPTIONS and set(args[:first]) <= {"--sr3"}:
        # these actions have options with values of their own
        action = args[first]
        return own_options(action, args[first + 1 :], "--sr3" in args[:first], runtime, out, err)
    flags = {a for a in args if a.startswith("-")}
    words = [a for a in args if not a.startswith("-")]
    if flags & {"-h", "--help"}:
        actions = "\n".join(f"  {name:<8} {text}" for name, text in ACTIONS.items())
        print(f"{USAGE}\n\nactions:\n{actions}", file=out)
        return 0
    try:
        unknown = sorted(flags - {"--json", "--sr3"})
        if unknown:
            raise ConfigError(f"unknown option {unknown[0]!r}; {USAGE}")
        if not words or words[0] not in ACTIONS:
            given = f"unknown action {words[0]!r}" if words else "no action given"
            raise ConfigError(f"{given}; one of: {', '.join(ACTIONS)}")
        action, selection = words[0], words[1:]
        as_json = "--json" in flags
        if as_json and action != "status":
            raise ConfigError("--json goes with status only")
        if runtime is None:
            become_system_account()
        rt = runtime if runtime is not None else default_runtime()
        with config_tree("--sr3" in flags):
            pairs, rc = select(rt, action, selection, err)
            if action == "status" and as_json:
                records = [status_record(rt, pair) for pair in pairs]
                ok = rc == 0 and all(r["ok"] for r in records)
                document = {"schema": JSON_SCHEMA, "ok": ok, "configs": records}
                if not selection:
                    document["cluster"] = cluster_section(rt.config_dir())[0]
                print(json.dumps(document, indent=2), file=out)
                return 0 if ok else 1
            if action == "supervise":
                return supervise(rt, selection, err)
            if action == "list" and not selection:
                for pair in pairs:
                    print(pair.label + ("" if pair.enabled else "  (disabled)"), file=out)
                return rc
            rc = max(rc, run_pairs(rt, action, pairs, out, err))
            if action == "status" and not selection:
                for line in cluster_section(rt.config_dir())[1]:
                    print(line, file=out)
            return rc
    except ConfigError as exc:
        print(f"sr: {redact(str(exc))}", file=err)
        return 2


def own_options(
    action: str, argv: Sequence[str], sr3: bool, runtime: Runtime | None, out: TextIO, err: TextIO
) -> int:
    """``sr web`` (:mod:`sarra.cli.web`) and ``sr log`` (:mod:`sarra.cli.follow`), imported
    here: only these actions need them."""
    from sarra.cli.main import config_tree

    module = importlib.import_module(OWN_OPTIONS[action])
    try:
        rt = runtime if runtime is not None else default_runtime()
        with config_tree(sr3):
            status: int = module.main(list(argv), rt, out, err)
            return status
    except ConfigError as exc:
        print(f"sr {action}: {redact(str(exc))}", file=err)
        return 2


def select(
    rt: Runtime, action: str, selection: Sequence[str], err: TextIO
) -> tuple[list[Pair], int]:
    """The (component, config) pairs ``action`` applies to, and 1 if some could not be judged
    (a one-shot component's config that does not load), else 0.

    Raises:
        ConfigError: the selection names an unknown component or configuration.
    """
    config_dir = rt.config_dir()
    if selection:
        pairs: list[Pair] = []
        for item in selection:
            component, _, config = item.partition("/")
            if component not in rt.registry:
                raise ConfigError(
                    f"{item}: unknown component {component!r}; one of: {', '.join(rt.registry)}"
                )
            if "/" in config:
                raise ConfigError(f"{item}: a selection is component/config")
            if config:
                try:
                    found = cf.find_config(config_dir, component, config)
                except ConfigError as exc:
                    raise ConfigError(f"{item}: {exc}") from exc
                pairs.append(Pair(component, found.name, found.enabled))
            else:
                pairs += [
                    Pair(component, c.name, c.enabled)
                    for c in cf.list_configs(config_dir, component)
                ]
        return list(dict.fromkeys(pairs)), 0  # in the order given, each once
    every = action in {"stop", "status", "list"}  # disabled configs too, as per component
    pairs = []
    rc = 0
    for component in rt.registry:
        one_shot = rt.registry[component].one_shot and action != "list"
        for found in cf.list_configs(config_dir, component):
            if not (found.enabled or every):
                continue
            if one_shot:
                try:
                    daemon = rt.load_config(component, found.name, ()).sleep > 0
                except ConfigError as exc:
                    print(f"sr: {component}/{found.name}: {redact(str(exc))}", file=err)
                    rc = 1
                    continue
                if not daemon:
                    continue
            pairs.append(Pair(component, found.name, found.enabled))
    return pairs, rc


def context(
    rt: Runtime, component: str, action: str, config: str, out: TextIO, err: TextIO
) -> verbs.Context:
    """The :class:`verbs.Context` of ``sr_<component> <action> <config>``."""
    argv = [action, config]
    cmdline = rt.parse_command_line(component, argv)
    return verbs.Context(rt, component, rt.registry, cmdline, argv, out, err)


def run_pairs(rt: Runtime, action: str, pairs: Sequence[Pair], out: TextIO, err: TextIO) -> int:
    """Run ``action`` on each pair as ``sr_<component> <action> <config>`` would; the worst
    exit status. A configuration error stops that pair only. ``status`` prints its header
    once."""
    from sarra.cli.main import dispatch

    rc = 0
    header = False
    for pair in pairs:
        sink = io.StringIO() if action == "status" else out  # status: one header
        ctx = context(
            rt, pair.component, "restart" if action == "reload" else action, pair.config, sink, err
        )
        try:
            status = reload(ctx, pair) if action == "reload" else dispatch(ctx)
        except ConfigError as exc:
            print(f"sr_{pair.component}: {redact(str(exc))}", file=err)
            status = 2
        rc = max(rc, status)
        if sink is not out and isinstance(sink, io.StringIO):
            lines = sink.getvalue().splitlines(keepends=True)
            if header and lines and lines[0].startswith("config "):
                lines = lines[1:]
            header = header or bool(lines)
            out.write("".join(lines))
    return rc


def supervise(rt: Runtime, selection: Sequence[str], err: TextIO) -> int:
    """``sr supervise``: one supervisor (:mod:`sarra.cli.supervisor`) for every enabled
    configuration selected, the main process of ``sarra.service``. The selection is read again
    at each SIGHUP, so configurations added or enabled since are started then. A configuration
    that does not load is reported on stderr and left out; the others run."""
    select(rt, "supervise", selection, err)  # a bad selection is a usage error now, not later

    def plan() -> list[Planned]:
        pairs, _ = select(rt, "supervise", selection, err)
        found = []
        for pair in (p for p in pairs if p.enabled):
            ctx = context(rt, pair.component, "supervise", pair.config, err, err)
            try:
                found.append(verbs.planned(ctx, pair.config))
            except ConfigError as exc:  # one broken file does not keep the pump down
                print(f"sr: {pair.label}: {redact(str(exc))}, not started", file=err)
        return found

    return verbs.run_supervisor(plan, rt)


def reload(ctx: verbs.Context, pair: Pair) -> int:
    """Restart the instances of ``pair`` if its configuration file was modified after the
    oldest of them started (the modification time of the file against that of the pid files,
    which instances write when they start). Configs that do not run are left alone, and so
    are changes to included files, ``default.conf`` or credentials alone."""
    boss = verbs.supervised(ctx, pair.config)
    if boss is not None and sys.platform != "win32":  # it compares the file's time itself
        os.kill(boss, signal.SIGHUP)
        ctx.say(pair.config, f"reload asked of supervisor pid {boss}")
        return 0
    live = verbs.running(ctx, pair.config)
    if not live:
        ctx.say(pair.config, "not running, left alone")
        return 0
    path = cf.find_config(ctx.runtime.config_dir(), pair.component, pair.config).path
    started = min(inst.pid_path.stat().st_mtime for inst, _ in live)
    if path.stat().st_mtime <= started:
        ctx.say(pair.config, "unchanged since started")
        return 0
    ctx.say(pair.config, "configuration changed, restarting")
    return verbs.restart(ctx, [pair.config])


def status_record(rt: Runtime, pair: Pair) -> dict[str, Any]:
    """One entry of ``sr status --json`` (schema in docs/cli-verbs.md); no broker URL."""
    ctx = context(rt, pair.component, "status", pair.config, io.StringIO(), io.StringIO())
    record: dict[str, Any] = {
        "component": pair.component,
        "config": pair.config,
        "enabled": pair.enabled,
        "error": None,
    }
    config, expected = pair.config, 0
    cfg = None
    if pair.enabled:
        try:
            config, cfg = verbs.load(ctx, pair.config)
            expected = verbs.expected_count(cfg)
        except ConfigError as exc:
            record["error"] = redact(str(exc))
    state_dir = rt.state_dir(pair.component, config)
    numbers = sorted(
        set(range(1, expected + 1)) | set(pid_file_numbers(state_dir, pair.component, config))
    )
    instances = []
    for number in numbers:
        inst = verbs.instance(ctx, config, number)
        state, pid = instance_pid(inst)
        connection = verbs.instance_connection(inst) if state is State.RUNNING else None
        instances.append(
            {
                "number": number,
                "state": str(state),
                "pid": pid,
                "extra": number > expected,
                "why": why_down(inst, state, connection),
            }
        )
    running = [i for i in instances if i["state"] == State.RUNNING and not i["extra"]]
    record["instances"] = {
        "expected": expected,
        "running": len(running),
        "pids": [i["pid"] for i in instances if i["state"] == State.RUNNING],
        "each": instances,
    }
    record["queue"] = None if cfg is None else queue_record(ctx, cfg)
    record["names"] = None if cfg is None else flow_names(cfg)
    record["ok"] = record["error"] is None and len(running) == expected
    return record


def flow_names(cfg: Any) -> dict[str, Any]:
    """Whose a configuration's flow is: its broker users (``broker``, ``post_broker``), the
    exchanges it reads and posts to, and its ``source`` option (``sr web`` shows a source
    the configurations that are wholly its own)."""
    users = set()
    for url in (_option(cfg, "broker"), _option(cfg, "post_broker")):
        if url:
            with contextlib.suppress(ValueError):
                user = urlsplit(url).username
                if user:
                    users.add(user)
    exchanges = {b.exchange for b in _option(cfg, "bindings") or () if b.exchange}
    exchanges |= {x for x in (_option(cfg, "exchange"), _option(cfg, "post_exchange")) if x}
    return {
        "users": sorted(users),
        "exchanges": sorted(exchanges),
        "source": _option(cfg, "source"),
    }


def _option(cfg: Any, name: str) -> Any:
    """An option of a loaded configuration, None when the component has no such option."""
    try:
        return getattr(cfg, name)
    except (AttributeError, KeyError):
        return None


def queue_record(ctx: verbs.Context, cfg: Any) -> dict[str, Any]:
    """The component's queue status, or ``{"error": ...}`` when it cannot tell."""
    try:
        st = ctx.component.status(cfg)
    except Exception as exc:  # as in ``status``: liveness is reported whatever the broker does
        return {"error": redact(str(exc)) or type(exc).__name__}
    return {
        "name": redact(st.queue) if st.queue else None,
        "backlog": st.backlog,
        "consumers": st.consumers,
        "extra": {str(k): redact(str(v)) for k, v in st.extra.items()},
    }
