"""One set of cases for the Transport contract, run on every transport against a real server.

file (the local file system), http and https (nginx; https with a throwaway test CA), sftp
(sshd), ftp and ftps (explicit TLS), each passive and active (pyftpdlib). What a transport
cannot do is read from its ``features``: a flagged operation must work, an unflagged one must
raise UnsupportedOperation. Transport-specific behaviour (http faults, sftp sessions and host
keys, ftp fallbacks) stays in test_transfer_http.py / test_transfer_sftp.py /
test_transfer_ftp.py.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sarra.config.credentials import Credential, parse_url
from sarra.errors import (
    AuthenticationFailed,
    HostilePath,
    IntegrityError,
    NotFound,
    PolicyRefused,
    TransportUnavailable,
    UnsupportedOperation,
)
from sarra.transfer import Transport, open_transport
from sarra.transfer.base import CHUNK_SIZE, OPTIONAL_OPERATIONS
from sarra.transfer.chunks import aligned_chunks
from sarra.transfer.url import retrieval_url
from tests.servers.ftpd import Ftpd
from tests.servers.nginx import Nginx, free_port
from tests.servers.sshd import Sshd

pytestmark = pytest.mark.servers

#: several chunks, not a multiple of the chunk size
DATA = os.urandom(2 * CHUNK_SIZE + 54321)
AWKWARD = "sp ace#hash é 100%.bin"


@dataclass
class Kit:
    """How to reach one transport's server, and where its files are on local disk."""

    name: str
    #: local directory the server serves (and writes into), seen directly by the test
    root: Path
    open: Callable[[Credential | None], Transport]
    #: the credential that works (None: the transport needs none)
    good: Credential | None
    #: a credential the server refuses; None: this transport has no credentials at all
    bad: Credential | None
    #: the URL a transport fetches a local file under ``root`` by
    url: Callable[[Path], str]
    #: the same with the last segments literally ``..``-escaped (for confinement)
    escape: str
    #: a URL of another origin
    foreign: str
    #: a file only the good credential may read (None: the transport has no credentials)
    protected: Path | None = None
    #: the server path of a local path (None: the local path itself)
    server_path: Callable[[Path], str] | None = None

    def remote(self, path: Path) -> str:
        """The remote-path argument of put/rename/delete/mkdirs for a local path."""
        if self.name in ("http", "https"):
            return self.url(path)
        return self.server_path(path) if self.server_path is not None else str(path)


def _file_kit(tmp: Path) -> Kit:
    root = tmp / "file-root"
    root.mkdir()
    return Kit(
        name="file",
        root=root,
        open=lambda cred: open_transport("file:", credentials=cred, timeout=10),
        good=None,
        bad=None,
        url=lambda p: retrieval_url("file:", str(p).lstrip("/")),
        escape=f"file:{root}/a/../../etc/passwd",
        foreign=f"http://127.0.0.1:{free_port()}/x",
    )


def _http_kit(nginx: Nginx, tls: bool) -> Kit:
    base = nginx.https_base_url if tls else nginx.base_url
    name = "https" if tls else "http"
    # under /listing/: nginx lists directories there (autoindex), which listdir reads
    root = nginx.root / "listing" / f"conformance-{name}"
    root.mkdir(parents=True, exist_ok=True)
    private = nginx.root / "private"
    private.mkdir(exist_ok=True)
    (private / f"{name}.bin").write_bytes(DATA)
    host = base.split("://", 1)[1]

    def opener(cred: Credential | None) -> Transport:
        return open_transport(base, credentials=cred, timeout=10, ca_file=str(nginx.ca_file))

    return Kit(
        name=name,
        root=root,
        open=opener,
        good=Credential(parse_url(f"{name}://{nginx.auth_user}:{nginx.auth_password}@{host}")),
        bad=Credential(parse_url(f"{name}://{nginx.auth_user}:wrong@{host}")),
        url=lambda p: retrieval_url(base, str(p.relative_to(nginx.root))),
        escape=f"{base}/listing/{root.name}/../../../etc/passwd",
        foreign=f"{name}://127.0.0.1:{free_port()}/x",
        protected=private / f"{name}.bin",
    )


