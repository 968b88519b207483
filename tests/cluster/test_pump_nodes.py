"""One pump on two nodes over a three-node RabbitMQ cluster, with faults during the flow.

Two pump "nodes" (each its own config, state and log directories, and its own subscriber
destination) run ``sr_sarra`` and ``sr_subscribe`` on one configuration: the same quorum
queues, over ``amqp://guest@n1,n2,n3/``. Both sarras write one shared data tree (served by
nginx running etc/nginx/sarra.conf) and re-announce it; the subscribers fetch from it.

source tree --sr_post--> xs_guest --[sarra x2]--> shared tree, xpub<tag> --[subscribe x2]-->
dest of node 1 / dest of node 2; every consumer's reports go back to xs_guest.

During a flow of 10,000 small files: the node leading the queues is stopped
(``rabbitmqctl stop_app``) and brought back; pump node 2's instances are SIGKILLed and started
again (as a supervisor would); the second broker node, where the clients moved when the
first stopped, is frozen (SIGSTOP of its Erlang VM) for 5 s. The source posts one
sub-directory at a time, so that files are in flight at every fault. Counted: announced /
arrived verified / lost / duplicated / corrupt-visible / leftovers, on the shared tree and on
the destinations, and the reports back at the source exchange (sarra's and the
subscribers'): 0 lost, 0 corrupt, 0 leftovers, every report back, and per stage at most
FAULTS x prefetch x instances duplicates (each fault redelivers at most what every instance
held unacknowledged), plus the notices that stage was announced twice (re-published by a
poster whose node stopped before confirming them; counted on the exchanges).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sarra.broker.base import BrokerUrl
from tests.chaos import chaoskit as ck
from tests.cluster.test_cluster_failover import ClusterSite, cluster_site, leader
from tests.integration.flowkit import post, unique
from tests.pump.pumpkit import Tap, pump_nginx
from tests.servers.rabbitmq import RabbitNode

pytestmark = [pytest.mark.timeout(420)]

FILES = 10_000
PREFETCH = 10
#: instances per stage: one sarra (and one subscriber) on each of the two pump nodes
INSTANCES = 2
#: faults that may redeliver a stage's unacknowledged notices: the leader's stop, the
#: SIGKILL and the freeze
FAULTS = 3
#: the bound stated for each stage: every fault redelivers at most what every instance held
STAGE_BOUND = FAULTS * PREFETCH * INSTANCES


class Proc:
    """One ``sr_<component> foreground <name>`` process of a pump node."""

    def __init__(self, site: ClusterSite, component: str, name: str, log: Path) -> None:
        self.site, self.component, self.name, self.log = site, component, name, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.crashes: list[str] = []

    def start(self) -> None:
        assert self.proc is None
        before = self._consuming()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(ck.BIN / f"sr_{self.component}"), "foreground", self.name],
                env={**os.environ, **self.site.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ck.wait_until(
            lambda: self._consuming() > before or not self.alive(),
            60,
            f"{self.log.name} to consume",
        )

    def _consuming(self) -> int:
        try:
            return self.log.read_text(errors="replace").count("consuming from")
        except FileNotFoundError:
            return 0

    def alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            self.crashes.append(f"{self.log.name} exited with {self.proc.returncode}")
            self.proc = None
        return self.proc is not None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.alive(), f"{self.log.name} is not running"
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        self.proc.wait(60)
        self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


#: files announced but not yet arrived that the feeder keeps (about 10 s of flow here)
BACKLOG = 1500


def arrived(dests: list[Path], batch: ck.Batch) -> int:
    """Distinct announced files under their final name in any destination (progress only:
    the verdict checks every md5)."""
    seen: set[str] = set()
    for dest in dests:
        for dirpath, _dirs, files in os.walk(dest):
            rel_dir = os.path.relpath(dirpath, dest)
            seen.update(f"{rel_dir}/{f}" for f in files)
    return len(seen & batch.expected.keys())


class Feeder(threading.Thread):
    """The source: sr_post announces the batch one sub-directory at a time, keeping about
    :data:`BACKLOG` files in flight and never posting beyond ``cap``, which the test raises
    step by step as it waits for progress, so that files are in flight at every fault."""

    def __init__(
        self,
        site: ClusterSite,
        base_url: str,
        www: Path,
        batch: ck.Batch,
        tag: str,
        arrived: Callable[[], int],
    ) -> None:
        super().__init__(daemon=True)
        self.args = (site, base_url, www, batch, tag)
        self.arrived = arrived
        self.posted = 0
        self.cap = 0
        self.seconds = 0.0
        self.errors: list[BaseException] = []

    def run(self) -> None:
        site, base_url, www, batch, tag = self.args
        start = time.monotonic()
        try:
            for sub in sorted({rel.split("/")[0] for rel in batch.expected}):
                size = sum(1 for rel in batch.expected if rel.startswith(f"{sub}/"))
                while self.posted - self.arrived() > BACKLOG or self.posted + size > self.cap:
                    time.sleep(0.5)
                rc = post(site, base_url, www, [batch.src / sub], ("to_clusters", f"pump{tag}"))
                assert rc == 0, f"sr_post of {sub} exited with {rc}"
                self.posted += size
        except BaseException as e:  # surfaced by check()
            self.errors.append(e)
        self.seconds = time.monotonic() - start

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]


def _sarra_conf(site: ClusterSite, tag: str, tree: Path, base_url: str) -> str:
    return (
        f"broker {site.broker}\ndeclare source guest\ncluster pump{tag}\n"
        f"exchange xs_guest\nsubtopic {tag}.#\nqueue_name q_guest.sarra.{tag}\nreport_back on\n"
        f"queue_type quorum\nprefetch {PREFETCH}\nexpire 10m\n"
        f"directory {tree}\npost_broker {site.broker}\npost_exchange xpub{tag}\n"
        f"post_base_url {base_url}/pub\npost_base_dir {tree}\n"
    )


def _subscribe_conf(tag: str, dest: Path) -> str:
    return (
        f"exchange xpub{tag}\nsubtopic #\nqueue_name q_guest.sub.{tag}\nqueue_type quorum\n"
        f"prefetch {PREFETCH}\nexpire 10m\ndirectory {dest}\nmirror on\nstrip 1\naccept .*\n"
    )


@contextlib.contextmanager
def _frozen(node: RabbitNode, seconds: float) -> Iterator[None]:
    beam = ck.beam_pid(node)
    assert beam is not None, f"no pid file for {node.nodename}"
    os.kill(beam, signal.SIGSTOP)
    try:
        time.sleep(seconds)
        yield
    finally:
        os.kill(beam, signal.SIGCONT)


def test_a_pump_on_two_nodes_loses_nothing_over_leader_stop_node_kill_and_broker_freeze(  # type: ignore[no-untyped-def]
    cluster, tmp_path
):
    tag = unique("pn")
    procs: list[Proc] = []
    with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:
        www = web.root
        tree = www / "pub"  # the shared data tree of both pump nodes
        batch = ck.make_batch(www, tag, FILES, size=64, subdirs=20)
        nodes = [cluster_site(tmp_path / f"node{n}", cluster) for n in (1, 2)]
        dests = [tmp_path / f"dest{n}" for n in (1, 2)]
        for site, dest in zip(nodes, dests, strict=True):
            (site.config_dir / "sarra").mkdir(parents=True, exist_ok=True)
            (site.config_dir / "sarra" / "feed.conf").write_text(
                _sarra_conf(site, tag, tree, web.base_url)
            )
            site.write_subscribe("down", _subscribe_conf(tag, dest))
        sarras = [
            Proc(s, "sarra", "feed", tmp_path / f"node{n}_sarra.log") for n, s in enumerate(nodes)
        ]
        subs = [
            Proc(s, "subscribe", "down", tmp_path / f"node{n}_sub.log") for n, s in enumerate(nodes)
        ]
        procs = sarras + subs
        url = BrokerUrl("127.0.0.1", cluster[2].port, "guest", "guest")
        # the source's exchange (its posts and every report) and the pump's announcements,
        # watched through the third node, which is never stopped or frozen
        tap = Tap(url, "xs_guest").start()
        pub_tap = Tap(url, f"xpub{tag}").start()
        frozen = "?"
        try:
            for p in procs:
                p.start()
            # the queues were declared through the first node: their leader is there
            assert leader(cluster[1], f"q_guest.sarra.{tag}") == cluster[0].nodename
            assert leader(cluster[1], f"q_guest.sub.{tag}") == cluster[0].nodename
            started = time.monotonic()
            feeder = Feeder(nodes[0], web.base_url, www, batch, tag, lambda: arrived(dests, batch))
            feeder.start()

            def progress(files: int, what: str, timeout: float = 120) -> None:
                """Let ``files`` more arrive (the feeder may post them, and a backlog)."""
                now = arrived(dests, batch)
                feeder.cap = max(feeder.cap, min(now + files + BACKLOG, FILES))
                target = min(now + files, FILES)
                ck.wait_until(lambda: arrived(dests, batch) >= target, timeout, what, every=1.0)

            def mid_flow(what: str) -> None:
                """Assert files are in flight (posted, not arrived) and more are to come."""
                feeder.check()
                backlog = feeder.posted - arrived(dests, batch)
                assert backlog >= 200, f"only {backlog} files in flight when {what}"
                assert feeder.posted < FILES, f"every file was posted before {what}"

            # 1. the node leading both queues stops mid-flow, then comes back
            progress(1000, "1000 files")
            mid_flow("the leader's node stopped")
            cluster[0].stop_app()
            try:
                progress(500, "progress with the leader's node down")
                assert leader(cluster[1], f"q_guest.sub.{tag}") != cluster[0].nodename
            finally:
                cluster[0].start_app()
            # 2. pump node 2 dies (SIGKILL) and its supervisor starts it again
            progress(500, "progress after the leader's node came back")
            mid_flow("pump node 2 was killed")
            for p in (sarras[1], subs[1]):
                p.kill()
            for p in (sarras[1], subs[1]):
                p.start()
            # 3. the second broker node, where the clients went when the first stopped,
            # freezes for 5 s
            progress(500, "progress after pump node 2 restarted")
            mid_flow("the broker node froze")
            leaders = {leader(cluster[2], f"q_guest.{q}.{tag}") for q in ("sarra", "sub")}
            frozen = f"{cluster[1].nodename} (leading {len(leaders & {cluster[1].nodename})})"
            with _frozen(cluster[1], 5.0):
                pass
            feeder.cap = FILES
            feeder.join(240)
            feeder.check()
            assert feeder.posted == FILES
            posted = feeder.seconds
            # settle: every file at both ends, nothing in flight, both queues empty
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                for p in procs:
                    p.alive()  # an instance that exited on its own is a crash
                if arrived(dests, batch) >= FILES:
                    depths = [
                        ck.queue_depth(cluster[1], f"q_guest.{q}.{tag}") for q in ("sarra", "sub")
                    ]
                    if depths == [0, 0]:
                        break
                time.sleep(1.0)
            time.sleep(2.0)  # anything redelivered late lands now
            flow = time.monotonic() - started
            for p in procs:
                p.alive()
            # reports: give the last ones a moment
            with contextlib.suppress(AssertionError):  # counted and asserted below
                ck.wait_until(
                    lambda: len(_report_paths(tap, web.base_url + "/pub")) >= FILES,
                    30,
                    "reports",
                    every=1.0,
                )
        finally:
            tap.stop()
            pub_tap.stop()
            for p in procs:
                p.close()
            for n in cluster:  # whatever happened, the cluster is whole for the next test
                with contextlib.suppress(Exception):
                    beam = ck.beam_pid(n)
                    if beam:
                        os.kill(beam, signal.SIGCONT)
                with contextlib.suppress(Exception):
                    n.start_app()
    logs = "".join(p.log.read_text(errors="replace") for p in procs if p.log.exists())
    crashes = [c for p in procs for c in p.crashes]

    # the shared tree, as the two sarras left it
    pumped = ck.scan(tree / tag, batch)
    strays = [str(p.relative_to(tree)) for p in tree.iterdir() if p.name != tag]
    # the two destinations together
    scans = [ck.scan(d, batch) for d in dests]
    verified = set().union(*(s.verified for s in scans))
    corrupt = [c for s in scans for c in s.corrupt]
    leftovers = [x for s in scans for x in s.leftovers]
    # placed twice in one destination, or once in each
    sub_dups = sum(ck.duplicates(logs, d) for d in dests) + len(
        scans[0].verified & scans[1].verified
    )
    sarra_dups = ck.duplicates(logs, tree)
    source_dups = _announced_twice(tap, web.base_url)
    pub_dups = _announced_twice(pub_tap, web.base_url + "/pub")
    source_reports = _report_paths(tap, web.base_url)
    sub_reports = _report_paths(tap, web.base_url + "/pub")
    want = {f"{tag}/{rel}" for rel in batch.expected}

    rows = [
        ck.Tally(
            "pump nodes: shared tree (2 sarra)",
            FILES,
            len(pumped.verified),
            len(pumped.missing),
            sarra_dups,
            len(pumped.corrupt),
            len(pumped.leftovers) + len(strays),
            len([c for c in crashes if "sarra" in c]),
        ),
        ck.Tally(
            "pump nodes: 2 destinations (2 sub)",
            FILES,
            len(verified),
            FILES - len(verified),
            sub_dups,
            len(corrupt),
            len(leftovers),
            len([c for c in crashes if "sub" in c]),
        ),
    ]
    for t in rows:
        t.report()
    print(
        f"pump nodes: {FILES} posted in {posted:.0f} s, flow {flow:.0f} s; reports back at "
        f"xs_guest: {len(source_reports & want)}/{FILES} from sarra, "
        f"{len(sub_reports & want)}/{FILES} from subscribe; frozen node {frozen}; "
        f"duplicate bound per stage {FAULTS} faults x prefetch {PREFETCH} x {INSTANCES} "
        f"instances = {STAGE_BOUND}, + notices announced twice: {source_dups} posted, "
        f"{pub_dups} re-announced",
        flush=True,
    )
    tail = "\n".join(
        f"--- {p.log.name}\n{p.log.read_text(errors='replace')[-1500:]}" for p in procs
    )
    for t in rows:
        t.details += [tail] if (t.lost or t.leftovers or t.corrupt_visible or t.crashes) else []
    rows[0].details += [f"missing {m}" for m in pumped.missing[:10]] + strays[:10]
    # what a stage may place twice: its own redeliveries, plus what it was announced twice
    # (notices re-published after the leader's node stopped before confirming them)
    rows[0].assert_clean(STAGE_BOUND + source_dups)
    rows[1].assert_clean(STAGE_BOUND + pub_dups)
    codes = _codes(tap)
    print(f"pump nodes: report codes at xs_guest {codes}", flush=True)
    gone = sorted(want - source_reports)[:3]
    evidence = "\n".join(line for line in logs.splitlines() if any(g in line for g in gone))
    assert want <= source_reports, (
        f"{len(want - source_reports)} sarra reports missing {codes}: {gone}\n{evidence}"
    )
    assert want <= sub_reports, f"{len(want - sub_reports)} subscriber reports missing {codes}"


def _announced_twice(tap: Tap, base_url: str) -> int:
    """Notices about files from ``base_url`` seen on the tap's exchange beyond one per file."""
    paths = [n.path for n in list(tap.notices) if n.base_url.rstrip("/") == base_url.rstrip("/")]
    return len(paths) - len(set(paths))


def _report_paths(tap: Tap, base_url: str) -> set[str]:
    """Paths of the files reported done about notices from ``base_url``: 201 (placed), or
    304 (a redelivered notice whose file another node had placed already: skipped)."""
    return {
        r.notice.path.lstrip("/")
        for r in list(tap.reports)
        if r.code in (201, 304) and r.notice.base_url.rstrip("/") == base_url.rstrip("/")
    }


def _codes(tap: Tap) -> dict[int, int]:
    return dict(Counter(r.code for r in list(tap.reports)))
