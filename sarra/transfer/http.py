"""HTTP(S) transport on one persistent ``http.client`` connection.

A transport is bound to one origin and keeps one keep-alive connection to it. A request on a
reused connection that the server has meanwhile closed is sent again once on a new connection
(GET and HEAD are idempotent); any other failure is raised.

Ranged reads are strict: when a range is asked for, only a ``206`` whose ``Content-Range``
names exactly that range is accepted. A ``200`` means the server ignored ``Range`` and would
send the whole object, which we refuse (IntegrityError) rather than slice: a part must be the
bytes the notice announced, fetched as such.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import re
import socket
import ssl
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from sarra.errors import (
    AuthenticationFailed,
    IntegrityError,
    NotFound,
    PolicyRefused,
    RemoteRefused,
    SarraError,
    TransferError,
    TransportUnavailable,
)
from sarra.transfer.base import (
    CHUNK_SIZE,
    Features,
    Login,
    RemoteEntry,
    RemoteStat,
    Transport,
    bound_origin,
    check_range,
    confined,
)
from sarra.transfer.url import Origin, origin_of, request_target

try:  # the C response parser of get_small; without it get_small is plain get
    import httptools
except ImportError:  # pragma: no cover - a dependency, but the Debian package may lack it
    httptools = None  # type: ignore[assignment]

#: longest directory index page read by :meth:`HttpTransport.listdir`
INDEX_PAGE_MAX = 16 * 1024 * 1024

#: Failures that mean a kept-alive connection was closed by the server while idle.
_DROPPED = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)

_RETRYABLE_STATUS = frozenset({408, 429})

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

_USER_AGENT = "sarra/0.1"

#: a request target that http.client would refuse (control characters, spaces): get_small
#: leaves such a URL to get, which raises as before
_UNSAFE_TARGET = re.compile(r"[\x00-\x20\x7f]")

#: longest error page that get_small reads to keep its connection (longer: dropped)
_ERROR_BODY_MAX = 65536

#: bytes asked of the socket per read by get_small
_SMALL_READ = 65536


def _nothing() -> Generator[bytes, None, None]:
    yield from ()


def _nothing_into() -> Generator[memoryview, None, None]:
    yield from ()


def _parse_index(page: str, url: str) -> list[RemoteEntry]:
    # imported here: html.parser costs every subscriber half a MiB, and only listdir needs it
    from sarra.transfer.htmlindex import parse_index

    return parse_index(page, url)


def _one(chunk: bytes) -> Generator[bytes, None, None]:
    if chunk:
        yield chunk


class _Retry(Exception):
    """get_small: the kept-alive connection was closed while idle; send again on a new one."""


@dataclass(slots=True)
class _Body:
    """Progress of one GET body: bytes due (None: unknown) and received so far."""

    expected: int | None
    received: int = 0


class _Counter:
    def __init__(self) -> None:
        self.value = 0


class _CountingHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection that counts its TCP connects (including http.client's auto-opens)."""

    counter: _Counter

    def connect(self) -> None:
        super().connect()
        self.counter.value += 1


class _CountingHTTPSConnection(http.client.HTTPSConnection):
    counter: _Counter

    def connect(self) -> None:
        super().connect()
        self.counter.value += 1


def _tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        # Explicitly asked for (e.g. self-signed test servers): no hostname or chain check.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _status_error(status: int, reason: str, what: str) -> TransferError:
    """Translate an unwanted HTTP status into our tree."""
    message = f"{what}: HTTP {status} {reason}"
    if status in (404, 410):
        return NotFound(message)
    if status == 401:
        return AuthenticationFailed(f"{message} (credentials missing or refused)")
    if status == 403:
        # e.g. private data of which we are not a reader (the pump's authorizer)
        return RemoteRefused(f"{message} (not authorized to read it)")
    if status == 416:
        return IntegrityError(message)
    error = TransferError(message)
    error.retryable = status >= 500 or status in _RETRYABLE_STATUS
    return error