def _sftp_kit(sshd: Sshd, tmp: Path) -> Kit:
    root = sshd.root_dir / "conformance"
    root.mkdir(exist_ok=True)
    stranger = tmp / "stranger_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
        check=True,
        capture_output=True,
    )
    options = {"known_hosts": str(tmp / "known_hosts")}

    def key(path: Path) -> Credential:
        return Credential(parse_url("sftp://root@127.0.0.1"), ssh_keyfile=str(path))

    return Kit(
        name="sftp",
        root=root,
        open=lambda cred: open_transport(sshd.url, credentials=cred, timeout=10, options=options),
        good=key(sshd.key_path),
        bad=key(stranger),
        url=lambda p: retrieval_url(sshd.url, str(p), rel_path_absolute=True),
        escape=f"{sshd.url}{root}/../../etc/passwd",
        foreign=f"sftp://root@127.0.0.1:{free_port()}/x",
        protected=root / "data.bin",
    )


def _ftp_kit(ftpd: Ftpd, name: str, passive: bool) -> Kit:
    root = ftpd.root / f"conformance-{name}"
    root.mkdir(exist_ok=True)
    host = f"127.0.0.1:{ftpd.port}"
    ca_file = str(ftpd.ca_file) if ftpd.ca_file else None

    def credential(password: str) -> Credential:
        url = parse_url(f"{ftpd.scheme}://{ftpd.user}:{password}@{host}")
        return Credential(url, passive=passive)

    def opener(cred: Credential | None) -> Transport:
        return open_transport(ftpd.url, credentials=cred, timeout=10, ca_file=ca_file)

    def server_path(p: Path) -> str:
        return "/" + str(p.relative_to(ftpd.root))

    return Kit(
        name=name,
        root=root,
        open=opener,
        good=credential(ftpd.password),
        bad=credential("wrong"),
        url=lambda p: retrieval_url(ftpd.url, server_path(p)),
        escape=f"{ftpd.url}/{root.name}/../../etc/passwd",
        foreign=f"{ftpd.scheme}://{ftpd.user}@127.0.0.1:{free_port()}/x",
        protected=root / "data.bin",
        server_path=server_path,
    )


KITS = ["file", "http", "https", "sftp", "ftp", "ftp-active", "ftps", "ftps-active"]


@pytest.fixture(scope="module", params=KITS)
def kit(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Kit:
    tmp = tmp_path_factory.mktemp(f"conformance-{request.param}")
    if request.param == "file":
        made = _file_kit(tmp)
    elif request.param in ("http", "https"):
        made = _http_kit(request.getfixturevalue("nginx"), request.param == "https")
    elif request.param.startswith("ftp"):
        server = request.getfixturevalue("ftpsd" if request.param.startswith("ftps") else "ftpd")
        made = _ftp_kit(server, request.param, passive=not request.param.endswith("-active"))
    else:
        made = _sftp_kit(request.getfixturevalue("sshd"), tmp)
    (made.root / "data.bin").write_bytes(DATA)
    (made.root / AWKWARD).write_bytes(AWKWARD.encode())
    return made


@pytest.fixture
def transport(kit: Kit) -> Iterator[Transport]:
    made = kit.open(kit.good)
    yield made
    made.close()


@pytest.fixture
def scratch(kit: Kit) -> Path:
    """A fresh, empty directory under the kit's root for writes."""
    path = kit.root / f"w-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


@pytest.fixture
def local(tmp_path: Path) -> Path:
    path = tmp_path / "local.bin"
    path.write_bytes(DATA)
    return path


# -- reading --------------------------------------------------------------------------------


def test_get_returns_the_whole_file(kit: Kit, transport: Transport) -> None:
    chunks = list(transport.get(kit.url(kit.root / "data.bin")))
    assert b"".join(chunks) == DATA
    assert all(0 < len(c) <= CHUNK_SIZE for c in chunks)


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, 1000), (CHUNK_SIZE - 7, CHUNK_SIZE + 100), (len(DATA) - 5, 5), (CHUNK_SIZE, None)],
    ids=["first", "straddling", "last", "open-ended"],
)
def test_get_returns_exactly_the_range(
    kit: Kit, transport: Transport, offset: int, length: int | None
) -> None:
    assert transport.features.ranges
    data = b"".join(transport.get(kit.url(kit.root / "data.bin"), offset, length))
    end = len(DATA) if length is None else offset + length
    assert data == DATA[offset:end]


def test_a_range_past_the_end_is_an_integrity_error(kit: Kit, transport: Transport) -> None:
    with pytest.raises(IntegrityError):
        b"".join(transport.get(kit.url(kit.root / "data.bin"), len(DATA) - 5, 10))


