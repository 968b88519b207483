"""Drive the reference implementations (MetPX sr2 and sr3) as subprocess test peers.

A helper module for interop tests and the benchmark, not a test file. The peers live in their
own virtual environments made by ``scripts/install-peers`` (``.peers/sr2``, ``.peers/sr3``
under the repo root, or under ``$SARRA_PEERS_DIR``); they are never imported here.

Every peer run gets:

* ``HOME`` set to a caller-given directory (a pytest ``tmp_path``), holding the peer's
  configuration tree (``~/.config/sarra`` for sr2, ``~/.config/sr3`` for sr3), its cache and
  a ``credentials.conf`` of mode 600 carrying the broker password, so that configs and
  command lines name the broker without the password;
* an environment cleaned of the project's venv (``VIRTUAL_ENV``, ``PYTHON*``, ``XDG_*`` and
  the venv's ``bin`` on ``PATH``), so nothing of ours leaks into the peer;
* its own process group, so stopping it kills every process it forked (``sr3 foreground``
  runs the flow in a child process).

How the options were chosen, and the peers' quirks, are written down in docs/peers.md.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PEERS_DIR_ENV = "SARRA_PEERS_DIR"

#: Per-peer facts: command names, config tree under HOME, log lines that count work.
SR2_COMMANDS = frozenset(
    {"sr_post", "sr_subscribe", "sr_sarra", "sr_watch", "sr_winnow", "sr_shovel", "sr_sender",
     "sr_poll", "sr_report", "sr_audit", "sr"}
)  # fmt: skip
SR3_COMMANDS = frozenset({"sr3", "sr3_post"})

#: One line per announced message (sr2's default on_post plugin Post_Log).
SR2_POSTED_LINE = "post_log notice="
#: One line per downloaded file (sr2's default on_file plugin File_Log).
SR2_DOWNLOADED_LINE = "file_log downloaded to:"
#: One line per published message (sr3's flowcb.log after_post).
SR3_POSTED_LINE = "after_post posted to"
#: One line per downloaded file (sr3's flowcb.log after_work).
SR3_DOWNLOADED_LINE = "after_work downloaded ok:"

#: A way to ask the broker which (exchange, routing key) pairs a queue is bound with.
BindingLister = Callable[[str], Iterable[tuple[str, str]]]


class PeerError(RuntimeError):
    """A peer could not be found, did not start, or failed; the message carries its log."""


# -- locating and environment ----------------------------------------------------------------


def peers_dir() -> Path:
    """Root of the peer venvs: ``$SARRA_PEERS_DIR`` or ``<repo>/.peers``."""
    return Path(os.environ.get(PEERS_DIR_ENV) or REPO_ROOT / ".peers")


def peer_bin(name: str) -> Path:
    """Path of a peer command (``sr_post``, ``sr_subscribe``, ``sr3``, ``sr3_post``, ...).

    Raises PeerError, saying to run scripts/install-peers, when it is not installed.
    """
    if name in SR2_COMMANDS:
        venv = "sr2"
    elif name in SR3_COMMANDS:
        venv = "sr3"
    else:
        raise PeerError(f"unknown peer command {name!r}")
    path = peers_dir() / venv / "bin" / name
    if not path.is_file() or not os.access(path, os.X_OK):
        raise PeerError(
            f"peer command {path} is missing: run scripts/install-peers "
            f"(installs metpx-sarracenia 2.24.8.post2 and metpx-sr3 3.3.1 under {peers_dir()})"
        )
    return path


def peer_env(home: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a peer: ``base`` (default os.environ) less our venv, HOME=home."""
    env = dict(os.environ if base is None else base)
    venv = env.pop("VIRTUAL_ENV", None)
    for key in list(env):
        if key.startswith(("PYTHON", "XDG_", "SR_", "SARRA")) or key == "PYTEST_CURRENT_TEST":
            del env[key]
    ours = {str(Path(sys.prefix) / "bin")}
    if venv:
        ours.add(str(Path(venv) / "bin"))
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p not in ours]
    env["PATH"] = os.pathsep.join(path) or "/usr/bin:/bin"
    env["HOME"] = str(home)
    env["LANG"] = env["LC_ALL"] = "C.UTF-8"
    return env


