"""``sr_scheduler [--force] [--teardown] [--new-framework] [--json] VERB spec.toml``.

The command line of the scheduler; :data:`EPILOG` (shown by ``--help``) says what each verb
does and what the exit codes mean. ``status``, ``reload`` and ``stop`` find the leader and the
control token by themselves: in ZooKeeper when the spec sets ``zookeeper`` (from any host),
else in ``<state_dir>/leader.addr`` and ``<state_dir>/control.token``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from types import FrameType
from typing import TextIO

from sarra import __version__
from sarra.errors import ConfigError, SarraError
from sarra.scheduler.plan import render_text
from sarra.scheduler.service import SchedulerService, read_token, token_path
from sarra.scheduler.spec import PumpSpec, load_spec
from sarra.scheduler.zkstate import Shared, zk_client

DESCRIPTION = "Keep a declared set of pump workers running as Apache Mesos tasks."

EPILOG = """\
Mesos is used here as the placement layer: the spec (TOML) names worker types (an sr_*
component and configuration, a count, cpus, mem...) and sr_scheduler, registered as a Mesos
framework, accepts offers from the agents to run that many workers, relaunches the ones that
die and keeps them running (failover_timeout) while no scheduler copy is connected.

verbs:
  run     run one scheduler copy in the foreground (several copies elect a leader through
          ZooKeeper); makes <state_dir>/control.token (mode 600) if absent; after a
          teardown it refuses to register a new framework unless given --new-framework
  status  print the leader's deployment plan: one phase per worker type, one step per
          slot with its status (complete, running, staging, launching, rolling, outdated,
          waiting-for-volume, waiting-for-offer, failed, pending, stopping) and the reason;
          with --json, the whole status document (as served at /status.json)
  reload  make the leader re-read its spec file; a bad spec is refused, the running one kept
  stop    stop the scheduler (with ZooKeeper: every copy); refused while workers run unless
          --force; workers keep running; with --teardown the framework is removed, every
          worker killed, and no copy registers a new framework (until --new-framework)

