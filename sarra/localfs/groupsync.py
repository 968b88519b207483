"""Group commit of file-system barriers between the instances of one configuration.

Every instance of a subscriber ends each batch with two barriers on its destination's file
system: its new files' data (before the renames) and then the renames (directory fsyncs).
On a journalled disk file system each is a journal commit, and commits run one at a time for
the whole file system: two instances that each force their own commits take turns, so a
second instance adds little (a commit made for one carries few of the other's files).

Here the instances share barriers instead. :meth:`GroupSync.barrier` ensures that a
``syncfs(2)`` of the file system, *started after the caller's writes had ended*, has
completed. ``syncfs`` writes back every dirty page of the file system and commits its journal,
so one call covers the pending files of every instance. The state shared by the instances is
one small record per file system in the configuration's state directory
(``syncfs_<dev>.state``), read and written only under an exclusive ``flock`` of that file:

* take the lock (waiting while another instance runs its ``syncfs``, which holds it);
* if the record says a ``syncfs`` that started at or after ``written`` (our writes' end,
  ``CLOCK_MONOTONIC``, which is system-wide) has completed, in this boot
  (``/proc/sys/kernel/random/boot_id``, since the clock restarts at each boot) and on this
  device: release, nothing to do;
* else note the time, run ``syncfs``, and only once it has returned without error write
  ``completed <that start time>`` into the record; release.

Correctness does not rest on the record. The callers still ``fsync`` every file and
directory of theirs afterwards (:func:`sarra.localfs.confined.sync_files`,
:meth:`sarra.localfs.confined.SafeRoot.sync_dirs`): that is what makes their data and names
durable and what reports their own write-back errors. After the shared ``syncfs`` those
fsyncs find nothing left to write and a journal already committed, so they return at once.
The record only decides whether this instance must pay for a ``syncfs`` itself. The crash
windows:

* an instance dies holding the lock, before or during its ``syncfs``: the kernel releases the
  lock; the record still names the last *completed* ``syncfs`` (the start time of the
  unfinished one is never written as completed), so nobody skips on its account;
* it dies while rewriting the record: the record may be torn; an unreadable record counts
  as "no ``syncfs`` completed", so the next caller runs its own;
* the machine crashes: the record is not made durable and after the reboot its boot id
  differs, so its times (of a clock that restarted) are ignored;
* ``syncfs`` fails: no completion is recorded and :class:`~sarra.errors.LocalError` is raised;
  the batch is not placed and its acks wait, as when an fsync fails.

A wrong skip could therefore only cost time: the per-file fsyncs that follow would do the
writing themselves. Nothing here is used on a platform without ``syncfs`` (anything but
Linux), nor with ``sync_barrier files``. A single instance uses it too (the default,
``sync_barrier filesystem``): one ``syncfs`` writes the batch back in one pass and one journal
commit, where the per-file fsyncs alone cost a commit every few files and the thread
hand-offs of running them concurrently. Measured on this project's 2-core VM and ext4 disk
(``bench/run pump``, 1000 files): the sarra's system CPU for the run fell from 0.98 s to
0.44-0.47 s, and the flow went from 457 to 610-635 files/s. The price is that a ``syncfs``
also writes back what other programs left unwritten on that file system, and waits for it:
where another writer keeps much data dirty there, ``sync_barrier files`` avoids that wait.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sarra.errors import LocalError

if sys.platform != "win32":
    import fcntl

    def _lock_and_read(fd: int) -> bytes:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another process runs its syncfs
        return os.pread(fd, 256, 0)

    def _rewrite(fd: int, record: bytes) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)

    def _open_dir(path: Path) -> int:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    _STATE_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
else:  # never used there (:func:`available`)

    def _lock_and_read(fd: int) -> bytes:
        raise OSError("no group sync on Windows")

    def _rewrite(fd: int, record: bytes) -> None:
        raise OSError("no group sync on Windows")

    def _open_dir(path: Path) -> int:
        raise OSError("no group sync on Windows")

    _STATE_FLAGS = 0


def _find_syncfs() -> Callable[[int], int] | None:
    """libc's Linux ``syncfs(2)``, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # the process's own symbols, libc's among them (ctypes.util.find_library would run
        # ``ldconfig -p`` in a child process: a fork of the whole subscriber at every start)
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SYNCFS = _find_syncfs()


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def available() -> bool:
    """Whether group commits can be made here (Linux ``syncfs`` and a boot id)."""
    return _SYNCFS is not None and bool(_BOOT_ID)


_BOOT_ID = _boot_id()


def _syncfs(fd: int) -> None:
    assert _SYNCFS is not None
    if _SYNCFS(fd) != 0:
        err = ctypes.get_errno()
        raise LocalError(f"syncfs: {os.strerror(err)}")


class GroupSync:
    """Shared ``syncfs`` barriers of the processes using ``state_dir`` (see the module)."""

    def __init__(self, state_dir: Path, syncfs: Callable[[int], None] = _syncfs) -> None:
        self.state_dir = Path(state_dir)
        self._syncfs = syncfs
        #: barriers this process ran itself, and those another process's syncfs covered
        self.ran = 0
        self.shared = 0

    def _path(self, dev: int) -> Path:
        return self.state_dir / f"syncfs_{dev:x}.state"

    @staticmethod
    def _completed(text: str, dev: int) -> int | None:
        """The start (ns) of the last completed syncfs in the record, if it is of this boot
        and device and well formed."""
        fields = text.split()
        if len(fields) != 4 or fields[0] != _BOOT_ID or fields[1] != f"{dev:x}":
            return None
        if fields[2] != "completed":
            return None
        try:
            return int(fields[3])
        except ValueError:
            return None

    def barrier(self, fd: int, written: int) -> bool:
        """Return once a ``syncfs`` of ``fd``'s file system that started at or after
        ``written`` (``time.monotonic_ns()`` taken after the caller's last write) has
        completed. Returns True if this call ran it, False if another one covered it.

        Raises:
            LocalError: ``syncfs`` or the state file failed.
        """
        dev = os.fstat(fd).st_dev
        try:
            lock = os.open(self._path(dev), _STATE_FLAGS, 0o600)
        except OSError as e:
            raise LocalError(f"group sync state {self._path(dev)}: {e}") from e
        try:
            done = self._completed(_lock_and_read(lock).decode("ascii", "replace"), dev)
            if done is not None and done >= written:
                self.shared += 1
                return False
            started = time.monotonic_ns()
            self._syncfs(fd)
            record = f"{_BOOT_ID} {dev:x} completed {started}\n".encode("ascii")
            _rewrite(lock, record)
            self.ran += 1
            return True
        except OSError as e:
            raise LocalError(f"group sync: {e}") from e
        finally:
            os.close(lock)  # releases the lock

    def barrier_dir(self, path: Path, written: int) -> bool:
        """:meth:`barrier` for the file system of the directory ``path``."""
        try:
            fd = _open_dir(path)
        except OSError as e:
            raise LocalError(f"open {path}: {e}") from e
        try:
            return self.barrier(fd, written)
        finally:
            os.close(fd)
