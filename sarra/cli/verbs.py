"""The management verbs of every ``sr_*`` command.

Each verb is ``verb(ctx, configs) -> exit status``. :data:`VERBS` describes them for dispatch,
``--help`` and the man page. Verbs print one line per thing they did to ``ctx.out``; problems go
to ``ctx.err``. Configuration errors are raised as :class:`sarra.errors.ConfigError` and turned
into exit status 2 by :func:`sarra.cli.main.main`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from sarra.cli import configs as cf
from sarra.cli.downcause import why_down
from sarra.cli.instances import (
    Instance,
    State,
    instance_pid,
    last_activity,
    pid_file_numbers,
    remove_stale_temporaries,
    spawn,
    terminate,
)
from sarra.cli.logs import instance_tag, redact, remove_handler, setup_console_logging
from sarra.cli.runtime import ARGV_ENV, CommandLine, Runtime
from sarra.cli.signals import install_stop_handlers
from sarra.components.base import Component
from sarra.config.convert import convert_text
from sarra.config.settings import Settings
from sarra.errors import ConfigError, SarraError

if TYPE_CHECKING:
    from sarra.cli.supervisor import Planned

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Context:
    """One invocation: which component, its collaborators, the parsed and raw command line."""

    runtime: Runtime
    name: str
    #: where :attr:`component` comes from (``runtime.registry`` as a rule)
    registry: Mapping[str, Component]
    cmdline: CommandLine
    argv: Sequence[str]
    out: TextIO
    err: TextIO

    @property
    def component(self) -> Component:
        """The component, imported on first use: ``start`` and ``stop`` only load
        configurations and manage processes, so they do not import the flow code that the
        instances they spawn import anyway (its start-up is on the path to the first file)."""
        return self.registry[self.name]

    @property
    def one_shot(self) -> bool:
        """The component's ``one_shot``, from the registry when it knows it without
        importing the component (:meth:`sarra.components.Registry.one_shot`)."""
        known = getattr(self.registry, "one_shot", None)
        if callable(known):
            return bool(known(self.name))
        return self.component.one_shot

    def say(self, subject: str, text: str) -> None:
        print(f"{self.name}/{subject}: {text}", file=self.out)

    def complain(self, subject: str, text: str) -> None:
        print(f"sr_{self.name}: {subject}: {redact(text)}", file=self.err)

    def attempt(
        self, subject: str, verb: str, step: Callable[[Settings], None], cfg: Settings
    ) -> bool:
        """Run ``step(cfg)`` for configuration ``subject``: True when it succeeded; a SarraError
        is reported as "``verb`` failed" and gives False (the verb goes on with the next one)."""
        try:
            step(cfg)
        except SarraError as exc:
            self.complain(subject, f"{verb} failed: {exc}")
            return False
        return True


Verb = Callable[[Context, Sequence[str]], int]


@dataclass(frozen=True, slots=True)
class Action:
    """A verb and how it treats its configuration arguments."""

    run: Verb
    help: str
    #: "one": exactly one config; "some": one or more; "any": none means all (see all_configs)
    arity: str
    #: when no config is given, the configs the verb applies to: "enabled", "all" (disabled
    #: too) or "none" (the verb gets an empty list)
    all_configs: str = "enabled"


# -- helpers -------------------------------------------------------------------------------


def load(ctx: Context, arg: str) -> tuple[str, Settings]:
    """Load configuration ``arg``; returns (config name, Config). Raises ConfigError."""
    cfg = ctx.runtime.load_config(ctx.name, arg, ctx.cmdline.options)
    name = getattr(cfg, "name", None)
    return (name if isinstance(name, str) and name else cf.config_name(arg)), cfg


def instance(ctx: Context, config: str, number: int) -> Instance:
    return Instance(
        component=ctx.name,
        config=config,
        number=number,
        state_dir=ctx.runtime.state_dir(ctx.name, config),
        log_dir=ctx.runtime.log_dir(),
    )


def expected_count(cfg: Settings) -> int:
    return cfg.instances if cfg.instances > 0 else 1


def running(ctx: Context, config: str) -> list[tuple[Instance, int]]:
    """Instances of ``config`` with a live, verified pid."""
    state_dir = ctx.runtime.state_dir(ctx.name, config)
    found = []
    for number in pid_file_numbers(state_dir, ctx.name, config):
        inst = instance(ctx, config, number)
        state, pid = instance_pid(inst)
        if state is State.RUNNING and pid is not None:
            found.append((inst, pid))
    return found


def is_disabled(ctx: Context, arg: str) -> bool:
    try:
        return not cf.find_config(ctx.runtime.config_dir(), ctx.name, arg).enabled
    except ConfigError:
        return False  # a path outside the config dir, or a name the loader resolves itself


def supervised(ctx: Context, config: str) -> int | None:
    """The pid of the supervisor (``supervise``, a service) running ``config``, or None."""
    from sarra.cli.supervisor import supervisor_of  # not needed by an instance's start-up

    return supervisor_of(ctx.runtime.state_dir(ctx.name, config), ctx.name, config)


def instance_env(ctx: Context, arg: str) -> dict[str, str]:
    """Environment of an instance process of ``arg``: the user's argv travels there."""
    env = dict(os.environ)
    env[ARGV_ENV] = json.dumps({"argv": list(ctx.argv), "config": arg})
    env.update(ctx.runtime.extra_env or {})
    return env


