"""SFTP transport on one persistent paramiko session.

A transport holds one SSHClient and one SFTPClient for its origin and reuses them. When the
server has dropped the session, an idempotent operation (stat, the opening of a get, put,
mkdirs) is tried once more on a new session; rename and delete are not repeated.

Paths: operations take either an ``sftp://`` URL of this origin (decoded with
:func:`sarra.transfer.url.server_path`: ``sftp://h/abs`` is absolute, ``sftp://h/~/rel`` is
relative to the login directory) or a plain server path, used as it is.

Host keys: with the option ``known_hosts`` (a file path), or ``state_dir`` (then the file is
``<state_dir>/known_hosts``), unknown host keys are accepted on first use and saved there; a
later mismatch is refused. Without either, keys are accepted on first use and kept in memory
for this transport only. ``strict_host_keys=True`` refuses unknown hosts instead. Trust on
first use is a stop-gap: it does not protect the first connection.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import logging
import os
import socket
import stat as statmod
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import paramiko

from sarra.errors import (
    FULL_ERRNOS,
    AuthenticationFailed,
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
    check_sent,
    confined,
    copy_range,
    listed_name,
)
from sarra.transfer.url import Origin, origin_of, server_path

log = logging.getLogger(__name__)

#: Bytes requested ahead of the reader: bounds memory while keeping the pipe full.
WINDOW_CHUNKS = 8

_T = TypeVar("_T")
_CONNECTION_ERRORS = (paramiko.SSHException, EOFError, socket.error)


class SftpTransport(Transport):
    """Reads and writes files on one SFTP origin over one persistent session.

    Args:
        url: any URL of the origin (``sftp://[user@]host[:port]``); the path is ignored.
        credentials: its ``ssh_keyfile`` (private key file), ``password`` (password, or key
            passphrase with a key file) and ``user`` (when the URL names none) are used.
        timeout: seconds for connecting, authenticating and each channel read.
        options: ``known_hosts`` (path; default ``<state_dir>/known_hosts`` when the option
            ``state_dir`` is given), ``strict_host_keys`` (bool), ``keepalive`` (seconds).

    Attributes:
        connections_made: sessions opened so far.
    """

    features = Features(
        ranges=True,
        put=True,
        put_ranges=True,
        rename=True,
        delete=True,
        mkdirs=True,
        listdir=True,
    )

    def __init__(
        self,
        url: str,
        *,
        credentials: Login | None = None,
        timeout: float = 30,
        options: Mapping[str, object] = {},
    ) -> None:
        self.origin: Origin = bound_origin(url, ("sftp",), type(self).__name__)
        cred_user = credentials.user if credentials is not None else None
        self._user = self.origin.user or cred_user or getpass.getuser()
        self._keyfile = credentials.ssh_keyfile if credentials is not None else None
        self._password = credentials.password if credentials is not None else None
        self._timeout = timeout
        known_hosts = options.get("known_hosts")
        if not known_hosts and options.get("state_dir"):
            known_hosts = os.path.join(str(options["state_dir"]), "known_hosts")
        self._known_hosts = str(known_hosts) if known_hosts else None
        self._strict = bool(options.get("strict_host_keys", False))
        keepalive = options.get("keepalive", 0)
        self._keepalive = int(keepalive) if isinstance(keepalive, int | float | str) else 0
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._closed = False
        self.connections_made = 0

    # -- session ------------------------------------------------------------------------

    def _alive(self) -> bool:
        if self._client is None:
            return False
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def _connect(self) -> paramiko.SFTPClient:
        client = paramiko.SSHClient()
        if self._known_hosts is not None:
            if not os.path.exists(self._known_hosts):
                os.makedirs(os.path.dirname(self._known_hosts) or ".", exist_ok=True)
                with open(os.open(self._known_hosts, os.O_WRONLY | os.O_CREAT, 0o600), "w"):
                    pass
            # Also makes AutoAddPolicy save newly accepted keys to this file.
            client.load_host_keys(self._known_hosts)
        policy: paramiko.MissingHostKeyPolicy = (
            paramiko.RejectPolicy() if self._strict else paramiko.AutoAddPolicy()
        )
        client.set_missing_host_key_policy(policy)
        where = f"{self.origin}"
        try:
            client.connect(
                self.origin.host,
                port=self.origin.port or 22,
                username=self._user,
                key_filename=self._keyfile,
                password=self._password,
                timeout=self._timeout,
                banner_timeout=self._timeout,
                auth_timeout=self._timeout,
                allow_agent=False,
                look_for_keys=self._keyfile is None and self._password is None,
            )
            sftp = client.open_sftp()
        except paramiko.BadHostKeyException as err:
            client.close()
            failure = TransferError(f"{where}: host key does not match known_hosts: {err}")
            failure.retryable = False
            raise failure from err
        except paramiko.AuthenticationException as err:
            client.close()
            raise AuthenticationFailed(f"{where}: authentication failed: {err}") from err
        except (*_CONNECTION_ERRORS, OSError) as err:
            client.close()
            raise TransportUnavailable(f"{where}: cannot connect: {err}") from err
        channel = sftp.get_channel()
        if channel is not None:
            channel.settimeout(self._timeout)
        transport = client.get_transport()
        if transport is not None and self._keepalive > 0:
            transport.set_keepalive(self._keepalive)
        self._client = client
        self._sftp = sftp
        self.connections_made += 1
        return sftp

    def _drop(self) -> None:
        sftp, client = self._sftp, self._client
        self._sftp = self._client = None
        try:
            if sftp is not None:
                sftp.close()
        except (*_CONNECTION_ERRORS, OSError):
            pass
        if client is not None:
            client.close()

    def _session(self) -> tuple[paramiko.SFTPClient, bool]:
        """The open session and whether it existed before this call."""
        if self._closed:
            raise TransportUnavailable(f"{self.origin}: transport is closed")
        if self._sftp is not None and self._alive():
            return self._sftp, True
        self._drop()
        return self._connect(), False

    def _translate(self, err: BaseException, what: str) -> SarraError:
        """Map a paramiko/OSError failure to our tree, judging connection loss by liveness."""
        if isinstance(err, SarraError):
            return err
        if isinstance(err, paramiko.SSHException | EOFError) or not self._alive():
            return TransportUnavailable(f"{what}: connection lost: {err}")
        if isinstance(err, TimeoutError):
            # A late answer would confuse the session: the caller drops it.
            return TransportUnavailable(f"{what}: timed out")
        if isinstance(err, OSError):
            if err.errno in (errno.ENOENT, errno.ENOTDIR):
                return NotFound(f"{what}: {err.strerror or err}")
            if err.errno in (errno.EACCES, errno.EPERM):
                return RemoteRefused(f"{what}: {err.strerror or err}")
            failure = TransferError(f"{what}: {err.strerror or err}")
            failure.retryable = True
            if err.errno in FULL_ERRNOS:
                failure.failure_class = "disk_full"
            return failure
        return TransferError(f"{what}: {err}")

    def _run(
        self, what: str, operation: Callable[[paramiko.SFTPClient], _T], *, idempotent: bool
    ) -> _T:
        for attempt in (1, 2):
            sftp, reused = self._session()
            try:
                return operation(sftp)
            except (*_CONNECTION_ERRORS, OSError) as err:
                failure = self._translate(err, what)
                if isinstance(failure, TransportUnavailable):
                    self._drop()
                    if idempotent and reused and attempt == 1:
                        continue
                raise failure from err
        raise AssertionError("unreachable")  # pragma: no cover

    def _path(self, url_or_path: str) -> str:
        if "://" not in url_or_path:
            return confined(url_or_path, f"{self.origin}")
        other = origin_of(url_or_path)
        if (other.scheme, other.host, other.port) != (
            self.origin.scheme,
            self.origin.host,
            self.origin.port,
        ) or (other.user and other.user != self._user):
            raise PolicyRefused(f"{url_or_path!r} is not on this transport's origin {self.origin}")
        return confined(server_path(url_or_path), f"{self.origin}")

    # -- operations ---------------------------------------------------------------------

    def get(self, url: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of ``url`` from ``offset``; exactly ``length`` bytes when given.

        The file is opened (and NotFound raised) before this returns. Reads are pipelined a
        window ahead. A file shorter than the range raises IntegrityError while iterating.
        """
        check_range(offset, length)
        path = self._path(url)
        what = f"get {self.origin}{path if path.startswith('/') else '/~/' + path}"

        def open_it(sftp: paramiko.SFTPClient) -> tuple[paramiko.SFTPFile, int]:
            handle = sftp.open(path, "rb")
            try:
                end = offset + length if length is not None else handle.stat().st_size or 0
            except BaseException:
                handle.close()
                raise
            return handle, end

        handle, end = self._run(what, open_it, idempotent=True)
        if end < offset:
            handle.close()
            raise IntegrityError(f"{what}: offset {offset} is past the end ({end})")
        return self._read(handle, what, offset, end)

    def _read(self, handle: paramiko.SFTPFile, what: str, offset: int, end: int) -> Iterator[bytes]:
        position = offset
        try:
            while position < end:
                window: list[tuple[int, int]] = []
                start = position
                while start < end and len(window) < WINDOW_CHUNKS:
                    size = min(CHUNK_SIZE, end - start)
                    window.append((start, size))
                    start += size
                for (chunk_offset, size), data in zip(window, handle.readv(window), strict=True):
                    if len(data) != size:
                        raise IntegrityError(
                            f"{what}: file ends at {chunk_offset + len(data)}, before {end}"
                        )
                    position += size
                    yield data
        except EOFError as err:
            if self._alive():
                raise IntegrityError(f"{what}: file ends before {end}") from err
            self._drop()
            raise TransportUnavailable(f"{what}: connection lost") from err
        except (paramiko.SSHException, OSError) as err:
            failure = self._translate(err, what)
            if isinstance(failure, TransportUnavailable):
                self._drop()
            raise failure from err
        finally:
            try:
                handle.close()
            except (*_CONNECTION_ERRORS, OSError):
                pass

    def stat(self, url: str) -> RemoteStat:
        path = self._path(url)
        attributes = self._run(f"stat {path}", lambda sftp: sftp.stat(path), idempotent=True)
        return RemoteStat(size=attributes.st_size or 0, mtime=attributes.st_mtime)

    def put(
        self, local_path: str, remote_path: str, offset: int = 0, length: int | None = None
    ) -> int:
        """Write bytes of ``local_path`` from ``offset`` into ``remote_path`` at ``offset``.

        A whole-file put (offset 0, no length) replaces the remote file; a ranged put creates
        the file if needed and never truncates it, so parts may arrive in any order. Writes
        are pipelined. Returns the number of bytes sent.

        Raises LocalError when the local file cannot be read or is shorter than asked,
        NotFound when the remote directory is missing, TransferError, TransportUnavailable.
        """
        check_range(offset, length)
        path = self._path(remote_path)
        whole = offset == 0 and length is None

        def send(sftp: paramiko.SFTPClient) -> int:
            try:
                source = open(local_path, "rb")  # noqa: SIM115 - closed below
            except OSError as err:
                raise LocalError(f"put: cannot read {local_path}: {err.strerror}") from err
            with source, self._open_for_write(sftp, path, whole) as remote:
                remote.set_pipelined(True)
                sent = copy_range(source, remote, offset, length, self.throttle)
            # paramiko drops the server's error replies to pipelined writes (a full disk
            # shows up only as a short file): check what really landed
            landed = sftp.stat(path).st_size or 0
            expected = offset + sent
            if landed < expected or (whole and landed != expected):
                raise TransferError(
                    f"put {path}: the server kept {landed} bytes of {expected} "
                    "(disk full or quota?)"
                )
            return sent

        sent = self._run(f"put {path}", send, idempotent=True)
        return check_sent(local_path, sent, offset, length)

    @staticmethod
    def _open_for_write(sftp: paramiko.SFTPClient, path: str, whole: bool) -> paramiko.SFTPFile:
        if whole:
            return sftp.open(path, "wb")
        # SFTP v3 has no "create but do not truncate" through paramiko's modes, and append mode
        # ignores offsets on OpenSSH: open existing, else create exclusively, else (another
        # writer created it meanwhile) open existing again.
        try:
            return sftp.open(path, "r+b")
        except OSError as err:
            if err.errno != errno.ENOENT:
                raise
        try:
            return sftp.open(path, "x+b")
        except OSError:
            return sftp.open(path, "r+b")

    def rename(self, old: str, new: str) -> None:
        """Rename ``old`` to ``new``, replacing ``new`` (posix-rename when the server has it)."""
        old_path, new_path = self._path(old), self._path(new)

        def move(sftp: paramiko.SFTPClient) -> None:
            try:
                sftp.posix_rename(old_path, new_path)
                return
            except OSError as err:
                if err.errno is not None:
                    raise
            # No posix-rename extension (or a generic failure): plain SFTP rename refuses an
            # existing target, so remove it first.
            try:
                sftp.remove(new_path)
            except OSError as err:
                if err.errno != errno.ENOENT:
                    raise
            sftp.rename(old_path, new_path)

        self._run(f"rename {old_path} -> {new_path}", move, idempotent=False)

    def delete(self, remote_path: str) -> None:
        """Remove a file, link or empty directory."""
        path = self._path(remote_path)

        def remove(sftp: paramiko.SFTPClient) -> None:
            try:
                sftp.remove(path)
            except OSError as err:
                if err.errno is not None:
                    raise
                sftp.rmdir(path)

        self._run(f"delete {path}", remove, idempotent=False)

    def mkdirs(self, remote_path: str, mode: int = 0o755) -> None:
        """Create a directory and any missing parents; existing ones are fine."""
        path = self._path(remote_path)

        def make(sftp: paramiko.SFTPClient) -> None:
            prefix = "/" if path.startswith("/") else ""
            for part in [p for p in path.split("/") if p]:
                prefix = f"{prefix}{part}"
                try:
                    sftp.stat(prefix)
                except OSError as err:
                    if err.errno != errno.ENOENT:
                        raise
                    try:
                        sftp.mkdir(prefix, mode)
                    except OSError:
                        # Another writer may have made it meanwhile; fail only if still absent.
                        sftp.stat(prefix)
                prefix += "/"

        self._run(f"mkdirs {path}", make, idempotent=True)

    def listdir(self, url: str) -> list[RemoteEntry]:
        """The entries of a remote directory (``SSH_FXP_READDIR`` with attributes): size and
        mtime (whole seconds) as the server gives them; a symbolic link is shown with its
        target's type and size (a dangling one as a link). Names that could escape the
        directory are left out with a warning."""
        path = self._path(url)
        where = f"{self.origin}{path if path.startswith('/') else '/~/' + path}"

        def listing(sftp: paramiko.SFTPClient) -> list[RemoteEntry]:
            entries: list[RemoteEntry] = []
            try:
                attrs = sftp.listdir_attr(path or ".")
            except UnicodeDecodeError:
                # paramiko decodes every name as strict UTF-8: one name that is not makes
                # the whole listing fail; read it again as bytes (surrogateescape)
                attrs = _listdir_attr_bytes(sftp, path or ".", where)
            for attr in attrs:
                name = attr.filename
                if name in (".", ".."):
                    continue
                if not listed_name(name):
                    log.warning("listing of %s: name %r left out (could escape it)", where, name)
                    continue
                mode = attr.st_mode or 0
                is_link = statmod.S_ISLNK(mode)
                if is_link:
                    with contextlib.suppress(OSError):
                        attr = sftp.stat(f"{path.rstrip('/')}/{name}" if path else name)
                        mode = attr.st_mode or 0
                is_dir = statmod.S_ISDIR(mode)
                entries.append(
                    RemoteEntry(
                        name=name,
                        size=None if is_dir else attr.st_size,
                        mtime=float(attr.st_mtime) if attr.st_mtime is not None else None,
                        is_dir=is_dir,
                        is_link=is_link,
                    )
                )
            return entries

        return self._run(f"listdir {where}", listing, idempotent=True)

    def close(self) -> None:
        self._drop()
        self._closed = True

    def abort(self) -> None:
        self._closed = True
        client = self._client
        transport = client.get_transport() if client is not None else None
        sock = getattr(transport, "sock", None)
        if sock is not None:
            # shutdown wakes paramiko's reader thread, which fails the blocked SFTP request
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _listdir_attr_bytes(
    sftp: paramiko.SFTPClient, path: str, where: str
) -> list[paramiko.SFTPAttributes]:
    """``listdir_attr`` for a directory holding a name that is not valid UTF-8: the same
    SSH_FXP_OPENDIR/READDIR exchange (paramiko's request layer), names read as bytes and
    decoded with ``surrogateescape``, as ``os.listdir`` does: the poll skips such a name
    (no v02 or v03 notice can carry it) and logs it once, not at every pass."""
    from paramiko import sftp as proto  # the protocol constants

    # paramiko's own request layer (no public call lists names as bytes)
    client: Any = sftp  # typed without its private methods
    attributes: Any = paramiko.SFTPAttributes
    request = client._request
    kind, msg = request(proto.CMD_OPENDIR, client._adjust_cwd(path))
    if kind != proto.CMD_HANDLE:
        raise paramiko.SFTPError("Expected handle")
    handle = msg.get_binary()
    found: list[paramiko.SFTPAttributes] = []
    try:
        while True:
            try:
                kind, msg = request(proto.CMD_READDIR, handle)
            except EOFError:
                break
            if kind != proto.CMD_NAME:
                raise paramiko.SFTPError("Expected name response")
            for _ in range(msg.get_int()):
                raw = msg.get_string()
                msg.get_string()  # the long name (ls -l form): not used
                attr = attributes._from_msg(msg)
                attr.filename = raw.decode("utf-8", "surrogateescape")
                found.append(attr)
    finally:
        request(proto.CMD_CLOSE, handle)
    log.debug("listing of %s holds names that are not valid UTF-8", where)
    return found
