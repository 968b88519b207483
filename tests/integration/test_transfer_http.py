"""HttpTransport against a real nginx and the fault-injecting broken_http server."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from sarra.config.credentials import Credential, parse_url
from sarra.errors import (
    IntegrityError,
    NotFound,
    RemoteRefused,
    TransferError,
    TransportUnavailable,
)
from sarra.transfer import open_transport
from sarra.transfer.http import CHUNK_SIZE, HttpTransport
from sarra.transfer.url import retrieval_url
from tests.servers.nginx import BrokenHttp, Nginx

pytestmark = pytest.mark.servers

BLOCK = 1 << 20
DATA = os.urandom(3 * BLOCK + 12345)


@pytest.fixture(scope="module")
def served(nginx: Nginx) -> str:
    """Put the test file into nginx's root; return its logical path."""
    (nginx.root / "a").mkdir(exist_ok=True)
    (nginx.root / "a" / "big.bin").write_bytes(DATA)
    return "a/big.bin"


@pytest.fixture
def http(nginx: Nginx) -> Iterator[HttpTransport]:
    transport = HttpTransport(nginx.base_url, timeout=10)
    yield transport
    transport.close()


def test_a_whole_file_is_fetched_in_one_mebibyte_chunks(
    nginx: Nginx, served: str, http: HttpTransport
) -> None:
    chunks = list(http.get(retrieval_url(nginx.base_url, served)))
    assert b"".join(chunks) == DATA
    assert [len(c) for c in chunks[:-1]] == [CHUNK_SIZE] * (len(chunks) - 1)


def test_many_sequential_gets_reuse_one_connection(
    nginx: Nginx, served: str, http: HttpTransport
) -> None:
    url = retrieval_url(nginx.base_url, served)
    for i in range(40):
        assert b"".join(http.get(url, i * 1000, 1000)) == DATA[i * 1000 : (i + 1) * 1000]
    assert http.stat(url).size == len(DATA)
    with pytest.raises(NotFound):
        http.get(retrieval_url(nginx.base_url, "a/missing"))
    assert b"".join(http.get(url, 0, 10)) == DATA[:10]
    assert http.connections_made == 1


def test_an_abandoned_body_does_not_poison_the_next_request(
    nginx: Nginx, served: str, http: HttpTransport
) -> None:
    url = retrieval_url(nginx.base_url, served)
    body = http.get(url)
    next(body)  # read one chunk of four, then walk away
    assert b"".join(http.get(url, 5, 5)) == DATA[5:10]
    body.close()
    assert b"".join(http.get(url, 7, 3)) == DATA[7:10]


def test_https_verifies_certificates_unless_told_otherwise(nginx: Nginx, served: str) -> None:
    url = retrieval_url(nginx.https_base_url, served)
    with closing(open_transport(url, timeout=10)) as strict, pytest.raises(TransferError) as err:
        strict.get(url, 0, 10)
    assert "TLS verification failed" in str(err.value)
    assert not err.value.retryable
    with closing(open_transport(url, timeout=10, ca_file=str(nginx.ca_file))) as trusted:
        assert b"".join(trusted.get(url, 0, 10)) == DATA[:10]
    with closing(open_transport(url, timeout=10, tls_verify=False)) as relaxed:
        assert b"".join(relaxed.get(url, BLOCK, BLOCK)) == DATA[BLOCK : 2 * BLOCK]


# -- faults -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faulty(broken_http: BrokenHttp) -> BrokenHttp:
    (broken_http.root / "f.bin").write_bytes(DATA)
    return broken_http


@pytest.fixture
def bhttp(faulty: BrokenHttp) -> Iterator[HttpTransport]:
    transport = HttpTransport(faulty.base_url, timeout=10)
    yield transport
    transport.close()


def test_the_fault_server_serves_ranges_properly(faulty: BrokenHttp, bhttp: HttpTransport) -> None:
    data = b"".join(bhttp.get(f"{faulty.base_url}/f.bin", BLOCK, BLOCK))
    assert data == DATA[BLOCK : 2 * BLOCK]