def _spawn(ctx: Context, arg: str, config: str, numbers: Sequence[int]) -> int:
    if not numbers:
        return 0
    env = instance_env(ctx, arg)
    todo = [instance(ctx, config, n) for n in numbers]
    results = spawn(todo, ctx.runtime.launcher, env, ctx.runtime.start_timeout)
    rc = 0
    for inst in todo:
        problem = results.get(inst.number)
        if problem is None:
            ctx.say(config, f"instance {inst.number:03d} started")
        else:
            ctx.complain(config, f"instance {inst.number:03d} {problem}")
            rc = 1
    return rc


def _stop_extras(ctx: Context, config: str, count: int) -> None:
    state_dir = ctx.runtime.state_dir(ctx.name, config)
    extras = [n for n in pid_file_numbers(state_dir, ctx.name, config) if n > count]
    if extras:
        insts = [instance(ctx, config, n) for n in extras]
        for number, outcome in terminate(insts, ctx.runtime.stop_timeout).items():
            ctx.say(config, f"extra instance {number:03d} {outcome}")


# -- daemon verbs --------------------------------------------------------------------------


def start(ctx: Context, configs: Sequence[str]) -> int:
    """Start the missing instances 1..instances of each config (idempotent).

    With ``reset on``, a config none of whose instances runs starts afresh: its queue and
    local state are deleted first, as ``cleanup`` does (``restart`` therefore resets too).
    """
    rc = 0
    for arg in configs:
        if is_disabled(ctx, arg):
            ctx.complain(cf.config_name(arg), "disabled, not started (use enable first)")
            rc = 1
            continue
        config, cfg = load(ctx, arg)
        boss = supervised(ctx, config)
        if boss is not None:
            ctx.say(config, f"already running under supervisor pid {boss}")
            continue
        count = expected_count(cfg)
        _stop_extras(ctx, config, count)
        if cfg.reset:
            if running(ctx, config):
                ctx.say(config, "reset skipped: instances are running")
            elif not _clean(ctx, config, cfg):
                rc = 1
                continue
        missing = []
        for number in range(1, count + 1):
            inst = instance(ctx, config, number)
            state, pid = instance_pid(inst)
            if state is State.RUNNING:
                ctx.say(config, f"instance {number:03d} already running (pid {pid})")
            else:
                inst.pid_path.unlink(missing_ok=True)
                missing.append(number)
        rc = max(rc, _spawn(ctx, arg, config, missing))
    return rc


