"""The Transport contract itself: declared features must match the methods, paths are
confined, and an operation a transport cannot do is an UnsupportedOperation (501)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sarra.errors import HostilePath, TransferError, UnsupportedOperation
from sarra.transfer.base import Features, RemoteStat, Transport, confined


class _ReadOnly(Transport):
    features = Features(ranges=True)

    def get(self, url: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        yield b"x"

    def stat(self, url: str) -> RemoteStat:
        return RemoteStat(1)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def test_an_operation_not_implemented_is_unsupported_501_and_not_retryable() -> None:
    transport = _ReadOnly()
    with pytest.raises(UnsupportedOperation) as caught:
        transport.put("/l", "/r")
    assert isinstance(caught.value, TransferError)
    assert caught.value.report_code == 501
    assert not caught.value.retryable
    for call in (
        lambda: transport.rename("/a", "/b"),
        lambda: transport.delete("/a"),
        lambda: transport.mkdirs("/a"),
        lambda: transport.get_into("/a", [memoryview(bytearray(1))]),
    ):
        with pytest.raises(UnsupportedOperation):
            call()


def test_a_feature_flag_that_lies_about_a_method_is_refused_at_class_definition() -> None:
    with pytest.raises(TypeError, match=r"features\.put is True"):

        class _Claims(_ReadOnly):  # says it can put, but does not override put
            features = Features(ranges=True, put=True)

    with pytest.raises(TypeError, match=r"features\.delete is False"):

        class _Hides(_ReadOnly):  # can delete, but does not say so
            features = Features(ranges=True)

            def delete(self, remote_path: str) -> None:
                pass


@pytest.mark.parametrize("path", ["/a/../etc", "..", "a/..", "/a/b\0c"])
def test_paths_that_could_escape_are_hostile(path: str) -> None:
    with pytest.raises(HostilePath):
        confined(path, "test")


@pytest.mark.parametrize("path", ["/a/b", "rel/x", "/a/..b/c", "/a/.../c", "."])
def test_ordinary_paths_pass_unchanged(path: str) -> None:
    assert confined(path, "test") == path
