"""``sr web``: one small HTTP server showing the pump of the user who runs it.

``sr [--sr3] web [--listen HOST:PORT] [--auth FILE] [--every SECONDS]``

Paths: ``/`` a status page (HTML, refreshing itself), ``/status.json`` the same data,
``/metrics`` the Prometheus text exposition format. Every ``--every`` seconds (default 5) a
sampler thread collects ``sr status --json``'s records (:func:`sarra.cli.pump.status_record`:
instances, queue backlog and consumers) and every instance's metrics file
(:mod:`sarra.flow.metrics`), and keeps the last :data:`HISTORY_SECONDS` of rates and lag in
memory for the charts. The queues are counted over one broker connection per broker and
user, kept between samples (:class:`sarra.components.common.SessionPool`). Requests only
read the latest sample: a slow broker never holds a page.

Access (see docs/cli-verbs.md, ``sr web``):

- Bound to :data:`LOOPBACK` (``127.0.0.1`` or ``::1``, the default is ``127.0.0.1``) it
  serves without credentials unless ``--auth`` names a file. Any other address, other
  ``127.x.y.z`` addresses included (they can be forwarded or shared with containers, and an
  exact rule is one an operator can check), requires credentials on every path.
- The credentials file (default ``<config dir>/web-auth``) must be a regular file of the
  user's with no group or other permission bits (``chmod 600``); its lines are
  ``token <secret>`` (sent as ``Authorization: Bearer <secret>``) and/or
  ``basic <user>:<password>`` (HTTP basic auth, what a browser asks for). Without a usable
  file ``sr web`` refuses to start and says how to make one.
- ``source <name> <secret>`` lines give each source of a multi-user pump a token of its
  own: its requests get :func:`for_source`'s cut of the sample (docs/cli-verbs.md).
- Nothing served shows a secret: every response body goes through
  :func:`sarra.cli.logs.redact` as a last step, on top of the records' own redaction.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import io
import ipaddress
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from subprocess import DEVNULL
from typing import Any, TextIO

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from sarra.cli import configs as cf
from sarra.cli import pump
from sarra.cli.instances import Instance
from sarra.cli.logs import redact, remove_handler, setup_console_logging
from sarra.cli.runtime import Runtime
from sarra.cli.webpage import render_page
from sarra.components.common import SessionPool, reusing_sessions
from sarra.errors import ConfigError
from sarra.flow.metrics import open_reassemblies, read_metrics

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:8093"
#: the addresses that may serve without credentials
LOOPBACK = frozenset({"127.0.0.1", "::1"})
#: seconds of rates and lag kept for the charts
HISTORY_SECONDS = 15 * 60
#: a metrics file older than this (seconds) is shown as stale
STALE_AFTER = 30.0
#: how often the police audit runs by default (seconds)
AUDIT_EVERY = 60.0
#: ``sarra_police_status`` values
AUDIT_STATUS = {"ok": 0, "warning": 1, "error": 2}

USAGE = (
    "usage: sr [--sr3] web [--listen HOST:PORT] [--auth FILE] [--every SECONDS] "
    "[--audit-every SECONDS]"
)
HELP = f"""{USAGE}

