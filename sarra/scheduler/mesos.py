"""The Mesos v1 scheduler HTTP API (JSON), as a small synchronous client.

* :func:`detect_masters` finds candidate masters from ``http://h1:5050,h2:5050`` or from
  ``zk://host:port[,host:port]/path`` (the lowest ``json.info_<seq>`` znode is the leader).
* :meth:`MesosClient.subscribe` POSTs SUBSCRIBE (no ``Mesos-Stream-Id``), follows ``307``
  redirects (``Location`` is protocol-relative and resolved against the request URL), waits for
  the first event, then hands the stream to a reader thread that parses RecordIO and queues
  events. The reader ends the stream when no event at all arrives for
  ``heartbeat_misses`` x ``heartbeat_interval_seconds`` (half-open connection).
* Every other call goes on its own connection with ``Mesos-Stream-Id`` and the top-level
  ``framework_id``; ``202``/``200`` are success, ``503`` means no leader yet (retry),
  anything else is a refused call.

One :class:`Subscription` per SUBSCRIBE; no reconnection inside the client: the owner
(the scheduler loop) decides when to subscribe again.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import queue
import re
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sarra.errors import SarraError, TransportUnavailable

log = logging.getLogger(__name__)

API_PATH = "/api/v1/scheduler"
MAX_REDIRECTS = 3
_LEN = re.compile(rb"^(\d{1,20})\n")


class MasterUnavailable(TransportUnavailable):
    """No leading master could be reached (connection refused, 503, redirect loop)."""


class CallRefused(SarraError):
    """The master answered a call with a 4xx/5xx status (not 503)."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        super().__init__(f"master answered {status}: {body.strip()[:300]}")


class SubscriptionRefused(SarraError):
    """SUBSCRIBE was answered with an ERROR event instead of SUBSCRIBED."""


class AuthenticationFailed(CallRefused):
    """The master answered 401: no credentials, or not the ones it knows (not worth retrying)."""


class FrameworkRemoved(SubscriptionRefused):
    """The framework id was torn down or timed out; it can never subscribe again."""


