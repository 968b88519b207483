"""The scheduler against the fake master over real HTTP: protocol behaviour and faults."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from sarra.scheduler.state import StateStore
from tests.scheduler.conftest import SLEEPER, Runner, spec_text, wait_for
from tests.scheduler.fake_master import Cluster


def running(cluster: Cluster) -> set[str]:
    return set(cluster.running_tasks())


def steady(cluster: Cluster, runner: Runner, count: int) -> set[str]:
    """Wait until exactly ``count`` tasks run and the scheduler counts them all as started."""

    def ok() -> bool:
        s = runner.sched
        return (
            s is not None
            and len(running(cluster)) == count
            and sum(1 for r in s.state.tasks.values() if r.started) == count
        )

    wait_for(ok, 30, f"{count} started workers")
    return running(cluster)


def test_the_scheduler_subscribes_launches_the_declared_count_and_acknowledges_every_update(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    master = cluster.masters[0]
    runner = start_scheduler(spec_text(master.url, tmp_path / "st", SLEEPER.format(count=4)))
    steady(cluster, runner, 4)
    fid = runner.sched.state.framework_id
    assert fid and StateStore(tmp_path / "st").load().framework_id == fid
    wait_for(lambda: not any(cluster.state()["unacked"].values()), 10, "all updates acked")
    # every call after SUBSCRIBE carried the current stream id (else the master says 400)
    kinds = [k for _, k in cluster.calls]
    assert kinds[0] == "SUBSCRIBE" and "ACCEPT" in kinds and "ACKNOWLEDGE" in kinds
    # spread over agents: no agent runs more than two of the four
    per_agent: dict[str, int] = {}
    for t in cluster.running_tasks().values():
        per_agent[t.agent_id] = per_agent.get(t.agent_id, 0) + 1
    assert max(per_agent.values()) <= 2
    # nothing pending: offers are suppressed
    wait_for(lambda: cluster.state()["frameworks"][fid]["suppressed"] == ["*"], 10, "suppress")


def post_raw(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    import http.client
    import urllib.parse

    p = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(p.hostname or "", p.port, timeout=5)
    try:
        conn.request("POST", "/api/v1/scheduler", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode()
    finally:
        conn.close()


def test_the_test_master_enforces_the_transport_rules(cluster: Cluster) -> None:
    url = cluster.masters[0].url
    sub = json.dumps(
        {"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "u", "name": "n"}}}
    )
    assert post_raw(url, sub.encode(), {})[0] == 400  # no Content-Type
    assert post_raw(url, sub.encode(), {"Content-Type": "text/plain"})[0] == 415
    assert post_raw(url, b"{", {"Content-Type": "application/json"})[0] == 400
    hdr = {"Content-Type": "application/json", "Accept": "text/html"}
    assert post_raw(url, sub.encode(), hdr)[0] == 406
    hdr = {"Content-Type": "application/json", "Mesos-Stream-Id": "x"}
    assert post_raw(url, sub.encode(), hdr)[0] == 400
    call = json.dumps({"type": "REVIVE", "framework_id": {"value": "nope"}}).encode()
    status, _, text = post_raw(url, call, {"Content-Type": "application/json"})
    assert (status, text) == (400, "Framework cannot be found")


def test_a_non_leading_master_answers_307_and_the_scheduler_follows_it(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    leader = cluster.masters[0]
    other = cluster.add_master()
    status, headers, _ = post_raw(other.url, b"{}", {"Content-Type": "application/json"})
    assert status == 307
    assert headers["Location"] == f"//127.0.0.1:{leader.port}/api/v1/scheduler"
    runner = start_scheduler(spec_text(other.url, tmp_path / "st", SLEEPER.format(count=2)))
    steady(cluster, runner, 2)
    assert runner.sched.sub.base == leader.url


def test_while_no_master_leads_the_scheduler_retries_the_503_and_subscribes_once_one_does(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    m = cluster.masters[0]
    cluster.elect(None)
    assert post_raw(m.url, b"{}", {"Content-Type": "application/json"})[0] == 503
    runner = start_scheduler(spec_text(m.url, tmp_path / "st", SLEEPER.format(count=1)))
    time.sleep(1.0)
    assert runner.sched.sub is None and not cluster.launches
    cluster.elect(m)
    steady(cluster, runner, 1)


def test_a_silent_stream_is_detected_from_missed_heartbeats_and_resubscribed(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    runner = start_scheduler(
        spec_text(cluster.masters[0].url, tmp_path / "st", SLEEPER.format(count=2))
    )
    before = steady(cluster, runner, 2)
    fid = runner.sched.state.framework_id
    old_stream = runner.sched.client.stream_id
    cluster.pause_stream(fid)  # half-open: socket stays open, nothing arrives
    wait_for(lambda: runner.sched.client.stream_id not in (None, old_stream), 20, "resubscribe")
    assert runner.sched.state.framework_id == fid
    assert [k for _, k in cluster.calls].count("SUBSCRIBE") >= 2
    wait_for(lambda: runner.sched.recon_start and not runner.sched.sub.closed, 5, "reconnected")
    time.sleep(1.0)
    assert running(cluster) == before  # nobody was killed or relaunched


def test_a_failed_worker_is_relaunched_on_the_same_agent_after_a_revive(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    import os
    import signal

    runner = start_scheduler(
        spec_text(cluster.masters[0].url, tmp_path / "st", SLEEPER.format(count=3))
    )
    before = steady(cluster, runner, 3)
    victim = cluster.running_tasks()[sorted(before)[0]]
    n_revive = [k for _, k in cluster.calls].count("REVIVE")
    assert victim.proc is not None
    os.kill(victim.proc.pid, signal.SIGKILL)
    wait_for(lambda: victim.state == "TASK_FAILED", 10, "the master to see the failure")
    wait_for(lambda: victim.task_id not in runner.sched.state.tasks, 10, "scheduler sees it")
    after = steady(cluster, runner, 3)
    new = (after - before).pop()
    assert cluster.running_tasks()[new].agent_id == victim.agent_id
    assert [k for _, k in cluster.calls].count("REVIVE") > n_revive
    assert cluster.all_tasks()[victim.task_id].state == "TASK_FAILED"


def test_a_worker_that_dies_at_once_never_counts_and_its_agent_is_avoided(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    workers = SLEEPER.format(count=1).replace("exec sleep 300", "exit 3")
    runner = start_scheduler(spec_text(cluster.masters[0].url, tmp_path / "st", workers))
    wait_for(lambda: runner.sched and len(runner.sched.state.avoid) >= 2, 20, "two agents avoided")
    failed = [t for t in cluster.all_tasks().values() if t.state == "TASK_FAILED"]
    assert len({t.agent_id for t in failed}) >= 2  # relaunched elsewhere, not on the avoided one
    assert not any(r.started for r in runner.sched.state.tasks.values())
    assert "DECLINE" in [k for _, k in cluster.calls]


def test_an_offer_rescinded_while_the_launch_is_in_flight_is_survived(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    cluster.rescind_next_accept = True
    runner = start_scheduler(
        spec_text(cluster.masters[0].url, tmp_path / "st", SLEEPER.format(count=2))
    )
    steady(cluster, runner, 2)
    assert not cluster.rescind_next_accept  # the hook fired: the first ACCEPT was invalid


def test_an_agent_lost_with_its_tasks_is_replaced_and_the_count_restored(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    runner = start_scheduler(
        spec_text(cluster.masters[0].url, tmp_path / "st", SLEEPER.format(count=6))
    )
    before = steady(cluster, runner, 6)
    agent = cluster.running_tasks()[sorted(before)[0]].agent_id
    cluster.remove_agent(agent)
    after = steady(cluster, runner, 6)
    assert all(t.agent_id != agent for t in cluster.running_tasks().values())
    assert len(after - before) >= 1


def test_lost_and_duplicated_status_updates_are_resent_and_handled_once(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    cluster.drop_updates = 3
    cluster.duplicate_updates = 4
    runner = start_scheduler(
        spec_text(cluster.masters[0].url, tmp_path / "st", SLEEPER.format(count=3))
    )
    steady(cluster, runner, 3)
    wait_for(lambda: not any(cluster.state()["unacked"].values()), 15, "all updates acked")
    assert len(cluster.launches) == 3  # no extra launch from a lost or repeated update
    assert cluster.drop_updates == 0 and cluster.duplicate_updates == 0


def test_malformed_and_unknown_events_are_logged_and_survived(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    import os
    import signal

    runner = start_scheduler(
        spec_text(cluster.masters[0].url, tmp_path / "st", SLEEPER.format(count=2))
    )
    before = steady(cluster, runner, 2)
    fid = runner.sched.state.framework_id
    stream = runner.sched.client.stream_id
    for raw in (b"{not json", b"[1,2]", b'{"type": "NEW_FANCY_EVENT"}', b'{"type": "UPDATE"}',
                b'{"type": "OFFERS", "offers": {"offers": [{"id": 3}]}}'):  # fmt: skip
        cluster.inject(fid, raw)
    time.sleep(0.5)
    assert runner.sched.client.stream_id == stream
    victim = cluster.running_tasks()[sorted(before)[0]]
    assert victim.proc is not None
    os.kill(victim.proc.pid, signal.SIGKILL)  # and it still does its job
    wait_for(lambda: victim.task_id not in runner.sched.state.tasks, 10, "scheduler sees it")
    assert len(steady(cluster, runner, 2) - before) == 1


def test_a_launch_lost_on_the_way_is_reconciled_after_the_staging_timeout_and_relaunched(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    cluster.drop_next_accept = True
    runner = start_scheduler(
        spec_text(cluster.masters[0].url, tmp_path / "st", SLEEPER.format(count=1))
    )
    steady(cluster, runner, 1)
    assert len(cluster.launches) == 1
    assert [k for _, k in cluster.calls].count("ACCEPT") >= 2


def test_offers_of_one_agent_are_combined_in_one_accept_and_unneeded_ones_are_filtered(
    cluster: Cluster, start_scheduler: Callable[[str], Runner], tmp_path: Path
) -> None:
    cluster.split_offers = True  # every agent's 4 cpus come as two offers of 2
    workers = SLEEPER.format(count=2).replace("cpus = 0.5", "cpus = 3")
    runner = start_scheduler(spec_text(cluster.masters[0].url, tmp_path / "st", workers))
    steady(cluster, runner, 2)
    assert len(cluster.launches) == 2
    combined = [ids for ids in cluster.accepts if len(ids) == 2]
    assert combined, "no ACCEPT combined two offers"
    agents = {t.agent_id for t in cluster.running_tasks().values()}
    assert len(agents) == 2  # one worker per agent: 3 cpus never fit beside another 3
    # the third agent's offers were declined with the spec's refuse_seconds (30): filtered
    fid = runner.sched.state.framework_id
    idle = next(a for a in cluster.agents if a not in agents)
    filters = cluster.state()["frameworks"][fid]["filters"]
    assert filters.get(f"{idle}/*", 0.0) - time.monotonic() > 20  # per agent and role
