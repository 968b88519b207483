"""The one exception tree of sarra.

Every error raised across a package boundary is one of these. Library errors (socket,
py-amqp, paramiko, http.client, OSError) are translated at the boundary with
``raise ... from``. Each type says whether retrying the same operation may succeed
(``retryable``) and, where it ends a notice's processing, which v02 report code it maps
to (``report_code``)::

    SarraError
    ├── ConfigError                  bad option, value or file (names file, line, option)
    │   └── CredentialsError         missing credential, or credentials file too open
    ├── MessageError        (417)    a message that cannot be trusted or understood
    │   ├── MalformedMessage (417)   bad body, timestamp, sum, parts, header types, bounds
    │   └── HostilePath      (417)   a path that would escape the destination root
    ├── PolicyRefused       (503)    a baseUrl/scheme/host the configuration does not allow
    ├── Interrupted                  the instance is stopping: work abandoned, not settled
    ├── TransferError       (499)    retryable by default
    │   ├── NotFound        (499)    origin says the object does not exist (not retryable)
    │   ├── IntegrityError  (499)    size or checksum mismatch, Range ignored, truncated body
    │   ├── TransportUnavailable     connection refused/reset, timeouts
    │   ├── AuthenticationFailed     the remote refused our credentials (not retryable)
    │   ├── RemoteRefused   (499)    the remote refused the operation: HTTP 403, FTP 550,
    │   │                            SFTP permission denied (not retryable)
    │   ├── RateCapped      (499)    a bandwidth cap refused the transfer (retryable)
    │   └── UnsupportedOperation (501) the transport cannot do this at all (not retryable)
    ├── BrokerError                  retryable: connection lost, channel closed, publish nacked
    │   ├── AccessRefused            broker refused a permission (not retryable)
    │   └── BrokerNotFound           no such exchange or queue on the broker
    └── LocalError          (500)    local file system operation failed
        ├── DiskFull        (500)    ENOSPC/EDQUOT: retryable once space is freed
        ├── QuotaExceeded   (507)    a per-source quota of the pump would be exceeded
        └── QuotaStoreUnavailable    the shared quota ledger (Redis) cannot be reached:
                                     retryable, the file is not written unchecked

Failure classes: some types carry a ``failure_class`` (``not_found``, ``checksum``,
``disk_full``, ``refused``, ``quota``, ``bandwidth``), the name the ``on_failure`` option
uses to choose, per class, between reporting and dropping a failed notice or keeping it in
the retry queue; :data:`FAILURE_CLASSES` is the one table of those classes and their default
actions (see :mod:`sarra.flow.failpolicy`). A transport may set ``failure_class`` on one
instance (e.g. FTP 552, the remote disk full, is a ``disk_full`` TransferError).

Local OS errors are translated in one place: :func:`local_error` maps an ``OSError`` met
while doing ``what`` to :class:`DiskFull` (``ENOSPC``/``EDQUOT``) or :class:`LocalError`
(anything else), with the message ``"<what>: <strerror>"``; :func:`translated_os_errors`
is the same as a context manager, raising it ``from`` the ``OSError``.
"""

from __future__ import annotations

import errno


class SarraError(Exception):
    """Base of every sarra error."""

    retryable: bool = False
    report_code: int = 500
    #: the failure class ``on_failure`` names (None: decided by ``retryable`` alone)
    failure_class: str | None = None
    #: reported even when ``report_back`` is off (the pump's sarra): the source must hear
    report_always: bool = False