def test_get_into_fills_the_buffers_in_turn_or_is_unsupported(
    kit: Kit, transport: Transport
) -> None:
    url = kit.url(kit.root / "data.bin")
    buffers = [memoryview(bytearray(300_000)) for _ in range(2)]
    if not transport.features.get_into:
        with pytest.raises(UnsupportedOperation):
            transport.get_into(url, buffers, 0, 10)
        return
    got, owners = bytearray(), []
    for view in transport.get_into(url, buffers, CHUNK_SIZE - 1, CHUNK_SIZE + 2):
        got += view  # copy now: the buffer comes round again two chunks later
        owners.append(view.obj)
    assert bytes(got) == DATA[CHUNK_SIZE - 1 : 2 * CHUNK_SIZE + 1]
    assert owners == [buffers[i % 2].obj for i in range(len(owners))]


def test_aligned_chunks_work_whatever_the_get_into_feature(kit: Kit, transport: Transport) -> None:
    # the streaming path reads features.get_into to choose get_into or a copying get
    chunks = aligned_chunks(transport, kit.url(kit.root / "data.bin"), 100, CHUNK_SIZE + 50)
    assert b"".join(bytes(c) for c in chunks) == DATA[100 : CHUNK_SIZE + 150]


def test_awkward_names_are_fetched_as_named(kit: Kit, transport: Transport) -> None:
    assert b"".join(transport.get(kit.url(kit.root / AWKWARD))) == AWKWARD.encode()


def test_stat_gives_size_and_mtime(kit: Kit, transport: Transport) -> None:
    st = transport.stat(kit.url(kit.root / "data.bin"))
    assert st.size == len(DATA)
    assert st.mtime is not None
    # http's Last-Modified has whole seconds
    assert abs(st.mtime - (kit.root / "data.bin").stat().st_mtime) < 1


def test_a_missing_file_is_not_found_and_not_retryable(kit: Kit, transport: Transport) -> None:
    missing = kit.url(kit.root / "no" / "such.bin")
    with pytest.raises(NotFound) as caught:
        transport.get(missing)
    assert not caught.value.retryable
    with pytest.raises(NotFound):
        transport.stat(missing)


# -- writing: each operation works when flagged, is UnsupportedOperation when not ----------


def test_put_replaces_a_whole_file_or_is_unsupported(
    kit: Kit, transport: Transport, scratch: Path, local: Path
) -> None:
    target = scratch / "out.bin"
    if not transport.features.put:
        with pytest.raises(UnsupportedOperation):
            transport.put(str(local), kit.remote(target))
        return
    target.write_bytes(b"an older, longer version " * 200_000)
    assert transport.put(str(local), kit.remote(target)) == len(DATA)
    assert target.read_bytes() == DATA


def test_ranged_puts_in_any_order_assemble_the_file(
    kit: Kit, transport: Transport, scratch: Path, local: Path
) -> None:
    target = scratch / "parts.bin"
    if not transport.features.put_ranges:
        with pytest.raises(UnsupportedOperation):
            transport.put(str(local), kit.remote(target), 0, 10)
        with pytest.raises(UnsupportedOperation):
            transport.put(str(local), kit.remote(target), 10)
        assert not target.exists()
        return
    step = CHUNK_SIZE - 1000
    blocks = [(o, min(step, len(DATA) - o)) for o in range(0, len(DATA), step)]
    for offset, length in reversed(blocks):
        assert transport.put(str(local), kit.remote(target), offset, length) == length
    assert target.read_bytes() == DATA


def test_rename_replaces_the_target_or_is_unsupported(
    kit: Kit, transport: Transport, scratch: Path
) -> None:
    old, new = scratch / "f.tmp", scratch / "f é.bin"
    old.write_bytes(b"new")
    new.write_bytes(b"old version")
    if not transport.features.rename:
        with pytest.raises(UnsupportedOperation):
            transport.rename(kit.remote(old), kit.remote(new))
        assert new.read_bytes() == b"old version"
        return
    transport.rename(kit.remote(old), kit.remote(new))
    assert new.read_bytes() == b"new"
    assert not old.exists()


def test_delete_removes_or_is_unsupported(kit: Kit, transport: Transport, scratch: Path) -> None:
    victim = scratch / "victim"
    victim.write_bytes(b"x")
    if not transport.features.delete:
        with pytest.raises(UnsupportedOperation):
            transport.delete(kit.remote(victim))
        assert victim.exists()
        return
    transport.delete(kit.remote(victim))
    assert not victim.exists()
    with pytest.raises(NotFound):
        transport.delete(kit.remote(victim))
    transport.delete(kit.remote(scratch))  # an empty directory
    assert not scratch.exists()


