"""FTP and FTPS transport on one persistent :mod:`ftplib` control connection.

A transport holds one logged-in control connection for its origin and reuses it; each
transfer opens its data connection. When the server has dropped the session, an idempotent
operation (stat, the opening of a get, a whole-file put, mkdirs, listdir) is tried once more on
a new session; rename and delete are not repeated.

* ``ftps://`` (and ``ftp://`` whose credentials line says ``tls``): explicit TLS (``AUTH TLS``)
  on the control connection, then ``PROT P``: the data connections are encrypted too (always:
  ``prot_p`` in credentials.conf changes nothing). The server certificate is checked against
  the system's CAs (or ``ca_file``) unless ``tls_verify`` is false (``tls_rigour lax``).
  Implicit TLS (port 990) is not supported.
* Passive data connections by default; ``active`` in the credentials line makes the server
  connect back to us (``PORT``/``EPRT``).
* Binary (``TYPE I``) always; an ``ascii`` credential is refused when credentials.conf is read.
* Ranges of a get use ``REST``; a server that refuses ``REST`` is read from the start and the
  bytes before the offset dropped. Puts are whole files only (``features.put_ranges`` is
  false): servers refuse a ``REST`` past the end of the file, so parts could not be written in
  any order.
* :meth:`FtpTransport.listdir` lists a directory with ``MLSD`` (name, size, mtime), falling back
  to parsing ``LIST`` (Unix ``ls -l`` lines; their times are read as UTC, at the precision the
  server gives). Names that could escape the listed directory (``..``, ``/``, NUL, CR/LF) are
  left out with a warning.

Paths: as for sftp, an ``ftp://`` URL of this origin (``ftp://h/abs`` is absolute,
``ftp://h/~/rel`` relative to the login directory; see :func:`sarra.transfer.url.server_path`)
or a plain server path, used as it is. A path holding ``..``, NUL, CR or LF is refused before
any I/O (CR/LF would inject FTP commands).

Errors: 530 at login is AuthenticationFailed; 550 is NotFound, or RemoteRefused when it says
permission denied (not retryable); 552 (storage exceeded) is a retryable ``disk_full``
failure; other 5xx replies are not retryable, 4xx replies are; 421, timeouts and lost
connections are TransportUnavailable (retryable).
"""

from __future__ import annotations

import calendar
import contextlib
import ftplib
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sarra.errors import (
    AuthenticationFailed,
    HostilePath,
    IntegrityError,
    LocalError,
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
    listed_name,
)
from sarra.transfer.url import Origin, origin_of, server_path

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_ERRORS = (ftplib.Error, OSError, EOFError)
#: replies meaning "this server does not implement that command"
_NOT_IMPLEMENTED = ("500", "502", "504")


class _FtpTls(ftplib.FTP_TLS):
    """FTP_TLS whose data connections resume the control connection's TLS session (vsftpd and
    others refuse data connections that do not)."""

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if getattr(self, "_prot_p", False):
            session = getattr(self.sock, "session", None)
            conn = self.context.wrap_socket(conn, server_hostname=self.host, session=session)
        return conn, size  # type: ignore[return-value]


def _code(err: BaseException) -> str:
    return str(err)[:3]


def _not_implemented(err: ftplib.Error) -> bool:
    return isinstance(err, ftplib.error_perm) and _code(err) in _NOT_IMPLEMENTED


