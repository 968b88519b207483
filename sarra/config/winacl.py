"""Windows' form of "mode 600" for the credentials file: only the user (and the system's own
accounts) may read it.

:func:`readers_besides_owner` is the rule, a pure function of the file's access-control
entries, so it is tested on any platform; :func:`file_readers` reads those entries from a
real file with the Win32 security API (Windows only).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass

#: accounts that may always read: LocalSystem, the Administrators group, TrustedInstaller
TRUSTED_SIDS = frozenset(
    {
        "S-1-5-18",
        "S-1-5-32-544",
        "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464",
    }
)
#: access bits that let a holder read the data (FILE_READ_DATA, GENERIC_READ, GENERIC_ALL,
#: MAXIMUM_ALLOWED)
READ_BITS = 0x0001 | 0x80000000 | 0x10000000 | 0x02000000
ACCESS_ALLOWED = 0


@dataclass(frozen=True, slots=True)
class Ace:
    """One access-control entry: its type (0 allows), the trustee's SID and the access mask."""

    type: int
    sid: str
    mask: int


def readers_besides_owner(aces: Iterable[Ace] | None, user_sid: str) -> list[str]:
    """SIDs other than ``user_sid`` and :data:`TRUSTED_SIDS` allowed to read; ``None``
    (a NULL DACL: no protection at all) reads as Everyone (``S-1-1-0``)."""
    if aces is None:
        return ["S-1-1-0"]
    found: list[str] = []
    for ace in aces:
        if ace.type != ACCESS_ALLOWED or not ace.mask & READ_BITS:
            continue
        if ace.sid == user_sid or ace.sid in TRUSTED_SIDS or ace.sid in found:
            continue
        found.append(ace.sid)
    return found


def fix_command(path: str) -> str:
    """The command that leaves only the user (full control) on ``path``."""
    return f'icacls "{path}" /inheritance:r /grant:r "%USERNAME%:F"'


if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    _advapi = ctypes.WinDLL("advapi32", use_last_error=True)
    _k32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _k32.GetCurrentProcess.restype = wintypes.HANDLE
    _k32.GetCurrentProcess.argtypes = []
    _k32.CloseHandle.argtypes = [wintypes.HANDLE]
    _k32.LocalFree.argtypes = [ctypes.c_void_p]
    _k32.LocalFree.restype = ctypes.c_void_p
    _advapi.OpenProcessToken.argtypes = [
        wintypes.HANDLE,
        wintypes.DWORD,
        ctypes.POINTER(wintypes.HANDLE),
    ]
    _advapi.GetTokenInformation.argtypes = [
        wintypes.HANDLE,
        ctypes.c_int,
        ctypes.c_void_p,
        wintypes.DWORD,
        ctypes.POINTER(wintypes.DWORD),
    ]
    _advapi.ConvertSidToStringSidW.argtypes = [ctypes.c_void_p, ctypes.POINTER(wintypes.LPWSTR)]
    _advapi.GetNamedSecurityInfoW.argtypes = [
        wintypes.LPCWSTR,
        ctypes.c_int,
        wintypes.DWORD,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_void_p),
    ]
    _advapi.GetNamedSecurityInfoW.restype = wintypes.DWORD
    _advapi.GetAclInformation.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        wintypes.DWORD,
        ctypes.c_int,
    ]
    _advapi.GetAce.argtypes = [ctypes.c_void_p, wintypes.DWORD, ctypes.POINTER(ctypes.c_void_p)]
    _SE_FILE_OBJECT = 1
    _DACL_SECURITY_INFORMATION = 4
    _TOKEN_QUERY = 0x0008
    _TOKEN_USER = 1
    _ACL_SIZE_INFORMATION = 2

    class _AceHeader(ctypes.Structure):
        _fields_ = [
            ("AceType", ctypes.c_ubyte),
            ("AceFlags", ctypes.c_ubyte),
            ("AceSize", ctypes.c_ushort),
        ]

    class _AllowedAce(ctypes.Structure):
        _fields_ = [("Header", _AceHeader), ("Mask", wintypes.DWORD), ("SidStart", wintypes.DWORD)]

    class _AclSizeInformation(ctypes.Structure):
        _fields_ = [
            ("AceCount", wintypes.DWORD),
            ("AclBytesInUse", wintypes.DWORD),
            ("AclBytesFree", wintypes.DWORD),
        ]

    def _sid_string(psid: int | None) -> str:
        out = wintypes.LPWSTR()
        if not _advapi.ConvertSidToStringSidW(psid, ctypes.byref(out)):
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            return str(out.value)
        finally:
            _k32.LocalFree(ctypes.cast(out, ctypes.c_void_p))

    def current_user_sid() -> str:
        """The SID of the user this process runs as."""
        token = wintypes.HANDLE()
        if not _advapi.OpenProcessToken(
            _k32.GetCurrentProcess(), _TOKEN_QUERY, ctypes.byref(token)
        ):
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            size = wintypes.DWORD()
            _advapi.GetTokenInformation(token, _TOKEN_USER, None, 0, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            if not _advapi.GetTokenInformation(token, _TOKEN_USER, buf, size, ctypes.byref(size)):
                raise ctypes.WinError(ctypes.get_last_error())
            # TOKEN_USER starts with SID_AND_ATTRIBUTES, whose first field is the SID pointer
            return _sid_string(ctypes.c_void_p.from_buffer(buf).value)
        finally:
            _k32.CloseHandle(token)

    def file_aces(path: str) -> list[Ace] | None:
        """The entries of ``path``'s DACL (None for a NULL DACL)."""
        dacl = ctypes.c_void_p()
        sd = ctypes.c_void_p()
        err = _advapi.GetNamedSecurityInfoW(
            path,
            _SE_FILE_OBJECT,
            _DACL_SECURITY_INFORMATION,
            None,
            None,
            ctypes.byref(dacl),
            None,
            ctypes.byref(sd),
        )
        if err:
            raise ctypes.WinError(err)
        try:
            if not dacl.value:
                return None
            info = _AclSizeInformation()
            if not _advapi.GetAclInformation(
                dacl, ctypes.byref(info), ctypes.sizeof(info), _ACL_SIZE_INFORMATION
            ):
                raise ctypes.WinError(ctypes.get_last_error())
            aces: list[Ace] = []
            for i in range(info.AceCount):
                pace = ctypes.c_void_p()
                if not _advapi.GetAce(dacl, i, ctypes.byref(pace)):
                    raise ctypes.WinError(ctypes.get_last_error())
                header = _AceHeader.from_address(pace.value or 0)
                if header.AceType not in (0, 1):  # allowed/denied; object ACEs not on files
                    continue
                ace = _AllowedAce.from_address(pace.value or 0)
                sid_addr = (pace.value or 0) + _AllowedAce.SidStart.offset
                aces.append(Ace(header.AceType, _sid_string(sid_addr), ace.Mask))
            return aces
        finally:
            _k32.LocalFree(sd)

    def acl_problem(path: str) -> str | None:
        """Why the file at ``path`` is readable by others, or None when only the user can."""
        others = readers_besides_owner(file_aces(path), current_user_sid())
        if not others:
            return None
        return (
            f"credentials file is readable by others ({', '.join(others)}); "
            f"fix it with: {fix_command(path)}"
        )