def _split_broker(broker_url: str) -> tuple[str, str, str]:
    """``amqp://u:p@h:port/`` -> (URL without password, URL with it, user)."""
    parts = urllib.parse.urlsplit(broker_url)
    if not parts.username:
        raise PeerError(f"broker URL {broker_url!r} has no user name")
    host = parts.hostname or "127.0.0.1"
    netloc = f"{host}:{parts.port}" if parts.port else host
    path = parts.path or "/"
    bare = urllib.parse.urlunsplit((parts.scheme, f"{parts.username}@{netloc}", path, "", ""))
    return (
        bare,
        urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", "")),
        urllib.parse.unquote(parts.username),
    )


def write_credentials(config_dir: Path, urls: Iterable[str]) -> Path:
    """Write ``config_dir/credentials.conf`` (mode 600) with one URL (with password) a line."""
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "credentials.conf"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{url}\n" for url in urls)
    path.chmod(0o600)
    return path


def _write_config(path: Path, lines: Iterable[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def _sr3_identity(sum_: str) -> str:
    """sr3 spells sum algorithms by name; accept the v02 letters too."""
    names = {"d": "md5", "s": "sha512", "n": "md5name", "0": "random", "a": "arbitrary"}
    if sum_.startswith("z,"):
        return "cod," + names.get(sum_[2:], sum_[2:])
    return names.get(sum_, sum_)


def _run(
    argv: Sequence[str], home: Path, timeout: float, check: bool
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv),
        env=peer_env(home),
        cwd=home,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise PeerError(f"{' '.join(argv)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


# -- posting ---------------------------------------------------------------------------------


def sr2_post(
    home: Path,
    broker_url: str,
    post_base_url: str,
    post_base_dir: Path,
    paths: Sequence[Path],
    *,
    exchange: str | None = None,
    blocksize: str | int | None = None,
    sum: str | None = None,
    extra_options: Sequence[str] = (),
    timeout: float = 120.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Announce ``paths`` (files or directories, walked) with sr2 ``sr_post`` in v02.

    The options go in a config file passed as ``-c <absolute path>``: sr2's command-line
    parser mistakes a trailing path for a config name, or eats an option's value that is an
    existing path (docs/peers.md). ``exchange`` defaults to ``xs_<user>``. ``extra_options``
    are config lines (``"cluster test"``). sr_post posts the paths in reverse order and exits
    0 even when a path cannot be posted: count ``SR2_POSTED_LINE`` in the output to check.
    """
    bare, full, user = _split_broker(broker_url)
    cfg_dir = home / ".config" / "sarra"
    write_credentials(cfg_dir, [full])
    lines = [
        f"post_broker {bare}",
        f"post_exchange {exchange or 'xs_' + user}",
        f"post_base_url {post_base_url}",
        f"post_base_dir {post_base_dir}",
    ]
    if blocksize is not None:
        lines.append(f"blocksize {blocksize}")
    if sum is not None:
        lines.append(f"sum {sum}")
    lines.extend(extra_options)
    cfg = _write_config(cfg_dir / "post" / f"peer_{secrets.token_hex(3)}.conf", lines)
    argv = [str(peer_bin("sr_post")), "-c", str(cfg), *(str(p) for p in paths)]
    return _run(argv, home, timeout, check)


def sr3_post(
    home: Path,
    broker_url: str,
    post_base_url: str,
    post_base_dir: Path,
    paths: Sequence[Path],
    *,
    exchange: str | None = None,
    blocksize: str | int | None = None,
    sum: str | None = None,
    post_format: str = "v02",
    extra_options: Sequence[str] = (),
    timeout: float = 120.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Announce ``paths`` (files or directories, walked) with sr3 ``sr3_post``.

    v02 output needs both ``post_format v02`` and ``post_topicPrefix v02.post``: the
    topic prefix alone is ignored because post_format defaults to v03. ``sum`` takes a v02
    letter (d, s, n, 0, z,d) or an sr3 name; sr3's default is sha512 (``s``). ``blocksize``
    uses sr3's decimal units (``1M`` = 1,000,000). Count ``SR3_POSTED_LINE`` in the output.
    """
    bare, full, user = _split_broker(broker_url)
    cfg_dir = home / ".config" / "sr3"
    write_credentials(cfg_dir, [full])
    lines = [
        f"post_broker {bare}",
        f"post_exchange {exchange or 'xs_' + user}",
        f"post_baseUrl {post_base_url}",
        f"post_baseDir {post_base_dir}",
        f"post_format {post_format}",
        f"post_topicPrefix {post_format}.post" if post_format == "v02" else "post_topicPrefix v03",
    ]
    if blocksize is not None:
        lines.append(f"blocksize {blocksize}")
    if sum is not None:
        lines.append(f"identity {_sr3_identity(sum)}")
    lines.extend(extra_options)
    cfg = _write_config(cfg_dir / "post" / f"peer_{secrets.token_hex(3)}.conf", lines)
    argv = [str(peer_bin("sr3_post")), "--config", str(cfg), *(str(p) for p in paths)]
    return _run(argv, home, timeout, check)


def count_lines(text: str, marker: str) -> int:
    """How many lines of ``text`` contain ``marker`` (see the *_LINE constants)."""
    return sum(1 for line in text.splitlines() if marker in line)


# -- binding probes --------------------------------------------------------------------------


def ctl_bindings(ctl: Callable[..., str]) -> BindingLister:
    """A BindingLister over ``rabbitmqctl`` (e.g. the rabbitmq fixture's ``.ctl``)."""

    def lister(queue: str) -> list[tuple[str, str]]:
        out = ctl("-q", "list_bindings", "source_name", "destination_name", "routing_key")
        found = []
        for line in out.splitlines():
            cols = line.split("\t")
            if len(cols) == 3 and cols[1] == queue and cols[0]:
                found.append((cols[0], cols[2]))
        return found

    return lister


def mgmt_bindings(mgmt_get: Callable[[str], Any], vhost: str = "/") -> BindingLister:
    """A BindingLister over the management API (e.g. the rabbitmq fixture's ``.mgmt_get``)."""

    def lister(queue: str) -> list[tuple[str, str]]:
        v, q = urllib.parse.quote(vhost, safe=""), urllib.parse.quote(queue, safe="")
        try:
            rows = mgmt_get(f"queues/{v}/{q}/bindings")
        except OSError:  # 404 until the queue exists (HTTPError is an OSError)
            return []
        return [(r["source"], r["routing_key"]) for r in rows if r.get("source")]

    return lister


# -- subscribers -----------------------------------------------------------------------------


class _Subscriber:
    """A peer subscriber running in the foreground as a subprocess (see the subclasses)."""

    downloaded_line = ""
    ready_line = ""  # logged by the peer right before or after binding its queue

    def __init__(
        self,
        home: Path,
        broker_url: str,
        exchange: str,
        directory: Path,
        *,
        subtopic: str = "#",
        topic_prefix: str = "v02.post",
        queue: str | None = None,
        extra: Sequence[str] = (),
        bindings: BindingLister | None = None,
    ) -> None:
        self.home = Path(home)
        self.broker_url = broker_url
        self.exchange = exchange
        self.directory = Path(directory)
        self.subtopic = subtopic
        self.topic_prefix = topic_prefix
        bare, full, user = _split_broker(broker_url)
        self._bare, self._full, self.user = bare, full, user
        self.queue = queue or f"q_{user}.peer.{secrets.token_hex(4)}"
        self.extra = tuple(extra)
        self.bindings = bindings
        self.config_name = f"peer_{secrets.token_hex(3)}"
        self.log_path = self.home / f"{self.config_name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready_after = 0.0  # seconds from spawn until the queue was bound

    # subclass hooks
    def _config_path(self) -> Path:
        raise NotImplementedError

    def _config_lines(self) -> list[str]:
        raise NotImplementedError

    def _argv(self) -> list[str]:
        raise NotImplementedError

    @property
    def binding_key(self) -> str:
        return f"{self.topic_prefix}.{self.subtopic}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise PeerError("subscriber not started")
        return self.process.pid

    def start(self, timeout: float = 60.0) -> _Subscriber:
        """Write the config, spawn the peer and return once its queue is bound.

        With ``bindings`` the broker itself is asked; without, the peer's log line about
        binding is trusted, plus a short margin. Raises PeerError (with the log) if the peer
        exits or is not bound within ``timeout`` s.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_credentials()
        _write_config(self._config_path(), self._config_lines())
        log = self.log_path.open("ab")
        try:
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                self._argv(),
                env=peer_env(self.home),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            self._wait_bound(timeout)
        except BaseException:
            self.stop()
            raise
        self.ready_after = time.monotonic() - self.started_at
        return self

    def _write_credentials(self) -> None:
        raise NotImplementedError

    def _wait_bound(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        want = (self.exchange, self.binding_key)
        while time.monotonic() < deadline:
            self._check_alive()
            if self.bindings is not None:
                if want in set(self.bindings(self.queue)):
                    return
                time.sleep(0.2)
                continue
            if self.ready_line in self.log_text():
                time.sleep(0.5)  # the log line may precede the bind by a round trip
                return
            time.sleep(0.1)
        raise PeerError(
            f"{type(self).__name__} queue {self.queue} not bound to {want} after {timeout:.0f}s"
            f"\n{self.log_text()[-4000:]}"
        )

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise PeerError(
                f"{type(self).__name__} exited with {self.process.returncode}:\n"
                f"{self.log_text()[-4000:]}"
            )

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the peer's process group; SIGKILL it after ``timeout`` s. Idempotent."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # children that outlived the leader (sr3 forks the flow process)
        _signal_group(proc.pid, signal.SIGKILL)
        return proc.returncode

    def log_text(self) -> str:
        """Everything the peer wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def downloaded(self) -> int:
        """Files the peer says it downloaded so far (counted from its log)."""
        return count_lines(self.log_text(), self.downloaded_line)

    def wait_downloaded(self, count: int, timeout: float = 60.0) -> int:
        """Wait until at least ``count`` downloads are logged; return the number seen.

        Raises PeerError with the log tail if the peer dies or the count is not reached.
        """
        deadline = time.monotonic() + timeout
        while True:
            seen = self.downloaded()
            if seen >= count:
                return seen
            self._check_alive()
            if time.monotonic() > deadline:
                raise PeerError(
                    f"{type(self).__name__} downloaded {seen} of {count} files in "
                    f"{timeout:.0f}s\n{self.log_text()[-4000:]}"
                )
            time.sleep(0.1)

    def wait_logged(self, marker: str, count: int, timeout: float = 60.0) -> list[str]:
        """Wait until at least ``count`` log lines contain ``marker``; return those lines.

        Raises PeerError with the log tail if the peer dies or the count is not reached.
        """
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.log_text().splitlines() if marker in line]
            if len(lines) >= count:
                return lines
            self._check_alive()
            if time.monotonic() > deadline:
                raise PeerError(
                    f"{type(self).__name__} logged {len(lines)} of {count} {marker!r} lines in "
                    f"{timeout:.0f}s\n{self.log_text()[-4000:]}"
                )
            time.sleep(0.1)

    def __enter__(self) -> _Subscriber:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Sr2Subscriber(_Subscriber):
    """sr2 ``sr_subscribe foreground <cfg>``: mirror, accept .*, fixed queue, expire 1h.

    sr2 also publishes a v02 report per message to ``xs_<user>`` (report_back is on by
    default); pass ``extra=["report_back False"]`` to stop that.
    """

    downloaded_line = SR2_DOWNLOADED_LINE
    ready_line = "reading from to"  # logged after the queue is declared and bound

    def _write_credentials(self) -> None:
        write_credentials(self.home / ".config" / "sarra", [self._full])

    def _config_path(self) -> Path:
        return self.home / ".config" / "sarra" / "subscribe" / f"{self.config_name}.conf"

    def _config_lines(self) -> list[str]:
        # Order matters in sr2: exchange and topic_prefix before subtopic, directory
        # before accept.
        return [
            f"broker {self._bare}",
            f"exchange {self.exchange}",
            f"topic_prefix {self.topic_prefix}",
            f"queue_name {self.queue}",
            "expire 1h",
            f"subtopic {self.subtopic}",
            *self.extra,
            "mirror True",
            f"directory {self.directory}",
            "accept .*",
        ]

    def _argv(self) -> list[str]:
        return [str(peer_bin("sr_subscribe")), "foreground", self.config_name]


def write_sr2_plugin(home: Path, name: str, source: str) -> str:
    """Install an sr2 plugin as ``~/.config/sarra/plugins/<name>.py``; return ``name``.

    Use the name in a config line such as ``on_message <name>``.
    """
    path = home / ".config" / "sarra" / "plugins" / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    return name


class Sr2Reporter(Sr2Subscriber):
    """sr2 ``sr_report foreground <cfg>``: reads v02 reports, downloads nothing.

    sr_report is sr_subscribe with ``topic_prefix v02.report``, ``notify_only`` and no
    reports of its own; it logs nothing per message by default, so give it an
    ``on_message`` plugin in ``extra`` (see :func:`write_sr2_plugin`) and wait for the
    plugin's lines with :meth:`wait_logged`. ``directory`` is created but stays empty.
    """

    def __init__(
        self,
        home: Path,
        broker_url: str,
        exchange: str,
        directory: Path,
        *,
        subtopic: str = "#",
        queue: str | None = None,
        extra: Sequence[str] = (),
        bindings: BindingLister | None = None,
    ) -> None:
        super().__init__(
            home,
            broker_url,
            exchange,
            directory,
            subtopic=subtopic,
            topic_prefix="v02.report",
            queue=queue,
            extra=extra,
            bindings=bindings,
        )

    def _config_path(self) -> Path:
        return self.home / ".config" / "sarra" / "report" / f"{self.config_name}.conf"

    def _config_lines(self) -> list[str]:
        return [
            f"broker {self._bare}",
            f"exchange {self.exchange}",
            f"topic_prefix {self.topic_prefix}",
            f"queue_name {self.queue}",
            "expire 1h",
            f"subtopic {self.subtopic}",
            *self.extra,
            f"directory {self.directory}",
            "accept .*",
        ]

    def _argv(self) -> list[str]:
        return [str(peer_bin("sr_report")), "foreground", self.config_name]


class Sr3Subscriber(_Subscriber):
    """sr3 ``sr3 foreground subscribe/<cfg>``: mirror, accept .*, fixed queue, expire 1h.

    Binds ``topic_prefix.subtopic`` (default ``v02.post.#``); sr3 reads v02 and converts.
    """

    downloaded_line = SR3_DOWNLOADED_LINE
    ready_line = "getSetup binding"  # logged just before queue_bind

    def _write_credentials(self) -> None:
        write_credentials(self.home / ".config" / "sr3", [self._full])
        # without it sr3 logs a harmless "[ERROR] ... subscriptions.json" at its first start
        (self.home / ".cache" / "sr3" / "subscribe" / self.config_name).mkdir(
            parents=True, exist_ok=True
        )

    def _config_path(self) -> Path:
        return self.home / ".config" / "sr3" / "subscribe" / f"{self.config_name}.conf"

    def _config_lines(self) -> list[str]:
        return [
            f"broker {self._bare}",
            f"exchange {self.exchange}",
            f"topicPrefix {self.topic_prefix}",
            f"queueName {self.queue}",
            "expire 1h",
            f"subtopic {self.subtopic}",
            *self.extra,
            "mirror True",
            f"directory {self.directory}",
            "accept .*",
        ]

    def _argv(self) -> list[str]:
        return [str(peer_bin("sr3")), "foreground", f"subscribe/{self.config_name}"]