def test_mkdirs_makes_parents_and_accepts_existing_or_is_unsupported(
    kit: Kit, transport: Transport, scratch: Path
) -> None:
    deep = scratch / "a" / "b" / "c"
    if not transport.features.mkdirs:
        with pytest.raises(UnsupportedOperation):
            transport.mkdirs(kit.remote(deep))
        assert not (scratch / "a").exists()
        return
    transport.mkdirs(kit.remote(deep))
    transport.mkdirs(kit.remote(deep))  # existing directories are fine
    assert deep.is_dir()


def test_features_match_behaviour(
    kit: Kit, transport: Transport, scratch: Path, local: Path
) -> None:
    """Every optional operation raises UnsupportedOperation exactly when its flag is false."""
    (scratch / "x").write_bytes(b"x")
    buffers = [memoryview(bytearray(4096))]
    calls: dict[str, Callable[[], object]] = {
        "get_into": lambda: list(transport.get_into(kit.url(kit.root / "data.bin"), buffers)),
        "put": lambda: transport.put(str(local), kit.remote(scratch / "p")),
        "rename": lambda: transport.rename(kit.remote(scratch / "x"), kit.remote(scratch / "y")),
        "mkdirs": lambda: transport.mkdirs(kit.remote(scratch / "d")),
        "delete": lambda: transport.delete(kit.remote(scratch / "p")),
        "listdir": lambda: transport.listdir(kit.url(scratch)),
    }
    assert set(calls) == set(OPTIONAL_OPERATIONS)
    for name, call in calls.items():
        if getattr(transport.features, name):
            call()  # must not raise
        else:
            with pytest.raises(UnsupportedOperation):
                call()
    assert transport.features.ranges  # every transport here serves ranges
    assert b"".join(transport.get(kit.url(kit.root / "data.bin"), 1, 2)) == DATA[1:3]


# -- confinement, origins, credentials, lifecycle -------------------------------------------


def test_a_path_escaping_with_dotdot_is_refused_before_any_io(
    kit: Kit, transport: Transport, local: Path
) -> None:
    with pytest.raises(HostilePath):
        transport.get(kit.escape)
    with pytest.raises(HostilePath):
        transport.stat(kit.escape)
    if transport.features.put:
        outside = str(kit.root / ".." / f"escaped-{uuid.uuid4().hex[:8]}")
        with pytest.raises(HostilePath):
            transport.put(str(local), outside)
        assert not os.path.exists(outside)


def test_a_url_of_another_origin_is_refused(kit: Kit, transport: Transport) -> None:
    with pytest.raises(PolicyRefused):
        transport.get(kit.foreign)
    with pytest.raises(PolicyRefused):
        transport.stat(kit.foreign)


def test_listdir_gives_names_sizes_and_mtimes_or_is_unsupported(
    kit: Kit, transport: Transport, scratch: Path
) -> None:
    (scratch / AWKWARD).write_bytes(b"12345")
    (scratch / "sub").mkdir()
    if not transport.features.listdir:
        with pytest.raises(UnsupportedOperation):
            transport.listdir(kit.url(scratch))
        return
    entries = {e.name: e for e in transport.listdir(kit.url(scratch))}
    assert set(entries) == {AWKWARD, "sub"}
    assert entries[AWKWARD].size == 5 and not entries[AWKWARD].is_dir
    mtime = entries[AWKWARD].mtime
    # index pages show the minute (nginx autoindex), the other listings the second or better
    precision = 60 if kit.name in ("http", "https") else 1
    assert mtime is not None and abs(mtime - (scratch / AWKWARD).stat().st_mtime) < precision
    assert entries["sub"].is_dir


# the file transport takes no credentials: only the others are asked
@pytest.mark.parametrize("kit", ["http", "https", "sftp", "ftp", "ftps"], indirect=True)
def test_wrong_credentials_are_an_authentication_failure(kit: Kit) -> None:
    assert kit.bad is not None and kit.protected is not None
    url = kit.url(kit.protected)
    with kit.open(kit.bad) as refused, pytest.raises(AuthenticationFailed) as caught:
        refused.stat(url)
    assert not caught.value.retryable
    with kit.open(kit.good) as accepted:
        assert accepted.stat(url).size == len(DATA)
        assert b"".join(accepted.get(url, 0, 10)) == DATA[:10]


def test_a_closed_transport_refuses_work(kit: Kit) -> None:
    closed = kit.open(kit.good)
    closed.close()
    with pytest.raises(TransportUnavailable):
        closed.get(kit.url(kit.root / "data.bin"))
    with pytest.raises(TransportUnavailable):
        closed.stat(kit.url(kit.root / "data.bin"))