class ConfigError(SarraError):
    """A configuration problem, located as precisely as possible."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        option: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.option = option
        where = ""
        if path is not None:
            where = path if line is None else f"{path}:{line}"
        if option is not None:
            where = f"{where}: option {option!r}" if where else f"option {option!r}"
        super().__init__(f"{where}: {message}" if where else message)


class CredentialsError(ConfigError):
    """A credential is missing, or the credentials file is unsafe."""


class MessageError(SarraError):
    """A message that cannot be trusted or understood; rejected with 417."""

    report_code = 417


class MalformedMessage(MessageError):
    """The message does not follow the v02 grammar or exceeds a bound."""


class HostilePath(MessageError):
    """A path in the message would escape the destination root."""


class PolicyRefused(SarraError):
    """The configuration does not allow fetching from this baseUrl (report 503)."""

    report_code = 503


class Interrupted(SarraError):
    """The instance is stopping: a transfer was abandoned midway. Not an outcome: the
    notice is neither reported nor acked, so the broker gives it to another instance or to
    this one after its restart; what was written so far is removed by the failure path."""


class TransferError(SarraError):
    """Moving bytes to or from a remote failed."""

    retryable = True
    report_code = 499


class NotFound(TransferError):
    """The origin says the object does not exist."""

    retryable = False
    failure_class = "not_found"


class IntegrityError(TransferError):
    """Received bytes do not match what was announced (size, checksum, range)."""

    failure_class = "checksum"


class TransportUnavailable(TransferError):
    """The remote could not be reached or dropped the connection."""


class AuthenticationFailed(TransferError):
    """The remote refused our credentials (wrong password or key, or none given); retrying
    cannot help until the credentials change."""

    retryable = False


class RemoteRefused(TransferError):
    """The remote refused the operation itself (HTTP 403, FTP 550 permission denied, SFTP
    permission denied): our credentials were accepted but do not allow it."""

    retryable = False
    failure_class = "refused"


class RateCapped(TransferError):
    """A bandwidth cap refused the transfer for now: under ``bandwidth_wait_max``, the byte
    rate caps (``kbytes_ps``/``byte_rate_max`` of the instance, the pump-wide ``bandwidth``
    and ``bandwidth_shared``) would have held the transfer longer than that in total
    (:class:`sarra.flow.ratelimit.TransferWaits`). The transfer stopped without waiting;
    retryable (the caps may be less crowded later), ``on_failure bandwidth`` decides."""

    failure_class = "bandwidth"


class UnsupportedOperation(TransferError):
    """The transport cannot do this operation at all (e.g. a put over http); its
    :class:`~sarra.transfer.base.Features` flag for it is false."""

    retryable = False
    report_code = 501


class BrokerError(SarraError):
    """The AMQP broker connection or channel failed."""

    retryable = True


class AccessRefused(BrokerError):
    """The broker refused an operation for lack of permission."""

    retryable = False


class BrokerNotFound(BrokerError):
    """The broker has no such exchange or queue (AMQP 404); the channel was closed, the
    connection kept."""


class LocalError(SarraError):
    """A local file system operation failed."""

    report_code = 500


class DiskFull(LocalError):
    """The local disk (or quota) is full; retrying after space is freed may succeed."""

    retryable = True
    failure_class = "disk_full"


class QuotaExceeded(LocalError):
    """A write would exceed a source's quota on the pump (bytes or files): raised by the
    pump's sr_sarra before writing (:mod:`sarra.flow.quota`). Reported 507 (HTTP's
    "Insufficient Storage") even with ``report_back`` off, so that the report reaches the
    source through the report routing; ``on_failure quota`` decides what becomes of the
    notice (default drop)."""

    report_code = 507
    failure_class = "quota"
    report_always = True


class QuotaStoreUnavailable(LocalError):
    """The pump's shared quota ledger (``quota_redis_serverurl``) cannot be reached or
    fails, so a write cannot be checked against its source's quota: the file is not written
    and its notice is retried later (:mod:`sarra.flow.quota`)."""

    retryable = True


#: The failure classes ``on_failure`` names: class -> (default action, what it covers). The
#: defaults keep the behaviour sarra had before the option: a file announced before every
#: server has it, a truncated or corrupted download and a full disk are retried; a refusal
#: is reported and dropped, as is an exceeded quota (the source hears of it at once).
FAILURE_CLASSES: dict[str, tuple[str, str]] = {
    "not_found": (
        "queue",
        "the origin says the file does not exist (HTTP 404/410, FTP 550 "
        "no such file, SFTP no such file)",
    ),
    "checksum": (
        "queue",
        "what arrived does not match the notice: checksum or size mismatch, "
        "truncated body, Range ignored",
    ),
    "disk_full": (
        "queue",
        "no space left on the destination: ENOSPC/EDQUOT locally, FTP 552 "
        "or SFTP no space on a remote",
    ),
    "refused": (
        "drop",
        "the remote refuses the operation: HTTP 403, FTP 550 permission "
        "denied, SFTP permission denied",
    ),
    "quota": (
        "drop",
        "a per-source quota of the pump (quota lines of admin.conf) would be "
        "exceeded: report 507 to the source",
    ),
    "bandwidth": (
        "queue",
        "the byte rate caps (kbytes_ps, byte_rate_max, bandwidth, bandwidth_shared) "
        "would hold a transfer longer than bandwidth_wait_max in total (0, the "
        "default: they never fail a transfer, it waits)",
    ),
}

#: the actions of ``on_failure``: report and ack, or keep in the retry queue
FAILURE_ACTIONS = ("drop", "queue")


def parse_on_failure(text: str) -> tuple[str, str]:
    """``CLASS ACTION`` of one ``on_failure`` line, checked. Raises ValueError naming the
    known classes or actions."""
    words = text.split()
    if len(words) != 2:
        raise ValueError(f"expected on_failure CLASS drop|queue, got {text!r}")
    name, action = words[0].lower(), words[1].lower()
    if name not in FAILURE_CLASSES:
        raise ValueError(f"unknown failure class {words[0]!r}; known: {', '.join(FAILURE_CLASSES)}")
    if action not in FAILURE_ACTIONS:
        raise ValueError(f"unknown action {words[1]!r} for {name}; expected drop or queue")
    return name, action


def on_failure_help() -> str:
    """The help of the ``on_failure`` option, made from the table (--help and man page)."""
    classes = "; ".join(
        f"{name}: {what} [default {action}]" for name, (action, what) in FAILURE_CLASSES.items()
    )
    return (
        "what becomes of a notice that failed with this class of failure: drop (report it "
        "and ack) or queue (retry it from disk with backoff until retry_ttl); repeatable, "
        f"the last line for a class wins. Classes: {classes}"
    )


#: errnos meaning "no space left" (disk or quota): retrying after space is freed may succeed
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def local_error(exc: OSError, what: str) -> LocalError:
    """Our error for ``exc``, met while doing ``what`` on the local file system.

    :class:`DiskFull` (retryable) when ``exc.errno`` is ``ENOSPC``/``EDQUOT``, otherwise
    :class:`LocalError` (not retryable). The message is ``"<what>: <strerror>"`` (the
    ``OSError``'s own text when it has no ``strerror``). The caller raises it ``from exc``.
    """
    text = f"{what}: {exc.strerror or exc}"
    if exc.errno in FULL_ERRNOS:
        return DiskFull(text)
    return LocalError(text)


class translated_os_errors:  # named like the function it was: callers unchanged
    """Re-raise any ``OSError`` inside the block as :func:`local_error` ``(exc, what)``,
    chained ``from`` it; other exceptions pass through untouched.

    A class rather than a ``@contextmanager`` generator: it wraps several system calls of
    every file written, and a generator costs several times more to enter and leave."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, OSError):
            raise local_error(exc, self.what) from exc