Serve this user's pump: / (status page), /status.json, /metrics (Prometheus).

  --listen HOST:PORT  where to listen (default {DEFAULT_LISTEN}); any address but 127.0.0.1
                      or ::1 requires credentials on every path
  --auth FILE         credentials file, mode 600: lines 'token <secret>' and/or
                      'basic <user>:<password>' (the operator: sees all), and
                      'source <name> <secret>' (that source sees its own flows only)
                      (default: web-auth in the config directory)
  --every SECONDS     how often the pump's status is collected (default 5)
  --audit-every SECONDS
                      how often sr_police audit runs for the page (default 60; 0: off)"""


# -- credentials ------------------------------------------------------------------------------


#: who a request is: None for the operator (sees everything), else a source's name
Viewer = str | None
#: :meth:`Credentials.identify`'s answer for a request it refuses
REFUSED = "\x00refused"


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request must present: the operator's bearer token and/or basic-auth user and
    password (they see everything), or a source's token (``sources``: source -> token; that
    source sees only its own flows, see :func:`for_source`)."""

    token: str | None = None
    basic: tuple[str, str] | None = None
    sources: tuple[tuple[str, str], ...] = ()

    def identify(self, header: str | None) -> Viewer:
        """Who an ``Authorization`` header value is: None (the operator), a source's name,
        or :data:`REFUSED`. Every comparison is made, in constant time, whatever matches."""
        if not header:
            return REFUSED
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        found: Viewer = REFUSED
        if scheme.lower() == "bearer":
            if self.token is not None and _same(value, self.token):
                found = None
            for source, token in self.sources:
                if _same(value, token) and found == REFUSED:
                    found = source
            return found
        if scheme.lower() == "basic":
            try:
                raw = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return REFUSED
            user, sep, password = raw.partition(":")
            if not sep:
                return REFUSED
            if self.basic is not None:
                want_user, want_password = self.basic
                ok_user = _same(user, want_user)
                if _same(password, want_password) and ok_user:
                    found = None
            for source, token in self.sources:  # a browser: the source's name and token
                ok_user = _same(user, source)
                if _same(password, token) and ok_user and found == REFUSED:
                    found = source
        return found

    def allows(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header value carries any of the credentials."""
        return self.identify(header) != REFUSED


def how_to_make(path: Path) -> str:
    return (
        f"create {path} with mode 600 holding a line 'token <secret>' (send it as "
        "'Authorization: Bearer <secret>') and/or 'basic <user>:<password>', e.g.: "
        f"(umask 077; echo \"token $(python3 -c 'import secrets; "
        f"print(secrets.token_urlsafe(32))')\" > {path})"
    )


def load_credentials(path: Path) -> Credentials:
    """Read the credentials file.

    Raises:
        ConfigError: missing, not a regular file of the user's, readable or writable by
            group or others, or holding no ``token``/``basic`` line.
    """
    try:
        st = path.lstat()
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror}); {how_to_make(path)}") from exc
    if not stat.S_ISREG(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
        raise ConfigError(f"{path} is not a regular file of yours; {how_to_make(path)}")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"{path} has mode {stat.S_IMODE(st.st_mode):03o}: others could read the "
            f"credentials; chmod 600 {path}"
        )
    token: str | None = None
    basic: tuple[str, str] | None = None
    sources: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        words = line.strip()
        if not words or words.startswith("#"):
            continue
        kind, _, value = words.partition(" ")
        value = value.strip()
        if kind == "token" and value:
            token = value
        elif kind == "basic" and ":" in value and value.partition(":")[2]:
            user, _, password = value.partition(":")
            basic = (user, password)
        elif kind == "source" and len(value.split()) == 2:
            source, secret = value.split()
            if source in sources:
                raise ConfigError(f"{path}:{number}: source {source} given twice")
            sources[source] = secret
        else:
            raise ConfigError(
                f"{path}:{number}: expected 'token <secret>', 'basic user:pw' or "
                "'source <name> <secret>'"
            )
    secrets = [t for t in (token, basic[1] if basic else None) if t] + list(sources.values())
    if len(set(secrets)) != len(secrets):
        raise ConfigError(f"{path}: each token must be different (one token, one viewer)")
    if token is None and basic is None and not sources:
        raise ConfigError(f"{path} holds no credentials; {how_to_make(path)}")
    return Credentials(token, basic, tuple(sorted(sources.items())))


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port).

    Raises:
        ConfigError: not of that form, or the port out of range.
    """
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host, int(port)


def needs_credentials(host: str) -> bool:
    """Every address but :data:`LOOPBACK` requires credentials (a name too: it may resolve
    to anything)."""
    try:
        return str(ipaddress.ip_address(host)) not in LOOPBACK
    except ValueError:
        return True


# -- collecting ------------------------------------------------------------------------------


def collect(rt: Runtime, now: float | None = None) -> dict[str, Any]:
    """One sample of the pump: every config's status record, with each instance's metrics
    and the config's totals, and its files in reassembly."""
    now = time.time() if now is None else now
    pairs, _rc = pump.select(rt, "status", [], io.StringIO())
    one_shots = _one_shot_runs(rt, set(pairs))
    configs = []
    for pair in [*pairs, *one_shots]:
        record = pump.status_record(rt, pair)
        if pair in one_shots:  # a run of sr_post: nothing is expected to keep running
            inst = record["instances"]
            inst["each"] = [e for e in inst["each"] if e["state"] != "stopped"]
            inst["expected"], record["ok"], record["one_shot"] = 0, record["error"] is None, True
        state_dir = rt.state_dir(pair.component, pair.config)
        totals = _Totals()
        for each in record["instances"]["each"]:
            inst = Instance(pair.component, pair.config, each["number"], state_dir, rt.log_dir())
            doc = read_metrics(inst.metrics_path)
            if doc is not None and each["state"] != "running":
                doc = {**doc, "connection": "stopped"}
            each["metrics"] = doc
            if doc is not None:
                each["metrics_age"] = now - float(doc.get("time") or 0.0)
                totals.add(doc)
        for number in _orphan_metrics(state_dir, pair, record):
            inst = Instance(pair.component, pair.config, number, state_dir, rt.log_dir())
            doc = read_metrics(inst.metrics_path)
            if doc is not None:  # e.g. a foreground instance (no pid file) or instance 0
                record["instances"]["each"].append(
                    {
                        "number": number,
                        "state": "unmanaged",
                        "pid": doc.get("pid"),
                        "extra": True,
                        "metrics": doc,
                        "metrics_age": now - float(doc["time"]),
                    }
                )
                totals.add(doc)
        record["totals"] = totals.document()
        record["reassembly"] = open_reassemblies(state_dir)
        configs.append(record)
    return {"schema": pump.JSON_SCHEMA, "time": now, "configs": configs}


def _one_shot_runs(rt: Runtime, shown: set[pump.Pair]) -> list[pump.Pair]:
    """The configurations of one-shot components (sr_post without ``sleep``), which ``sr
    status`` leaves out, that left a metrics file: their runs are shown too."""
    found = []
    for component, impl in rt.registry.items():
        if not impl.one_shot:
            continue
        for config in cf.list_configs(rt.config_dir(), component):
            pair = pump.Pair(component, config.name, config.enabled)
            if pair in shown:
                continue
            prefix = f"sr_{component}_{config.name}_"
            try:
                names = os.listdir(rt.state_dir(component, config.name))
            except OSError:
                continue
            if any(n.startswith(prefix) and n.endswith(".metrics.json") for n in names):
                found.append(pair)
    return found


def _orphan_metrics(state_dir: Path, pair: pump.Pair, record: dict[str, Any]) -> list[int]:
    known = {e["number"] for e in record["instances"]["each"]}
    prefix = f"sr_{pair.component}_{pair.config}_"
    found: list[int] = []
    try:
        names = os.listdir(state_dir)
    except OSError:
        return found
    for name in names:
        if name.startswith(prefix) and name.endswith(".metrics.json"):
            tag = name[len(prefix) : -len(".metrics.json")]
            if tag.isdigit() and int(tag) not in known:
                found.append(int(tag))
    return sorted(found)


class _Totals:
    """A config's counters summed over its instances; gauges as their worst."""

    COUNTERS = ("files", "blocks", "bytes", "rejects", "malformed")

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {k: 0 for k in self.COUNTERS}
        self.doc.update(
            notices_in=0,
            notices_out=0,
            codes={},
            by_source={},
            retry_depth=0,
            retry_oldest_age=None,
            lag_last=None,
            lag_max=None,
            last_activity=None,
            connected=0,
            instances=0,
        )

    def add(self, m: dict[str, Any]) -> None:
        d = self.doc
        d["instances"] += 1
        for key in self.COUNTERS:
            d[key] += int(m.get(key) or 0)
        d["notices_in"] += int(m.get("notices", {}).get("in") or 0)
        d["notices_out"] += int(m.get("notices", {}).get("out") or 0)
        for code, n in (m.get("codes") or {}).items():
            d["codes"][code] = d["codes"].get(code, 0) + n
        for source, counts in (m.get("by_source") or {}).items():
            mine = d["by_source"].setdefault(source, {})
            for code, n in counts.items():
                mine[code] = mine.get(code, 0) + n
        retry = m.get("retry") or {}
        d["retry_depth"] += int(retry.get("depth") or 0)
        d["retry_oldest_age"] = _max(d["retry_oldest_age"], retry.get("oldest_age"))
        lag = m.get("lag") or {}
        d["lag_last"] = _max(d["lag_last"], lag.get("last"))
        d["lag_max"] = _max(d["lag_max"], lag.get("max"))
        d["last_activity"] = _max(d["last_activity"], m.get("last_activity"))
        d["connected"] += m.get("connection") == "connected"

    def document(self) -> dict[str, Any]:
        return self.doc


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


# -- what a source sees ----------------------------------------------------------------------


def source_exchange(source: str, exchange: str) -> bool:
    """Whether ``exchange`` is one of ``source``'s own (``xs_S``, ``xr_S``, ``xl_S``, and
    their ``_suffix`` forms, as sr_police names them)."""
    for prefix in ("xs_", "xr_", "xl_"):
        own = prefix + source
        if exchange == own or exchange.startswith(own + "_"):
            return True
    return False


def owns(source: str, names: dict[str, Any] | None) -> bool:
    """Whether a configuration's flow is wholly ``source``'s: every exchange it reads and
    posts to is the source's own; or it runs as that broker user alone and reads nothing
    but the source's own and public (``x...public``) exchanges."""
    if not names:
        return False
    exchanges = list(names.get("exchanges") or ())
    if exchanges and all(source_exchange(source, x) for x in exchanges):
        return True
    users = list(names.get("users") or ())
    return (
        bool(users)
        and set(users) == {source}
        and all(
            source_exchange(source, x) or (x.startswith("x") and x.endswith("public"))
            for x in exchanges
        )
    )


def _mine(by_source: Any, source: str) -> dict[str, Any]:
    counts = (by_source or {}).get(source)
    return {source: counts} if counts else {}


def for_source(
    doc: dict[str, Any], history: list[tuple[float, dict[str, Any]]], source: str
) -> tuple[dict[str, Any], list[tuple[float, dict[str, Any]]]]:
    """The sample as ``source`` may see it on a multi-user pump: its own configurations
    (:func:`owns`) whole, but outcome counts by source only for itself; of the pump's
    shared configurations that handled its notices, only their name, their instances up or
    down, and its own outcome counts; nothing else (no other configuration, queue, error
    text, reassembly or police audit)."""
    configs: list[dict[str, Any]] = []
    visible: set[str] = set()
    for record in doc["configs"]:
        totals = record.get("totals") or {}
        if owns(source, record.get("names")):
            each = [
                {**e, "metrics": _sliced(e.get("metrics"), source)}
                for e in record["instances"]["each"]
            ]
            configs.append(
                {
                    **record,
                    "instances": {**record["instances"], "each": each},
                    "totals": {**totals, "by_source": _mine(totals.get("by_source"), source)},
                }
            )
            visible.add(_label(record))
            continue
        mine = _mine(totals.get("by_source"), source)
        if not mine:
            continue
        inst = record["instances"]
        configs.append(
            {
                "component": record["component"],
                "config": record["config"],
                "enabled": record["enabled"],
                "ok": record.get("ok"),
                "error": None,
                "shared": True,
                "instances": {
                    "expected": inst["expected"],
                    "running": inst["running"],
                    "pids": [],
                    "each": [
                        {
                            "number": e["number"],
                            "state": e["state"],
                            "pid": None,
                            "extra": e.get("extra", False),
                            "why": None,
                            "metrics": (
                                {
                                    "by_source": _mine(
                                        (e.get("metrics") or {}).get("by_source"), source
                                    )
                                }
                                if e.get("metrics")
                                else None
                            ),
                        }
                        for e in inst["each"]
                    ],
                },
                "queue": None,
                "names": None,
                "totals": {"by_source": mine},
                "reassembly": [],
            }
        )
    shown = {
        "schema": doc.get("schema"),
        "time": doc.get("time"),
        "viewer": source,
        "configs": configs,
    }
    kept = [(t, {k: v for k, v in point.items() if k in visible}) for t, point in history]
    return shown, kept


def _sliced(metrics: dict[str, Any] | None, source: str) -> dict[str, Any] | None:
    if metrics is None:
        return None
    return {**metrics, "by_source": _mine(metrics.get("by_source"), source)}


# -- the sampler -----------------------------------------------------------------------------


class Sampler:
    """Collects every ``every`` seconds in its own thread; keeps the latest sample and the
    rates and lag of the last :data:`HISTORY_SECONDS`."""

    def __init__(self, collect_once: Callable[[], dict[str, Any]], every: float = 5.0) -> None:
        self._collect = collect_once
        self.every = every
        self._lock = threading.Lock()
        self.latest: dict[str, Any] = {"schema": pump.JSON_SCHEMA, "time": 0.0, "configs": []}
        #: (time, {label: {"files": per s, "bytes": per s, "notices": per s, "lag": s}})
        self.history: deque[tuple[float, dict[str, dict[str, float | None]]]] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """Collect once now (a failure is logged; the previous sample stays)."""
        try:
            doc = self._collect()
        except Exception:
            log.exception("collecting the pump's status failed")
            return
        with self._lock:
            previous = self.latest
            self.latest = doc
            point = _rates(previous, doc)
            if point is not None:
                self.history.append((doc["time"], point))
            while self.history and self.history[0][0] < doc["time"] - HISTORY_SECONDS:
                self.history.popleft()

    def snapshot(self) -> tuple[dict[str, Any], list[tuple[float, dict[str, Any]]]]:
        with self._lock:
            return self.latest, list(self.history)

    def start(self) -> None:
        self.sample()

        def run() -> None:
            while not self._stop.wait(self.every):
                self.sample()

        self._thread = threading.Thread(target=run, name="sr-web-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


def _label(record: dict[str, Any]) -> str:
    return f"{record['component']}/{record['config']}"


def _rates(
    before: dict[str, Any], after: dict[str, Any]
) -> dict[str, dict[str, float | None]] | None:
    """Per config: counters' increase per second between two samples (a restarted
    instance's counters start again at 0: never a negative rate), and the lag."""
    dt = after["time"] - before["time"]
    if not before["configs"] or dt <= 0:
        return None
    old = {_label(r): r.get("totals", {}) for r in before["configs"]}
    point: dict[str, dict[str, float | None]] = {}
    for record in after["configs"]:
        now, was = record.get("totals", {}), old.get(_label(record), {})
        rates: dict[str, float | None] = {
            key: max(0, int(now.get(key) or 0) - int(was.get(key) or 0)) / dt
            for key in ("files", "bytes", "notices_in")
        }
        rates["lag"] = now.get("lag_max") if now.get("lag_max") is not None else now.get("lag_last")
        point[_label(record)] = rates
    return point


# -- the police audit ------------------------------------------------------------------------


def police_audit(timeout: float = 120.0) -> dict[str, Any]:
    """One ``sr_police --json audit`` of this user's pump (run as its own program: the CLI
    layer does not import the administration tools), as its JSON document (``status``,
    ``counts``, ``findings``...), or ``{"status": "error", "error": ...}`` when it could not
    tell (no pump roles, no admin credentials, no answer in ``timeout`` seconds)."""
    argv = [sys.executable, "-m", "sarra.police.cli", "--json", "audit"]
    started = time.time()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"time": started, "status": "error", "error": f"sr_police audit: {exc}"}
    try:
        doc = json.loads(done.stdout)
        if not isinstance(doc, dict):
            raise ValueError(doc)
    except ValueError:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"time": started, "status": "error", "error": f"sr_police audit: {last}"}
    doc.setdefault("time", started)
    return doc