def stop(ctx: Context, configs: Sequence[str]) -> int:
    """SIGTERM all instances with pid files, SIGKILL after the timeout; remove pid files.
    A configuration run by a supervisor is left to it (exit status 1)."""
    rc = 0
    for arg in configs:
        config = cf.config_name(arg)
        boss = supervised(ctx, config)
        if boss is not None:
            ctx.complain(
                config,
                f"run by supervisor pid {boss} (a service such as sr_{ctx.name}@{config}): "
                "stop the service instead (systemctl stop ...)",
            )
            rc = 1
            continue
        state_dir = ctx.runtime.state_dir(ctx.name, config)
        insts = [instance(ctx, config, n) for n in pid_file_numbers(state_dir, ctx.name, config)]
        if not insts:
            ctx.say(config, "not running")
        for number, outcome in terminate(insts, ctx.runtime.stop_timeout).items():
            ctx.say(config, f"instance {number:03d} {outcome}")
    return rc


def restart(ctx: Context, configs: Sequence[str]) -> int:
    """stop, then start; a configuration run by a supervisor is restarted by it."""
    rc = 0
    own = []
    for arg in configs:
        config = cf.config_name(arg)
        boss = supervised(ctx, config)
        if boss is None:
            own.append(arg)
            continue
        from sarra.cli.supervisor import request_restart

        request_restart(ctx.runtime.state_dir(ctx.name, config), ctx.name, config, boss)
        ctx.say(config, f"restart asked of supervisor pid {boss}")
    if own:
        stop(ctx, own)
        rc = start(ctx, own)
    return rc


def silent_for(inst: Instance, now: float | None = None) -> float | None:
    """Seconds since a running instance last showed life: the latest write of its heartbeat
    file, its log or its pid file (written at start). None when it keeps no heartbeat file
    (a component without one, such as sr_report, cannot be judged by its silence)."""
    if not inst.heartbeat_path.exists():
        return None
    times = [t for t in (last_activity(inst),) if t is not None]
    with contextlib.suppress(FileNotFoundError):
        times.append(inst.pid_path.stat().st_mtime)
    if not times:
        return None
    return max((time.time() if now is None else now) - max(times), 0.0)


def sanity(ctx: Context, configs: Sequence[str]) -> int:
    """Restart missing or dead instances; remove stale pid files. An instance that runs but
    has written neither its heartbeat nor its log for longer than ``sanity_log_dead`` is
    hung: it is stopped (killed if SIGTERM is not enough) and started again."""
    rc = 0
    for arg in configs:
        if is_disabled(ctx, arg):
            continue
        config, cfg = load(ctx, arg)
        boss = supervised(ctx, config)
        if boss is not None:
            ctx.say(config, f"run by supervisor pid {boss}, which restarts its instances")
            continue
        count = expected_count(cfg)
        dead_after = max(cfg.sanity_log_dead, 0.0)  # 0: never judged hung
        state_dir = ctx.runtime.state_dir(ctx.name, config)
        numbers = sorted(
            set(range(1, count + 1)) | set(pid_file_numbers(state_dir, ctx.name, config))
        )
        missing = []
        hung: list[Instance] = []
        for number in numbers:
            inst = instance(ctx, config, number)
            state, _ = instance_pid(inst)
            if state is State.STALE:
                inst.pid_path.unlink(missing_ok=True)
                ctx.say(config, f"instance {number:03d} stale pid file removed")
            if state is State.RUNNING and dead_after > 0 and number <= count:
                silence = silent_for(inst)
                if silence is not None and silence > dead_after:
                    ctx.say(
                        config,
                        f"instance {number:03d} silent for {silence:.0f} s "
                        f"(sanity_log_dead {dead_after:g} s): hung, restarting",
                    )
                    hung.append(inst)
            if state is not State.RUNNING and number <= count:
                missing.append(number)
        for number, outcome in terminate(hung, ctx.runtime.stop_timeout).items():
            ctx.say(config, f"instance {number:03d} {outcome}")
            missing.append(number)
        rc = max(rc, _spawn(ctx, arg, config, sorted(missing)))
    return rc


