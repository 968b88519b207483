"""What scheduler copies share through ZooKeeper (when ``zookeeper`` is set in ``[scheduler]``).

Under ``election_path`` (``/sarra/scheduler/<name>`` by default)::

    election/   kazoo Election contenders (ephemeral sequential nodes; lowest leads)
    state       the scheduler state document (sarra.scheduler.state), written by the leader only
    leader      ephemeral: {"address": "host:port", "copy": ...} of the leader's control endpoint
    token       the control token every copy and ``sr_scheduler status|reload|stop`` use
    stop        {"at", "by", "teardown"}: an operator's stop; every copy running then exits

The election is the fence: the leader writes ``state`` and ``leader`` in a transaction that
also checks its own election node still exists, so a copy whose session expired (and whose
node ZooKeeper removed) cannot overwrite what the new leader wrote; it is told it is
:class:`~sarra.scheduler.state.Deposed` instead.

Digest authentication (``zk_auth_file``: one line ``user:password``, mode 600): the session
authenticates with it and every node this module creates is readable and writable by that
identity only (``digest`` ACL), so the token and the state are not readable by other ZooKeeper
users. The password is never logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sarra.errors import LocalError, TransportUnavailable
from sarra.scheduler.spec import SchedulerSettings
from sarra.scheduler.state import Deposed, SchedulerState, decode, encode

log = logging.getLogger(__name__)


def read_zk_auth(path: str) -> tuple[str, str]:
    """(user, password) from a mode-600 ``zk_auth_file``; :class:`LocalError` says why not."""
    p = Path(path)
    try:
        if sys.platform != "win32" and os.stat(p).st_mode & 0o077:
            raise LocalError(f"zk_auth_file {p} is readable by other users: chmod 600 it")
        text = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8"
        raise LocalError(f"cannot read zk_auth_file {p}: {why}") from e
    user, sep, password = text.partition(":")
    if not sep or not user or not password or "\n" in text:
        raise LocalError(f"zk_auth_file {p} must hold one line user:password")
    return user, password


def zk_client(settings: SchedulerSettings, hosts: str | None = None) -> Any:
    """A (not started) KazooClient for ``settings``, authenticated when ``zk_auth_file`` is set."""
    from kazoo.client import KazooClient
    from kazoo.security import make_digest_acl

    kwargs: dict[str, Any] = {}
    if settings.zk_auth_file:
        user, password = read_zk_auth(settings.zk_auth_file)
        kwargs["auth_data"] = [("digest", f"{user}:{password}")]
        kwargs["default_acl"] = [make_digest_acl(user, password, all=True)]
    return KazooClient(
        hosts=hosts or settings.zookeeper, timeout=settings.zk_session_timeout, **kwargs
    )


class Shared:
    """The znodes of one pump's scheduler (paths under ``election_path``) on a started client."""

    def __init__(self, zk: Any, root: str) -> None:
        self.zk = zk
        self.root = root.rstrip("/")
        self.election = f"{self.root}/election"
        self.state = f"{self.root}/state"
        self.leader = f"{self.root}/leader"
        self.token = f"{self.root}/token"
        self.stop = f"{self.root}/stop"

    def ensure_token(self) -> str:
        """The shared control token, made (random) by the first copy that starts."""
        from kazoo.exceptions import NodeExistsError

        self.zk.ensure_path(self.root)
        with contextlib.suppress(NodeExistsError):  # another copy made it first: use theirs
            self.zk.create(self.token, (secrets.token_urlsafe(32) + "\n").encode())
        raw, _ = self.zk.get(self.token)
        token = str(raw.decode("ascii", "replace")).strip()
        if len(token) < 32:
            raise LocalError(f"control token in ZooKeeper at {self.token} is empty or too short")
        return token

    def read_token(self) -> str:
        from kazoo.exceptions import NoAuthError, NoNodeError

        try:
            raw, _ = self.zk.get(self.token)
        except NoNodeError as e:
            raise LocalError(
                f"no control token in ZooKeeper at {self.token}: has a copy ever run?"
            ) from e
        except NoAuthError as e:
            raise LocalError(
                f"ZooKeeper refuses to show {self.token}: set zk_auth_file to the scheduler's"
            ) from e
        return str(raw.decode("ascii", "replace")).strip()

    def leader_address(self) -> str | None:
        """``host:port`` of the leader's control endpoint, None while there is no leader."""
        from kazoo.exceptions import NoNodeError

        try:
            raw, _ = self.zk.get(self.leader)
        except NoNodeError:
            return None
        try:
            return str(json.loads(raw)["address"])
        except (ValueError, KeyError, TypeError):
            return None

    def request_stop(self, by: str, teardown: bool) -> None:
        """Tell every running copy to exit (an operator's stop)."""
        doc = {"at": time.time(), "by": by, "teardown": teardown}
        self.zk.ensure_path(self.root)
        data = json.dumps(doc).encode()
        if self.zk.exists(self.stop):
            self.zk.set(self.stop, data)
        else:
            self.zk.create(self.stop, data)

    def watch_stop(self, on_stop: Callable[[dict[str, Any]], None]) -> None:
        """Call ``on_stop`` when a stop is requested after now (not for an older one)."""
        seen: list[tuple[int, int] | None] = []

        def changed(data: bytes | None, stat: Any) -> None:
            version = None if stat is None else (stat.czxid, stat.version)
            if not seen:
                seen.append(version)  # the state at start: an older stop is not for us
                return
            if version is None or version == seen[0]:
                return
            seen[0] = version
            try:
                doc = json.loads(data or b"{}")
            except ValueError:
                doc = {}
            on_stop(doc if isinstance(doc, dict) else {})

        self.zk.DataWatch(self.stop, changed)


