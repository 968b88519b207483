"""The Debian package and its systemd services, for real: docs/admin.md, part one, run step by
step in a Debian 12 container booted with systemd, against the suite's throwaway RabbitMQ and
nginx on the host's loopback.

The guide is the script: its ``<!-- step: NAME -->`` blocks run as written, in order, with
only the site's values replaced (:func:`site_values`); between them the test announces files
from the host and checks what the operator would check.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from pathlib import Path

from sarra.components import REGISTRY
from tests.container.nspawn import Container
from tests.integration.flowkit import Site, make_files, post
from tests.servers.nginx import Nginx
from tests.servers.rabbitmq import RabbitNode

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "admin.md"
STEP = re.compile(r"<!-- step: ([\w-]+) -->\n```sh\n(.*?)```", re.S)
#: the steps of the guide, in order; a step added to the guide must be added here (and run)
STEPS = [
    "install",
    "credentials",
    "destination",
    "configure",
    "start",
    "status",
    "reload",
    "stop",
    "start-again",
    "crash",
    "pump",
    "pump-status",
    "authorize",  # run by test_authorize.py
    "authorize-stop",
]


def guide_steps() -> dict[str, str]:
    return dict(STEP.findall(GUIDE.read_text(encoding="utf-8")))


def site_values(broker_port: int) -> dict[str, str]:
    """The guide's example broker and account, and the suite's."""
    return {
        "bob:secret@pump.example.com": f"guest:guest@127.0.0.1:{broker_port}",
        "bob@pump.example.com": f"guest@127.0.0.1:{broker_port}",
    }


class Walk:
    """Runs the guide's steps in the container and announces files from the host."""

    def __init__(self, box: Container, rabbitmq: RabbitNode, nginx: Nginx, tmp: Path) -> None:
        self.box = box
        self.steps = guide_steps()
        self.values = site_values(rabbitmq.port)
        self.site = Site(tmp / "poster", rabbitmq.port).setup()
        self.nginx = nginx
        self.tag = f"svc{time.monotonic_ns() % 10**8}"
        self.out = ""
        self.last_status = ""

    def step(self, name: str) -> str:
        script = self.steps[name]
        for example, ours in self.values.items():
            script = script.replace(example, ours)
        self.out = self.box.sh(script, timeout=300).stdout
        return self.out

    def announce(self, batch: str, count: int, size: int) -> dict[str, str]:
        """Post ``count`` files of ``size`` bytes to ``xpublic``; returns {path in the
        container: md5}."""
        top = self.nginx.root / self.tag / batch
        names = [f"f{i:04d}.dat" for i in range(count)]
        files = make_files(top, names, size)
        rc = post(
            self.site,
            self.nginx.base_url,
            self.nginx.root,
            files,
            ("post_exchange", "xpublic"),
        )
        assert rc == 0
        return {
            f"/srv/obs/{self.tag}/{batch}/{p.name}": hashlib.md5(p.read_bytes()).hexdigest()
            for p in files
        }

    def arrived(self, expected: dict[str, str]) -> bool:
        for inside, md5 in expected.items():
            path = self.box.path(inside)
            if not path.is_file() or hashlib.md5(path.read_bytes()).hexdigest() != md5:
                return False
        return True

    def final_names_are_whole(self, expected: dict[str, str]) -> None:
        """Every file present under its final name is complete and right."""
        for inside, md5 in expected.items():
            path = self.box.path(inside)
            if path.exists():
                assert hashlib.md5(path.read_bytes()).hexdigest() == md5, inside

    def inflight(self) -> list[str]:
        top = self.box.path(f"/srv/obs/{self.tag}")
        return sorted(str(p) for p in top.rglob("*") if p.is_file() and not p.name.endswith(".dat"))

    def running(self, expected: int) -> bool:
        done = self.box.sh("sr status", check=False)
        self.last_status = f"exit {done.returncode}\n{done.stdout}{done.stderr}"
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("subscribe/obs ")]
        return done.returncode == 0 and sum(" running " in ln for ln in lines) == expected

    def diagnosis(self) -> str:
        """What an operator would look at: the last ``sr status`` and the journal's tail."""
        journal = self.box.sh("journalctl --no-pager -n 60", check=False).stdout
        return f"--- sr status\n{self.last_status}\n--- journal\n{journal}"

    def pids(self) -> list[str]:
        return self.box.processes("sarra.cli.main")

    def show(self, unit: str, prop: str) -> str:
        return self.box.sh(f"systemctl show -p {prop} --value {unit}").stdout.strip()


def wait_for(
    what: Callable[[], bool], timeout: float, about: str, why: Callable[[], str] = str
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout} s: {about}\n{why()}")


def test_the_guide_names_the_steps_this_test_runs() -> None:
    assert list(guide_steps()) == STEPS


