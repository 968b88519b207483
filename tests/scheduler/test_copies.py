"""One framework across scheduler copies: state, leader and stop requests shared in ZooKeeper.

Each copy gets its own ``state_dir`` (as on separate hosts: no shared file system); the copies
are real ``sr_scheduler run`` processes, ZooKeeper is a real server, the master the test one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError, NoNodeError
from kazoo.security import make_digest_acl

from sarra.errors import ConfigError
from sarra.scheduler.spec import parse_spec
from sarra.scheduler.state import Deposed, SchedulerState
from sarra.scheduler.zkstate import Shared, ZkStateStore
from tests.scheduler.conftest import SLEEPER, Proc, spec_text, wait_for
from tests.scheduler.fake_master import Cluster
from tests.scheduler.test_control import call, sr_scheduler
from tests.scheduler.zookeeper import ZooKeeper


def zk_spec(
    cluster: Cluster, zookeeper: ZooKeeper, tmp_path: Path, host: str, count: int, extra: str = ""
) -> Path:
    """The spec of the copy on ``host``: its own state_dir and spec file, shared election."""
    path = tmp_path / f"{host}.toml"
    extra = (
        f'zookeeper = "{zookeeper.hosts}"\nelection_path = "/sr/{tmp_path.name}"\n'
        f'zk_session_timeout = 3\nstatus_listen = "0.0.0.0:0"\n{extra}'
    )
    path.write_text(
        spec_text(cluster.masters[0].url, tmp_path / host, SLEEPER.format(count=count), extra)
    )
    return path


def endpoint(proc: Proc) -> str:
    """The advertised address a copy logged at start."""
    m = wait_for(lambda: re.search(r"status endpoint on http://(\S+)/ ", proc.text()), 30, "log")
    return str(m.group(1))


def znode(zookeeper: ZooKeeper, path: str, auth: str = "") -> Any:
    zk = KazooClient(hosts=zookeeper.hosts, auth_data=[("digest", auth)] if auth else None)
    zk.start(timeout=10)
    try:
        raw, _ = zk.get(path)
        return json.loads(raw) if raw.startswith(b"{") else raw.decode().strip()
    finally:
        zk.stop()
        zk.close()


def leader_copy(zookeeper: ZooKeeper, root: str) -> str:
    """The copy named in the leader znode ("" while there is none)."""
    try:
        return str(znode(zookeeper, f"{root}/leader")["copy"])
    except NoNodeError:
        return ""


def subscribes(cluster: Cluster) -> int:
    return [k for _, k in cluster.calls].count("SUBSCRIBE")


def test_copies_on_two_hosts_share_state_and_token_through_zookeeper_and_relay_to_the_leader(
    cluster: Cluster, zookeeper: ZooKeeper, tmp_path: Path
) -> None:
    root = f"/sr/{tmp_path.name}"
    spec_a = zk_spec(cluster, zookeeper, tmp_path, "hosta", 2)
    spec_b = zk_spec(cluster, zookeeper, tmp_path, "hostb", 2)
    a = Proc(spec_a, tmp_path / "a.log")
    procs = [a]
    try:
        wait_for(lambda: len(cluster.running_tasks()) == 2, 30, "2 workers")
        b = Proc(spec_b, tmp_path / "b.log")
        procs.append(b)
        addr_b = endpoint(b)
        leader = wait_for(lambda: znode(zookeeper, f"{root}/leader"), 10, "the leader znode")
        # advertised: a reachable name, never the wildcard the endpoint is bound to
        assert not leader["address"].startswith(("0.0.0.0", "[::]"))
        assert str(a.p.pid) in leader["copy"]
        assert leader["address"] == endpoint(a)
        assert call(f"http://{leader['address']}/health") == (200, b"ok\n")
        # the state is in ZooKeeper only: no state file on either "host"
        state = wait_for(
            lambda: (d := znode(zookeeper, f"{root}/state")).get("framework_id") and d, 10, "state"
        )
        assert len(state["tasks"]) == 2
        assert not (tmp_path / "hosta" / "state.json").exists()
        assert not (tmp_path / "hostb" / "state.json").exists()
        # one token for every copy, from ZooKeeper; each host's file holds it (mode 600)
        token = znode(zookeeper, f"{root}/token")
        for host in ("hosta", "hostb"):
            f = tmp_path / host / "control.token"
            wait_for(lambda f=f: f.exists() and f.read_text().strip() == token, 10, "token file")
            assert stat.S_IMODE(f.stat().st_mode) == 0o600
        # status from host b's spec reaches the leader (found in ZooKeeper)
        done = sr_scheduler("--json", "status", str(spec_b))
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["leader"] and str(a.p.pid) in doc["copy"]
        assert doc["framework_id"] == state["framework_id"] and token not in done.stdout
        # a reload sent to the standby is done by the leader, which reads its own spec file
        spec_a.write_text(spec_a.read_text().replace("count = 2", "count = 3"))
        code, body = call(f"http://{addr_b}/reload", token, post=True)
        assert code == 200 and "count 2 -> 3 (scale up)" in json.loads(body)["result"], body
        wait_for(lambda: len(cluster.running_tasks()) == 3, 30, "the leader scaled up")
        assert "relayed POST /reload to the leader" in b.text()
        # without the token the standby refuses, and relays nothing
        assert call(f"http://{addr_b}/stop?force=1", None, post=True)[0] == 401
        # stop through the standby: relayed; refused while workers run, then forced
        code, body = call(f"http://{addr_b}/stop", token, post=True)
        assert code == 409 and a.p.poll() is None
        done = sr_scheduler("--force", "stop", str(spec_b))
        assert done.returncode == 0 and "stopping" in done.stdout, done.stderr
        # every copy stops: the standby does not take over (that would be a failover)
        assert a.p.wait(30) == 0 and b.p.wait(30) == 0
        assert "stop requested through ZooKeeper by" in b.text()
        assert subscribes(cluster) == 1
        assert len(cluster.running_tasks()) == 3  # workers kept (failover_timeout)
        assert "TEARDOWN" not in [k for _, k in cluster.calls]
        for p in procs:
            assert token not in p.text()
    finally:
        for p in procs:
            p.kill()


def test_a_teardown_is_recorded_so_that_no_copy_registers_a_new_framework(
    cluster: Cluster, zookeeper: ZooKeeper, tmp_path: Path
) -> None:
    root = f"/sr/{tmp_path.name}"
    spec_a = zk_spec(cluster, zookeeper, tmp_path, "hosta", 2)
    spec_b = zk_spec(cluster, zookeeper, tmp_path, "hostb", 2)
    a = Proc(spec_a, tmp_path / "a.log")
    procs = [a]
    try:
        wait_for(lambda: len(cluster.running_tasks()) == 2, 30, "2 workers")
        b = Proc(spec_b, tmp_path / "b.log")
        procs.append(b)
        endpoint(b)
        wait_for(lambda: "waiting to be elected" in b.text(), 30, "the standby")
        fid = znode(zookeeper, f"{root}/state")["framework_id"]
        done = sr_scheduler("--force", "--teardown", "stop", str(spec_b))
        assert done.returncode == 0 and "tearing the framework down" in done.stdout, done.stderr
        assert a.p.wait(30) == 0 and b.p.wait(30) == 0
        wait_for(lambda: not cluster.running_tasks(), 15, "every worker killed")
        assert [k for _, k in cluster.calls].count("TEARDOWN") == 1
        state = znode(zookeeper, f"{root}/state")
        assert state["torn_down"]["framework_id"] == fid and state["framework_id"] is None
        # a copy started later (systemd restarting it, another host) does not register
        c = Proc(spec_b, tmp_path / "c.log")
        procs.append(c)
        assert c.p.wait(30) == 3
        assert f"framework {fid} was torn down by an operator" in c.text()
        assert "--new-framework" in c.text()
        assert subscribes(cluster) == 1 and not cluster.running_tasks()
        # the operator starts afresh on purpose
        d = Proc(spec_b, tmp_path / "d.log", "--new-framework")
        procs.append(d)
        wait_for(lambda: len(cluster.running_tasks()) == 2, 30, "a new framework's workers")
        new = wait_for(lambda: znode(zookeeper, f"{root}/state")["framework_id"], 10, "new id")
        assert new != fid and znode(zookeeper, f"{root}/state")["torn_down"] is None
    finally:
        for p in procs:
            p.kill()


def test_the_election_fences_state_writes(zookeeper: ZooKeeper, tmp_path: Path) -> None:
    zk = KazooClient(hosts=zookeeper.hosts)
    zk.start(timeout=10)
    try:
        shared = Shared(zk, f"/sr/{tmp_path.name}")
        zk.ensure_path(shared.election)
        mine = zk.create(f"{shared.election}/x__lock__", b"me", ephemeral=True, sequence=True)
        store = ZkStateStore(shared, lambda: mine)
        store.save(SchedulerState(framework_id="fw-1"))
        assert store.load().framework_id == "fw-1"
        zk.delete(mine)  # what ZooKeeper does when this copy's session expires
        with pytest.raises(Deposed, match="another copy leads"):
            store.save(SchedulerState(framework_id="fw-2"))
        assert store.load().framework_id == "fw-1"  # the new leader's state is untouched
        with pytest.raises(Deposed, match="not the elected leader"):
            ZkStateStore(shared, lambda: None).save(SchedulerState(framework_id="fw-3"))
    finally:
        zk.stop()
        zk.close()


def test_with_zk_auth_file_the_nodes_are_readable_by_the_scheduler_only(
    cluster: Cluster, zookeeper: ZooKeeper, tmp_path: Path
) -> None:
    password = "zk-Pass-4-sarra"
    auth = tmp_path / "zk.auth"
    fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, f"sarra:{password}\n".encode())
    os.close(fd)
    root = f"/sr/{tmp_path.name}"
    spec = zk_spec(cluster, zookeeper, tmp_path, "hosta", 1, f'zk_auth_file = "{auth}"\n')
    p = Proc(spec, tmp_path / "a.log")
    try:
        wait_for(lambda: len(cluster.running_tasks()) == 1, 30, "the worker")
        wait_for(lambda: znode(zookeeper, f"{root}/leader", f"sarra:{password}"), 10, "leader")
        for node in ("token", "state", "leader"):
            with pytest.raises(NoAuthError):
                znode(zookeeper, f"{root}/{node}")  # anonymous
            with pytest.raises(NoAuthError):
                znode(zookeeper, f"{root}/{node}", "sarra:wrong")
        # the CLI authenticates with the file too
        done = sr_scheduler("--json", "status", str(spec))
        assert done.returncode == 0 and json.loads(done.stdout)["leader"], done.stderr
        auth.chmod(0o644)
        done = sr_scheduler("status", str(spec))
        assert done.returncode == 1 and "zk_auth_file" in done.stderr
        assert "readable by other users" in done.stderr and "Traceback" not in done.stderr
        auth.chmod(0o600)
        assert sr_scheduler("--force", "stop", str(spec)).returncode == 0
        assert p.p.wait(30) == 0
        assert password not in p.text()
    finally:
        p.kill()


def test_credentials_in_the_master_url_are_refused() -> None:
    for url in ("http://fw:pw@127.0.0.1:5050", "zk://u:s3cr3t-zk@127.0.0.1:2181/mesos"):
        text = f'[scheduler]\nmaster = "{url}"\n'
        with pytest.raises(ConfigError, match="must not carry credentials") as e:
            parse_spec(text)
        assert "s3cr3t-zk" not in str(e.value) and ":pw@" not in str(e.value)


def test_a_standby_without_a_leader_refuses_instead_of_answering_for_it(
    zookeeper: ZooKeeper, tmp_path: Path
) -> None:
    """The election is held by a contender that never advertises itself (a leader still
    starting): the copy is a standby that knows of no leader, and says so."""
    root = f"/sr/{tmp_path.name}"
    zk = KazooClient(hosts=zookeeper.hosts)
    zk.start(timeout=10)
    spec = tmp_path / "spec.toml"
    spec.write_text(
        spec_text(
            "http://127.0.0.1:1", tmp_path / "st", SLEEPER.format(count=1),
            f'zookeeper = "{zookeeper.hosts}"\nelection_path = "{root}"\n',
        )
    )  # fmt: skip
    try:
        zk.ensure_path(f"{root}/election")
        zk.create(f"{root}/election/x__lock__", b"other", ephemeral=True, sequence=True)
        p = Proc(spec, tmp_path / "run.log")
        try:
            addr = endpoint(p)
            wait_for(lambda: "waiting to be elected" in p.text(), 30, "the standby")
            token = (tmp_path / "st" / "control.token").read_text().strip()
            for path in ("/reload", "/stop?force=1"):
                code, body = call(f"http://{addr}{path}", token, post=True)
                assert code == 503 and b"no leader is elected" in body, (path, body)
            done = sr_scheduler("status", str(spec))
            assert done.returncode == 1 and "no leader elected" in done.stderr
            assert p.p.poll() is None  # nothing was stopped
        finally:
            p.kill()
    finally:
        zk.stop()
        zk.close()


def test_a_frozen_leader_that_wakes_after_its_session_expired_steps_down_without_writing(
    cluster: Cluster, zookeeper: ZooKeeper, tmp_path: Path
) -> None:
    root = f"/sr/{tmp_path.name}"
    spec_a = zk_spec(cluster, zookeeper, tmp_path, "hosta", 2)
    spec_b = zk_spec(cluster, zookeeper, tmp_path, "hostb", 2)
    a = Proc(spec_a, tmp_path / "a.log")
    procs = [a]
    try:
        wait_for(lambda: len(cluster.running_tasks()) == 2, 30, "2 workers")
        b = Proc(spec_b, tmp_path / "b.log")
        procs.append(b)
        wait_for(lambda: "waiting to be elected" in b.text(), 30, "the standby")
        workers = dict(cluster.running_tasks())
        fid = znode(zookeeper, f"{root}/state")["framework_id"]
        os.kill(a.p.pid, signal.SIGSTOP)  # a long GC pause, a frozen VM: the session expires
        try:
            wait_for(lambda: str(b.p.pid) in leader_copy(zookeeper, root), 30, "b leads")
            wait_for(lambda: "RECONCILE" in [k for _, k in cluster.calls[-20:]], 15, "b reconciles")
        finally:
            os.kill(a.p.pid, signal.SIGCONT)
        # a wakes up believing it leads: it must find out and step down, never overwrite
        wait_for(lambda: a.text().count("waiting to be elected") >= 2, 30, "a back to standby")
        assert a.p.poll() is None and b.p.poll() is None
        leader = znode(zookeeper, f"{root}/leader")
        assert str(b.p.pid) in leader["copy"]
        state = znode(zookeeper, f"{root}/state")
        assert state["framework_id"] == fid and set(state["tasks"]) == set(workers)
        assert set(cluster.running_tasks()) == set(workers)  # nothing relaunched or killed
        assert len(cluster.launches) == 2
    finally:
        for p in procs:
            p.kill()


def test_a_zk_master_url_behind_digest_acls_is_read_with_zk_auth_file(
    cluster: Cluster, zookeeper: ZooKeeper, tmp_path: Path
) -> None:
    password = "det3ctor-Pass"
    auth = tmp_path / "zk.auth"
    fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, f"sched:{password}\n".encode())
    os.close(fd)
    path = f"/mesos-{tmp_path.name}"
    owner = KazooClient(
        hosts=zookeeper.hosts,
        auth_data=[("digest", f"sched:{password}")],
        default_acl=[make_digest_acl("sched", password, all=True)],
    )
    owner.start(timeout=10)
    try:  # the master's znode as a protected ensemble holds it: no one else may read it
        owner.ensure_path(path)
        info = json.dumps(cluster.masters[0].master_info()).encode()
        owner.create(f"{path}/json.info_", info, ephemeral=True, sequence=True)
        url = f"zk://{zookeeper.hosts}{path}"
        spec = tmp_path / "spec.toml"
        spec.write_text(spec_text(url, tmp_path / "st", SLEEPER.format(count=1)))
        p = Proc(spec, tmp_path / "anonymous.log")
        try:
            wait_for(lambda: "cannot read the leading master" in p.text(), 30, "refused read")
            assert not cluster.calls
        finally:
            p.kill()
        spec.write_text(
            spec_text(url, tmp_path / "st", SLEEPER.format(count=1), f'zk_auth_file = "{auth}"\n')
        )
        p = Proc(spec, tmp_path / "auth.log")
        try:
            wait_for(lambda: len(cluster.running_tasks()) == 1, 30, "the worker")
            assert password not in p.text()
        finally:
            p.kill()
    finally:
        owner.stop()
        owner.close()