class FtpTransport(Transport):
    """Reads, writes and lists files on one FTP or FTPS origin over one control connection.

    Args:
        url: any URL of the origin (``ftp[s]://[user@]host[:port]``); the path is ignored.
        credentials: its ``user`` (when the URL names none; default ``anonymous``),
            ``password``, ``passive`` and ``tls`` are used.
        timeout: seconds for connecting and for each reply or data read.
        tls_verify: check the server certificate (ftps).
        ca_file: trusted CA certificates (default: the system's).

    Attributes:
        connections_made: control connections opened so far.
    """

    features = Features(ranges=True, put=True, rename=True, delete=True, mkdirs=True, listdir=True)

    def __init__(
        self,
        url: str,
        *,
        credentials: Login | None = None,
        timeout: float = 30,
        tls_verify: bool = True,
        ca_file: str | None = None,
    ) -> None:
        self.origin: Origin = bound_origin(url, ("ftp", "ftps"), type(self).__name__)
        cred_user = credentials.user if credentials is not None else None
        self._user = self.origin.user or cred_user or "anonymous"
        self._password = credentials.password if credentials is not None else None
        self._passive = credentials.passive if credentials is not None else True
        self._tls = self.origin.scheme == "ftps" or (credentials is not None and credentials.tls)
        self._timeout = timeout
        self._tls_verify = tls_verify
        self._ca_file = ca_file
        self._ftp: ftplib.FTP | None = None
        self._data: socket.socket | None = None
        self._home = "/"
        #: False once the server refused REST (ranges are then read from the start)
        self._rest = True
        self._closed = False
        self.connections_made = 0

    # -- session ------------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self._ca_file)
        if not self._tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> ftplib.FTP:
        where = str(self.origin)
        if any(c in f"{self._user}{self._password or ''}" for c in "\r\n\0"):
            # ftplib would refuse the line; a user from a notice's baseUrl must not reach it
            raise HostilePath(f"{where}: line break or NUL in the user name or password")
        ftp: ftplib.FTP = (
            _FtpTls(context=self._context(), timeout=self._timeout)
            if self._tls
            else ftplib.FTP(timeout=self._timeout)
        )
        ftp.encoding = "utf-8"
        try:
            ftp.connect(self.origin.host, self.origin.port or 21, timeout=self._timeout)
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.auth()
            ftp.login(self._user, self._password or "")
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()
            ftp.set_pasv(self._passive)
            ftp.voidcmd("TYPE I")
            with contextlib.suppress(ftplib.Error):
                ftp.sendcmd("OPTS UTF8 ON")
            self._home = ftp.pwd() or "/"
        except ssl.SSLCertVerificationError as err:
            ftp.close()
            failure = TransferError(f"{where}: server certificate refused: {err.verify_message}")
            failure.retryable = False
            raise failure from err
        except ftplib.error_perm as err:
            ftp.close()
            if _code(err) in ("530", "332"):
                raise AuthenticationFailed(f"{where}: login refused: {err}") from err
            failure = TransferError(f"{where}: session refused: {err}")
            failure.retryable = False
            raise failure from err
        except _ERRORS as err:
            ftp.close()
            raise TransportUnavailable(f"{where}: cannot connect: {err}") from err
        self._ftp = ftp
        self.connections_made += 1
        return ftp

    def _drop(self) -> None:
        ftp, self._ftp = self._ftp, None
        if ftp is not None:
            ftp.close()

    def _session(self) -> tuple[ftplib.FTP, bool]:
        """The open session and whether it existed before this call."""
        if self._closed:
            raise TransportUnavailable(f"{self.origin}: transport is closed")
        if self._ftp is not None:
            return self._ftp, True
        return self._connect(), False

    @staticmethod
    def _translate(err: BaseException, what: str) -> SarraError:
        """Map an ftplib/socket failure to our tree."""
        if isinstance(err, SarraError):
            return err
        if isinstance(err, ftplib.error_perm):
            code = _code(err)
            if code == "550" and "denied" not in str(err).lower():
                return NotFound(f"{what}: {err}")
            if code in ("530", "532"):
                return AuthenticationFailed(f"{what}: {err}")
            if code == "550":  # permission denied
                return RemoteRefused(f"{what}: {err}")
            failure = TransferError(f"{what}: {err}")
            if code == "552":  # storage allocation exceeded: the remote disk is full
                failure.retryable = True
                failure.failure_class = "disk_full"
            return failure
        if isinstance(err, ftplib.error_temp):
            if _code(err) == "421":
                return TransportUnavailable(f"{what}: server closing the session: {err}")
            return TransferError(f"{what}: {err}")
        if isinstance(err, ssl.SSLCertVerificationError):
            failure = TransferError(f"{what}: server certificate refused: {err.verify_message}")
            failure.retryable = False
            return failure
        if isinstance(err, TimeoutError):
            return TransportUnavailable(f"{what}: timed out")
        return TransportUnavailable(f"{what}: connection lost: {err}")

    def _run(self, what: str, operation: Callable[[ftplib.FTP], _T], *, idempotent: bool) -> _T:
        for attempt in (1, 2):
            ftp, reused = self._session()
            try:
                return operation(ftp)
            except _ERRORS as err:
                failure = self._translate(err, what)
                if isinstance(failure, TransportUnavailable) or not isinstance(
                    err, ftplib.error_perm | ftplib.error_temp
                ):
                    self._drop()  # the session's state is unknown: never reuse it
                retry = idempotent and reused and attempt == 1
                if isinstance(failure, TransportUnavailable) and retry:
                    continue
                raise failure from err
        raise AssertionError("unreachable")  # pragma: no cover

    def _path(self, url_or_path: str) -> str:
        if "://" not in url_or_path:
            path = url_or_path
        else:
            other = origin_of(url_or_path)
            if (other.scheme, other.host, other.port) != (
                self.origin.scheme,
                self.origin.host,
                self.origin.port,
            ) or (other.user and other.user != self._user):
                raise PolicyRefused(
                    f"{url_or_path!r} is not on this transport's origin {self.origin}"
                )
            path = server_path(url_or_path)
        if "\r" in path or "\n" in path:
            raise HostilePath(f"{self.origin}: CR or LF in path {path!r}")
        return confined(path, f"{self.origin}")

    def _absolute(self, path: str) -> str:
        if path.startswith("/"):
            return path
        return f"{self._home.rstrip('/')}/{'' if path == '.' else path}".rstrip("/") or "/"

    # -- helpers on a session -------------------------------------------------------------

    @staticmethod
    def _size(ftp: ftplib.FTP, path: str) -> int | None:
        """The size SIZE gives, or None when the server does not implement it."""
        try:
            reply = ftp.sendcmd(f"SIZE {path}")
        except ftplib.error_perm as err:
            if _code(err) in _NOT_IMPLEMENTED:
                return None
            raise
        try:
            return int(reply[3:].strip())
        except ValueError:
            return None

    @staticmethod
    def _mtime(ftp: ftplib.FTP, path: str) -> float | None:
        try:
            reply = ftp.sendcmd(f"MDTM {path}")
        except ftplib.error_perm:
            return None
        return _timestamp(reply[3:].strip())

    def _is_dir(self, ftp: ftplib.FTP, path: str) -> bool:
        try:
            ftp.cwd(self._absolute(path))
        except ftplib.error_perm:
            return False
        ftp.cwd(self._home)
        return True

    @staticmethod
    def _close_data(conn: socket.socket, clean: bool) -> None:
        if clean and isinstance(conn, ssl.SSLSocket):
            with contextlib.suppress(OSError, ValueError):
                conn.unwrap()
        conn.close()

    def _abandon(self, ftp: ftplib.FTP, conn: socket.socket) -> None:
        """End a transfer the reader stopped early: close the data connection, read the
        server's reply (426 or 226) and check with NOOP that nothing else is pending; any
        doubt drops the session. Never raises."""
        self._data = None
        self._close_data(conn, clean=False)
        if self._ftp is not ftp:
            return
        try:
            with contextlib.suppress(ftplib.error_temp, ftplib.error_perm):
                ftp.getresp()
            reply = ftp.sendcmd("NOOP")
            if reply[:3] in ("225", "226"):
                reply = ftp.getresp()
            if not reply.startswith("200"):
                raise ftplib.error_reply(reply)
        except _ERRORS as err:
            log.debug("%s: session dropped after an abandoned transfer: %s", self.origin, err)
            self._drop()

    def _lines(self, ftp: ftplib.FTP, command: str) -> list[bytes]:
        conn = ftp.transfercmd(command)
        self._data = conn
        try:
            with conn.makefile("rb") as reader:
                raw = reader.read()
        except BaseException:
            self._abandon(ftp, conn)
            raise
        self._data = None
        self._close_data(conn, clean=True)
        ftp.voidresp()
        return _split_lines(raw)

    # -- operations ---------------------------------------------------------------------

    def get(self, url: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of ``url`` from ``offset``; exactly ``length`` bytes when given.

        The file is opened (NotFound raised) before this returns; a range past the end of
        the file (by SIZE) raises IntegrityError. A file shorter than announced while
        reading raises IntegrityError too.
        """
        check_range(offset, length)
        path = self._path(url)
        what = f"get {self.origin}{path if path.startswith('/') else '/~/' + path}"

        def open_it(ftp: ftplib.FTP) -> tuple[ftplib.FTP, socket.socket, int, int | None]:
            size = self._size(ftp, path)
            end = offset + length if length is not None else size
            if size is not None and end is not None and (offset > size or end > size):
                raise IntegrityError(f"{what}: range {offset}-{end} is past the end ({size})")
            if offset and self._rest:
                try:
                    conn, _ = ftp.ntransfercmd(f"RETR {path}", offset)
                    return ftp, conn, 0, end
                except ftplib.error_perm as err:
                    if not _not_implemented(err):
                        raise
                    self._rest = False
                    log.warning("%s refuses REST: ranges are read from the start", self.origin)
            conn, _ = ftp.ntransfercmd(f"RETR {path}")
            return ftp, conn, offset, end

        ftp, conn, skip, end = self._run(what, open_it, idempotent=True)
        self._data = conn
        return self._read(ftp, conn, what, offset, end, skip)

    def _read(
        self,
        ftp: ftplib.FTP,
        conn: socket.socket,
        what: str,
        offset: int,
        end: int | None,
        skip: int,
    ) -> Iterator[bytes]:
        finished = at_eof = False
        try:
            with conn.makefile("rb") as reader:
                while skip > 0:
                    dropped = reader.read(min(CHUNK_SIZE, skip))
                    if not dropped:
                        raise IntegrityError(f"{what}: file ends before {offset}")
                    skip -= len(dropped)
                position = offset
                while end is None or position < end:
                    want = CHUNK_SIZE if end is None else min(CHUNK_SIZE, end - position)
                    data = reader.read(want)
                    if not data:
                        if end is None:
                            break
                        raise IntegrityError(f"{what}: file ends at {position}, before {end}")
                    position += len(data)
                    yield data
                # at the end of the range: is the server done sending too?
                at_eof = end is None or not reader.read(1)
            finished = True
        except (OSError, EOFError) as err:
            self._drop()
            raise self._translate(err, what) from err
        finally:
            if not finished:
                self._abandon(ftp, conn)
        if not at_eof:
            self._abandon(ftp, conn)
            return
        self._data = None
        self._close_data(conn, clean=True)
        try:
            ftp.voidresp()
        except _ERRORS as err:
            # the server says the transfer failed: what was read cannot be trusted
            failure = self._translate(err, what)
            if isinstance(failure, TransportUnavailable) or not isinstance(err, ftplib.Error):
                self._drop()
            raise failure from err

    def stat(self, url: str) -> RemoteStat:
        """Size (SIZE) and mtime (MDTM, None when the server has no MDTM) of a file."""
        path = self._path(url)

        def look(ftp: ftplib.FTP) -> RemoteStat:
            size = self._size(ftp, path)
            if size is None:
                failure = TransferError(f"stat {path}: {self.origin} does not implement SIZE")
                failure.retryable = False
                raise failure
            return RemoteStat(size=size, mtime=self._mtime(ftp, path))

        return self._run(f"stat {path}", look, idempotent=True)

    def put(
        self, local_path: str, remote_path: str, offset: int = 0, length: int | None = None
    ) -> int:
        """Send the whole of ``local_path`` to ``remote_path`` (STOR, replacing it); returns
        the number of bytes sent. Ranged puts are UnsupportedOperation (see the module
        docstring). Raises LocalError when the local file cannot be read, NotFound when the
        remote directory is missing, TransferError, TransportUnavailable."""
        check_range(offset, length)
        if offset or length is not None:
            raise self._unsupported("put a range of a file (FTP writes whole files)")
        path = self._path(remote_path)
        try:
            source = open(local_path, "rb")  # noqa: SIM115 - closed below
        except OSError as err:
            raise LocalError(f"put: cannot read {local_path}: {err.strerror}") from err

        def send(ftp: ftplib.FTP) -> int:
            source.seek(0)
            conn, _ = ftp.ntransfercmd(f"STOR {path}")
            self._data = conn
            sent = 0
            try:
                while True:
                    try:
                        data = source.read(CHUNK_SIZE)
                    except OSError as err:
                        raise LocalError(f"put: cannot read {local_path}: {err}") from err
                    if not data:
                        break
                    if self.throttle is not None:
                        self.throttle(len(data))
                    conn.sendall(data)
                    sent += len(data)
            except BaseException:
                # the server's reply to the broken transfer would be pending: start afresh
                self._data = None
                self._close_data(conn, clean=False)
                self._drop()
                raise
            self._data = None
            self._close_data(conn, clean=True)
            ftp.voidresp()
            return sent

        with source:
            return self._run(f"put {path}", send, idempotent=True)

    def rename(self, old: str, new: str) -> None:
        """Rename ``old`` to ``new`` (RNFR/RNTO), replacing ``new``: a server that refuses to
        rename onto an existing file has it removed first."""
        old_path, new_path = self._path(old), self._path(new)

        def move(ftp: ftplib.FTP) -> None:
            ftp.sendcmd(f"RNFR {old_path}")
            try:
                ftp.voidcmd(f"RNTO {new_path}")
                return
            except ftplib.error_perm as err:
                refused = err
            try:
                exists = self._size(ftp, new_path) is not None
            except ftplib.error_perm:
                exists = False
            if not exists:
                raise refused
            ftp.delete(new_path)
            ftp.sendcmd(f"RNFR {old_path}")
            ftp.voidcmd(f"RNTO {new_path}")

        self._run(f"rename {old_path} -> {new_path}", move, idempotent=False)

    def delete(self, remote_path: str) -> None:
        """Remove a file (DELE) or an empty directory (RMD); NotFound when neither exists."""
        path = self._path(remote_path)

        def remove(ftp: ftplib.FTP) -> None:
            try:
                ftp.voidcmd(f"DELE {path}")
                return
            except ftplib.error_perm as err:
                first = err
            try:
                ftp.voidcmd(f"RMD {path}")
                return
            except ftplib.error_perm:
                pass
            try:
                exists = self._size(ftp, path) is not None or self._is_dir(ftp, path)
            except ftplib.error_perm:
                exists = self._is_dir(ftp, path)
            if not exists:
                raise NotFound(f"delete {path}: {first}")
            failure = TransferError(f"delete {path}: {first}")
            failure.retryable = False
            raise failure

        self._run(f"delete {path}", remove, idempotent=False)

    def mkdirs(self, remote_path: str) -> None:
        """Create a directory and any missing parents (MKD); existing ones are fine."""
        path = self._absolute(self._path(remote_path))

        def make(ftp: ftplib.FTP) -> None:
            prefix = ""
            try:
                for part in [p for p in path.split("/") if p not in ("", ".")]:
                    prefix = f"{prefix}/{part}"
                    try:
                        ftp.cwd(prefix)
                        continue
                    except ftplib.error_perm:
                        pass
                    try:
                        ftp.mkd(prefix)
                    except ftplib.error_perm:
                        # another writer may have made it meanwhile; fail only if still absent
                        ftp.cwd(prefix)
            finally:
                if self._ftp is ftp:
                    ftp.cwd(self._home)

        self._run(f"mkdirs {path}", make, idempotent=True)

    def listdir(self, url: str) -> list[RemoteEntry]:
        """The entries of a remote directory by MLSD, or by LIST where MLSD is not
        implemented (see the module docstring)."""
        path = self._path(url)
        where = f"{self.origin}{path if path.startswith('/') else '/~/' + path}"

        def listing(ftp: ftplib.FTP) -> list[RemoteEntry]:
            try:
                return _entries(self._lines(ftp, f"MLSD {path}"), _mlsd_entry, where)
            except ftplib.error_perm as err:
                if not _not_implemented(err):
                    # MLSD answers 501 for "not a directory" (RFC 3659)
                    if _code(err) in ("501", "550") and not self._is_dir(ftp, path):
                        raise NotFound(f"listdir {where}: no such directory ({err})") from err
                    raise
            return _entries(self._lines(ftp, f"LIST {path}"), _list_entry, where)

        return self._run(f"listdir {where}", listing, idempotent=True)

    def close(self) -> None:
        ftp, self._ftp = self._ftp, None
        self._closed = True
        if ftp is not None:
            try:
                ftp.quit()
            except _ERRORS:
                ftp.close()

    def abort(self) -> None:
        self._closed = True
        for sock in (self._data, getattr(self._ftp, "sock", None)):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


# -- listings -------------------------------------------------------------------------------


def _split_lines(raw: bytes) -> list[bytes]:
    """The lines of a listing: split at CRLF, the FTP line end, when the server uses it (a
    bare CR or LF is then part of a name, which :func:`listed_name` refuses, rather than
    the end of a line that would make a truncated name look like an entry); else at LF."""
    lines = raw.split(b"\r\n") if b"\r\n" in raw else raw.split(b"\n")
    return [line for line in lines if line]


def _timestamp(text: str) -> float | None:
    """Seconds since the epoch of an MLSD/MDTM time (``YYYYMMDDHHMMSS[.fff]``, UTC)."""
    whole, _, fraction = text.partition(".")
    try:
        parsed = time.strptime(whole, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    seconds = float(calendar.timegm(parsed))
    if fraction.isdigit():
        seconds += float(f"0.{fraction}")
    return seconds


def _entries(
    lines: list[bytes], parse: Callable[[str], RemoteEntry | None], where: str
) -> list[RemoteEntry]:
    found: list[RemoteEntry] = []
    for raw in lines:
        # a name that is not valid UTF-8 keeps its bytes as surrogates (as os.listdir
        # does): the poll skips it, naming it by its bytes, once
        entry = parse(raw.decode("utf-8", "surrogateescape"))
        if entry is None:
            continue
        if not listed_name(entry.name):
            log.warning(
                "%s: listed name %r could escape the directory: left out", where, entry.name
            )
            continue
        found.append(entry)
    return found


def _mlsd_entry(line: str) -> RemoteEntry | None:
    """One MLSD line (RFC 3659 ``fact=value;...; name``); None for ``.``/``..`` entries."""
    facts_text, sep, name = line.partition(" ")
    if not sep:
        return None
    facts: dict[str, Any] = {}
    for fact in facts_text.split(";"):
        key, eq, value = fact.partition("=")
        if eq:
            facts[key.strip().lower()] = value
    kind = str(facts.get("type", "file")).lower()
    if kind in ("cdir", "pdir"):
        return None
    size_text = str(facts.get("size", ""))
    modify = facts.get("modify")
    return RemoteEntry(
        name=name,
        size=int(size_text) if size_text.isdigit() else None,
        mtime=_timestamp(str(modify)) if modify else None,
        is_dir=kind == "dir",
        is_link=kind.startswith("os.unix=slink") or kind.startswith("os.unix=symlink"),
    )


_LS_LINE = re.compile(
    r"^(?P<kind>[-dlbcps])[-rwxsStTl+.@]{9}\S*\s+\d+\s+\S+(?:\s+\S+)?\s+(?P<size>\d+)\s+"
    r"(?P<month>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s+(?P<when>\d{1,2}:\d{2}|\d{4})\s(?P<name>.+)$"
)
_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}


def _list_entry(line: str, now: float | None = None) -> RemoteEntry | None:
    """One Unix ``ls -l`` line of a LIST reply; None for ``total`` and unparseable lines.

    A time without a year is in the last twelve months (as ``ls`` shows it); times are read
    as UTC."""
    match = _LS_LINE.match(line.rstrip("\r\n"))
    if match is None:
        return None
    kind, name = match["kind"], match["name"]
    if kind == "l" and " -> " in name:
        name = name.split(" -> ", 1)[0]
    month = _MONTHS.get(match["month"].title())
    mtime: float | None = None
    if month is not None:
        when = match["when"]
        current = time.gmtime(time.time() if now is None else now)
        if ":" in when:
            hour, minute = (int(x) for x in when.split(":"))
            year = current.tm_year
            mtime = calendar.timegm((year, month, int(match["day"]), hour, minute, 0))
            if mtime > calendar.timegm(current) + 86400:
                mtime = calendar.timegm((year - 1, month, int(match["day"]), hour, minute, 0))
        else:
            mtime = calendar.timegm((int(when), month, int(match["day"]), 0, 0, 0))
    return RemoteEntry(
        name=name,
        size=int(match["size"]),
        mtime=float(mtime) if mtime is not None else None,
        is_dir=kind == "d",
        is_link=kind == "l",
    )
