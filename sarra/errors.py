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
    │   └── UnsupportedOperation (501) the transport cannot do this at all (not retryable)
    ├── BrokerError                  retryable: connection lost, channel closed, publish nacked
    │   ├── AccessRefused            broker refused a permission (not retryable)
    │   └── BrokerNotFound           no such exchange or queue on the broker
    └── LocalError          (500)    local file system operation failed
        └── DiskFull        (500)    ENOSPC/EDQUOT: retryable once space is freed

Local OS errors are translated in one place: :func:`local_error` maps an ``OSError`` met
while doing ``what`` to :class:`DiskFull` (``ENOSPC``/``EDQUOT``) or :class:`LocalError`
(anything else), with the message ``"<what>: <strerror>"``; :func:`translated_os_errors`
is the same as a context manager, raising it ``from`` the ``OSError``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager


class SarraError(Exception):
    """Base of every sarra error."""

    retryable: bool = False
    report_code: int = 500


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


class IntegrityError(TransferError):
    """Received bytes do not match what was announced (size, checksum, range)."""


class TransportUnavailable(TransferError):
    """The remote could not be reached or dropped the connection."""


class AuthenticationFailed(TransferError):
    """The remote refused our credentials (wrong password or key, or none given); retrying
    cannot help until the credentials change."""

    retryable = False


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


@contextmanager
def translated_os_errors(what: str) -> Iterator[None]:
    """Re-raise any ``OSError`` inside the block as :func:`local_error` ``(exc, what)``,
    chained ``from`` it; other exceptions pass through untouched."""
    try:
        yield
    except OSError as exc:
        raise local_error(exc, what) from exc
