"""The ``sr_police`` command (see sr_police(1)).

::

    sr_police [--admin-conf FILE] [--json] declare
    sr_police [--admin-conf FILE] [--json] audit [--fix [--force]] [thresholds]
    sr_police [--admin-conf FILE] [--json] fix [--force] [thresholds]
    sr_police [--admin-conf FILE] [--listen HOST:PORT [--allow-remote]] authorize

Without a verb, ``audit``. ``fix`` is ``audit --fix``: it repairs what it safely can, then
audits again and reports what remains. Exit status: declare 0 (done) or 2 (failed); audit
0 (ok), 1 (warnings), 2 (errors), the Nagios convention, so a monitor can run it directly.
``authorize`` runs, in the foreground until stopped, the private-data authorizer nginx's
``auth_request`` asks (see :mod:`sarra.police.private`): on loopback only unless
``--allow-remote``; SIGHUP re-reads admin.conf and credentials.conf, SIGTERM or SIGINT stops it
(exit 0); exit 2 on a configuration error, 1 when it cannot listen.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from sarra import __version__
from sarra.errors import SarraError
from sarra.police import run
from sarra.police.audit import AuditSettings
from sarra.police.declare import SKIPPED
from sarra.police.private import is_loopback, parse_listen

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sr_police",
        description="Declare and audit a multi-user Sarracenia pump (users, permissions, "
        "exchanges, queues, instances, credentials).",
    )
    p.add_argument(
        "--admin-conf",
        type=Path,
        help="pump roles file (default: admin.conf in the config directory)",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s (sarra) {__version__}")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--loglevel", default="warning", help="log level (default warning)")
    p.add_argument(
        "verb", nargs="?", default="audit", choices=("declare", "audit", "fix", "authorize")
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1:8091",
        metavar="HOST:PORT",
        help="authorize: where to answer nginx (default 127.0.0.1:8091; loopback only, "
        "unless --allow-remote)",
    )
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="authorize: accept a --listen address that is not loopback (nginx on another "
        "host; the authorizer answers anyone who reaches it)",
    )
    p.add_argument("--fix", action="store_true", help="audit: repair what can safely be")
    p.add_argument(
        "--force", action="store_true", help="with fix: also delete misnamed queues and exchanges"
    )
    p.add_argument(
        "--backlog-max",
        type=int,
        default=10000,
        metavar="N",
        help="flag queues holding more messages (default 10000)",
    )
    p.add_argument(
        "--sample",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="sample queues twice, SECONDS apart, to find growing backlogs",
    )
    p.add_argument(
        "--stuck-after",
        type=float,
        default=450.0,
        metavar="SECONDS",
        help="flag running instances silent this long (default 450)",
    )
    p.add_argument(
        "--events-window",
        type=float,
        default=86400.0,
        metavar="SECONDS",
        help="report security events this recent (default 86400)",
    )
    p.add_argument(
        "--broker-log",
        type=Path,
        metavar="FILE",
        help="RabbitMQ log to scan for refused accesses (when local)",
    )
    return p


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> int:
    """Run sr_police with ``argv``; ``env`` replaces os.environ for the directories."""
    args = _parser().parse_args(argv)
    stream = out or sys.stdout
    logging.basicConfig(level=args.loglevel.upper(), format="%(levelname)s %(message)s")
    environment: Mapping[str, str] = os.environ if env is None else env
    try:
        if args.verb == "declare":
            return _declare(args, environment, stream)
        if args.verb == "authorize":
            return _authorize(args, environment)
        return _audit(args, environment, stream)
    except SarraError as exc:
        if args.json:
            print(json.dumps({"status": "error", "error": str(exc)}), file=stream)
        else:
            print(f"sr_police: {exc}", file=sys.stderr)
        return 2


def _declare(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    actions = run.declare(env, args.admin_conf)
    if args.json:
        print(json.dumps({"actions": [a.to_dict() for a in actions]}, indent=2), file=out)
    else:
        for action in actions:
            print(action, file=out)
    return 1 if any(a.outcome == SKIPPED for a in actions) else 0


def _authorize(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        host, port = parse_listen(args.listen)
    except ValueError:
        print(f"sr_police: bad --listen {args.listen!r}: expected HOST:PORT", file=sys.stderr)
        return 2
    if not args.allow_remote and not is_loopback(host):
        print(
            f"sr_police: --listen {args.listen!r} is not a loopback address: whoever reaches "
            "the authorizer can have it check passwords; add --allow-remote to listen there "
            "anyway",
            file=sys.stderr,
        )
        return 2
    try:
        server = run.authorizer(env, args.admin_conf, host, port)
    except OSError as exc:  # the port is taken, the address is not ours: worth a restart
        print(f"sr_police: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1

    def stop(signum: int, _frame: object) -> None:
        log.info("authorizer: %s, stopping", signal.Signals(signum).name)
        threading.Thread(target=server.server.shutdown, daemon=True).start()

    def reload(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.reload, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, reload)
    try:
        server.serve_forever()
    finally:
        server.server.server_close()
    log.info("authorizer: stopped")
    return 0


def _audit(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    settings = AuditSettings(
        backlog_max=args.backlog_max,
        sample_seconds=args.sample,
        stuck_after=args.stuck_after,
        events_window=args.events_window,
        broker_log=args.broker_log,
    )
    report = run.audit(env, settings, admin_conf=args.admin_conf)
    if args.fix or args.verb == "fix":
        done = run.fix(report, env, force=args.force, admin_conf=args.admin_conf)
        if done:
            report = run.audit(env, settings, admin_conf=args.admin_conf)
        report.fixed = done
    print(
        report.to_json() if args.json else report.to_text(),
        file=out,
        end="" if not args.json else "\n",
    )
    return report.exit_code


def sr_police() -> int:
    """Console entry point."""
    return main()


if __name__ == "__main__":
    sys.exit(main())
