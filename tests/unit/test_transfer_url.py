"""Retrieval URL building (spec 3.5, §11 Q2/Q11) and origins."""

from __future__ import annotations

import pytest

from sarra.errors import PolicyRefused
from sarra.transfer import FACTORIES, open_transport
from sarra.transfer.file import FileTransport
from sarra.transfer.ftp import FtpTransport
from sarra.transfer.url import Origin, origin_of, request_target, retrieval_url, server_path


@pytest.mark.parametrize(
    ("base_url", "logical", "expected"),
    [
        ("http://127.0.0.1:18190", "d ir#x/q.txt", "http://127.0.0.1:18190/d%20ir%23x/q.txt"),
        ("http://h/", "a/b/hello.txt", "http://h/a/b/hello.txt"),
        ("https://h/pub/", "a/b.txt", "https://h/pub/a/b.txt"),
        ("http://h", "été/100%.txt", "http://h/%C3%A9t%C3%A9/100%25.txt"),
        ("http://h", "a?b/c", "http://h/a%3Fb/c"),
        ("http://h", "keep:@+=,;/x", "http://h/keep:@+=,;/x"),
    ],
)
def test_http_retrieval_urls_percent_encode_each_segment(
    base_url: str, logical: str, expected: str
) -> None:
    assert retrieval_url(base_url, logical) == expected


def test_a_leading_slash_on_the_logical_path_does_not_double_the_separator() -> None:
    assert retrieval_url("http://h/", "/a/f") == "http://h/a/f"


def test_an_sftp_base_url_with_a_path_gives_an_absolute_server_path() -> None:
    url = retrieval_url("sftp://h/dir", "a/f", rel_path_absolute=False)
    assert url == "sftp://h/dir/a/f"
    assert server_path(url) == "/dir/a/f"


def test_an_sftp_base_url_without_path_and_an_sr2_relpath_is_absolute() -> None:
    # GM-1: baseUrl `sftp://user@host/` and relPath `/a/b/hello.txt`.
    url = retrieval_url("sftp://user@host/", "a/b/hello.txt", rel_path_absolute=True)
    assert url == "sftp://user@host/a/b/hello.txt"
    assert server_path(url) == "/a/b/hello.txt"


def test_an_sftp_base_url_without_path_and_an_sr3_relpath_is_login_relative() -> None:
    # GM-15: sr3 relays drop the leading `/`.
    url = retrieval_url("sftp://user@host", "a/b/sp ace#hash.txt", rel_path_absolute=False)
    assert url == "sftp://user@host/~/a/b/sp%20ace%23hash.txt"
    assert server_path(url) == "a/b/sp ace#hash.txt"


def test_an_explicitly_login_relative_sftp_base_url_stays_relative() -> None:
    url = retrieval_url("sftp://h/~/in", "f", rel_path_absolute=True)
    assert server_path(url) == "in/f"


def test_a_bare_file_base_url_gives_the_absolute_path() -> None:
    url = retrieval_url("file:", "tmp/d ir/f#1.txt")
    assert url == "file:/tmp/d%20ir/f%231.txt"
    assert server_path(url) == "/tmp/d ir/f#1.txt"


def test_a_file_base_url_with_a_path_prefixes_it() -> None:
    assert server_path(retrieval_url("file:///data/", "x/y")) == "/data/x/y"


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(PolicyRefused):
        retrieval_url("gopher://h", "a")
    with pytest.raises(PolicyRefused):
        open_transport("gopher://h/a")


def test_origins_fill_in_default_ports_and_keep_the_user() -> None:
    assert origin_of("http://h/a") == Origin("http", "h", 80, "")
    assert origin_of("HTTPS://H:8443/x") == Origin("https", "h", 8443, "")
    assert origin_of("sftp://bob@h/x") == Origin("sftp", "h", 22, "bob")
    assert origin_of("file:/x") == Origin("file", "", None, "")
    assert str(origin_of("sftp://bob@h:2222/x")) == "sftp://bob@h:2222"


@pytest.mark.parametrize(
    "url",
    [
        "http://h/a", "http://h", "HTTPS://H:8443/x?q=1", "sftp://bob@h:2222/x#f",
        "http://u%40x@h:81/p", "ftp://[::1]:2121/a/b", "http://h?x", "file:///x", "file:/x",
    ],
)  # fmt: skip
def test_an_origin_is_the_same_whether_parsed_from_the_whole_url_or_remembered(url: str) -> None:
    """origin_of remembers the origin of each scheme://authority it parsed."""
    from sarra.transfer.url import _parse_origin

    assert origin_of(url) == _parse_origin(url)
    assert origin_of(url) == _parse_origin(url)  # the second time from memory


@pytest.mark.parametrize("url", ["gopher://h/a/b", "http://h:notaport/a/b", "http:///a/b"])
def test_a_refused_origin_names_the_whole_url_every_time(url: str) -> None:
    for _ in range(2):
        with pytest.raises(PolicyRefused, match="/a/b"):
            origin_of(url)


def test_request_targets_keep_the_encoded_path_and_query() -> None:
    assert request_target("http://h/a%20b/c?x=1") == "/a%20b/c?x=1"
    assert request_target("http://h") == "/"


def test_the_registry_maps_every_supported_scheme() -> None:
    assert set(FACTORIES) == {"file", "http", "https", "sftp", "ftp", "ftps"}
    transport = open_transport("file:/tmp")
    assert isinstance(transport, FileTransport)
    transport.close()
    for url in ("ftp://u@h", "ftps://u@h:2121/x"):
        made = open_transport(url)  # nothing connects until the first operation
        assert isinstance(made, FtpTransport) and made.origin == origin_of(url)
        assert made.connections_made == 0
        made.close()
