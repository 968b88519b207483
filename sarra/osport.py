"""The few POSIX calls sarra relies on, with their Windows equivalents.

On POSIX every name here is the system call itself, so behaviour there is unchanged. On
Windows (``sys.platform == "win32"``):

- :func:`pread`/:func:`pwrite` seek, read or write, and seek back under one process-wide lock
  (CRT descriptors have no positional I/O); every sarra descriptor is private to one object,
  so the lock only has to order threads of this process.
- :func:`lock` takes a LockFileEx lock on one byte far beyond any real data (Windows byte
  locks are mandatory, so locking real data would block other writers' I/O); like ``flock``
  it is released when the descriptor is closed or the process dies.
- :func:`fchmod` does nothing: Windows files have ACLs inherited from their directory
  instead of mode bits.
- Durability: ``os.fsync`` is the C runtime's ``_commit``, i.e. FlushFileBuffers (file data
  and the file's own metadata). :func:`replace` renames with MoveFileExW and
  ``MOVEFILE_WRITE_THROUGH``; :func:`fsync_dir` opens the directory
  (``FILE_FLAG_BACKUP_SEMANTICS``, write access) and calls FlushFileBuffers on it, which
  NTFS accepts; a file system that refuses to flush a directory (FAT, some network shares)
  makes it return False, and only the write-through rename is left there.
- :func:`pid_alive` asks OpenProcess/GetExitCodeProcess; ``os.kill(pid, 0)`` would call
  TerminateProcess there and kill the process it was meant to probe.
  :func:`process_started` gives a process's creation time (GetProcessTimes), which tells a
  reused pid apart from the process that wrote a pid file (Windows reuses pids quickly).
- :data:`O_BINARY` must be in every ``os.open`` flag set (no newline translation).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading

WINDOWS = sys.platform == "win32"

#: ``O_CLOEXEC`` where it exists (Python's descriptors are non-inheritable anyway)
O_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)
#: Windows: binary mode (no CRLF translation); 0 elsewhere
O_BINARY: int = getattr(os, "O_BINARY", 0)

if sys.platform == "win32":
    import ctypes
    import msvcrt
    from ctypes import wintypes

    _seek_lock = threading.Lock()

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        """Write ``data`` at ``offset``, leaving the descriptor's position where it was."""
        with _seek_lock:
            pos = os.lseek(fd, 0, os.SEEK_CUR)
            try:
                os.lseek(fd, offset, os.SEEK_SET)
                return os.write(fd, data)
            finally:
                os.lseek(fd, pos, os.SEEK_SET)

    def pread(fd: int, length: int, offset: int) -> bytes:
        """Read up to ``length`` bytes at ``offset``, leaving the position where it was."""
        with _seek_lock:
            pos = os.lseek(fd, 0, os.SEEK_CUR)
            try:
                os.lseek(fd, offset, os.SEEK_SET)
                return os.read(fd, length)
            finally:
                os.lseek(fd, pos, os.SEEK_SET)

    def fchmod(fd: int, mode: int) -> None:
        """Windows has no mode bits (the file inherits its directory's ACL)."""

    class _Overlapped(ctypes.Structure):
        _fields_ = [
            ("Internal", ctypes.c_void_p),
            ("InternalHigh", ctypes.c_void_p),
            ("Offset", wintypes.DWORD),
            ("OffsetHigh", wintypes.DWORD),
            ("hEvent", wintypes.HANDLE),
        ]

    _k32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _LockFileEx = _k32.LockFileEx
    _LockFileEx.argtypes = [
        wintypes.HANDLE,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.DWORD,
        ctypes.POINTER(_Overlapped),
    ]
    _LockFileEx.restype = wintypes.BOOL
    _UnlockFileEx = _k32.UnlockFileEx
    _UnlockFileEx.argtypes = [
        wintypes.HANDLE,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.DWORD,
        ctypes.POINTER(_Overlapped),
    ]
    _UnlockFileEx.restype = wintypes.BOOL
    _OpenProcess = _k32.OpenProcess
    _OpenProcess.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
    _OpenProcess.restype = wintypes.HANDLE
    _GetExitCodeProcess = _k32.GetExitCodeProcess
    _GetExitCodeProcess.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD)]
    _GetExitCodeProcess.restype = wintypes.BOOL
    _CloseHandle = _k32.CloseHandle
    _CloseHandle.argtypes = [wintypes.HANDLE]
    _CloseHandle.restype = wintypes.BOOL

    _GetProcessTimes = _k32.GetProcessTimes
    _GetProcessTimes.argtypes = [wintypes.HANDLE] + [ctypes.POINTER(ctypes.c_ulonglong)] * 4
    _GetProcessTimes.restype = wintypes.BOOL
    _FlushFileBuffers = _k32.FlushFileBuffers
    _FlushFileBuffers.argtypes = [wintypes.HANDLE]
    _FlushFileBuffers.restype = wintypes.BOOL
    _MoveFileExW = _k32.MoveFileExW
    _MoveFileExW.argtypes = [wintypes.LPCWSTR, wintypes.LPCWSTR, wintypes.DWORD]
    _MoveFileExW.restype = wintypes.BOOL
    _MOVEFILE_REPLACE_EXISTING, _MOVEFILE_WRITE_THROUGH = 0x1, 0x8

    _SetFileTime = _k32.SetFileTime
    _SetFileTime.argtypes = [wintypes.HANDLE, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    _SetFileTime.restype = wintypes.BOOL

    def futime(fd: int, mtime: float) -> None:
        """Set access and modification time of the open file ``fd`` (SetFileTime)."""
        # FILETIME: 100 ns units since 1601-01-01
        ticks = ctypes.c_ulonglong(int((mtime + 11644473600) * 10_000_000))
        ref = ctypes.byref(ticks)
        if not _SetFileTime(msvcrt.get_osfhandle(fd), None, ref, ref):
            raise ctypes.WinError(ctypes.get_last_error())

    _CreateFileW = _k32.CreateFileW
    _CreateFileW.argtypes = [
        wintypes.LPCWSTR,
        wintypes.DWORD,
        wintypes.DWORD,
        ctypes.c_void_p,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.HANDLE,
    ]
    _CreateFileW.restype = wintypes.HANDLE
    _INVALID_HANDLE = wintypes.HANDLE(-1).value
    _GENERIC_READ, _GENERIC_WRITE = 0x80000000, 0x40000000
    _SHARE_ALL = 0x1 | 0x2 | 0x4  # read, write, delete: others may rename or remove it
    _FILE_ATTRIBUTE_NORMAL = 0x80
    _FILE_FLAG_OPEN_REPARSE_POINT = 0x00200000

    def open_shared(path: str, flags: int, mode: int = 0o777) -> int:
        """``os.open`` with POSIX-like sharing: the file may be renamed over or removed while
        open (FILE_SHARE_DELETE, which the C runtime's open never asks for), and a final
        symlink or junction is opened itself, never followed (the O_NOFOLLOW of Windows).
        ``mode`` is ignored: the new file inherits its directory's ACL."""
        rw = flags & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
        access = {
            os.O_RDONLY: _GENERIC_READ,
            os.O_WRONLY: _GENERIC_WRITE,
            os.O_RDWR: _GENERIC_READ | _GENERIC_WRITE,
        }[rw]
        create, excl, trunc = (bool(flags & f) for f in (os.O_CREAT, os.O_EXCL, os.O_TRUNC))
        if create and excl:
            disposition = 1  # CREATE_NEW
        elif create and trunc:
            disposition = 2  # CREATE_ALWAYS
        elif create:
            disposition = 4  # OPEN_ALWAYS
        elif trunc:
            disposition = 5  # TRUNCATE_EXISTING
        else:
            disposition = 3  # OPEN_EXISTING
        handle = _CreateFileW(
            path,
            access,
            _SHARE_ALL,
            None,
            disposition,
            _FILE_ATTRIBUTE_NORMAL | _FILE_FLAG_OPEN_REPARSE_POINT,
            None,
        )
        if handle is None or handle == _INVALID_HANDLE:
            err = ctypes.get_last_error()
            raise OSError(None, ctypes.FormatError(err), path, err)
        crt_flags = (flags & os.O_APPEND) | (os.O_RDONLY if rw == os.O_RDONLY else 0)
        try:
            return msvcrt.open_osfhandle(handle, crt_flags)
        except OSError:
            _CloseHandle(handle)
            raise

    _FILE_FLAG_BACKUP_SEMANTICS = 0x02000000
    _OPEN_EXISTING = 3

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        """``os.replace`` that returns only once the rename is on disk
        (MoveFileExW with MOVEFILE_WRITE_THROUGH)."""
        if not _MoveFileExW(
            os.fspath(src), os.fspath(dst), _MOVEFILE_REPLACE_EXISTING | _MOVEFILE_WRITE_THROUGH
        ):
            err = ctypes.get_last_error()
            raise OSError(None, ctypes.FormatError(err), os.fspath(src), err, os.fspath(dst))

    def fsync_dir(path: str | os.PathLike[str]) -> bool:
        """Flush directory ``path``'s entries to disk (FlushFileBuffers on a directory
        handle). False if the file system refuses to flush a directory (then the
        write-through :func:`replace` is all there is); other errors are raised."""
        handle = _CreateFileW(
            os.fspath(path),
            _GENERIC_READ | _GENERIC_WRITE,
            _SHARE_ALL,
            None,
            _OPEN_EXISTING,
            _FILE_FLAG_BACKUP_SEMANTICS,
            None,
        )
        if handle is None or handle == _INVALID_HANDLE:
            err = ctypes.get_last_error()
            if err in _NO_DIR_FLUSH:
                return False
            raise OSError(None, ctypes.FormatError(err), os.fspath(path), err)
        try:
            if _FlushFileBuffers(handle):
                return True
            err = ctypes.get_last_error()
            if err in _NO_DIR_FLUSH:
                return False
            raise OSError(None, ctypes.FormatError(err), os.fspath(path), err)
        finally:
            _CloseHandle(handle)

    def process_started(pid: int) -> int | None:
        """Creation time of process ``pid`` (FILETIME ticks), None if it cannot be asked."""
        handle = _OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not handle:
            return None
        try:
            times = [ctypes.c_ulonglong() for _ in range(4)]
            if not _GetProcessTimes(handle, *(ctypes.byref(t) for t in times)):
                return None
            return times[0].value or None
        finally:
            _CloseHandle(handle)

    _TerminateProcess = _k32.TerminateProcess
    _TerminateProcess.argtypes = [wintypes.HANDLE, wintypes.UINT]
    _TerminateProcess.restype = wintypes.BOOL
    _PROCESS_TERMINATE = 0x0001

    def terminate_started(pid: int, started: int) -> bool:
        """Terminate process ``pid`` only if it was created at ``started``: the check and the
        termination go through one handle, so a pid reused in between is never hit. True if
        it was terminated."""
        handle = _OpenProcess(_PROCESS_TERMINATE | _PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not handle:
            return False
        try:
            times = [ctypes.c_ulonglong() for _ in range(4)]
            if not _GetProcessTimes(handle, *(ctypes.byref(t) for t in times)):
                return False
            if times[0].value != started:
                return False
            return bool(_TerminateProcess(handle, 1))
        finally:
            _CloseHandle(handle)

    _LOCKFILE_FAIL_IMMEDIATELY = 0x1
    _LOCKFILE_EXCLUSIVE_LOCK = 0x2
    _ERROR_ACCESS_DENIED = 5
    _ERROR_LOCK_VIOLATION = 33
    _PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
    _STILL_ACTIVE = 259
    #: access denied, invalid function, not supported, invalid parameter: the file system
    #: does not open or flush directories that way
    _NO_DIR_FLUSH = frozenset({5, 1, 50, 87})

    def _lock_range() -> _Overlapped:
        # one byte at 2**63 - 2: past any file's data, so no real read or write is blocked
        return _Overlapped(None, None, 0xFFFFFFFE, 0x7FFFFFFF, None)

    def lock(fd: int, *, exclusive: bool, blocking: bool = True) -> None:
        """Lock ``fd`` (shared or exclusive); BlockingIOError if held and not ``blocking``."""
        flags = (_LOCKFILE_EXCLUSIVE_LOCK if exclusive else 0) | (
            0 if blocking else _LOCKFILE_FAIL_IMMEDIATELY
        )
        handle = msvcrt.get_osfhandle(fd)
        if not _LockFileEx(handle, flags, 0, 1, 0, ctypes.byref(_lock_range())):
            err = ctypes.get_last_error()
            if err == _ERROR_LOCK_VIOLATION:
                raise BlockingIOError(err, "the file is locked by another holder")
            raise ctypes.WinError(err)

    def unlock(fd: int) -> None:
        """Release this descriptor's lock."""
        handle = msvcrt.get_osfhandle(fd)
        if not _UnlockFileEx(handle, 0, 1, 0, ctypes.byref(_lock_range())):
            raise ctypes.WinError(ctypes.get_last_error())

    def pid_alive(pid: int) -> bool:
        """True while process ``pid`` exists and has not exited (never signals it)."""
        handle = _OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not handle:
            return ctypes.get_last_error() == _ERROR_ACCESS_DENIED  # exists, not ours
        try:
            code = wintypes.DWORD()
            if not _GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == _STILL_ACTIVE
        finally:
            _CloseHandle(handle)

else:
    import fcntl

    pwrite = os.pwrite
    pread = os.pread
    fchmod = os.fchmod
    open_shared = os.open
    replace = os.replace

    def futime(fd: int, mtime: float) -> None:
        """Set access and modification time of the open file ``fd``."""
        os.utime(fd, (mtime, mtime))

    def fsync_dir(path: str | os.PathLike[str]) -> bool:
        """fsync directory ``path`` (makes a rename or creation in it durable); True."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def process_started(pid: int) -> int | None:
        """None: on POSIX a pid file is checked against the process's command line."""
        return None

    def lock(fd: int, *, exclusive: bool, blocking: bool = True) -> None:
        """``flock`` ``fd``; BlockingIOError if held elsewhere and not ``blocking``."""
        op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        fcntl.flock(fd, op if blocking else op | fcntl.LOCK_NB)

    def unlock(fd: int) -> None:
        """Release this descriptor's ``flock``."""
        fcntl.flock(fd, fcntl.LOCK_UN)

    def pid_alive(pid: int) -> bool:
        """True while process ``pid`` exists (signal 0: nothing is delivered)."""
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class Wakeup:
    """A self-pipe another thread can wake a ``select`` with: a pipe on POSIX, a socket pair
    on Windows (whose ``select`` takes only sockets)."""

    def __init__(self) -> None:
        if sys.platform == "win32":
            self._socks = socket.socketpair()
            for sock in self._socks:
                sock.setblocking(False)
            self._r, self._w = (sock.fileno() for sock in self._socks)
        else:
            self._r, self._w = os.pipe()
            os.set_blocking(self._r, False)
            os.set_blocking(self._w, False)

    def fileno(self) -> int:
        """The end to wait on with ``select``."""
        return self._r

    def wake(self) -> None:
        """Make the read end readable (never blocks; a full pipe is awake already)."""
        with contextlib.suppress(BlockingIOError):
            if sys.platform == "win32":
                self._socks[1].send(b"!")
            else:
                os.write(self._w, b"!")

    def drain(self) -> None:
        """Consume the pending wake-ups."""
        with contextlib.suppress(BlockingIOError):
            if sys.platform == "win32":
                self._socks[0].recv(4096)
            else:
                os.read(self._r, 4096)

    def close(self) -> None:
        if sys.platform == "win32":
            for sock in self._socks:
                sock.close()
        else:
            os.close(self._r)
            os.close(self._w)