def test_a_server_ignoring_range_is_an_integrity_error(
    faulty: BrokenHttp, bhttp: HttpTransport
) -> None:
    with pytest.raises(IntegrityError, match="ignored Range"):
        bhttp.get(f"{faulty.base_url}/norange/f.bin", BLOCK, BLOCK)
    # A whole-file get from the same server is fine: no Range was asked.
    assert b"".join(bhttp.get(f"{faulty.base_url}/norange/f.bin")) == DATA


def test_a_206_for_another_range_is_an_integrity_error(
    faulty: BrokenHttp, bhttp: HttpTransport
) -> None:
    with pytest.raises(IntegrityError, match="Content-Range"):
        bhttp.get(f"{faulty.base_url}/shiftrange/f.bin", BLOCK, BLOCK)


@pytest.mark.parametrize(("offset", "length"), [(0, None), (BLOCK, BLOCK)])
def test_a_truncated_body_is_an_integrity_error(
    faulty: BrokenHttp, bhttp: HttpTransport, offset: int, length: int | None
) -> None:
    body = bhttp.get(f"{faulty.base_url}/truncate/f.bin", offset, length)
    with pytest.raises(IntegrityError, match="truncated"):
        b"".join(body)
    # The transport recovers on a new connection.
    assert b"".join(bhttp.get(f"{faulty.base_url}/f.bin", 0, 10)) == DATA[:10]


def test_a_corrupted_body_is_delivered_as_sent(faulty: BrokenHttp, bhttp: HttpTransport) -> None:
    # Bytes are checked by checksum upstream; the transport must not hide what it received.
    data = b"".join(bhttp.get(f"{faulty.base_url}/corrupt/f.bin", 0, 100))
    assert data[0] == DATA[0] ^ 0xFF
    assert data[1:] == DATA[1:100]


@pytest.mark.parametrize(
    ("code", "retryable"), [(503, True), (500, True), (429, True), (403, False)]
)
def test_error_statuses_are_transfer_errors(
    faulty: BrokenHttp, bhttp: HttpTransport, code: int, retryable: bool
) -> None:
    with pytest.raises(TransferError) as caught:
        bhttp.get(f"{faulty.base_url}/status/{code}/x", 0, 10)
    # a 403 is the remote refusing the operation (failure class "refused"), not a plain error
    assert type(caught.value) is (RemoteRefused if code == 403 else TransferError)
    assert caught.value.retryable is retryable
    # The short error body was drained: the connection is still the first one.
    assert b"".join(bhttp.get(f"{faulty.base_url}/f.bin", 0, 3)) == DATA[:3]
    assert bhttp.connections_made == 1


def test_a_dropped_keep_alive_connection_is_reopened_transparently(
    faulty: BrokenHttp, bhttp: HttpTransport
) -> None:
    url = f"{faulty.base_url}/f.bin"
    assert b"".join(bhttp.get(url, 0, 10)) == DATA[:10]
    faulty.drop_connections()
    assert b"".join(bhttp.get(url, 10, 10)) == DATA[10:20]
    assert bhttp.connections_made == 2