def _ago(mtime: float | None) -> str:
    if mtime is None:
        return "-"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime))
    return f"{stamp} ({max(time.time() - mtime, 0):.0f} s ago)"


def status(ctx: Context, configs: Sequence[str]) -> int:
    """One line per instance; exit 0 only if every expected instance runs."""
    from sarra.flow.heartbeat import read_note

    rc = 0
    print(f"{'config':<28} {'inst':>4} {'pid':>8}  {'state':<10} last activity", file=ctx.out)
    for arg in configs:
        label = f"{ctx.name}/{cf.config_name(arg)}"
        disabled = is_disabled(ctx, arg)
        cfg: Settings | None = None
        config = cf.config_name(arg)
        count = 0
        if not disabled:
            try:
                config, cfg = load(ctx, arg)
                count = expected_count(cfg)
            except ConfigError as exc:
                print(f"{label:<28} config error: {redact(str(exc))}", file=ctx.out)
                rc = 1
        state_dir = ctx.runtime.state_dir(ctx.name, config)
        numbers = sorted(
            set(range(1, count + 1)) | set(pid_file_numbers(state_dir, ctx.name, config))
        )
        if disabled and not numbers:
            print(f"{label:<28} {'-':>4} {'-':>8}  {State.DISABLED:<10} -", file=ctx.out)
        for number in numbers:
            inst = instance(ctx, config, number)
            state, pid = instance_pid(inst)
            shown = str(state)
            if disabled and state is not State.RUNNING:
                shown = str(State.DISABLED)
            elif number > count and not disabled:
                shown += " (extra)"
            elif state is not State.RUNNING:
                rc = 1
            pid_text = str(pid) if pid is not None else "-"
            seen = _ago(last_activity(inst))
            note = read_note(inst.heartbeat_path) if state is State.RUNNING else ""
            if note:  # e.g. "paused: retry queue: ... No space left on device"
                shown = note.split(":", 1)[0]
                seen = f"{seen}; {redact(note)}"
            connection = instance_connection(inst) if state is State.RUNNING else None
            why = why_down(inst, state, connection)
            if why and not (disabled and state is not State.RUNNING):
                seen = f"{seen}; {why}"
            tag = instance_tag(number)
            print(f"{label:<28} {tag:>4} {pid_text:>8}  {shown:<10} {seen}", file=ctx.out)
        if cfg is not None:
            print(f"{label:<28} {_broker_status(ctx, cfg)}", file=ctx.out)
    return rc


def instance_connection(inst: Instance) -> str | None:
    """The connection state a running instance's metrics file gives (None: none yet)."""
    from sarra.flow.metrics import read_metrics

    doc = read_metrics(inst.metrics_path)
    return None if doc is None else str(doc.get("connection") or "") or None


def _broker_status(ctx: Context, cfg: Settings) -> str:
    try:
        st = ctx.component.status(cfg)
    except Exception as exc:  # status must always show liveness, whatever the broker side does
        return f"queue status unavailable: {redact(str(exc)) or type(exc).__name__}"
    parts = [
        f"queue {st.queue or '-'}",
        f"backlog {'-' if st.backlog is None else st.backlog}",
        f"consumers {'-' if st.consumers is None else st.consumers}",
    ]
    parts += [f"{k} {v}" for k, v in st.extra.items()]
    return redact("  ".join(parts))


# -- one config verbs ----------------------------------------------------------------------