class RecordIO:
    """Incremental RecordIO decoder: ``<decimal length>\\n<bytes>``, records never empty."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            m = _LEN.match(self._buf)
            if m is None:
                if len(self._buf) > 21 and b"\n" not in self._buf[:21]:
                    raise ValueError("RecordIO: record length header is not a number")
                return out
            size = int(m.group(1))
            start = m.end()
            if len(self._buf) < start + size:
                return out
            out.append(self._buf[start : start + size])
            self._buf = self._buf[start + size :]


@dataclass(frozen=True)
class StreamItem:
    """What the reader thread queues: an event, an undecodable record, or the end."""

    kind: str  # "event" | "malformed" | "closed"
    event: dict[str, Any] | None = None
    text: str = ""


def detect_masters(master: str, timeout: float = 10.0, zk_auth: str = "") -> list[str]:
    """Base URLs (``scheme://host:port[/prefix]``) to try, leader first when known.

    ``http[s]://h1:5050,h2:5050/prefix``: every listed master, each with the same path prefix
    (a proxy that serves the API under ``/prefix/api/v1/scheduler``).
    """
    for scheme in ("http://", "https://"):
        if master.startswith(scheme):
            hosts, slash, prefix = master[len(scheme) :].partition("/")
            prefix = ("/" + prefix.strip("/")) if slash and prefix.strip("/") else ""
            return [scheme + h.strip() + prefix for h in hosts.split(",") if h.strip()]
    if master.startswith("zk://"):
        return [_leader_from_zookeeper(master, timeout, zk_auth)]
    raise MasterUnavailable(f"master URL must be zk://, http:// or https://, not {master!r}")


def split_zk_url(url: str) -> tuple[str, str]:
    """``zk://h1:2181,h2:2181/mesos`` -> ``("h1:2181,h2:2181", "/mesos")``."""
    rest = url[len("zk://") :]
    hosts, _, path = rest.partition("/")
    return hosts, "/" + path.rstrip("/")


def _leader_from_zookeeper(url: str, timeout: float, zk_auth: str = "") -> str:
    """The leading master's base URL; ``zk_auth`` ("user:password") for digest auth."""
    from kazoo.client import KazooClient
    from kazoo.exceptions import KazooException
    from kazoo.handlers.threading import KazooTimeoutError

    hosts, path = split_zk_url(url)
    auth = [("digest", zk_auth)] if zk_auth else None
    zk = KazooClient(hosts=hosts, timeout=timeout, auth_data=auth)
    try:
        zk.start(timeout=timeout)
        children = [c for c in zk.get_children(path) if c.startswith("json.info_")]
        if not children:
            raise MasterUnavailable(f"no master registered under {url}")
        leader = min(children, key=lambda c: c.rsplit("_", 1)[1])
        raw, _ = zk.get(f"{path}/{leader}")
        info = json.loads(raw)
        addr = info.get("address") or {}
        host = addr.get("ip") or addr.get("hostname") or info.get("hostname")
        port = addr.get("port") or info.get("port")
        if not host or not port:
            raise MasterUnavailable(f"leader znode {leader} has no address")
        return f"http://{host}:{int(port)}"
    except (KazooException, KazooTimeoutError, ValueError) as e:
        raise MasterUnavailable(f"cannot read the leading master from {url}: {e}") from e
    finally:
        try:
            zk.stop()
            zk.close()
        except KazooException:
            log.debug("closing the detector's ZooKeeper session failed", exc_info=True)


def _resolve(base: str, location: str) -> str:
    """Resolve a (possibly protocol-relative) Location against ``base``.

    Keeps the scheme (a redirect never downgrades https), takes the new host and port, and
    the path prefix in front of the API path of the location.
    """
    target = urllib.parse.urljoin(base + API_PATH, location)
    p = urllib.parse.urlsplit(target)
    scheme = urllib.parse.urlsplit(base).scheme or "http"
    path = p.path.rstrip("/")
    prefix = path[: -len(API_PATH)] if path.endswith(API_PATH) else ""
    return f"{scheme}://{p.netloc}{prefix}"


def _connection(
    base: str, timeout: float, tls: ssl.SSLContext | None
) -> tuple[http.client.HTTPConnection, str]:
    """A connection to ``base`` and the API path to POST to there."""
    p = urllib.parse.urlsplit(base)
    host = p.hostname or "127.0.0.1"
    path = p.path.rstrip("/") + API_PATH
    if p.scheme == "https":
        context = tls if tls is not None else ssl.create_default_context()
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, p.port or 5050, timeout=timeout, context=context
        )
        return conn, path
    return http.client.HTTPConnection(host, p.port or 5050, timeout=timeout), path


def close_stranded_tls_socket(exc: BaseException) -> bool:
    """Close the TLS socket a failed wrap left open in ``exc``'s traceback; True if one was.

    CPython's ``ssl.SSLSocket._create`` (python/cpython#113280; 3.11.7 on our machines)
    re-raises an error of its "is the socket connected?" probe (``ECONNRESET`` from a peer
    that reset the connection between ``connect`` and the wrap, e.g. a master closing its
    listening socket) without closing the TLS socket it has already moved the descriptor
    into. Only the traceback references
    that socket: the descriptor stays open for as long as the exception (or a log record
    holding it) lives, then goes with a ResourceWarning. Only the ``self`` of a ``_create``
    frame is closed: no other socket of the failed call (a server's listening socket in
    ``accept``'s frame) is touched.
    """
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "_create" and frame.f_code.co_filename == ssl.__file__:
            stranded = frame.f_locals.get("self")
            if isinstance(stranded, ssl.SSLSocket) and stranded.fileno() != -1:
                with contextlib.suppress(OSError):
                    stranded.close()
                return True
        tb = tb.tb_next
    return False