def test_admin_guide_part_one_in_a_booted_debian_container(
    container: Container, rabbitmq: RabbitNode, nginx: Nginx, tmp_path: Path
) -> None:
    walk = Walk(container, rabbitmq, nginx, tmp_path)
    box = container

    # -- install: the account, its directories, man pages, examples, units that verify
    walk.step("install")
    assert box.sh("id -un sarra").stdout.strip() == "sarra"
    listing = box.sh(
        "stat -c '%n %U %a' /etc/sarra /etc/sarra/subscribe /etc/sarra/credentials.conf "
        "/var/lib/sarra"
    ).stdout.split("\n")
    assert listing[:4] == [
        "/etc/sarra sarra 750",
        "/etc/sarra/subscribe sarra 750",
        "/etc/sarra/credentials.conf sarra 600",
        "/var/lib/sarra sarra 750",
    ]
    assert box.sh("man -w sr_subscribe").stdout.strip().endswith("sr_subscribe.1.gz")
    assert box.path("/usr/share/doc/sarra/examples/subscribe/dd_swob.conf").is_file()
    verified = box.sh(
        "cd /tmp && for u in /lib/systemd/system/sarra.service /lib/systemd/system/sr_*@.service;"
        " do b=$(basename $u); n=$(echo $b | sed 's/@\\.service$/@t.service/');"
        " cp $u /tmp/$n; systemd-analyze verify --man=no /tmp/$n; echo verified $n; done"
    ).stdout
    assert verified.count("verified ") == len(REGISTRY) + 1, verified  # + sarra.service

    # -- a subscription under systemd
    walk.step("credentials")
    walk.step("destination")
    walk.step("configure")
    # site adaptation: the suite's web server is on loopback, which subscribers refuse unless
    # told (a real pump's is not)
    box.sh("echo 'base_url_private on' >> /etc/sarra/subscribe/obs.conf")
    # root looking before the service ever ran: what it creates must stay the service's own
    box.sh("sr status || true; sr_subscribe status obs || true")
    owners = box.sh("find /var/lib/sarra -not -user sarra").stdout.strip()
    assert owners == "", f"made by root in the state directory:\n{owners}"
    walk.step("start")
    wait_for(
        lambda: walk.running(2), 60, "two instances running under sr_subscribe@obs", walk.diagnosis
    )
    status = walk.step("status")
    assert "subscribe/obs" in status and status.count(" running ") == 2, status
    journal = box.sh("journalctl -u sr_subscribe@obs --no-pager").stdout
    assert "instance subscribe/obs/001 started" in journal
    assert "consuming from" in journal and "guest:guest" not in journal
    assert not re.search(r"\d\d:\d\d:\d\d,\d{3} \[INFO\]", journal)  # the journal stamps lines
    first = walk.announce("a", 20, 4096)
    wait_for(lambda: walk.arrived(first), 60, "batch a downloaded", walk.diagnosis)

    # -- reload applies the edited file
    main_pid = walk.show("sr_subscribe@obs", "MainPID")
    walk.step("reload")
    wait_for(lambda: walk.running(3), 60, "three instances after reload", walk.diagnosis)
    assert walk.show("sr_subscribe@obs", "MainPID") == main_pid  # reloaded, not restarted
    assert "subscribe/obs: changed, restarting" in box.sh("journalctl -u sr_subscribe@obs").stdout

    # -- stop in the middle of a batch: no process, no in-flight file, nothing partial
    second = walk.announce("b", 150, 256 * 1024)
    time.sleep(0.5)
    walk.step("stop")
    assert walk.show("sr_subscribe@obs", "ActiveState") == "inactive"
    assert walk.pids() == []
    assert walk.inflight() == []
    walk.final_names_are_whole(second)
    walk.step("start-again")
    wait_for(
        lambda: walk.arrived(second), 120, "batch b complete after the restart", walk.diagnosis
    )

    # -- SIGKILL in the middle of a batch: systemd restarts the unit, nothing is lost
    wait_for(lambda: walk.running(3), 60, "three instances before the kill", walk.diagnosis)
    before = walk.show("sr_subscribe@obs", "NRestarts")
    third = walk.announce("c", 150, 256 * 1024)
    time.sleep(0.5)
    walk.step("crash")
    wait_for(
        lambda: walk.show("sr_subscribe@obs", "NRestarts") != before,
        30,
        "systemd restarting sr_subscribe@obs",
    )
    wait_for(lambda: walk.arrived(third), 120, "batch c complete after the kill", walk.diagnosis)
    walk.final_names_are_whole(third)
    wait_for(lambda: walk.running(3), 60, "three instances after the kill", walk.diagnosis)

    # -- the whole pump through sarra.service
    walk.step("pump")
    wait_for(
        lambda: walk.running(3), 60, "subscribe/obs running under sarra.service", walk.diagnosis
    )
    status = walk.step("pump-status")
    assert status.count(" running ") == 3, status
    supervisor = box.path("/var/lib/sarra/subscribe/obs/sr_subscribe_obs.supervisor")
    assert supervisor.read_text().strip() == walk.show("sarra", "MainPID")
    fourth = walk.announce("d", 10, 4096)
    wait_for(
        lambda: walk.arrived(fourth), 60, "batch d downloaded under sarra.service", walk.diagnosis
    )
    box.sh("systemctl stop sarra")
    assert walk.pids() == []
    assert walk.inflight() == []