def foreground(ctx: Context, configs: Sequence[str]) -> int:
    """Run instance 0 in this process, logging to the console, until SIGTERM/SIGINT."""
    arg = configs[0] if configs else None
    if arg is None:
        cfg = ctx.runtime.load_config(ctx.name, None, ctx.cmdline.options)
        config = "-"
    else:
        config, cfg = load(ctx, arg)
    state_dir = ctx.runtime.state_dir(ctx.name, config) if arg is not None else None
    return run_instance(
        ctx.component, cfg, f"{ctx.name}/{config}/000", 0, console=True, state_dir=state_dir
    )


def supervise(ctx: Context, configs: Sequence[str]) -> int:
    """Run every instance of ``configs`` (all enabled ones when none is named) as children of
    this process, logging to stderr, until SIGTERM (see :mod:`sarra.cli.supervisor`): the main
    process of a systemd service. SIGHUP re-reads the configurations."""
    named = list(ctx.cmdline.configs)

    def plan() -> list[Planned]:
        chosen = named or [
            c.name for c in cf.list_configs(ctx.runtime.config_dir(), ctx.name) if c.enabled
        ]
        return [planned(ctx, arg) for arg in chosen if not is_disabled(ctx, arg)]

    return run_supervisor(plan, ctx.runtime)


def planned(ctx: Context, arg: str) -> Planned:
    """What ``supervise`` runs for configuration ``arg``. Raises ConfigError."""
    from sarra.cli.supervisor import plan_entry

    config, cfg = load(ctx, arg)
    return plan_entry(
        ctx.name,
        config,
        cfg.config_path,
        expected_count(cfg),
        ctx.runtime.state_dir(ctx.name, config),
        ctx.runtime.log_dir(),
        instance_env(ctx, arg),
    )


def run_supervisor(plan: Callable[[], list[Planned]], runtime: Runtime) -> int:
    """Run a :class:`Supervisor` over ``plan`` in this process, logging to stderr."""
    from sarra.cli.supervisor import Supervisor

    handler = setup_console_logging(context="supervisor", loglevel="info")
    try:
        return Supervisor(plan, runtime.launcher, runtime.stop_timeout).run()
    finally:
        remove_handler(handler)


def run_instance(
    component: Component,
    cfg: Settings,
    context: str,
    number: int,
    console: bool,
    state_dir: Path | None = None,
) -> int:
    """Run one instance of ``component`` in this process until it returns or is signalled.

    ``state_dir``: the configuration's state directory, cleared first of the temporaries that
    killed writers left there (:func:`sarra.cli.instances.remove_stale_temporaries`).
    """
    handler = (
        setup_console_logging(
            context=context, loglevel=loglevel(cfg), json_lines=cfg.log_format == "json"
        )
        if console
        else None
    )
    if state_dir is not None:
        for name in remove_stale_temporaries(state_dir):
            _log.info("removed %s, left in %s by a process that is gone", name, state_dir)
    stop_event = threading.Event()
    restore = install_stop_handlers(stop_event)
    line = None
    if console:
        from sarra.cli.progress import progress_for  # tqdm: only for console runs

        line = progress_for(component, cfg, sys.stderr, context)
    try:
        return component.run(cfg, number, stop_event)
    finally:
        if line is not None:
            line.close()
        restore()
        if handler is not None:
            remove_handler(handler)


def loglevel(cfg: Settings) -> str:
    return "debug" if cfg.debug else cfg.loglevel


def cleanup(ctx: Context, configs: Sequence[str]) -> int:
    """Delete the broker-side queue and local state; refused while instances run."""
    rc = 0
    for arg in configs:
        config, cfg = load(ctx, arg)
        if running(ctx, config):
            ctx.complain(config, "instances are running; stop them before cleanup")
            rc = 1
            continue
        if not _clean(ctx, config, cfg):
            rc = 1
    return rc


def _clean(ctx: Context, config: str, cfg: Settings) -> bool:
    """Delete the queue and the local state of a stopped config; False if that failed."""
    if not ctx.attempt(config, "cleanup", ctx.component.cleanup, cfg):
        return False
    shutil.rmtree(ctx.runtime.state_dir(ctx.name, config), ignore_errors=True)
    ctx.say(config, "cleaned up")
    return True


