"""The MSI (win/, scripts/build-msi): installed with msiexec into a fresh Wine prefix, its
launchers run against the suite's throwaway RabbitMQ and nginx, then uninstalled."""

from __future__ import annotations

import getpass
import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sarra.broker.session import BrokerSession
from sarra.codec.timestamps import now_timestamp
from sarra.components import REGISTRY
from sarra.notice import Notice, WireMessage
from tests.integration.flowkit import (
    ReportTap,
    Site,
    make_files,
    publish_raw,
    unique,
    wait_for,
)
from tests.wine.conftest import ROOT, WinPython, winpath
from tests.wine.test_wine_client import (
    _capture,
    _queue_exists,
    blocks_by_two_instances,
    win_env,
)

pytestmark = [pytest.mark.wine, pytest.mark.servers]

PROGRAM_DIR = "C:\\Program Files\\sarra"


class Installed(WinPython):
    """Commands run through the installed launchers (``sr_post.cmd`` ...)."""

    def launch(
        self, command: str, *args: str, env: dict[str, str], timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.run_argv(["cmd", "/c", f"{PROGRAM_DIR}\\{command}.cmd", *args], env, timeout)

    def run_argv(
        self, argv: list[str], env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess[str]:
        saved = self.python
        object.__setattr__(self, "python", Path(argv[0]))
        try:
            return self.run(argv[1:], env=env, timeout=timeout)
        finally:
            object.__setattr__(self, "python", saved)


@pytest.fixture(scope="module")
def installed(
    winpy: WinPython, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Installed, Path, Path, set[str]]]:
    built = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-msi")], capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stderr
    msi = Path(built.stdout.strip().splitlines()[-1])
    prefix = tmp_path_factory.mktemp("msiprefix") / "prefix"
    inst = Installed(Path("unused"), prefix)
    boot = subprocess.run(["wineboot", "--init"], env=inst.env(), capture_output=True, timeout=300)
    assert boot.returncode == 0, boot.stderr
    subprocess.run(["wineserver", "-w"], env=inst.env(), timeout=120)
    # the test-only ProcessPrng stand-in: into the prefix's system directory, never the install
    stub = winpy.prefix / "drive_c" / "windows" / "system32" / "bcryptprimitives.dll"
    (prefix / "drive_c" / "windows" / "system32" / "bcryptprimitives.dll").write_bytes(
        stub.read_bytes()
    )
    done = inst.run_argv(["msiexec", "/i", winpath(msi), "/qn"], {}, 300)
    assert done.returncode == 0, done.stdout + done.stderr
    install_dir = prefix / "drive_c" / "Program Files" / "sarra"
    assert (install_dir / "python" / "python.exe").is_file()
    assert (install_dir / "docs" / "windows.txt").read_bytes().startswith(b"# sarra on Windows\r\n")
    assert not (install_dir / "python" / "bcryptprimitives.dll").exists()
    # the Start-menu shortcuts to the README and the manual pages
    (menu,) = [m for m in _menus(prefix) if m.is_dir()]
    assert sorted(p.name for p in menu.iterdir()) == ["sarra README.lnk", "sarra manual pages.lnk"]
    # what the install directory holds before any command runs
    yield inst, install_dir, msi, _listing(install_dir)


def _menus(prefix: Path) -> list[Path]:
    """The Start-menu folders the MSI's shortcuts may be in: the common one (ALLUSERS=1, as
    on Windows) and the user's (where Wine 8's msiexec puts them even so)."""
    menu = Path("Microsoft") / "Windows" / "Start Menu" / "Programs" / "sarra"
    user = prefix / "drive_c" / "users" / getpass.getuser() / "AppData" / "Roaming"
    return [prefix / "drive_c" / "ProgramData" / menu, user / menu]


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


#: received names the installed client must refuse with a 417 report, each under
#: ``/<tag>/bad/``: Windows device names, streams, trailing dots and spaces, drive letters,
#: UNC and backslash paths, characters invalid on Windows, and ``..``
HOSTILE_NAMES = [
    "CON", "NUL", "nul.txt", "COM1", "com1.log", "LPT1", "AUX.dat", "CONIN$",
    "a.txt:evil", "a.txt::$DATA", "trail.", "space ", "dir./x.txt", "dir /x.txt",
    "C:/evil.txt", "C:evil.txt", "C:\\evil.txt", "\\\\server\\share\\evil.txt",
    "..\\..\\..\\..\\escape.txt", "../../../../escape.txt",
    "q?.txt", "a<b", "a>b", "a|b", 'a"b', "a*b",
]  # fmt: skip
#: good names whose headers try to escape: (name, extra headers)
HOSTILE_HEADERS = [
    ("ren1.txt", {"rename": "../../../../escape.txt"}),
    ("ren2.txt", {"rename": "C:/escape.txt"}),
    ("ren3.txt", {"rename": "\\\\server\\share\\escape.txt"}),
    ("ren4.txt", {"rename": "obs/NUL"}),
    ("link1.txt", {"link": "../../../../../escape.txt", "sum": "L," + "0" * 128}),
    ("link2.txt", {"link": "C:/Windows", "sum": "L," + "0" * 128}),
]


def _report_notice(
    tag: str,
    base_url: str,
    rel: str,
    data: bytes,
    extra: dict[str, str] | None = None,
) -> WireMessage:
    extra = extra or {}
    headers = {
        "parts": f"1,{len(data)},1,0,0",
        "sum": "d," + hashlib.md5(data).hexdigest(),
        "source": "guest",  # as the pump stamped it: the router sends its reports to xr_guest
        **extra,
    }
    if "link" in extra:
        headers.pop("parts")
    body = f"{now_timestamp()} {base_url} {rel.replace(' ', '%20')}".encode()
    return WireMessage("xs_guest", f"v02.post.{tag}", body, headers)


def test_the_installed_subscriber_refuses_every_hostile_name_and_sr_log_reads_the_reports(  # type: ignore[no-untyped-def]
    installed: tuple[Installed, Path, Path, set[str]],
    site: Site,
    nginx,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inst = installed[0]
    env = win_env(site)
    for k, v in site.env.items():  # the host's router reads the site (Wine gets env only)
        monkeypatch.setenv(k, v)
    tag = unique("mhost")
    make_files(nginx.root / tag, ["one.txt", "with space.txt", *(n for n, _ in HOSTILE_HEADERS)])
    dest = tmp_path / "outer" / "a" / "b" / "dest"
    dest.mkdir(parents=True)
    site.write_subscribe(
        "mhost",
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {winpath(dest)}\nmirror on\n"
        "strip 1\nexpire 10m\naccept .*\n",
    )
    # the pump's side on the host: sr_report routes the subscriber's reports to xr_guest
    # (the subscriber stamps from_cluster with its broker's host: this cluster)
    (site.config_dir / "report").mkdir()
    (site.config_dir / "report" / "router.conf").write_text(
        f"broker {site.broker}\ncluster 127.0.0.1\ndeclare source guest\nexpire 10m\n"
    )
    (site.config_dir / "log").mkdir()
    (site.config_dir / "log" / "mine.conf").write_text(f"broker {site.broker}\nexpire 10m\n")
    admin = BrokerSession(site.broker_url(), name="setup")
    admin.connect()
    admin.declare_exchange("xr_guest")  # what sr_police declare creates on a pump
    admin.close()
    declared = inst.launch("sr_log", "declare", "mine", env=env)
    assert declared.returncode == 0, declared.stdout + declared.stderr

    router_cfg = site.load("report", "router")
    router = REGISTRY["report"]
    router.declare(router_cfg)
    stop_router = threading.Event()
    router_thread = threading.Thread(
        target=router.run, args=(router_cfg, 0, stop_router), daemon=True
    )
    router_thread.start()
    # sr_log following the reports in the background, as well as read in summary runs
    (site.config_dir / "log" / "live.conf").write_text(f"broker {site.broker}\nexpire 10m\n")
    live = inst.launch("sr_log", "start", "live", env=env, timeout=180)
    try:
        assert live.returncode == 0, live.stdout + live.stderr
        wait_for(lambda: _queue_exists_for(site, "log", "live"), timeout=60, what="its queue")
        expected = _hostile_run(inst, site, nginx, tmp_path, tag, dest, env)
        live_log = site.state_dir / "log" / "sr_log_live_001.log"

        def followed() -> list[str]:
            """The live lines (``time code consumer path (elapsed) message``)."""
            text = live_log.read_text(errors="replace") if live_log.exists() else ""
            return [ln for ln in text.splitlines() if ln[:1].isdigit() and f" {tag}/" in ln]

        wait_for(lambda: len(followed()) >= len(expected), timeout=60, what="sr_log's lines")
    finally:
        stopped = inst.launch("sr_log", "stop", "live", env=env, timeout=120)
        stop_router.set()
        router_thread.join(60)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    lines = followed()
    assert len(lines) == len(expected), lines  # one line per report, each shown once
    assert f"reports: {len(expected)}" in live_log.read_text()  # the summary, when stopped
    for rel, code in expected.items():
        assert [ln for ln in lines if f" {code} guest@" in ln and f" {tag}/{rel} (" in ln], (
            rel,
            lines,
        )


def _hostile_run(  # type: ignore[no-untyped-def]
    inst: Installed, site: Site, nginx, tmp_path: Path, tag: str, dest: Path, env: dict[str, str]
) -> dict[str, int]:
    """The subscriber's run and sr_log's summary runs; returns ``{path: expected code}``."""
    good = ["one.txt", "with space.txt", *(n for n, _ in HOSTILE_HEADERS)]
    files = [nginx.root / tag / n for n in good]
    outer = dest.parents[2]
    before = set(outer.rglob("*"))
    drive_c = inst.prefix / "drive_c"
    c_before = {p.name for p in drive_c.iterdir()}
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    started = inst.launch("sr_subscribe", "start", "mhost", env=env, timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        wait_for(lambda: _queue_exists(site, "mhost"), timeout=60, what="the queue")
        messages = [
            _report_notice(tag, nginx.base_url, f"/{tag}/{n}", f.read_bytes(), extra)
            for n, f, extra in zip(
                good, files, [{}, {}, *(h for _, h in HOSTILE_HEADERS)], strict=True
            )
        ]
        messages += [
            _report_notice(tag, nginx.base_url, f"/{tag}/bad/{n}", b"x") for n in HOSTILE_NAMES
        ]
        publish_raw(site.broker_url(), messages)
        wait_for(
            lambda: len([r for r in tap.reports if r.notice.path.startswith(tag)]) >= len(messages),
            timeout=90,
            what="a report for every notice",
        )
    finally:
        stopped = inst.launch("sr_subscribe", "stop", "mhost", env=env, timeout=120)
        tap.stop()
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr

    codes: dict[str, list[int]] = {}
    for r in tap.reports:
        if r.notice.path.startswith(tag):
            codes.setdefault(r.notice.path.split("/", 1)[1], []).append(r.code)
    expected = {"one.txt": 201, "with space.txt": 201}
    expected.update({n: 417 for n, _ in HOSTILE_HEADERS})
    expected.update({f"bad/{n}": 417 for n in HOSTILE_NAMES})
    assert codes == {k: [v] for k, v in expected.items()}, sorted(codes.items())
    for n in ("one.txt", "with space.txt"):
        assert (dest / n).read_bytes() == (nginx.root / tag / n).read_bytes()
    # nothing written anywhere else: not beside the destination, not on C:, not in the tree
    placed = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert placed == ["one.txt", "with space.txt"], placed
    assert {p for p in outer.rglob("*") if dest not in p.parents} == before
    assert {p.name for p in drive_c.iterdir()} == c_before
    for where in (tmp_path, ROOT, drive_c):
        assert not [p for p in where.glob("*") if p.name in ("escape.txt", "evil.txt")]

    # sr_log, from the installed launcher, reads the routed reports from xr_guest
    def shown() -> str:
        got = inst.launch("sr_log", "--log_summary", "on", "foreground", "mine", env=env)
        assert got.returncode == 0, got.stdout + got.stderr
        return got.stdout

    runs: list[str] = []

    def every_report_shown() -> bool:
        runs.append(shown())  # each run reads what is queued and stops once idle
        return "\n".join(runs).count(f"  {tag}/") >= len(expected)

    try:
        wait_for(every_report_shown, timeout=60, what="sr_log showing every report")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; sr_log's last run: {runs[-1:]}") from None
    lines = "\n".join(runs).splitlines()
    for rel, code in expected.items():
        mine = [ln for ln in lines if ln.startswith(f"  {tag}/{rel}: ")]
        assert len(mine) == 1 and ": guest@" in mine[0], (rel, lines)  # once, from guest
        assert mine[0].endswith(f" {code}"), mine
    return expected


def _readme_logon_line() -> str:
    """The README's command putting ``sr_subscribe start obs`` in the Startup folder."""
    text = (ROOT / "README.rst").read_text()
    (line,) = [ln.strip() for ln in text.splitlines() if ln.startswith('    echo "C:')]
    assert "Startup" in line and "sr_subscribe.cmd" in line, line
    return line


def test_a_subscription_in_the_default_directory_starts_at_logon_as_the_readme_says(  # type: ignore[no-untyped-def]
    installed: tuple[Installed, Path, Path, set[str]], site: Site, nginx, tmp_path: Path
) -> None:
    """README's Windows steps: obs.conf in %LOCALAPPDATA%\\sarra (no SR_CONFIG_DIR), the
    Startup-folder line run in cmd, then a session start (Wine runs the Startup folder at
    ``wineboot``): the subscriber runs, its state is in %LOCALAPPDATA%\\sarra\\state, it
    downloads, and ``stop`` ends it."""
    inst = installed[0]
    user_dir = inst.prefix / "drive_c" / "users" / getpass.getuser()
    home = user_dir / "AppData" / "Local" / "sarra"
    (home / "subscribe").mkdir(parents=True)
    cred = home / "credentials.conf"
    cred.write_text(f"amqp://guest:guest@127.0.0.1:{site.broker_port}/\n")
    cred.chmod(0o600)  # what Wine shows as an ACL for the user alone
    tag = unique("logon")
    dest = tmp_path / "obs"
    (home / "subscribe" / "obs.conf").write_text(
        f"broker {site.broker}\nexchange xs_guest\nsubtopic {tag}.#\n"
        f"directory {winpath(dest)}\nmirror on\nstrip 1\naccept .*\n"
        "base_url_private on\nexpire 10m\n"  # (the test's web server is on loopback)
    )
    setup = tmp_path / "setup.cmd"
    setup.write_text("@" + _readme_logon_line() + "\r\n")
    made = inst.run_argv(["cmd", "/c", winpath(setup)], {}, 60)
    assert made.returncode == 0, made.stdout + made.stderr
    programs = (
        user_dir / "AppData" / "Roaming" / "Microsoft" / "Windows" / "Start Menu" / "Programs"
    )
    # (Windows names are case-insensitive: Wine's prefix spells it StartUp)
    (startup,) = [p for p in programs.iterdir() if p.name.lower() == "startup"]
    assert [p.name.lower() for p in startup.iterdir()] == ["sarra-obs.cmd"], made.stdout
    booted = inst.run_argv(["wineboot"], {}, 120)  # a logon, as far as Wine goes
    assert booted.returncode == 0, booted.stdout + booted.stderr
    state = home / "state" / "subscribe" / "obs"
    try:
        wait_for(lambda: list(state.glob("*.pid")) != [], timeout=60, what="the pid file")
        status = inst.launch("sr_subscribe", "status", "obs", env={})
        assert "running" in status.stdout, status.stdout + status.stderr
        wait_for(lambda: _queue_exists_in(site, home), timeout=60, what="the queue")
        (src,) = make_files(nginx.root / tag, ["a.txt"])
        posted = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "sr_post"), "-pb", site.broker, "-pbu", nginx.base_url,
             "-pbd", str(nginx.root), str(src)],
            env={**os.environ, **site.env}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert posted.returncode == 0, posted.stderr
        wait_for(lambda: (dest / "a.txt").exists(), timeout=60, what="the download")
    finally:
        stopped = inst.launch("sr_subscribe", "stop", "obs", env={}, timeout=120)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert (dest / "a.txt").read_bytes() == src.read_bytes()
    assert list((home / "state" / "log").glob("sr_subscribe_obs_*.log"))


def _queue_exists_for(site: Site, component: str, config: str) -> bool:
    """The queue of ``config`` (a Windows instance named it in the site's state) exists."""
    names = list((site.state_dir / component / config).glob("*.qname"))
    return bool(names) and _queue_named(site, names[0].read_text().strip())


def _queue_named(site: Site, name: str) -> bool:
    session = BrokerSession(site.broker_url(), name="probe")
    session.connect()
    try:
        session.queue_counts(name)
    except Exception:
        return False
    finally:
        session.close()
    return True


def _queue_exists_in(site: Site, home: Path) -> bool:
    """The default-directory subscriber's queue exists (its name is in its state)."""
    names = list((home / "state" / "subscribe" / "obs").glob("*.qname"))
    return bool(names) and _queue_named(site, names[0].read_text().strip())


def test_the_installed_sr_watch_announces_creations_renames_and_only_complete_files(
    installed: tuple[Installed, Path, Path, set[str]], site: Site, tmp_path: Path
) -> None:
    """The installed ``sr_watch`` in the background (``start``, ``status``, ``stop``) over a
    directory given with Windows paths: what is there at start, a file created in a new
    subdirectory, a rename (the old name removed, then the new one posted, each naming the
    other), a file written slowly (announced once, complete) and one written under an
    ``inflight`` suffix (announced only under its final name), every relPath under
    ``post_base_dir`` with slashes. Its ``chmod_log`` line is warned about (no effect on
    Windows), naming the file and line."""
    inst = installed[0]
    env = win_env(site)
    tag = unique("mwatch")
    root = tmp_path / "root"
    wdir = root / tag
    wdir.mkdir(parents=True)
    (wdir / "ready.txt").write_text("ready\n")
    (site.config_dir / "watch").mkdir()
    conf = site.config_dir / "watch" / "mw.conf"
    conf.write_text(
        f"post_broker {site.broker}\npost_exchange xs_guest\n"
        f"post_base_url http://files.example.com/\npost_base_dir {winpath(root)}\n"
        f"path {winpath(wdir)}\nsleep 1\ninflight .tmp\nchmod_log 640\n"
    )
    session, _, got = _capture(site, "xs_guest", f"v02.post.{tag}.#")

    def collect(what: Callable[[list[Notice]], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not what(got) and time.monotonic() < deadline:
            session.poll(0.2)
        assert what(got), [
            (n.path, n.headers.get("newname"), n.headers.get("oldname")) for n in got
        ]

    def names(notices: list[Notice]) -> list[str]:
        return ["/" + n.path for n in notices]  # relPath, decoded

    slow = b"".join(bytes([65 + i]) * 4096 for i in range(8))
    try:
        started = inst.launch("sr_watch", "start", "mw", env=env, timeout=180)
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            status = inst.launch("sr_watch", "status", "mw", env=env)
            assert "running" in status.stdout, status.stdout + status.stderr
            collect(lambda g: len(g) >= 1)  # what is there at start is announced
            assert names(got) == [f"/{tag}/ready.txt"]
            (wdir / "sub").mkdir()
            (wdir / "sub" / "new file.txt").write_text("new\n")
            collect(lambda g: f"/{tag}/sub/new file.txt" in names(g))
            (wdir / "f1.txt").write_bytes(b"hello world\n")
            collect(lambda g: f"/{tag}/f1.txt" in names(g))
            mark = len(got)
            os.rename(wdir / "f1.txt", wdir / "f2.txt")
            collect(lambda g: f"/{tag}/f2.txt" in names(g[mark:]))
            mark = len(got)
            with (wdir / "slow.bin").open("wb") as out:  # still being written for 2.4 s
                for i in range(8):
                    out.write(slow[i * 4096 : (i + 1) * 4096])
                    out.flush()
                    time.sleep(0.3)
            (wdir / "data.csv.tmp").write_text("1,2,3\n")
            time.sleep(1.5)  # over the interval: a .tmp name is held back, not merely late
            os.rename(wdir / "data.csv.tmp", wdir / "data.csv")
            collect(lambda g: {f"/{tag}/slow.bin", f"/{tag}/data.csv"} <= set(names(g[mark:])))
            end = time.monotonic() + 2.5  # over two intervals: nothing more comes
            while time.monotonic() < end:
                session.poll(0.2)
        finally:
            stopped = inst.launch("sr_watch", "stop", "mw", env=env, timeout=120)
    finally:
        session.close()
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    status = inst.launch("sr_watch", "status", "mw", env=env)
    assert "running" not in status.stdout, status.stdout
    by_path: dict[str, list[Notice]] = {}
    for n in got:
        assert "\\" not in n.rel_path and ":" not in n.rel_path, n.rel_path
        by_path.setdefault("/" + n.path, []).append(n)
    assert sorted(by_path) == sorted(
        f"/{tag}/{n}"
        for n in ("ready.txt", "sub/new file.txt", "f1.txt", "f2.txt", "slow.bin", "data.csv")
    ), sorted(by_path)
    # the rename: f1.txt posted when made, then removed naming f2.txt; f2.txt names f1.txt
    first, removed = by_path[f"/{tag}/f1.txt"]
    assert first.headers["sum"].startswith("d,") and first.headers.get("newname") is None
    assert removed.headers["sum"].startswith("R,")
    assert removed.headers["newname"] == f"/{tag}/f2.txt"
    [renamed] = by_path[f"/{tag}/f2.txt"]
    assert renamed.headers["oldname"] == f"/{tag}/f1.txt"
    assert renamed.headers["sum"] == "d," + hashlib.md5(b"hello world\n").hexdigest()
    # the slow file once, whole; the .tmp one only under its final name
    slows = by_path[f"/{tag}/slow.bin"]
    assert len(slows) == 1, [(x.headers["parts"], x.headers["sum"]) for x in slows]
    [whole] = slows
    assert whole.headers["sum"] == "d," + hashlib.md5(slow).hexdigest()
    assert whole.headers["parts"] == f"1,{len(slow)},1,0,0"
    [final] = by_path[f"/{tag}/data.csv"]
    assert final.headers.get("oldname") is None
    # chmod_log was warned about where it is set (line 8), at start and in the instance's log
    warning = f"{winpath(conf)}:8: option 'chmod_log' has no effect on Windows"
    logs = "".join(p.read_text(errors="replace") for p in site.state_dir.rglob("sr_watch_mw_*.log"))
    assert warning.lower() in (started.stdout + started.stderr + logs).lower(), (
        started.stderr + logs
    )


def test_the_installed_sr_post_refuses_a_credentials_file_others_can_read(
    installed: tuple[Installed, Path, Path, set[str]], site: Site, tmp_path: Path
) -> None:
    inst = installed[0]
    env = win_env(site)
    cred = site.config_dir / "credentials.conf"
    (tmp_path / "f.txt").write_text("x")
    args = ("-pb", site.broker, "-pbu", "http://files.example.com/", "-pbd", winpath(tmp_path))
    cred.chmod(0o644)  # Wine shows this mode as an ACL granting Everyone read access
    refused = inst.launch("sr_post", *args, winpath(tmp_path / "f.txt"), env=env)
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0, out
    assert "readable by others" in out and "icacls" in out and "S-1-1-0" in out, out
    cred.chmod(0o600)
    ok = inst.launch("sr_post", *args, winpath(tmp_path / "f.txt"), env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_two_installed_instances_reassemble_a_file_posted_in_blocks_once(  # type: ignore[no-untyped-def]
    installed: tuple[Installed, Path, Path, set[str]], site: Site, nginx, tmp_path: Path
) -> None:
    inst = installed[0]
    blocks_by_two_instances(
        lambda *args, **kw: inst.launch("sr_subscribe", *args, **kw), site, nginx, tmp_path
    )


def test_the_installed_client_posts_subscribes_and_uninstalls_cleanly(  # type: ignore[no-untyped-def]
    installed: tuple[Installed, Path, Path, set[str]], site: Site, nginx, tmp_path: Path
) -> None:
    inst, install_dir, msi, before = installed
    env = win_env(site)
    helped = inst.launch("sr_subscribe", "--help", env=env)
    assert helped.returncode == 0 and "usage: sr_subscribe" in helped.stdout, (
        helped.stdout + helped.stderr
    )

    tag = unique("msi")
    data = tmp_path / "data"
    make_files(data / tag, ["obs/a.txt", "obs/deep/b c.txt"])
    session, _, got = _capture(site, "xs_guest", f"v02.post.{tag}.#")
    try:
        posted = inst.launch(
            "sr_post", "-pb", site.broker, "-pbu", "http://files.example.com/",
            "-pbd", winpath(data), winpath(data / tag), env=env,  # a tree: the directory
        )  # fmt: skip
        assert posted.returncode == 0, posted.stdout + posted.stderr
        deadline = time.monotonic() + 20
        while len(got) < 2 and time.monotonic() < deadline:
            session.poll(0.2)
    finally:
        session.close()
    assert sorted(n.path for n in got) == [f"{tag}/obs/a.txt", f"{tag}/obs/deep/b c.txt"]
    assert all("\\" not in n.rel_path and ":" not in n.rel_path for n in got)

    files = make_files(nginx.root / tag, ["one.txt", "sub/two.txt"])
    dest = tmp_path / "dest"
    site.write_subscribe(
        "msisub",
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {winpath(dest)}\nmirror on\nstrip 1\n"
        "expire 10m\naccept .*\n",
    )
    started = inst.launch("sr_subscribe", "start", "msisub", env=env, timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        wait_for(lambda: _queue_exists(site, "msisub"), timeout=60, what="the queue")
        posted = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "sr_post"), "-pb", site.broker, "-pbu", nginx.base_url,
             "-pbd", str(nginx.root), *map(str, files)],
            env={**os.environ, **site.env}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert posted.returncode == 0, posted.stderr
        wait_for(
            lambda: all((dest / f.relative_to(nginx.root / tag)).exists() for f in files),
            timeout=60,
            what="the files",
        )
    finally:
        stopped = inst.launch("sr_subscribe", "stop", "msisub", env=env, timeout=120)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    for f in files:
        assert (dest / f.relative_to(nginx.root / tag)).read_bytes() == f.read_bytes()
    # nothing written into the install directory at run time (no __pycache__, no logs)
    assert _listing(install_dir) == before

    removed = inst.run_argv(["msiexec", "/x", winpath(msi), "/qn"], env, 300)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not install_dir.exists()
    assert not [m for m in _menus(inst.prefix) if m.exists()]
    assert (site.config_dir / "subscribe" / "msisub.conf").is_file()  # the user's files stay
    assert (site.config_dir / "credentials.conf").is_file()


@pytest.fixture
def site(tmp_path: Path, rabbitmq) -> Site:  # type: ignore[no-untyped-def]
    return Site(tmp_path / "site", rabbitmq.port).setup()
