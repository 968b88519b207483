"""``sr_scheduler [--force] [--teardown] {run,status,reload,stop} spec.toml``.

* ``run``: run one scheduler copy in the foreground (systemd or Marathon keep it up).
* ``status``: print the leader's status document (JSON) from its status endpoint.
* ``reload``: make the running leader re-read its spec file (the file given here is checked
  first); a bad spec is refused with the reason and the running one kept. SIGHUP to a ``run``
  process does the same.
* ``stop``: ask the leader to stop; refused while workers are allocated unless ``--force``.
  With ``--teardown`` the framework is removed and every worker killed (explicit removal).

Exit codes: 0 done, 1 failure, 2 usage or spec error (also a refused reload), 3 framework
removed (not re-registered), 4 stop refused.
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
from sarra.errors import ConfigError
from sarra.scheduler.service import SchedulerService
from sarra.scheduler.spec import PumpSpec, load_spec


def _leader_url(spec: PumpSpec) -> str:
    path = spec.scheduler.state_dir / "leader.addr"
    try:
        return "http://" + path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"no running leader known ({path}: {e.strerror})") from e


def _ask_leader(url: str, out: TextIO, *, refused: tuple[int, int]) -> int:
    """POST to the leader's ``url`` and write the ``result`` it answers, success or not.

    Returns 0 when done; ``refused = (status, code)``: ``code`` when the leader refuses with
    HTTP ``status``, 1 for any other HTTP error (OSError is left to the caller).
    """
    req = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            out.write(json.load(resp)["result"] + "\n")
        return 0
    except urllib.error.HTTPError as e:
        out.write(json.load(e)["result"] + "\n")
        status, code = refused
        return code if e.code == status else 1


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="sr_scheduler", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s (sarra) {__version__}")
    parser.add_argument("--force", action="store_true", help="stop even with workers allocated")
    parser.add_argument("--teardown", action="store_true", help="stop: remove the framework")
    parser.add_argument("--debug", action="store_true", help="log at debug level")
    parser.add_argument("verb", choices=("run", "status", "reload", "stop"))
    parser.add_argument("spec", help="the pump specification (TOML)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s [%(levelname)s] %(name)s %(message)s",
    )
    logging.getLogger("kazoo").setLevel(logging.WARNING)
    try:
        spec = load_spec(args.spec)
        if args.verb == "run":
            service = SchedulerService(spec, args.spec)

            def on_signal(signum: int, frame: FrameType | None) -> None:
                service.stop()

            def on_hup(signum: int, frame: FrameType | None) -> None:
                service.reload_requested.set()  # served by the leader loop, not here

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            if sys.platform != "win32":  # Windows: `reload` (POST /reload) instead
                signal.signal(signal.SIGHUP, on_hup)
            return service.run()
        base = _leader_url(spec)
        if args.verb == "status":
            with urllib.request.urlopen(base + "/status.json", timeout=10) as resp:
                out.write(resp.read().decode() + "\n")
            return 0
        if args.verb == "reload":
            return _ask_leader(f"{base}/reload", out, refused=(400, 2))
        query = f"force={int(args.force)}&teardown={int(args.teardown)}"
        return _ask_leader(f"{base}/stop?{query}", out, refused=(409, 4))
    except ConfigError as e:
        sys.stderr.write(f"sr_scheduler: {e}\n")
        return 2
    except OSError as e:
        sys.stderr.write(f"sr_scheduler: cannot reach the scheduler: {e}\n")
        return 1


def sr_scheduler() -> int:
    """Console entry point."""
    return main()


if __name__ == "__main__":
    sys.exit(main())