class Auditor:
    """Runs the police audit every ``every`` seconds in its own thread (it may take a while:
    the broker's management API, a queue sample); keeps the latest report."""

    def __init__(self, audit_once: Callable[[], dict[str, Any]], every: float) -> None:
        self._audit = audit_once
        self.every = every
        self.latest: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def audit(self) -> None:
        try:
            doc = self._audit()
        except Exception as exc:
            log.exception("the police audit failed")
            doc = {"time": time.time(), "status": "error", "error": str(exc)}
        self.latest = doc  # one reference swap: readers see the old report or the new one

    def start(self) -> None:
        def run() -> None:
            while not self._stop.is_set():
                self.audit()
                self._stop.wait(self.every)

        self._thread = threading.Thread(target=run, name="sr-web-audit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


# -- /metrics --------------------------------------------------------------------------------


class PumpCollector(Collector):
    """The latest sample as Prometheus metric families (one series per instance)."""

    def __init__(
        self, sample: Callable[[], dict[str, Any]], auditor: Auditor | None = None
    ) -> None:
        self.sample = sample
        self.auditor = auditor

    def collect(self) -> Iterator[Metric]:
        doc = self.sample()
        yield from self._audit()
        inst_labels = ["component", "config", "instance"]
        cfg_labels = ["component", "config"]

        def counter(name: str, text: str, labels: list[str] = inst_labels) -> CounterMetricFamily:
            return CounterMetricFamily(name, text, labels=labels)

        def gauge(name: str, text: str, labels: list[str] = inst_labels) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=labels)

        up = gauge("sarra_instance_up", "1 when the instance's process is running")
        connected = gauge("sarra_instance_connected", "1 when connected to its broker")
        notices_in = counter("sarra_notices_received", "notices taken in")
        notices_out = counter("sarra_notices_published", "notices published downstream")
        files = counter("sarra_files", "files placed (whole or completed from blocks)")
        blocks = counter("sarra_blocks", "blocks of files placed")
        nbytes = counter("sarra_bytes", "bytes of files and blocks placed")
        rejects = counter("sarra_rejects", "notices rejected by the masks")
        outcomes = counter(
            "sarra_outcomes", "outcomes by report code and source", [*inst_labels, "code", "source"]
        )
        retry = gauge("sarra_retry_queue_depth", "notices waiting in the disk retry queue")
        retry_age = gauge("sarra_retry_queue_oldest_seconds", "age of the oldest retry entry")
        lag = gauge("sarra_lag_seconds", "now minus the pubTime of the last notice")
        lag_max = gauge("sarra_lag_max_seconds", "largest lag of the last metrics window")
        activity = gauge("sarra_last_activity_timestamp_seconds", "time of the last notice")
        backlog = gauge("sarra_queue_backlog", "messages ready in the config's queue", cfg_labels)
        consumers = gauge("sarra_queue_consumers", "consumers of the config's queue", cfg_labels)
        expected = gauge("sarra_instances_expected", "instances the config asks for", cfg_labels)
        reassembly = gauge("sarra_reassembly_files", "files being assembled", cfg_labels)
        for record in doc["configs"]:
            c = [record["component"], record["config"]]
            expected.add_metric(c, record["instances"]["expected"])
            queue = record.get("queue") or {}
            if queue.get("backlog") is not None:
                backlog.add_metric(c, queue["backlog"])
            if queue.get("consumers") is not None:
                consumers.add_metric(c, queue["consumers"])
            reassembly.add_metric(c, len(record.get("reassembly") or ()))
            for each in record["instances"]["each"]:
                i = [*c, f"{each['number']:03d}"]
                up.add_metric(i, 1 if each["state"] == "running" else 0)
                m = each.get("metrics")
                if m is None:
                    continue
                for source, counts in (m.get("by_source") or {}).items():
                    for code, n in counts.items():
                        outcomes.add_metric([*i, code, source], n)
                if "notices" not in m:  # a shared flow, as a source sees it: its outcomes only
                    continue
                connected.add_metric(i, 1 if m.get("connection") == "connected" else 0)
                notices_in.add_metric(i, m["notices"]["in"])
                notices_out.add_metric(i, m["notices"]["out"])
                files.add_metric(i, m["files"])
                blocks.add_metric(i, m["blocks"])
                nbytes.add_metric(i, m["bytes"])
                rejects.add_metric(i, m["rejects"])
                r = m.get("retry") or {}
                retry.add_metric(i, r.get("depth") or 0)
                if r.get("oldest_age") is not None:
                    retry_age.add_metric(i, r["oldest_age"])
                lags = m.get("lag") or {}
                if lags.get("last") is not None:
                    lag.add_metric(i, lags["last"])
                if lags.get("max") is not None:
                    lag_max.add_metric(i, lags["max"])
                if m.get("last_activity") is not None:
                    activity.add_metric(i, m["last_activity"])
        yield from (up, connected, notices_in, notices_out, files, blocks, nbytes, rejects)
        yield from (outcomes, retry, retry_age, lag, lag_max, activity)
        yield from (backlog, consumers, expected, reassembly)

    def _audit(self) -> Iterator[Metric]:
        report = None if self.auditor is None else self.auditor.latest
        if report is None:
            return
        status = GaugeMetricFamily(
            "sarra_police_status", "the police audit: 0 ok, 1 warnings, 2 errors, 3 not run"
        )
        failed = bool(report.get("error"))  # the audit could not tell
        status.add_metric([], 3 if failed else AUDIT_STATUS.get(str(report.get("status")), 3))
        yield status
        found = GaugeMetricFamily(
            "sarra_police_findings", "police audit findings", labels=["check", "severity"]
        )
        counts: dict[tuple[str, str], int] = {}
        for f in report.get("findings") or ():
            key = (str(f.get("check")), str(f.get("severity")))
            counts[key] = counts.get(key, 0) + 1
        for key, n in sorted(counts.items()):
            found.add_metric(list(key), n)
        yield found