def retry_return(ctx: Context, configs: Sequence[str]) -> int:
    """``retry-return CONFIG PATH...``: hand the disk retry entries in PATH (``retry_NNN.jsonl``
    files, or a directory holding them: a dead node's state directory of CONFIG) back to
    CONFIG's queue on the broker, as a stopping instance does (:mod:`sarra.flow.retryreturn`).
    Refused for this node's own state while CONFIG's instances run (they own those files)."""
    from sarra.flow.retryqueue import RetryQueue
    from sarra.flow.retryreturn import hand_back

    if len(configs) < 2:
        raise ConfigError("retry-return needs a configuration and at least one path")
    config, cfg = load(ctx, configs[0])
    target = getattr(ctx.component, "retry_target", None)
    if target is None:
        raise ConfigError(f"sr_{ctx.name} has no queue of its own to return retry entries to")
    files: list[Path] = []
    for arg in configs[1:]:
        p = Path(arg)
        if p.is_dir():
            files.extend(sorted(p.glob("retry_[0-9][0-9][0-9]*.jsonl")))
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"retry-return: {arg}: no such file or directory")
    own = ctx.runtime.state_dir(ctx.name, config).resolve()
    if running(ctx, config) and any(f.resolve().is_relative_to(own) for f in files):
        ctx.complain(config, "instances are running and own these retry files; stop them first")
        return 1
    if not files:
        ctx.complain(config, f"no retry_NNN.jsonl file in {', '.join(configs[1:])}")
        return 1
    # the queue must exist: the default exchange drops a message for a missing queue
    if not ctx.attempt(config, "declare", ctx.component.declare, cfg):
        return 1
    rc = 0
    for f in files:
        number = f.stem.rpartition("_")[2]
        session, queue = target(cfg, int(number) if number.isdigit() else None)
        rq = RetryQueue(f, ttl=3600.0)
        try:
            returned, reason = hand_back(rq, session, queue)
            left = len(rq)
        finally:
            rq.close()
            session.close()
        ctx.say(config, f"{f}: {returned} retry entries returned to queue {queue}")
        if left:
            ctx.complain(config, f"{f}: {left} retry entries kept (not returned: {reason})")
            rc = 1
    return rc


def declare(ctx: Context, configs: Sequence[str]) -> int:
    """Create the exchanges and queues each configuration uses."""
    rc = 0
    for arg in configs:
        config, cfg = load(ctx, arg)
        if not ctx.attempt(config, "declare", ctx.component.declare, cfg):
            rc = 1
            continue
        ctx.say(config, "declared")
    return rc


# -- config file verbs ---------------------------------------------------------------------


def list_(ctx: Context, configs: Sequence[str]) -> int:
    """Without a config: the component's configs; with one: print its file."""
    config_dir = ctx.runtime.config_dir()
    if configs:
        for arg in configs:
            found = cf.find_config(config_dir, ctx.name, arg)
            ctx.out.write(found.path.read_text(encoding="utf-8", errors="replace"))
        return 0
    for found in cf.list_configs(config_dir, ctx.name):
        suffix = "" if found.enabled else "  (disabled)"
        print(f"{found.name}{suffix}", file=ctx.out)
    return 0


def convert(ctx: Context, configs: Sequence[str]) -> int:
    """Print the sarra form of each sr2 or sr3 file (a path, or a config of this component):
    canonical option names, sarra's built-in plugins, refused lines as comments with the
    reason (sarra.config.convert)."""
    for arg in configs:
        path = Path(arg).expanduser()
        if not path.is_file():
            path = cf.find_config(ctx.runtime.config_dir(), ctx.name, arg).path
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}", path=str(path)) from exc
        print(f"# sarra form of {path} (sr_{ctx.name} convert)", file=ctx.out)
        ctx.out.write(convert_text(ctx.name, text))
    return 0


