"""NoticeBuilder.logical_path caches each directory's announced prefix: whatever the path
(``.``/``..``/``//`` components, the base itself, outside the base, not valid UTF-8), it
announces exactly what :func:`announced_path` announces, or refuses what it refuses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sarra.codec.fields import has_lone_surrogate
from sarra.config.settings import load_settings
from sarra.errors import LocalError
from sarra.flow.posting import NoticeBuilder, PostSettings, announced_path, unannounceable

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the cache is for POSIX paths")


def builder(tmp: Path, base: str | None) -> NoticeBuilder:
    env = {"SR_CONFIG_DIR": str(tmp / "c"), "SR_STATE_DIR": str(tmp / "s")}
    given = [("post_broker", "amqp://u@localhost/"), ("post_base_url", "http://localhost/")]
    if base is not None:
        given.append(("post_base_dir", base))
    cfg = load_settings("post", None, given, env=env)
    return NoticeBuilder(PostSettings.from_config(cfg, "u", "localhost"))


def uncached(path: str, base: str | None) -> str:
    logical = announced_path(path, os.path.abspath(base) if base else None)
    if has_lone_surrogate(logical):
        raise LocalError(unannounceable(path))
    return logical


def outcome(fn: object, path: str) -> tuple[str, str]:
    try:
        return "ok", fn(path)  # type: ignore[operator]
    except LocalError as e:
        return "refused", str(e)


PATHS = [
    "/data/obs/a.txt",
    "/data/obs/b.txt",
    "/data/obs/./c.txt",
    "/data/obs/../d.txt",
    "/data/obs/x/..",
    "/data/obs/x/.",
    "/data//obs//e.txt",
    "//data/obs/f.txt",
    "///data/obs/g.txt",
    "/data",
    "/data/",
    "/database/h.txt",
    "/other/i.txt",
    "/j.txt",
    "/data/obs/bad\udcff.txt",
    "/data/bad\udcff/k.txt",
    "/data/obs/caf\u00e9.txt",
    "/data/obs/a.txt",  # again: from the cache
]


@pytest.mark.parametrize("base", ["/data", "/data/", "/", "//data", None])
def test_every_path_is_announced_or_refused_as_without_the_cache(
    tmp_path: Path, base: str | None
) -> None:
    b = builder(tmp_path, base)
    for path in PATHS + PATHS:
        assert outcome(b.logical_path, path) == outcome(lambda p: uncached(p, base), path), path


_component = st.sampled_from(["data", "obs", ".", "..", "", "x y", "caf\u00e9", "b\udcff", "data2"])


@settings(max_examples=300, deadline=None)
@given(
    paths=st.lists(st.lists(_component, min_size=1, max_size=5), min_size=1, max_size=8),
    base=st.sampled_from(["/data", "/data/obs", "/", None, "/data/.."]),
)
def test_arbitrary_paths_match_the_uncached_function(
    tmp_path_factory: pytest.TempPathFactory, paths: list[list[str]], base: str | None
) -> None:
    b = builder(tmp_path_factory.mktemp("c"), base)
    for parts in paths + paths:
        path = "/" + "/".join(parts)
        assert outcome(b.logical_path, path) == outcome(lambda p: uncached(p, base), path), path