# -- the server ------------------------------------------------------------------------------


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class WebServer:
    """The HTTP server and its sampler. ``port`` 0 picks a free one (see :attr:`address`)."""

    def __init__(
        self,
        rt: Runtime,
        host: str,
        port: int,
        credentials: Credentials | None,
        every: float = 5.0,
        collect_once: Callable[[], dict[str, Any]] | None = None,
        audit_every: float = 0.0,
        audit_once: Callable[[], dict[str, Any]] = police_audit,
    ) -> None:
        #: one broker connection per broker and user for the queues' counts, kept between
        #: samples (only the sampler thread uses it)
        self.sessions = SessionPool()

        def collect_pooled() -> dict[str, Any]:
            with reusing_sessions(self.sessions):
                return collect(rt)

        self.sampler = Sampler(collect_once or collect_pooled, every)
        self.auditor = Auditor(audit_once, audit_every) if audit_every > 0 else None
        self.credentials = credentials
        self.every = every
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PumpCollector(lambda: self.sampler.snapshot()[0], self.auditor))
        handler = _handler_class(self)
        server_class = _V6Server if ":" in host else ThreadingHTTPServer
        self.httpd = server_class((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self.sampler.start()
        if self.auditor is not None:
            self.auditor.start()
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="sr-web", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.sampler.stop()
        self.sessions.close()
        if self.auditor is not None:
            self.auditor.stop()
        if self._thread is not None:
            self._thread.join(30)

    def audit_report(self) -> dict[str, Any]:
        """The latest police audit, or why there is none."""
        if self.auditor is None:
            return {"status": "off", "error": "the police audit is off (--audit-every 0)"}
        latest = self.auditor.latest
        return latest if latest is not None else {"status": "pending", "error": "not run yet"}

    def respond(self, path: str, viewer: Viewer = None) -> tuple[int, str, bytes]:
        """(status, content type, body) of a GET of ``path`` by ``viewer`` (None: the
        operator; a source's name: what :func:`for_source` leaves), redacted."""
        route = path.split("?", 1)[0]
        doc, history = self.sampler.snapshot()
        if viewer is not None:
            doc, history = for_source(doc, history, viewer)
        if route == "/metrics":
            registry = self.registry
            if viewer is not None:
                registry = CollectorRegistry(auto_describe=False)
                registry.register(PumpCollector(lambda: doc))
            body = generate_latest(registry).decode("utf-8")
            return 200, CONTENT_TYPE_LATEST, redact(body).encode()
        audit = self.audit_report()
        if viewer is not None:
            audit = {"status": "hidden", "error": "shown to the pump's operator only"}
        doc = {**doc, "audit": audit}
        if route == "/status.json":
            text = json.dumps({**doc, "history": history}, indent=2)
            return 200, "application/json", redact(text).encode()
        if route in ("/", "/index.html"):
            page = render_page(doc, history, refresh=min(60, max(2, int(self.every * 2))))
            return 200, "text/html; charset=utf-8", redact(page).encode()
        return 404, "text/plain; charset=utf-8", b"not found\n"


def _handler_class(server: WebServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "sarra-web"
        sys_version = ""

        def do_GET(self) -> None:
            creds = server.credentials
            viewer = None if creds is None else creds.identify(self.headers.get("Authorization"))
            if viewer == REFUSED:
                self.send_response(401)
                if creds is not None and (creds.basic is not None or creds.sources):
                    self.send_header("WWW-Authenticate", 'Basic realm="sarra", charset="UTF-8"')
                else:
                    self.send_header("WWW-Authenticate", 'Bearer realm="sarra"')
                body = b"authentication required\n"
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            try:
                status, ctype, body = server.respond(self.path, viewer)
            except Exception:
                log.exception("serving %s failed", self.path)
                status, ctype, body = 500, "text/plain; charset=utf-8", b"internal error\n"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return Handler


def main(argv: list[str], rt: Runtime, out: TextIO, err: TextIO) -> int:
    """``sr web``: serve until SIGTERM or SIGINT; the exit status.

    Raises:
        ConfigError: a bad ``--listen``, or credentials needed and not usable.
    """
    parser = argparse.ArgumentParser(prog="sr web", add_help=False)
    parser.add_argument("--listen", default=DEFAULT_LISTEN)
    parser.add_argument("--auth", default=None)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("--audit-every", type=float, default=AUDIT_EVERY)
    parser.add_argument("-h", "--help", action="store_true")
    args, rest = parser.parse_known_args(argv)
    if args.help:
        print(HELP, file=out)
        return 0
    if rest:
        raise ConfigError(f"unexpected {rest[0]!r}; {USAGE}")
    if not args.every > 0:
        raise ConfigError("--every must be more than 0 seconds")
    if not args.audit_every >= 0:
        raise ConfigError("--audit-every must be 0 (off) or more seconds")
    host, port = parse_listen(args.listen)
    auth = Path(args.auth) if args.auth else rt.config_dir() / "web-auth"
    credentials = None
    if args.auth or needs_credentials(host):
        try:
            credentials = load_credentials(auth)
        except ConfigError as exc:
            raise ConfigError(
                f"listening on {host} needs credentials, checked on every path: {exc}"
            ) from exc
    try:
        server = WebServer(rt, host, port, credentials, args.every, audit_every=args.audit_every)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.listen}: {exc.strerror or exc}") from exc
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # each sample loads every configuration again: say each of their warnings once
    handler = setup_console_logging(context="web", loglevel="info")
    handler.addFilter(_Once())
    server.start()
    where = server.address
    shown = f"[{where[0]}]" if ":" in where[0] else where[0]
    auth_note = "credentials required" if credentials else "no credentials (loopback only)"
    print(f"sr web: serving http://{shown}:{where[1]}/ ({auth_note})", file=out, flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
        remove_handler(handler)
    return 0


class _Once(logging.Filter):
    """Lets each distinct message through once (a bounded memory of them)."""

    def __init__(self, keep: int = 1000) -> None:
        super().__init__()
        self.seen: set[str] = set()
        self.keep = keep

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text in self.seen:
            return False
        if len(self.seen) < self.keep:
            self.seen.add(text)
        return True