def edit(ctx: Context, configs: Sequence[str]) -> int:
    """Open the config in $EDITOR (default vi)."""
    import subprocess  # only the edit verb runs a program

    found = cf.find_config(ctx.runtime.config_dir(), ctx.name, configs[0])
    editor = shlex.split(os.environ.get("EDITOR") or "vi")
    return subprocess.run([*editor, str(found.path)], check=False).returncode


def add(ctx: Context, configs: Sequence[str]) -> int:
    """Copy each file into the component's config directory."""
    for arg in configs:
        added = cf.add_config(ctx.runtime.config_dir(), ctx.name, Path(arg))
        ctx.say(added.name, f"added as {added.path}")
    return 0


def remove(ctx: Context, configs: Sequence[str]) -> int:
    """Delete config files; refused while their instances run."""
    rc = 0
    for arg in configs:
        found = cf.find_config(ctx.runtime.config_dir(), ctx.name, arg)
        if running(ctx, found.name):
            ctx.complain(found.name, "instances are running; stop them before remove")
            rc = 1
            continue
        found.path.unlink()
        ctx.say(found.name, "removed")
    return rc


def enable(ctx: Context, configs: Sequence[str]) -> int:
    """Rename ``<config>.conf.off`` back to ``<config>.conf``."""
    for arg in configs:
        found = cf.set_enabled(ctx.runtime.config_dir(), ctx.name, arg, True)
        ctx.say(found.name, "enabled")
    return 0


def disable(ctx: Context, configs: Sequence[str]) -> int:
    """Rename ``<config>.conf`` to ``<config>.conf.off``; refused while instances run."""
    rc = 0
    for arg in configs:
        name = cf.find_config(ctx.runtime.config_dir(), ctx.name, arg).name
        if running(ctx, name):
            ctx.complain(name, "instances are running; stop them before disable")
            rc = 1
            continue
        cf.set_enabled(ctx.runtime.config_dir(), ctx.name, arg, False)
        ctx.say(name, "disabled")
    return rc


#: verb name -> its spec; the names are :data:`sarra.config.cmdline.ACTION_NAMES`.
VERBS: dict[str, Action] = {
    "start": Action(start, "start the missing instances in the background", "any"),
    "stop": Action(stop, "stop all instances (SIGTERM, then SIGKILL)", "any", "all"),
    "restart": Action(restart, "stop, then start", "any"),
    "status": Action(status, "show instances, pids, last activity, queue backlog", "any", "all"),
    "sanity": Action(
        sanity, "restart dead and hung (sanity_log_dead) instances, remove stale pid files", "any"
    ),
    "foreground": Action(foreground, "run one instance here, logging to the console", "one"),
    "supervise": Action(
        supervise, "run all instances as children here until SIGTERM (for systemd)", "any"
    ),
    "cleanup": Action(cleanup, "delete the queue and local state (when stopped)", "some"),
    "declare": Action(declare, "create the exchanges and queues used", "some"),
    "retry-return": Action(
        retry_return, "hand a stopped node's disk retry entries (paths) back to the queue", "some"
    ),
    "list": Action(list_, "list configs, or print the given one", "any", "none"),
    "convert": Action(
        convert, "print the sarra form of sr2 or sr3 config files (paths or configs)", "some"
    ),
    "edit": Action(edit, "open the config in $EDITOR", "one"),
    "add": Action(add, "copy config files into the config directory", "some"),
    "remove": Action(remove, "delete configs (when stopped)", "some"),
    "enable": Action(enable, "re-enable disabled configs", "some"),
    "disable": Action(disable, "disable configs (renamed to .conf.off)", "some"),
}

#: Verbs that need daemon instances; one-shot components accept them only with ``sleep > 0``.
DAEMON_ACTIONS = frozenset({"start", "stop", "restart", "status", "sanity"})