class ZkStateStore:
    """:class:`~sarra.scheduler.state.Store` in the ``state`` znode, fenced by the election.

    ``fence`` gives the path of this copy's election node (None when not leading); every write
    is a transaction that checks it still exists.
    """

    def __init__(self, shared: Shared, fence: Callable[[], str | None]) -> None:
        self.shared = shared
        self.fence = fence

    def load(self) -> SchedulerState:
        from kazoo.exceptions import KazooException, NoNodeError

        try:
            raw, _ = self.shared.zk.get(self.shared.state)
        except NoNodeError:
            return SchedulerState()
        except KazooException as e:
            raise TransportUnavailable(f"cannot read {self.shared.state} in ZooKeeper: {e}") from e
        if not raw:
            return SchedulerState()
        return decode(raw, f"znode {self.shared.state}")

    def save(self, state: SchedulerState) -> None:
        self.write(self.shared.state, encode(state), ephemeral=False)

    def write(self, path: str, data: bytes, ephemeral: bool) -> None:
        """Create or replace ``path`` with ``data`` while this copy holds the election."""
        from kazoo.exceptions import KazooException, NoNodeError

        node = self.fence()
        if node is None:
            raise Deposed(f"not the elected leader: {path} not written")
        zk = self.shared.zk
        try:
            exists = zk.exists(path)
            if exists is not None and exists.ephemeralOwner and not ephemeral:
                raise LocalError(f"{path} is an ephemeral znode")
            t = zk.transaction()
            t.check(node, 0)
            if exists is not None and ephemeral:
                t.delete(path)  # a leftover of an earlier leader: this copy's own now
            elif exists is not None:
                t.set_data(path, data)
            if exists is None or ephemeral:
                t.create(path, data, ephemeral=ephemeral)
            results = t.commit()
        except (KazooException, TimeoutError) as e:
            raise Deposed(f"cannot write {path} in ZooKeeper ({e!r}): stepping down") from e
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            if isinstance(failed[0], NoNodeError) and zk.exists(node) is None:
                raise Deposed(f"election node {node} is gone: another copy leads; not written")
            raise Deposed(f"writing {path} failed ({failed[0]!r}): stepping down")
