"""Shared harness of the fault suite: real subscriber processes, posted batches, counts.

A scenario posts a batch of files of known content (:func:`make_batch`, :func:`post_batch`)
to a broker, runs N ``sr_subscribe foreground`` processes on one shared queue
(:class:`Fleet`), injects its fault, waits for the flow to settle (:func:`settle`) and gets a
:class:`Tally`: announced / arrived verified / lost / duplicated / corrupt-visible /
leftovers / crashes. ``Tally.report()`` prints one table row (seen with ``pytest -s``),
keeps it for the "chaos counts" section at the end of the session (so the CI log shows the
table) and appends it to the file named by ``$CHAOS_TABLE`` if set;
``Tally.assert_clean(dup_bound)`` is the verdict every scenario ends with.

Each instance is a real ``sr_subscribe foreground`` process started from the venv's bin
directory, with its own config (``<name>_<i>``, same ``queue_name``) so its state (in-flight
journal, retry queue) is its own, exactly as numbered instances of one config have.
Brokers that a scenario restarts, freezes or kills come from :func:`own_node`, never from
the session's shared node.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.flowkit import Site, make_files, post, site_env
from tests.servers.rabbitmq import RabbitNode, start_rabbitmq

BIN = Path(sys.executable).parent

#: the columns of the counts table, in ``Tally.row()`` order
HEADER = (
    f"{'scenario':<38} {'announced':>9} {'verified':>8} {'lost':>5} {'dup':>5} "
    f"{'corrupt':>7} {'leftover':>8} {'crashes':>7}"
)

#: every row reported in this test session, for the summary at the end (see conftest.py)
TABLE: list[str] = []


@dataclass
class Tally:
    """The counts of one scenario; ``assert_clean`` is its verdict."""

    scenario: str
    announced: int = 0
    arrived_verified: int = 0
    lost: int = 0
    duplicated: int = 0
    corrupt_visible: int = 0
    leftovers: int = 0
    crashes: int = 0
    #: evidence for a failure message (missing names, leftover names, crash exits)
    details: list[str] = field(default_factory=list)

    def row(self) -> str:
        """One line of the counts table (columns as :data:`HEADER`)."""
        return (
            f"{self.scenario:<38} {self.announced:>9} {self.arrived_verified:>8} "
            f"{self.lost:>5} {self.duplicated:>5} {self.corrupt_visible:>7} "
            f"{self.leftovers:>8} {self.crashes:>7}"
        )

    def report(self) -> None:
        """Print the row (with the header), keep it for the session's summary and append it
        to ``$CHAOS_TABLE`` if set."""
        print(f"\n{HEADER}\n{self.row()}", flush=True)
        TABLE.append(self.row())
        table = os.environ.get("CHAOS_TABLE")
        if table:
            path = Path(table)
            new = not path.exists() or path.stat().st_size == 0
            with path.open("a", encoding="utf-8") as out:
                if new:
                    out.write(HEADER + "\n")
                out.write(self.row() + "\n")

    def assert_clean(self, dup_bound: int) -> None:
        """0 lost, 0 corrupt, 0 leftovers, 0 crashes, every announced file verified, and
        at most ``dup_bound`` duplicates (prefetch x instances, or what the scenario says).

        Raises:
            AssertionError: naming every count that is off, with the evidence.
        """
        wrong = []
        if self.announced <= 0:
            wrong.append("nothing was announced")
        if self.lost:
            wrong.append(f"{self.lost} lost")
        if self.arrived_verified != self.announced:
            wrong.append(f"{self.arrived_verified} verified of {self.announced} announced")
        if self.corrupt_visible:
            wrong.append(f"{self.corrupt_visible} corrupt")
        if self.leftovers:
            wrong.append(f"{self.leftovers} leftovers")
        if self.crashes:
            wrong.append(f"{self.crashes} crashes")
        if self.duplicated > dup_bound:
            wrong.append(f"{self.duplicated} duplicates > bound {dup_bound}")
        assert not wrong, (
            f"{self.scenario}: " + ", ".join(wrong) + "\n" + "\n".join(self.details[:40])
        )


# -- brokers --------------------------------------------------------------------------------


@contextlib.contextmanager
def own_node() -> Iterator[RabbitNode]:
    """A throwaway RabbitMQ node of our own (free to restart, freeze or kill); removed after."""
    node = start_rabbitmq()
    try:
        yield node
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            beam = beam_pid(node)
            if beam is not None:
                os.kill(beam, signal.SIGCONT)  # a frozen node cannot stop
        node.stop()
        shutil.rmtree(node.base_dir, ignore_errors=True)


def beam_pid(node: RabbitNode) -> int | None:
    """The pid of the node's Erlang VM (``beam.smp``), as the node wrote it in its pid file."""
    try:
        return int((node.base_dir / "pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def queue_depth(node: RabbitNode, queue: str) -> int | None:
    """Messages in ``queue``, ready plus unacknowledged (None if it does not exist).

    Asked of ``rabbitmqctl``, not the management API, whose figures lag by seconds.
    """
    out = node.ctl("list_queues", "-q", "--no-table-headers", "name", "messages", timeout=30)
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == queue:
            return int(parts[1])
    return None


# -- batches --------------------------------------------------------------------------------


@dataclass
class Batch:
    """Files of known content under ``src`` (``www/tag``); ``expected`` maps the path below
    ``src`` (which is the path below the destination, with ``strip 1``) to its md5;
    ``paths`` are what to give sr_post to announce exactly these files."""

    tag: str
    src: Path
    expected: dict[str, str]
    paths: list[Path]

    @property
    def announced(self) -> int:
        return len(self.expected)

    def __add__(self, other: Batch) -> Batch:
        assert other.src == self.src, "only batches of one tag add up"
        return Batch(
            self.tag, self.src, {**self.expected, **other.expected}, self.paths + other.paths
        )


def make_batch(
    www: Path, tag: str, count: int, size: int = 2000, subdirs: int = 4, sub: str = ""
) -> Batch:
    """Write ``count`` files of ``size`` bytes under ``www/tag`` (or ``www/tag/sub``)."""
    src = www / tag
    top = src / sub if sub else src
    prefix = f"{sub}/" if sub else ""
    names = [f"{prefix}d{i % subdirs}/f{i:05d}.bin" for i in range(count)]
    files = make_files(src, names, size=size)
    expected = {str(p.relative_to(src)): hashlib.md5(p.read_bytes()).hexdigest() for p in files}
    return Batch(tag, src, expected, [top])


def post_batch(site: Site, base_url: str, www: Path, batch: Batch, *extra: tuple[str, str]) -> int:
    """Announce every file of ``batch`` with sr_post in this process; its exit code."""
    return post(site, base_url, www, batch.paths, *extra)


def post_process(
    site: Site, base_url: str, www: Path, paths: list[Path], log: Path
) -> subprocess.Popen[bytes]:
    """Announce ``paths`` with the real ``sr_post`` command in the background."""
    argv = [
        str(BIN / "sr_post"),
        "-post_broker", site.broker,
        "-post_base_url", base_url,
        "-post_base_dir", str(www),
        *(str(p) for p in paths),
    ]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            env={**os.environ, **site.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


# -- subscriber processes -------------------------------------------------------------------


def subscribe_body(tag: str, dest: Path, queue: str, prefetch: int, extra: str = "") -> str:
    """A subscribe config taking ``tag``'s files from ``xs_guest`` into ``dest``."""
    return (
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        f"queue_name {queue}\nexpire 10m\nreport_back off\nprefetch {prefetch}\n"
        f"{extra}accept .*\n"
    )


class Fleet:
    """N ``sr_subscribe foreground`` processes consuming one queue into one destination.

    A process that exits without the test stopping or killing it counts as a crash.
    """

    def __init__(
        self,
        site: Site,
        tag: str,
        dest: Path,
        logs: Path,
        count: int = 2,
        prefetch: int = 10,
        extra: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        self.site = site
        self.tag = tag
        self.dest = dest
        self.logs = logs
        self.count = count
        self.prefetch = prefetch
        self.env = {**os.environ, **site.env, **(env or {})}
        self.queue = f"q_guest.chaos.{tag}"
        self.names = [f"chaos_{tag}_{i}" for i in range(count)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self.crashed: list[str] = []
        logs.mkdir(parents=True, exist_ok=True)
        for name in self.names:
            site.write_subscribe(name, subscribe_body(tag, dest, self.queue, prefetch, extra))

    def declare(self) -> None:
        """Declare the queue and its binding (so a batch posted before start is kept)."""
        from sarra.components.subscribe import SubscribeComponent

        with site_env(self.site):
            SubscribeComponent().declare(self.site.load("subscribe", self.names[0]))

    def log_path(self, i: int) -> Path:
        return self.logs / f"{self.names[i]}.log"

    def start(self, i: int | None = None, wait: bool = True) -> None:
        """Start instance ``i`` (all if None); refuses to start one that is running. With
        ``wait``, returns once each is consuming: a signal sent before its handlers exist
        would test the interpreter's start-up, not the component."""
        chosen = list(range(self.count)) if i is None else [i]
        before = {n: self._consuming_lines(n) for n in chosen}
        for n in chosen:
            self._check(n)
            assert self.procs[n] is None, f"instance {n} is running"
            with self.log_path(n).open("ab") as out:  # the child keeps its own descriptor
                self.procs[n] = subprocess.Popen(
                    [str(BIN / "sr_subscribe"), "foreground", self.names[n]],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

        if wait:
            for n in chosen:
                wait_until(lambda n=n: self._up(n, before[n]), 60, f"instance {n} to consume")  # type: ignore[misc]
                self._check(n)

    def _up(self, n: int, seen: int) -> bool:
        """Instance ``n`` logged "consuming from" once more than ``seen``, or exited."""
        proc = self.procs[n]
        return proc is None or proc.poll() is not None or self._consuming_lines(n) > seen

    def _consuming_lines(self, n: int) -> int:
        try:
            return self.log_path(n).read_text(errors="replace").count("consuming from")
        except FileNotFoundError:
            return 0

    def _check(self, n: int) -> None:
        """Record instance ``n`` as crashed if it exited on its own."""
        proc = self.procs[n]
        if proc is not None and proc.poll() is not None:
            self.crashed.append(f"instance {n} exited with {proc.returncode} on its own")
            self.procs[n] = None

    def check_alive(self) -> None:
        for n in range(self.count):
            self._check(n)

    def running(self) -> list[int]:
        self.check_alive()
        return [n for n, p in enumerate(self.procs) if p is not None]

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to instance ``i`` and wait for it to end (not a crash)."""
        self._check(i)
        proc = self.procs[i]
        assert proc is not None, f"instance {i} is not running"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(30)
        self.procs[i] = None

    def stop(self, i: int | None = None, timeout: float = 30.0) -> dict[int, int]:
        """SIGTERM (a graceful stop, as ``sr_subscribe stop`` sends) to instance ``i`` (all
        at once if None) and wait up to ``timeout`` s; their exit codes. One still running
        then is killed and counted as a crash (``stop`` would have killed it too)."""
        chosen = list(range(self.count)) if i is None else [i]
        for n in chosen:
            self._check(n)
        procs = {n: p for n in chosen if (p := self.procs[n]) is not None}
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes = {}
        for n, proc in procs.items():
            try:
                codes[n] = proc.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                codes[n] = proc.wait(10)
                self.crashed.append(f"instance {n} still running {timeout:g} s after SIGTERM")
            self.procs[n] = None
        return codes

    def close(self) -> None:
        """Kill whatever still runs (teardown; never counted)."""
        for n, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            self.procs[n] = None

    def log_text(self) -> str:
        return "".join(
            self.log_path(n).read_text(errors="replace")
            for n in range(self.count)
            if self.log_path(n).exists()
        )

    def tail(self, limit: int = 3000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-limit:]}"
            for p in sorted(self.logs.glob("*.log"))
        )


@contextlib.contextmanager
def fleet(site: Site, tag: str, dest: Path, logs: Path, **kw: object) -> Iterator[Fleet]:
    """A declared :class:`Fleet` (not started) that is always killed at the end."""
    f = Fleet(site, tag, dest, logs, **kw)  # type: ignore[arg-type]
    try:
        f.declare()
        yield f
    finally:
        f.close()


# -- destination scan and settling ----------------------------------------------------------


@dataclass
class Scan:
    verified: set[str]
    corrupt: list[str]
    missing: list[str]
    leftovers: list[str]


def scan(dest: Path, batch: Batch) -> Scan:
    """Compare ``dest`` with ``batch``: every file under ``dest`` that is not an announced
    final name with the announced content is a leftover (in-flight ``~sr`` names, ``.tmp``,
    hidden part files, strays)."""
    verified: set[str] = set()
    corrupt: list[str] = []
    leftovers: list[str] = []
    if dest.exists():
        for p in dest.rglob("*"):
            if not p.is_file():
                continue
            rel = str(p.relative_to(dest))
            want = batch.expected.get(rel)
            if want is None:
                leftovers.append(rel)
                continue
            try:
                got = hashlib.md5(p.read_bytes()).hexdigest()
            except OSError:
                continue
            if got == want:
                verified.add(rel)
            else:
                corrupt.append(rel)
    missing = sorted(set(batch.expected) - verified - set(corrupt))
    return Scan(verified, sorted(corrupt), missing, sorted(leftovers))


_PLACED = re.compile(r"\b20[15] .* (\S+) \(\d+ bytes\)\s*$")


def duplicates(log_text: str, dest: Path) -> int:
    """How many placements beyond the first per file the instance logs show."""
    placed: Counter[str] = Counter()
    root = str(dest)
    for line in log_text.splitlines():
        m = _PLACED.search(line)
        if m and m[1].startswith(root):
            placed[m[1]] += 1
    return sum(n - 1 for n in placed.values() if n > 1)


def wait_until(pred: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    """Poll ``pred`` until true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def count_verified(dest: Path, batch: Batch) -> int:
    return len(scan(dest, batch).verified)


def settle(
    scenario: str,
    f: Fleet,
    batch: Batch,
    node: RabbitNode,
    timeout: float = 120.0,
    quiet: float = 1.0,
) -> Tally:
    """Wait (at most ``timeout`` s) until every file is verified, nothing is left in flight
    and the queue is empty (ready and unacked), then count. Never raises on a timeout: the
    tally shows what was missing, and it is reported either way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f.check_alive()
        s = scan(f.dest, batch)
        if not s.missing and not s.leftovers and not s.corrupt:
            try:
                depth = queue_depth(node, f.queue)
            except (RuntimeError, subprocess.TimeoutExpired):
                depth = -1
            if depth == 0:
                time.sleep(quiet)  # anything redelivered late would land now
                break
            time.sleep(1.0)
        else:
            time.sleep(0.3)
    f.check_alive()
    s = scan(f.dest, batch)
    t = Tally(
        scenario=scenario,
        announced=batch.announced,
        arrived_verified=len(s.verified),
        lost=len(s.missing),
        duplicated=duplicates(f.log_text(), f.dest),
        corrupt_visible=len(s.corrupt),
        leftovers=len(s.leftovers),
        crashes=len(f.crashed),
    )
    t.details += [f"missing {m}" for m in s.missing[:10]]
    t.details += [f"corrupt {c}" for c in s.corrupt[:10]]
    t.details += [f"leftover {x}" for x in s.leftovers[:10]]
    t.details += f.crashed
    if t.lost or t.corrupt_visible or t.leftovers or t.crashes:
        t.details.append(f.tail())
    t.report()
    return t
