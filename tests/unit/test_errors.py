"""The one OSError translation in :mod:`sarra.errors`."""

from __future__ import annotations

import errno
import os

import pytest

from sarra.errors import DiskFull, LocalError, local_error, translated_os_errors


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_full_disk_or_quota_is_retryable_disk_full(code: int) -> None:
    exc = OSError(code, os.strerror(code))
    err = local_error(exc, "write a/b")
    assert type(err) is DiskFull
    assert err.retryable
    assert str(err) == f"write a/b: {os.strerror(code)}"


def test_other_errno_is_plain_local_error_not_retryable() -> None:
    err = local_error(PermissionError(errno.EACCES, "Permission denied"), "open x")
    assert type(err) is LocalError
    assert not err.retryable
    assert str(err) == "open x: Permission denied"


def test_oserror_without_strerror_keeps_its_own_text() -> None:
    assert str(local_error(OSError("boom"), "sync")) == "sync: boom"


@pytest.mark.parametrize(
    ("code", "cls"),
    [(errno.ENOSPC, DiskFull), (errno.EDQUOT, DiskFull), (errno.EACCES, LocalError)],
)
def test_context_manager_raises_translation_from_the_oserror(
    code: int, cls: type[LocalError]
) -> None:
    cause = OSError(code, os.strerror(code))
    with pytest.raises(LocalError) as info, translated_os_errors("fsync f"):
        raise cause
    assert type(info.value) is cls
    assert info.value.__cause__ is cause
    assert str(info.value) == f"fsync f: {os.strerror(code)}"


def test_context_manager_lets_other_exceptions_through() -> None:
    with pytest.raises(ValueError), translated_os_errors("x"):
        raise ValueError("not an OS error")
