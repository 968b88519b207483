"""Entry points of the ``sr_*`` commands.

``sr_<component> [options] <action> [config ...]``; see :data:`sarra.cli.verbs.VERBS`.
Also runnable as ``python -m sarra.cli.main <component> [options] <action> [config ...]``.

``--version`` prints the version (``sarra.__version__``) and exits 0.

Exit status: the verb's (0 success), 2 for a usage or configuration error (one line on stderr,
no traceback), the component's own status for ``foreground`` and one-shot runs.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TextIO

from sarra import __version__
from sarra.cli import configs as cf
from sarra.cli import verbs
from sarra.cli.account import become_system_account
from sarra.cli.downcause import clear_exit_note, reason_of, write_exit_note
from sarra.cli.instances import (
    SUPERVISED_ENV,
    Instance,
    daemonize,
    remove_pid_file,
    remove_stale_temporaries,
    watch_stop_request,
    write_pid_file,
)
from sarra.cli.logs import (
    RedactingStream,
    log_path,
    redact,
    remove_handler,
    setup_console_logging,
    setup_file_logging,
    stdio_into_log,
)
from sarra.cli.runtime import (
    ARGV_ENV,
    CONFIG_TREE_ENV,
    INSTANCE_ACTION,
    Runtime,
    default_runtime,
)
from sarra.cli.signals import install_stop_handlers
from sarra.errors import ConfigError

log = logging.getLogger(__name__)


def main(
    component: str,
    argv: Sequence[str] | None = None,
    *,
    runtime: Runtime | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``sr_<component>`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if "--version" in args[: args.index("--") if "--" in args else None]:
        print(f"sr_{component} (sarra) {__version__}", file=out)
        return 0
    try:
        if runtime is None:
            become_system_account()
        rt = runtime if runtime is not None else default_runtime()
        if component not in rt.registry:
            raise ConfigError(f"unknown component {component!r}")
        try:
            cmdline = rt.parse_command_line(component, args)
        except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
            return exc.code if isinstance(exc.code, int) else 2
        if getattr(cmdline, "help", False) is True:
            print(help_text(rt, component), file=out)
            return 0
        ctx = verbs.Context(rt, component, rt.registry, cmdline, args, out, err)
        with config_tree(getattr(cmdline, "sr3", False) is True):
            return dispatch(ctx)
    except ConfigError as exc:
        print(f"sr_{component}: {redact(str(exc))}", file=err)
        return 2


@contextmanager
def config_tree(sr3: bool) -> Iterator[None]:
    """With ``sr3`` (``--sr3``), read sr3's configuration tree while the command runs.

    Sets ``SR_CONFIG_TREE=sr3`` in the environment, which the paths of the configuration
    (and the instances ``start`` launches, which inherit it) follow; restored afterwards.
    """
    if not sr3:
        yield
        return
    before = os.environ.get(CONFIG_TREE_ENV)
    os.environ[CONFIG_TREE_ENV] = "sr3"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CONFIG_TREE_ENV, None)
        else:
            os.environ[CONFIG_TREE_ENV] = before


def help_text(rt: Runtime, component: str) -> str:
    """``--help``: the option help of ``rt.format_help`` followed by the actions."""
    head = rt.format_help(component) if rt.format_help is not None else ""
    actions = "\n".join(f"  {name:<11} {spec.help}" for name, spec in verbs.VERBS.items())
    usage = f"usage: sr_{component} [options] <action> [config ...]"
    return f"{head.rstrip()}\n\nactions:\n{actions}" if head else f"{usage}\n\nactions:\n{actions}"


def dispatch(ctx: verbs.Context) -> int:
    """Pick the verb for ``ctx.cmdline.action`` and the configs it applies to.

    Raises:
        ConfigError: unknown action, wrong number of configs, daemon verb on a one-shot run.
    """
    action = ctx.cmdline.action
    configs = list(ctx.cmdline.configs)
    if action is None:
        if ctx.one_shot:
            return run_one_shot(ctx, configs)
        raise ConfigError(f"no action given; one of: {', '.join(verbs.VERBS)}")
    spec = verbs.VERBS.get(action)
    if spec is None:
        raise ConfigError(f"unknown action {action!r}; one of: {', '.join(verbs.VERBS)}")
    if spec.arity == "one" and len(configs) != 1:
        raise ConfigError(f"{action} needs exactly one configuration")
    if spec.arity == "some" and not configs:
        raise ConfigError(f"{action} needs at least one configuration")
    if not configs and spec.all_configs != "none":
        found = cf.list_configs(ctx.runtime.config_dir(), ctx.name)
        configs = [c.name for c in found if c.enabled or spec.all_configs == "all"]
    if ctx.one_shot and action in {"start", "restart", "sanity", "supervise"}:
        for arg in configs:
            _, cfg = verbs.load(ctx, arg)
            if not cfg.sleep > 0:
                raise ConfigError(
                    f"sr_{ctx.name} is one-shot: {action} needs sleep > 0",
                    path=str(cfg.config_path or arg),
                    option="sleep",
                )
    return spec.run(ctx, configs)


def run_one_shot(ctx: verbs.Context, configs: Sequence[str]) -> int:
    """One-shot component (sr_post): run once in the foreground with the given paths."""
    arg = configs[0] if configs else None
    # paths (positional or -path) are the ``path`` option of the one-shot component
    options = [*ctx.cmdline.options, *(("path", p) for p in ctx.cmdline.paths)]
    cfg = ctx.runtime.load_config(ctx.name, arg, options)
    label = f"{ctx.name}/{cf.config_name(arg) if arg else '-'}/000"
    return verbs.run_instance(ctx.component, cfg, label, 0, console=True)


def instance_main(component: str, number: int, config: str, runtime: Runtime | None = None) -> int:
    """Body of one daemon instance, launched by ``start`` (internal action ``_instance``).

    Loads the configuration with the options the user gave to ``start`` (passed in the
    environment, never on the command line), detaches (see
    :func:`sarra.cli.instances.daemonize`), logs to its rotating file and runs the component
    until SIGTERM. The pid file is removed when the instance stops on request; after a crash it
    stays, so ``status`` shows a stale pid and ``sanity`` restarts the instance. Under
    ``supervise`` (:data:`sarra.cli.instances.SUPERVISED_ENV` names the supervisor's pid) it
    does not detach, logs to stderr for the service manager, and stops with its supervisor.
    """
    rt = runtime if runtime is not None else default_runtime()
    if sys.platform == "win32" and not os.environ.get(SUPERVISED_ENV, "").isdigit():
        # started detached, with no output: prints, tracebacks and start-up errors go to the
        # log, as the POSIX spawner arranges for its instances
        stdio_into_log(log_path(rt.log_dir(), component, config, number))
    passed = json.loads(os.environ.get(ARGV_ENV) or "{}")
    user_argv = [str(a) for a in passed.get("argv", [])]
    inst = Instance(component, config, number, rt.state_dir(component, config), rt.log_dir())
    try:
        comp = rt.registry[component]
        parsed = rt.parse_command_line(component, user_argv)
        options = parsed.options
        if getattr(parsed, "sr3", False) is True:  # normally inherited from start already
            os.environ[CONFIG_TREE_ENV] = "sr3"
        cfg = rt.load_config(component, passed.get("config", config), options)
    except (ConfigError, KeyError) as exc:
        print(f"sr_{component}: {redact(str(exc))}", file=sys.stderr)
        write_exit_note(inst, 2, f"configuration error: {exc}")
        return 2
    clear_exit_note(inst)
    # The stop handlers come before the pid file: once the pid file names this process a
    # ``stop`` may signal it, and a SIGTERM that came before the handlers would kill it
    # outright (no graceful stop, the pid file left behind). The fork keeps them.
    stop = threading.Event()
    restore = install_stop_handlers(stop)
    supervisor = os.environ.get(SUPERVISED_ENV, "")
    if supervisor.isdigit():  # a child of ``supervise``: stays attached, logs to stderr
        from sarra.cli.supervisor import set_parent_death_signal

        set_parent_death_signal(int(supervisor))
        write_pid_file(inst.pid_path, os.getpid())
        handler = setup_console_logging(
            context=inst.label, loglevel=verbs.loglevel(cfg), json_lines=cfg.log_format == "json"
        )
    else:
        # spawn made the log 600 for the instance's stdout; it has its chmod_log mode before
        # the pid file says the instance started (a stop right after start leaves it so too)
        if sys.platform != "win32":
            with suppress(OSError):
                os.chmod(inst.log_path, cfg.chmod_log)
        daemonize(inst.pid_path)
        handler = setup_file_logging(
            inst.log_path,
            context=inst.label,
            loglevel=verbs.loglevel(cfg),
            backups=cfg.logrotate,
            mode=cfg.chmod_log,
            json_lines=cfg.log_format == "json",
        )
    sys.stdout = RedactingStream(sys.__stdout__ or sys.stdout)
    sys.stderr = RedactingStream(sys.__stderr__ or sys.stderr)
    end_watch = watch_stop_request(inst, stop)  # Windows' stand-in for SIGTERM
    log.info("instance %s started, pid %d", inst.label, os.getpid())
    for name in remove_stale_temporaries(inst.state_dir):
        log.info("removed %s, left in %s by a process that is gone", name, inst.state_dir)
    reason = "stopped on request"
    try:
        rc = comp.run(cfg, number, stop)
        if not stop.is_set():
            reason = "ended by itself" if rc == 0 else f"exited with status {rc}"
    except Exception as exc:  # the log is the only place a daemon can report a crash
        log.exception("instance %s crashed", inst.label)
        rc = 1
        reason = reason_of(exc)
    finally:
        restore()
        end_watch()
        if stop.is_set():
            remove_pid_file(inst.pid_path, os.getpid())
    write_exit_note(inst, rc, reason)
    log.info("instance %s exiting with status %d", inst.label, rc)
    remove_handler(handler)
    return rc


def module_main(argv: Sequence[str], runtime: Runtime | None = None) -> int:
    """``python -m sarra.cli.main <component> ...`` (also the instance launcher)."""
    if not argv:
        print(
            "usage: python -m sarra.cli.main <component> [options] <action> [config ...]",
            file=sys.stderr,
        )
        return 2
    component, rest = argv[0], list(argv[1:])
    if len(rest) == 3 and rest[0] == INSTANCE_ACTION and rest[1].isdigit():
        return instance_main(component, int(rest[1]), rest[2], runtime)
    return main(component, rest, runtime=runtime)


def pipe_safe(entry: Callable[[], int]) -> Callable[[], int]:
    """An entry point whose output may go to a pipe closed early (``sr --help | head``): exit
    quietly with status 141 (128 + SIGPIPE, as a shell reports it) instead of a traceback."""

    @functools.wraps(entry)
    def wrapped() -> int:
        try:
            rc = entry()
            sys.stdout.flush()
            return rc
        except BrokenPipeError:
            # stdout is gone: point it at /dev/null so the interpreter's final flush is silent
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 141

    return wrapped


@pipe_safe
def sr() -> int:
    """Entry point of ``sr``, the pump-wide command (:mod:`sarra.cli.pump`)."""
    from sarra.cli import pump

    return pump.main()


@pipe_safe
def sr_post() -> int:
    """Entry point of ``sr_post``."""
    return main("post")


@pipe_safe
def sr_watch() -> int:
    """Entry point of ``sr_watch``."""
    return main("watch")


@pipe_safe
def sr_poll() -> int:
    """Entry point of ``sr_poll``."""
    return main("poll")


@pipe_safe
def sr_subscribe() -> int:
    """Entry point of ``sr_subscribe``."""
    return main("subscribe")


@pipe_safe
def sr_sender() -> int:
    """Entry point of ``sr_sender``."""
    return main("sender")


@pipe_safe
def sr_winnow() -> int:
    """Entry point of ``sr_winnow``."""
    return main("winnow")


@pipe_safe
def sr_shovel() -> int:
    """Entry point of ``sr_shovel``."""
    return main("shovel")


@pipe_safe
def sr_sarra() -> int:
    """Entry point of ``sr_sarra``."""
    return main("sarra")


@pipe_safe
def sr_report() -> int:
    """Entry point of ``sr_report`` (the report router)."""
    return main("report")


@pipe_safe
def sr_log() -> int:
    """Entry point of ``sr_log``."""
    return main("log")


if __name__ == "__main__":
    sys.exit(module_main(sys.argv[1:]))