def _finish(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> str:
    """The rest of a (short) response's body; the connection and response closed, always.

    A read that fails (time-out, reset) must not leave the socket to the garbage collector.
    """
    try:
        return resp.read().decode(errors="replace")
    finally:
        with contextlib.suppress(OSError):
            resp.close()
        conn.close()


def _open(
    base: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    tls: ssl.SSLContext | None = None,
) -> tuple[str, http.client.HTTPConnection, http.client.HTTPResponse, socket.socket | None]:
    """POST to ``base``'s scheduler endpoint, following 307s; the open response."""
    seen: list[str] = []
    for _ in range(MAX_REDIRECTS + 1):
        conn, path = _connection(base, timeout, tls)
        try:
            conn.request("POST", path, body=body, headers=headers)
            sock = conn.sock
            resp = conn.getresponse()
        except ssl.SSLError as e:
            conn.close()
            close_stranded_tls_socket(e)
            raise MasterUnavailable(f"TLS with master {base} failed: {e.reason or e}") from e
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            close_stranded_tls_socket(e)
            raise MasterUnavailable(f"cannot reach master {base}: {e}") from e
        if resp.status == 307:
            location = resp.getheader("Location") or ""
            _finish(conn, resp)
            seen.append(base)
            base = _resolve(base, location)
            log.info("master redirected to the leader at %s", base)
            if base in seen:
                raise MasterUnavailable(f"redirect loop between masters {seen}")
            continue
        if resp.status == 503:
            text = _finish(conn, resp)
            raise MasterUnavailable(f"master {base} has no leader yet (503 {text.strip()})")
        return base, conn, resp, sock
    raise MasterUnavailable(f"more than {MAX_REDIRECTS} redirects from {seen}")


class Subscription:
    """One open SUBSCRIBE stream; events arrive on :attr:`events`."""

    def __init__(
        self,
        base: str,
        conn: http.client.HTTPConnection,
        resp: http.client.HTTPResponse,
        sock: socket.socket | None,
        stream_id: str,
    ) -> None:
        self.base = base
        self.stream_id = stream_id
        self.events: queue.Queue[StreamItem] = queue.Queue()
        self._conn = conn
        self._resp = resp
        self._sock = sock
        self._decoder = RecordIO()
        self._pending: list[bytes] = []
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def first_event(self) -> dict[str, Any]:
        """Read synchronously until the first record (SUBSCRIBED or ERROR)."""
        while not self._pending:
            data = self._resp.read1(65536)
            if not data:
                raise MasterUnavailable("subscription stream closed before the first event")
            self._pending.extend(self._decoder.feed(data))
        record = self._pending.pop(0)
        try:
            doc: dict[str, Any] = json.loads(record)
        except ValueError as e:
            raise MasterUnavailable(f"first event is not JSON: {record[:200]!r}") from e
        return doc

    def start(self, idle_timeout: float) -> None:
        """Hand the stream to the reader thread; no event for ``idle_timeout`` s ends it."""
        if self._sock is not None:
            self._sock.settimeout(idle_timeout)
        for record in self._pending:
            self._queue_record(record)
        self._pending.clear()
        self._thread = threading.Thread(target=self._read, name="mesos-stream", daemon=True)
        self._thread.start()

    def _queue_record(self, record: bytes) -> None:
        try:
            doc = json.loads(record)
            if not isinstance(doc, dict):
                raise ValueError("event is not an object")
        except ValueError:
            self.events.put(StreamItem("malformed", text=record[:300].decode(errors="replace")))
            return
        self.events.put(StreamItem("event", doc))

    def _read(self) -> None:
        reason = "stream ended"
        try:
            while not self._closed.is_set():
                data = self._resp.read1(65536)
                if not data:
                    reason = "master closed the stream"
                    break
                for record in self._decoder.feed(data):
                    self._queue_record(record)
        except TimeoutError:
            reason = "no event within the heartbeat timeout (dead stream)"
        except Exception as e:
            reason = f"stream failed: {e!r}"
        if not self._closed.is_set():
            self.events.put(StreamItem("closed", text=reason))
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """End the stream (the master then sees the scheduler disconnected)."""
        self._closed.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()
        # The response's file object holds the socket open after ``conn.close()``: the
        # descriptor goes only with it. The reader thread closes it itself once its read
        # returns (the shutdown above ends that read); no other thread may close it under it.
        if self._thread is None or self._thread is threading.current_thread():
            with contextlib.suppress(OSError):
                self._resp.close()


class MesosClient:
    """Calls for one framework against whichever master leads."""

    def __init__(
        self,
        master: str,
        call_timeout: float = 30.0,
        credentials: tuple[str, str] | None = None,
        ca_file: str = "",
        zk_auth: str = "",
    ) -> None:
        """``credentials``: (principal, secret) sent as HTTP basic authentication.

        ``ca_file``: PEM bundle https masters are verified with (host name included); the
        system's trusted CAs when empty. ``zk_auth``: "user:password" for a zk:// master.
        """
        self.master = master
        self.call_timeout = call_timeout
        self._zk_auth = zk_auth
        self._tls: ssl.SSLContext | None = None
        if master.startswith("https://"):
            try:
                self._tls = ssl.create_default_context(cafile=ca_file or None)
            except (OSError, ssl.SSLError) as e:
                raise MasterUnavailable(f"cannot load master_ca_file {ca_file}: {e}") from e
        self._auth: dict[str, str] = {}
        if credentials is not None:
            raw = f"{credentials[0]}:{credentials[1]}".encode()
            self._auth = {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
        self.base: str | None = None
        self.stream_id: str | None = None
        self.framework_id: str | None = None

    # -- subscription ----------------------------------------------------------------------
    def subscribe(
        self,
        framework_info: dict[str, Any],
        framework_id: str | None,
        suppressed_roles: Sequence[str] = (),
        heartbeat_misses: float = 5.0,
    ) -> tuple[Subscription, dict[str, Any]]:
        """SUBSCRIBE; returns the running subscription and the SUBSCRIBED payload."""
        info = dict(framework_info)
        call: dict[str, Any] = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
        if framework_id:
            info["id"] = {"value": framework_id}
            call["framework_id"] = {"value": framework_id}
        if suppressed_roles:
            call["subscribe"]["suppressed_roles"] = list(suppressed_roles)
        body = json.dumps(call).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json", **self._auth}
        last: Exception | None = None
        candidates = ([self.base] if self.base else []) + detect_masters(
            self.master, zk_auth=self._zk_auth
        )
        for base in dict.fromkeys(candidates):
            try:
                base, conn, resp, sock = _open(base, body, headers, self.call_timeout, self._tls)
            except MasterUnavailable as e:
                last = e
                continue
            if resp.status != 200:
                text = _finish(conn, resp)
                if resp.status == 401:
                    raise AuthenticationFailed(resp.status, text)
                raise CallRefused(resp.status, text)
            stream_id = resp.getheader("Mesos-Stream-Id") or ""
            sub = Subscription(base, conn, resp, sock, stream_id)
            try:
                first = sub.first_event()
            except (OSError, http.client.HTTPException, ValueError) as e:
                sub.close()
                raise MasterUnavailable(f"subscription to {base} failed: {e}") from e
            except BaseException:  # e.g. a first record that is not JSON (MasterUnavailable):
                sub.close()  # the stream is closed here, not left to the garbage collector
                raise
            if first.get("type") == "ERROR":
                sub.close()
                message = str((first.get("error") or {}).get("message", ""))
                if "removed" in message.lower():
                    raise FrameworkRemoved(message)
                raise SubscriptionRefused(message)
            if first.get("type") != "SUBSCRIBED" or not stream_id:
                sub.close()
                raise MasterUnavailable(f"unexpected first event {first.get('type')!r}")
            payload: dict[str, Any] = first.get("subscribed") or {}
            interval = float(payload.get("heartbeat_interval_seconds") or 15.0)
            sub.start(max(interval * heartbeat_misses, 0.5))
            self.base = base
            self.stream_id = stream_id
            self.framework_id = str((payload.get("framework_id") or {}).get("value", ""))
            return sub, payload
        self.base = None
        raise MasterUnavailable(f"no master of {self.master} accepted SUBSCRIBE: {last}")

    # -- calls -----------------------------------------------------------------------------
    def call(self, kind: str, payload: dict[str, Any] | None = None) -> int:
        """POST one call with the stream id; the HTTP status (200/202) or an exception."""
        if self.base is None or self.stream_id is None or not self.framework_id:
            raise MasterUnavailable("not subscribed")
        doc: dict[str, Any] = {"type": kind, "framework_id": {"value": self.framework_id}}
        if payload is not None:
            doc[kind.lower()] = payload
        headers = {
            "Content-Type": "application/json", "Mesos-Stream-Id": self.stream_id, **self._auth
        }  # fmt: skip
        base, conn, resp, _ = _open(
            self.base, json.dumps(doc).encode(), headers, self.call_timeout, self._tls
        )
        text = _finish(conn, resp)
        if base != self.base:
            # A call redirected elsewhere means the leader moved; the stream will follow.
            log.warning("call %s was redirected to %s: leader changed", kind, base)
        if resp.status == 401:
            raise AuthenticationFailed(resp.status, text)
        if resp.status not in (200, 202):
            raise CallRefused(resp.status, text)
        return resp.status

    def accept(
        self,
        offer_ids: Sequence[str],
        task_infos: Sequence[dict[str, Any]],
        refuse: float,
        before: Sequence[dict[str, Any]] = (),
    ) -> int:
        """ACCEPT: the operations ``before`` (RESERVE, CREATE...) in order, then one LAUNCH."""
        return self.call(
            "ACCEPT",
            {
                "offer_ids": [{"value": o} for o in offer_ids],
                "operations": [
                    *before,
                    {"type": "LAUNCH", "launch": {"task_infos": list(task_infos)}},
                ],
                "filters": {"refuse_seconds": refuse},
            },
        )

    def decline(self, offer_ids: Sequence[str], refuse: float) -> int:
        return self.call(
            "DECLINE",
            {"offer_ids": [{"value": o} for o in offer_ids], "filters": {"refuse_seconds": refuse}},
        )

    def suppress(self, roles: Sequence[str]) -> int:
        return self.call("SUPPRESS", {"roles": list(roles)})

    def revive(self, roles: Sequence[str]) -> int:
        return self.call("REVIVE", {"roles": list(roles)})

    def acknowledge(self, agent_id: str, task_id: str, uuid_b64: str) -> int:
        return self.call(
            "ACKNOWLEDGE",
            {"agent_id": {"value": agent_id}, "task_id": {"value": task_id}, "uuid": uuid_b64},
        )

    def kill(self, task_id: str, agent_id: str | None, grace: float | None = None) -> int:
        body: dict[str, Any] = {"task_id": {"value": task_id}}
        if agent_id:
            body["agent_id"] = {"value": agent_id}
        if grace is not None:
            body["kill_policy"] = {"grace_period": {"nanoseconds": int(grace * 1e9)}}
        return self.call("KILL", body)

    def reconcile(self, tasks: Sequence[tuple[str, str | None]]) -> int:
        """Explicit for the given (task id, agent id) pairs; implicit when empty."""
        items = []
        for task_id, agent_id in tasks:
            item: dict[str, Any] = {"task_id": {"value": task_id}}
            if agent_id:
                item["agent_id"] = {"value": agent_id}
            items.append(item)
        return self.call("RECONCILE", {"tasks": items})

    def teardown(self) -> int:
        return self.call("TEARDOWN")