status, reload and stop find the leader and the control token by themselves: with zookeeper
set in the spec, in ZooKeeper (from any host; zk_auth_file if the nodes are protected), else
in <state_dir>/leader.addr and <state_dir>/control.token (run them as the scheduler's user).
Sent to a standby copy, reload and stop are relayed to the leader.

exit codes:
  0  done
  1  failure (scheduler unreachable, state_dir unusable, corrupt state.json...)
  2  usage or spec error (the message names the file, line, table and field), or
     reload refused
  3  framework removed by Mesos or torn down by an operator (not re-registered)
  4  stop refused (workers allocated, no --force)
  5  not authorized (the control endpoint did not accept the token)
  6  the Mesos master refused the framework's credentials (HTTP 401; not retried)

See sr_scheduler(1) and docs/mesos.md.
"""

UNAUTHORIZED = 5


class Unreachable(SarraError):
    """The leader's status endpoint cannot be reached."""


def _from_zookeeper(spec: PumpSpec) -> tuple[str, str]:
    """(leader URL, control token) read from the pump's znodes."""
    from kazoo.exceptions import KazooException
    from kazoo.handlers.threading import KazooTimeoutError

    s = spec.scheduler
    zk = zk_client(s)
    try:
        zk.start(timeout=max(s.zk_session_timeout, 5.0))
        shared = Shared(zk, s.election_path)
        addr = shared.leader_address()
        if addr is None:
            raise Unreachable(f"no leader elected (nothing at {shared.leader} in ZooKeeper)")
        return "http://" + addr, shared.read_token()
    except (KazooException, KazooTimeoutError) as e:
        raise Unreachable(f"cannot read the leader from ZooKeeper {s.zookeeper}: {e!r}") from e
    finally:
        zk.stop()
        zk.close()


def _leader_url(spec: PumpSpec) -> str:
    path = spec.scheduler.state_dir / "leader.addr"
    try:
        return "http://" + path.read_text().strip()
    except FileNotFoundError as e:
        raise Unreachable(f"no running leader known ({path} does not exist)") from e
    except OSError as e:
        raise Unreachable(f"cannot read {path}: {e.strerror}") from e


def _call(
    url: str,
    token: str,
    out: TextIO,
    *,
    post: bool,
    refused: tuple[int, int],
    words: bool = False,
) -> int:
    """Call the leader's ``url`` with the token; write what it answers, success or not.

    Returns 0 when done; ``refused = (status, code)``: ``code`` when the leader refuses with
    HTTP ``status``, :data:`UNAUTHORIZED` on 401, 1 for any other HTTP error. ``words``: a
    GET answer (the status document) is written as the plan in words, not as JSON.
    """
    req = urllib.request.Request(
        url, method="POST" if post else "GET", data=b"" if post else None,
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            if post:
                out.write(json.load(resp)["result"] + "\n")
            elif words:
                try:
                    out.write(render_text(json.load(resp)))
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    raise Unreachable(f"{url} answered something that is not a status: {e}") from e
            else:
                out.write(resp.read().decode() + "\n")
        return 0
    except urllib.error.HTTPError as e:
        try:
            text = str(json.load(e)["result"])
        except (ValueError, KeyError, TypeError):
            text = f"HTTP {e.code} {e.reason}"
        if e.code == 401:
            sys.stderr.write(f"sr_scheduler: {text}\n")
            return UNAUTHORIZED
        out.write(text + "\n")
        status, code = refused
        return code if e.code == status else 1
    except OSError as e:
        raise Unreachable(f"cannot reach the scheduler at {url}: {e}") from e


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(
        prog="sr_scheduler",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s (sarra) {__version__}")
    parser.add_argument("--force", action="store_true", help="stop even with workers allocated")
    parser.add_argument("--teardown", action="store_true", help="stop: remove the framework")
    parser.add_argument(
        "--new-framework", action="store_true",
        help="run: clear a recorded teardown and register a new framework",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="status: the JSON document")
    parser.add_argument("--debug", action="store_true", help="log at debug level")
    parser.add_argument(
        "verb",
        choices=("run", "status", "reload", "stop"),
        metavar="VERB",
        help="run, status, reload or stop (see verbs below)",
    )
    parser.add_argument("spec", metavar="SPEC", help="the pump specification (TOML file)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s [%(levelname)s] %(name)s %(message)s",
    )
    logging.getLogger("kazoo").setLevel(logging.WARNING)
    try:
        spec = load_spec(args.spec)
        if args.verb == "run":
            service = SchedulerService(spec, args.spec, new_framework=args.new_framework)

            def on_signal(signum: int, frame: FrameType | None) -> None:
                service.stop()

            def on_hup(signum: int, frame: FrameType | None) -> None:
                service.reload_requested.set()  # served by the leader loop, not here

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            if sys.platform != "win32":  # Windows: `reload` (POST /reload) instead
                signal.signal(signal.SIGHUP, on_hup)
            return service.run()
        if spec.scheduler.zookeeper:
            base, token = _from_zookeeper(spec)
        else:
            base = _leader_url(spec)
            token = read_token(token_path(spec))
        if args.verb == "status":
            return _call(
                base + "/status.json", token, out, post=False, refused=(0, 1), words=not args.json
            )
        if args.verb == "reload":
            return _call(f"{base}/reload", token, out, post=True, refused=(400, 2))
        query = f"force={int(args.force)}&teardown={int(args.teardown)}"
        return _call(f"{base}/stop?{query}", token, out, post=True, refused=(409, 4))
    except ConfigError as e:
        sys.stderr.write(f"sr_scheduler: {e}\n")
        return 2
    except SarraError as e:
        sys.stderr.write(f"sr_scheduler: {e}\n")
        return 1
    except OSError as e:  # anything the checks above did not name: still no traceback
        sys.stderr.write(f"sr_scheduler: {e}\n")
        return 1


def sr_scheduler() -> int:
    """Console entry point."""
    return main()


if __name__ == "__main__":
    sys.exit(main())