def test_an_unreachable_origin_is_transport_unavailable(nginx: Nginx) -> None:
    from tests.servers.nginx import free_port

    transport = HttpTransport(f"http://127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(TransportUnavailable):
        transport.get(f"http://127.0.0.1:{transport.origin.port}/x")


def test_basic_and_bearer_credentials_are_sent(faulty: BrokenHttp) -> None:
    url = f"{faulty.base_url}/f.bin"
    password = Credential(parse_url(f"http://bob:s3cret@127.0.0.1:{faulty.port}"))
    token = Credential(parse_url(f"http://bob:pw@127.0.0.1:{faulty.port}"), bearer_token="tok")
    with closing(HttpTransport(f"http://127.0.0.1:{faulty.port}", credentials=password)) as basic:
        assert b"".join(basic.get(url, 0, 4)) == DATA[:4]
    expected = "Basic " + base64.b64encode(b"bob:s3cret").decode()
    assert faulty.last_headers["Authorization"] == expected
    with closing(HttpTransport(faulty.base_url, credentials=token)) as bearer:
        assert bearer.stat(url).size == len(DATA)
    assert faulty.last_headers["Authorization"] == "Bearer tok"


# -- get_into: reading into caller-owned buffers ----------------------------------------------


def _buffers(size: int) -> list[memoryview]:
    return [memoryview(bytearray(size)) for _ in range(2)]


def test_get_into_detects_ignored_ranges_and_truncation(
    faulty: BrokenHttp, bhttp: HttpTransport
) -> None:
    buffers = _buffers(1 << 16)
    with pytest.raises(IntegrityError, match="ignored Range"):
        bhttp.get_into(f"{faulty.base_url}/norange/f.bin", buffers, BLOCK, BLOCK)
    body = bhttp.get_into(f"{faulty.base_url}/truncate/f.bin", buffers, BLOCK, BLOCK)
    with pytest.raises(IntegrityError, match="truncated"):
        for _ in body:
            pass
    # the transport recovers on a new connection
    assert (
        bytes(next(iter(bhttp.get_into(f"{faulty.base_url}/f.bin", buffers, 0, 10)))) == (DATA[:10])
    )


# -- get_small: the lean path of inline small files -------------------------------------------

SMALL = DATA[:2048]


@pytest.fixture(scope="module")
def small_served(nginx: Nginx) -> str:
    (nginx.root / "a").mkdir(exist_ok=True)
    (nginx.root / "a" / "small.bin").write_bytes(SMALL)
    return "a/small.bin"


def test_get_small_fetches_whole_small_files_on_one_connection(
    nginx: Nginx, small_served: str, served: str, http: HttpTransport
) -> None:
    url = retrieval_url(nginx.base_url, small_served)
    for _ in range(20):
        assert list(http.get_small(url, len(SMALL))) == [SMALL]
    # the lean path and http.client share the kept-alive connection
    assert b"".join(http.get(url, 5, 5)) == SMALL[5:10]
    assert list(http.get_small(url, len(SMALL))) == [SMALL]
    with pytest.raises(NotFound):
        http.get_small(retrieval_url(nginx.base_url, "a/missing"), 10)
    assert list(http.get_small(url, len(SMALL))) == [SMALL]
    assert http.connections_made <= 2  # an error response may cost the connection
    with pytest.raises(IntegrityError, match="longer than"):
        http.get_small(retrieval_url(nginx.base_url, served), len(SMALL))
    assert list(http.get_small(url, len(SMALL))) == [SMALL]


def test_get_small_over_https_checks_certificates(nginx: Nginx, small_served: str) -> None:
    url = retrieval_url(nginx.https_base_url, small_served)
    with closing(HttpTransport(url, timeout=10)) as strict, pytest.raises(TransferError) as err:
        strict.get_small(url, len(SMALL))
    assert "TLS verification failed" in str(err.value)
    assert not err.value.retryable
    with closing(HttpTransport(url, timeout=10, ca_file=str(nginx.ca_file))) as trusted:
        assert list(trusted.get_small(url, len(SMALL))) == [SMALL]
        assert list(trusted.get_small(url, len(SMALL))) == [SMALL]
        assert trusted.connections_made == 1


def test_get_small_refuses_a_truncated_body(faulty: BrokenHttp, bhttp: HttpTransport) -> None:
    with pytest.raises(IntegrityError, match="truncated"):
        bhttp.get_small(f"{faulty.base_url}/truncate/f.bin", len(DATA))
    assert list(bhttp.get_small(f"{faulty.base_url}/f.bin", len(DATA))) == [DATA]


@pytest.mark.parametrize(
    ("code", "retryable"), [(503, True), (500, True), (429, True), (403, False), (404, False)]
)
def test_get_small_error_statuses_are_transfer_errors(
    faulty: BrokenHttp, bhttp: HttpTransport, code: int, retryable: bool
) -> None:
    with pytest.raises(TransferError) as caught:
        bhttp.get_small(f"{faulty.base_url}/status/{code}/x", 10)
    expected = {403: RemoteRefused, 404: NotFound}.get(code, TransferError)
    assert type(caught.value) is expected
    assert caught.value.retryable is retryable
    assert list(bhttp.get_small(f"{faulty.base_url}/f.bin", len(DATA))) == [DATA]


def test_get_small_reopens_a_dropped_keep_alive_connection(
    faulty: BrokenHttp, bhttp: HttpTransport
) -> None:
    url = f"{faulty.base_url}/f.bin"
    assert list(bhttp.get_small(url, len(DATA))) == [DATA]
    faulty.drop_connections()
    assert list(bhttp.get_small(url, len(DATA))) == [DATA]
    assert bhttp.connections_made == 2


def test_get_small_sends_credentials(faulty: BrokenHttp) -> None:
    url = f"{faulty.base_url}/f.bin"
    password = Credential(parse_url(f"http://bob:s3cret@127.0.0.1:{faulty.port}"))
    with closing(HttpTransport(f"http://127.0.0.1:{faulty.port}", credentials=password)) as basic:
        assert list(basic.get_small(url, len(DATA))) == [DATA]
    expected = "Basic " + base64.b64encode(b"bob:s3cret").decode()
    assert faulty.last_headers["Authorization"] == expected
    assert faulty.last_headers["Host"] == f"127.0.0.1:{faulty.port}"


def test_get_small_on_an_unreachable_origin_is_transport_unavailable(nginx: Nginx) -> None:
    from tests.servers.nginx import free_port

    transport = HttpTransport(f"http://127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(TransportUnavailable):
        transport.get_small(f"http://127.0.0.1:{transport.origin.port}/x", 10)


# -- stream(): ranged streams in parallel, hashed inline or by a helper thread ----------------


@pytest.mark.parametrize("cpus", [64, 1], ids=["overlap", "inline"])
def test_parallel_ranged_streams_write_and_hash_exactly_what_nginx_serves(
    nginx: Nginx, served: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpus: int
) -> None:
    # the block path of a large file: several ranges at once, each into page-aligned buffers,
    # written by direct I/O where the file system takes it, its md5 over the bytes written
    from sarra.localfs import streaming
    from sarra.transfer.chunks import aligned_chunks

    monkeypatch.setattr(streaming, "CPUS", cpus)
    url = retrieval_url(nginx.base_url, served)
    ranges = [(at, min(BLOCK, len(DATA) - at)) for at in range(0, len(DATA), BLOCK)]
    digests: dict[int, str] = {}
    errors: list[BaseException] = []
    fd = os.open(tmp_path / "out.bin", os.O_RDWR | os.O_CREAT, 0o600)

    def fetch(offset: int, length: int) -> None:
        try:
            with closing(HttpTransport(nginx.base_url, timeout=10)) as transport:
                md5 = hashlib.md5()
                writer = streaming.DirectWriter(fd, lambda v, o: _pwrite(fd, v, o), "out.bin")
                try:
                    got = streaming.stream(
                        aligned_chunks(transport, url, offset, length, 1 << 16),
                        md5,
                        writer.pwrite,
                        start=offset,
                        limit=length,
                        what="range",
                    )
                finally:
                    writer.close()
                assert got == length
                digests[offset] = md5.hexdigest()
        except BaseException as exc:  # kept for the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=r) for r in ranges]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        os.fsync(fd)
    finally:
        os.close(fd)
    assert not errors
    assert (tmp_path / "out.bin").read_bytes() == DATA
    assert digests == {at: hashlib.md5(DATA[at : at + length]).hexdigest() for at, length in ranges}
    assert streaming._STREAMS.active == 0


def _pwrite(fd: int, view: memoryview, offset: int) -> None:
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done