class _SmallResponse:
    """What :meth:`HttpTransport.get_small` keeps of a response, filled by the httptools
    parser's callbacks (none per header: only the status and the body are kept)."""

    __slots__ = (
        "begun",
        "body",
        "complete",
        "headed",
        "keep_alive",
        "parser",
        "reason",
        "size",
    )  # fmt: skip

    def __init__(self) -> None:
        self.reason = b""
        self.body: list[bytes] = []
        self.size = 0
        self.begun = 0
        self.headed = False
        self.complete = False
        self.keep_alive = False
        # (llhttp forgets whether the connection may stay open once the message is over)
        self.parser: Any = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_headers_complete(self) -> None:
        self.headed = True

    def on_body(self, data: bytes) -> None:
        self.size += len(data)
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()


class HttpTransport(Transport):
    """Fetches from one HTTP(S) origin over one persistent connection (read only).

    Args:
        url: any URL of the origin (scheme, host, port); its path is ignored.
        credentials: its ``bearer_token`` (preferred when set) or ``password`` (Basic auth
            with the URL's user, else the credential's) is sent with every request.
        timeout: socket timeout in seconds for connect and each read.
        tls_verify: https only: check the server's certificate chain and host name.
        ca_file: https only: file of trusted CA certificates (default: the system's).

    Attributes:
        connections_made: number of TCP connections opened so far (reuse is observable).
        index_parser: how :meth:`listdir` reads an index page, ``(page, url) -> entries``
            (default :func:`~sarra.transfer.htmlindex.parse_index`; sr_poll puts its
            ``on_html_page`` plugins here).
    """

    features = Features(ranges=True, get_into=True, listdir=True)

    def __init__(
        self,
        url: str,
        *,
        credentials: Login | None = None,
        timeout: float = 30,
        tls_verify: bool = True,
        ca_file: str | None = None,
    ) -> None:
        self.origin: Origin = bound_origin(url, ("http", "https"), type(self).__name__)
        self._timeout = timeout
        self._tls = _tls_context(tls_verify, ca_file) if self.origin.scheme == "https" else None
        self._auth = self._authorization(credentials)
        self._counter = _Counter()
        self._conn: http.client.HTTPConnection | None = None
        # The response whose body is still being read, if any: a new request must not be
        # sent on the connection before it is finished.
        self._pending: http.client.HTTPResponse | None = None
        self._closed = False
        self.index_parser: Callable[[str, str], list[RemoteEntry]] = _parse_index

    @property
    def connections_made(self) -> int:
        return self._counter.value

    def _authorization(self, credentials: Login | None) -> str | None:
        if credentials is None:
            return None
        if credentials.bearer_token:
            return f"Bearer {credentials.bearer_token}"
        password = credentials.password
        if password is None:
            return None
        user = self.origin.user or credentials.user or ""
        raw = f"{user}:{password}".encode()
        return f"Basic {base64.b64encode(raw).decode('ascii')}"

    # -- connection ---------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        if self._closed:
            raise TransportUnavailable(f"{self.origin}: transport is closed")
        if self._pending is not None:
            if not self._pending.isclosed():
                # The previous body was abandoned half-read: the connection is unusable.
                self._drop()
            self._pending = None
        if self._conn is None:
            conn: http.client.HTTPConnection
            port = self.origin.port
            if self._tls is not None:
                conn = _CountingHTTPSConnection(
                    self.origin.host, port, timeout=self._timeout, context=self._tls
                )
            else:
                conn = _CountingHTTPConnection(self.origin.host, port, timeout=self._timeout)
            conn.counter = self._counter
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._pending = None

    def _checked_target(self, method: str, url: str) -> str:
        """The request target of ``url``, once checked to be on this origin and confined."""
        url_origin = origin_of(url)
        if (url_origin.scheme, url_origin.host, url_origin.port) != (
            self.origin.scheme,
            self.origin.host,
            self.origin.port,
        ):
            raise PolicyRefused(f"{url!r} is not on this transport's origin {self.origin}")
        confined(unquote(urlsplit(url).path), f"{method} {url}")
        return request_target(url)

    def _request(self, method: str, url: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        """Send one request, reconnecting once if an idle kept-alive connection was dropped."""
        target = self._checked_target(method, url)
        headers = {"User-Agent": _USER_AGENT, **headers}
        if self._auth is not None:
            headers["Authorization"] = self._auth
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                conn.request(method, target, headers=headers)
                response = conn.getresponse()
            except _DROPPED as err:
                self._drop()
                if reused and attempt == 1:
                    continue
                raise TransportUnavailable(f"{method} {url}: connection lost: {err}") from err
            except ssl.SSLCertVerificationError as err:
                self._drop()
                # A trust problem: retrying cannot help until the configuration changes.
                failure = TransferError(f"{method} {url}: TLS verification failed: {err}")
                failure.retryable = False
                raise failure from err
            except (OSError, http.client.HTTPException) as err:
                self._drop()
                raise TransportUnavailable(f"{method} {url}: {err}") from err
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    # -- operations ---------------------------------------------------------------------

    def get(
        self, url: str, offset: int = 0, length: int | None = None
    ) -> Generator[bytes, None, None]:
        """Fetch ``url`` from ``offset``; exactly ``length`` bytes when given.

        The request is sent and its status checked before this returns, so NotFound and
        status errors are raised here; the body errors (truncation) while iterating.

        Raises:
            NotFound: 404 or 410.
            IntegrityError: Range ignored (200 to a ranged request), a Content-Range that is
                not the one asked for, 416, or a body of the wrong length.
            TransferError: any other status (retryable for 5xx, 408 and 429).
            TransportUnavailable: connection failures and timeouts.
        """
        opened = self._open_get(url, offset, length)
        if opened is None:
            return _nothing()
        return self._body(*opened, url)

    def get_small(self, url: str, limit: int) -> Generator[bytes, None, None]:
        """Like ``get(url)`` for a whole object of at most ``limit`` bytes, on a leaner
        path: the request is written to the kept-alive socket in one piece and the response
        read by the httptools C parser (http.client parses each header line in Python
        through the email package, which costs a small file more than its bytes). The whole
        body is read before this returns, then yielded as one chunk.

        Same checks and errors as :meth:`get` (status, Content-Length against the body,
        TLS, credentials, timeouts, one new connection when a kept-alive one was closed
        while idle), plus: a body longer than ``limit``, or one ended only by the
        connection's close (no Content-Length, not chunked), is refused with IntegrityError
        and the connection dropped. Without httptools, or for a target http.client would
        refuse, this is :meth:`get`.
        """
        if httptools is None:
            return self.get(url)
        target = self._checked_target("GET", url)
        if _UNSAFE_TARGET.search(target):
            return self.get(url)
        return self._small(url, target, limit)

    def _small_request(self, target: str) -> bytes:
        host = f"[{self.origin.host}]" if ":" in self.origin.host else self.origin.host
        default = 443 if self.origin.scheme == "https" else 80
        if self.origin.port is not None and self.origin.port != default:
            host = f"{host}:{self.origin.port}"
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {host}",
            "Accept-Encoding: identity",
            f"User-Agent: {_USER_AGENT}",
        ]
        if self._auth is not None:
            lines.append(f"Authorization: {self._auth}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _small(self, url: str, target: str, limit: int) -> Generator[bytes, None, None]:
        request = self._small_request(target)
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                if not reused:
                    conn.connect()
                sock = conn.sock
                sock.sendall(request)
                got = self._small_response(sock, url, limit, reused and attempt == 1)
            except _Retry:
                self._drop()
                continue
            except SarraError:
                raise  # the connection was dropped, or kept after a drained error page
            except TimeoutError as err:
                self._drop()
                raise TransportUnavailable(f"GET {url}: timed out") from err
            except _DROPPED as err:
                self._drop()
                if reused and attempt == 1:
                    continue
                raise TransportUnavailable(f"GET {url}: connection lost: {err}") from err
            except ssl.SSLCertVerificationError as err:
                self._drop()
                failure = TransferError(f"GET {url}: TLS verification failed: {err}")
                failure.retryable = False
                raise failure from err
            except (OSError, httptools.HttpParserError) as err:
                self._drop()
                raise TransportUnavailable(f"GET {url}: {err}") from err
            return _one(got)
        raise AssertionError("unreachable")  # pragma: no cover

    def _small_response(self, sock: socket.socket, url: str, limit: int, retry: bool) -> bytes:
        """Read one response from ``sock`` and check it; the connection is kept only after
        a complete, wanted response that lets it stay open."""
        response = _SmallResponse()
        parser = response.parser
        try:
            most, wanted = limit, True
            while not response.complete:
                data = sock.recv(_SMALL_READ)
                if not data:
                    if retry and not response.begun:
                        raise _Retry()  # closed while idle: once more on a new connection
                    if response.headed and wanted:
                        self._drop()
                        raise IntegrityError(
                            f"GET {url}: truncated body ({response.size} bytes came)"
                        )
                    break
                parser.feed_data(data)
                if response.begun > 1:
                    self._drop()
                    raise IntegrityError(f"GET {url}: bytes after the response")
                if wanted and response.headed and parser.get_status_code() != 200:
                    # an error page: drained when short, to keep the connection
                    most, wanted = _ERROR_BODY_MAX, False
                if response.size > most:
                    if wanted:
                        self._drop()
                        raise IntegrityError(
                            f"GET {url}: body longer than the {limit} bytes expected"
                        )
                    break
            if not response.headed:
                self._drop()
                raise TransportUnavailable(f"GET {url}: connection closed before the response")
            if not response.keep_alive:
                self._drop()
            status = parser.get_status_code()
            if status != 200:
                raise _status_error(status, response.reason.decode("latin-1"), f"GET {url}")
            return b"".join(response.body)
        finally:
            response.parser = None  # no cycle left for the garbage collector

    def get_into(
        self,
        url: str,
        buffers: Sequence[memoryview],
        offset: int = 0,
        length: int | None = None,
    ) -> Generator[memoryview, None, None]:
        """Like :meth:`get`, but the body is read straight into ``buffers`` (``readinto``, no
        allocation per chunk), used in turn: each yielded view is a prefix of the next
        buffer, filled completely except for the last. A view stays valid until its buffer
        comes round again, ``len(buffers)`` chunks later. Same checks and errors as get.
        """
        if not buffers or any(len(b) == 0 for b in buffers):
            raise ValueError("get_into needs non-empty buffers")
        opened = self._open_get(url, offset, length)
        if opened is None:
            return _nothing_into()
        return self._body_into(*opened, url, buffers)

    def _open_get(
        self, url: str, offset: int, length: int | None
    ) -> tuple[http.client.HTTPResponse, _Body] | None:
        """Send the GET and check its status and headers; None when nothing is asked for."""
        check_range(offset, length)
        if length == 0:
            return None
        ranged = offset > 0 or length is not None
        headers: dict[str, str] = {}
        if ranged:
            last = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{last}"
        response = self._request("GET", url, headers)
        try:
            expected = self._check_get(response, url, offset, length, ranged)
        except BaseException:
            self._finish_badly(response)
            raise
        self._pending = response
        return response, _Body(expected)

    @contextlib.contextmanager
    def _reading(self, response: http.client.HTTPResponse, url: str, body: _Body) -> Iterator[None]:
        """Around reading a body: translate errors, check the length at the end, and keep
        the connection only after a complete body (unless a later request replaced it)."""
        complete = False
        try:
            yield
            if body.expected is not None and body.received != body.expected:
                raise IntegrityError(
                    f"GET {url}: truncated body, {body.received} of {body.expected} bytes"
                )
            complete = True
        except http.client.IncompleteRead as err:
            got = body.received + len(err.partial)
            raise IntegrityError(
                f"GET {url}: truncated body, {got} of {body.expected} bytes"
            ) from err
        except TimeoutError as err:
            raise TransportUnavailable(f"GET {url}: timed out reading the body") from err
        except (OSError, http.client.HTTPException) as err:
            raise TransportUnavailable(f"GET {url}: connection lost in the body: {err}") from err
        finally:
            if self._pending is response:
                self._pending = None
                if not complete or response.will_close:
                    self._drop()

    def _body_into(
        self,
        response: http.client.HTTPResponse,
        body: _Body,
        url: str,
        buffers: Sequence[memoryview],
    ) -> Generator[memoryview, None, None]:
        turn = 0
        with self._reading(response, url, body):
            while True:
                buf = buffers[turn % len(buffers)]
                turn += 1
                filled = 0
                while filled < len(buf):
                    n = response.readinto(buf[filled:])
                    if not n:
                        break
                    filled += n
                if filled:
                    body.received += filled
                    yield buf[:filled]
                if filled < len(buf):
                    break

    def _check_get(
        self,
        response: http.client.HTTPResponse,
        url: str,
        offset: int,
        length: int | None,
        ranged: bool,
    ) -> int | None:
        """Check the status and headers of a GET; return the number of body bytes due."""
        status = response.status
        if ranged and status == 200:
            raise IntegrityError(f"GET {url}: server ignored Range (answered 200)")
        if status not in (200, 206) or (status == 206 and not ranged):
            raise _status_error(status, response.reason, f"GET {url}")
        declared = response.getheader("Content-Length")
        declared_length = int(declared) if declared and declared.isdigit() else None
        if not ranged:
            return declared_length
        content_range = response.getheader("Content-Range", "")
        match = _CONTENT_RANGE.fullmatch(content_range.strip())
        if match is None:
            raise IntegrityError(f"GET {url}: unusable Content-Range {content_range!r}")
        first, last = int(match[1]), int(match[2])
        total = None if match[3] == "*" else int(match[3])
        want_last = offset + length - 1 if length is not None else None
        if want_last is None and total is not None:
            want_last = total - 1
        if first != offset or (want_last is not None and last != want_last):
            raise IntegrityError(
                f"GET {url}: asked bytes {offset}-{want_last if want_last is not None else ''}"
                f", got Content-Range {content_range!r}"
            )
        expected = last - first + 1
        if declared_length is not None and declared_length != expected:
            raise IntegrityError(
                f"GET {url}: Content-Length {declared_length} disagrees with {content_range!r}"
            )
        return expected

    def _finish_badly(self, response: http.client.HTTPResponse) -> None:
        """Drain a small error body so the connection stays usable, or drop it."""
        try:
            declared = response.getheader("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) <= 65536:
                response.read()
                if not response.will_close:
                    return
        except (OSError, http.client.HTTPException):
            pass
        self._drop()

    def _body(
        self, response: http.client.HTTPResponse, body: _Body, url: str
    ) -> Generator[bytes, None, None]:
        with self._reading(response, url, body):
            while True:
                # read(n) returns a fresh bytes object filled straight from the socket (its
                # buffered reader loops over short reads until n bytes or the end of the
                # body): every chunk but the last is CHUNK_SIZE long, never a copy.
                chunk = response.read(CHUNK_SIZE)
                if chunk:
                    body.received += len(chunk)
                    yield chunk
                if len(chunk) < CHUNK_SIZE:
                    break

    def stat(self, url: str) -> RemoteStat:
        """Size and mtime of ``url`` from a HEAD request (Content-Length, Last-Modified).

        Raises NotFound, TransferError on other statuses (retryable as for get), IntegrityError
        when the server sends no Content-Length, TransportUnavailable.
        """
        response = self._request("HEAD", url, {})
        try:
            response.read()
        except (OSError, http.client.HTTPException) as err:
            self._drop()
            raise TransportUnavailable(f"HEAD {url}: {err}") from err
        if response.will_close:
            self._drop()
        if response.status != 200:
            raise _status_error(response.status, response.reason, f"HEAD {url}")
        declared = response.getheader("Content-Length")
        if declared is None or not declared.isdigit():
            raise IntegrityError(f"HEAD {url}: no usable Content-Length")
        mtime: float | None = None
        modified = response.getheader("Last-Modified")
        if modified:
            try:
                mtime = parsedate_to_datetime(modified).timestamp()
            except (TypeError, ValueError):
                mtime = None
        return RemoteStat(size=int(declared), mtime=mtime)

    def listdir(self, url: str) -> list[RemoteEntry]:
        """The entries of the directory index page at ``url`` (a ``/`` is added to its path
        when missing), as :func:`sarra.transfer.htmlindex.parse_index` reads it (nginx
        autoindex, Apache index pages). A page longer than :data:`INDEX_PAGE_MAX` is refused
        (IntegrityError)."""
        parts = urlsplit(url)
        if not parts.path.endswith("/"):
            url = parts._replace(path=parts.path + "/").geturl()
        body = bytearray()
        for chunk in self.get(url):
            body += chunk
            if len(body) > INDEX_PAGE_MAX:
                raise IntegrityError(f"listdir {url}: index page longer than {INDEX_PAGE_MAX}")
        return self.index_parser(body.decode("utf-8", errors="replace"), url)

    def close(self) -> None:
        self._drop()
        self._closed = True

    def abort(self) -> None:
        self._closed = True
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            # shutdown, not close: it wakes a thread blocked reading this socket
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
