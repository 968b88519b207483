"""``do_get`` plugins: a function that fetches a URL into a local file, as a transport.

A plugin's ``do_get(url, path)`` (see :mod:`sarra.flow.hooks`) is asked first for every
download. It returns True once it has written the whole object to ``path`` (a new empty file
sarra made for it), or None to leave that URL to sarra's own transport for its scheme (from
``FACTORIES``). sarra then reads the file it wrote like any other body: the length and the
checksum are verified and the file is placed by the usual path; the temporary file is removed
in every case.

This is how an accelerator (curl, wget, scp, a site-specific client) replaces the built-in
transfer for the files it chooses: by scheme, host or size.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

from sarra.flow.hooks import transfer_by_plugin
from sarra.transfer.base import Features, RemoteStat, Transport, read_range


class PluginGetTransport(Transport):
    """Asks the plugins' ``do_get`` first; falls back to ``builtin()`` (made on first use)."""

    features = Features(ranges=True)

    def __init__(
        self,
        fetch: Callable[[str, str], bool | None],
        builtin: Callable[[], Transport],
        tmpdir: str | None = None,
    ) -> None:
        self.fetch = fetch
        self._builtin_factory = builtin
        self._builtin: Transport | None = None
        self.tmpdir = tmpdir

    def builtin(self) -> Transport:
        if self._builtin is None:
            self._builtin = self._builtin_factory()
        return self._builtin

    def get(self, url: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        fd, tmp = tempfile.mkstemp(prefix=".sr-do_get-", dir=self.tmpdir)
        os.close(fd)
        try:
            handled = transfer_by_plugin(lambda: self.fetch(url, tmp), f"do_get plugin for {url}")
            if not handled:
                os.unlink(tmp)
                return self.builtin().get(url, offset, length)
            source = open(tmp, "rb")  # noqa: SIM115 (closed by the generator)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        os.unlink(tmp)  # the open descriptor keeps the data readable
        return _reading(source, offset, length)

    def stat(self, url: str) -> RemoteStat:
        """The built-in transport's answer (a do_get plugin only fetches)."""
        return self.builtin().stat(url)

    def close(self) -> None:
        if self._builtin is not None:
            self._builtin.close()

    def abort(self) -> None:
        if self._builtin is not None:
            self._builtin.abort()


def _reading(source: BinaryIO, offset: int, length: int | None) -> Iterator[bytes]:
    with source:
        yield from read_range(source, offset, length)
