"""Typed settings (sarra.config.settings): generated from the option table, values as typed."""

from __future__ import annotations

import importlib.util
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from sarra.components import IMPLEMENTED
from sarra.config.options import OPTIONS, STRUCTURAL_KINDS
from sarra.config.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_settings", ROOT / "scripts/gen_settings.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_settings_module_is_what_the_option_table_renders() -> None:
    committed = (ROOT / "sarra/config/settings.py").read_text()
    assert committed == _generator().render(), "run scripts/gen_settings.py"


def test_every_valued_option_is_a_field_and_nothing_else_is() -> None:
    hints = typing.get_type_hints(Settings)
    valued = {o.name for o in OPTIONS if o.kind not in STRUCTURAL_KINDS}
    structural = {
        "component", "name", "config_path", "masks", "default_mask", "bindings", "plugins",
        "headers_add", "headers_del", "declared", "explicit", "warnings",
    }  # fmt: skip
    assert set(hints) == valued | structural


def _conforms(value: object, hint: object) -> bool:
    origin = typing.get_origin(hint)
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in typing.get_args(hint))
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, tuple) and all(_conforms(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return origin is not None and isinstance(value, origin)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"SR_CONFIG_DIR": str(tmp_path / "config"), "HOME": str(tmp_path)}


@pytest.mark.parametrize("component", sorted(IMPLEMENTED))
def test_every_default_has_its_declared_type(component: str, env: dict[str, str]) -> None:
    s = load_settings(component, None, env=env)
    hints = typing.get_type_hints(Settings)
    wrong = {
        name: getattr(s, name)
        for name in hints
        if name not in ("masks", "bindings", "plugins", "headers_add", "declared")
        and not _conforms(getattr(s, name), hints[name])
    }
    assert wrong == {}


def test_values_set_in_a_file_and_on_the_command_line_are_typed(
    tmp_path: Path, env: dict[str, str]
) -> None:
    conf = tmp_path / "config" / "subscribe"
    conf.mkdir(parents=True)
    (conf / "typed.conf").write_text(
        "broker amqp://anonymous@localhost/\nexchange xpublic\nprefetch 7\nexpire 10m\n"
        "chmod 640\ninflight 5\nbase_url_accept ^https://a/ ^https://b/\nflatten none\n"
        "on_message sarra.tests_unknown_plugin_is_only_named_here\nsuppress_duplicates on\n"
    )
    s = load_settings("subscribe", "typed", [("attempts", "9"), ("batch", "3")], env=env)
    assert (s.prefetch, s.expire, s.chmod, s.inflight) == (7, 600.0, 0o640, 5.0)
    assert s.base_url_accept == ("^https://a/", "^https://b/")
    assert (s.attempts, s.batch) == (9, 3)
    assert s.flatten == "/", "none for an option that always has a value means its default"
    assert s.suppress_duplicates > 0
    assert s.is_set("prefetch") and s.is_set("qn") is False
    assert s.get("ex") == "xpublic" and s.get("no_such_option", 1) == 1
    with pytest.raises(AttributeError):
        s.prefetch = 1  # type: ignore[misc]


def _as_dataclass_builds_it() -> Any:
    """Settings as ``@dataclass(frozen=True, slots=True, kw_only=True)`` builds it from the same
    fields: the yardstick for the methods gen_settings.py writes out."""
    body = "".join(f"    {name}: {kind}\n" for name, kind in Settings.__annotations__.items())
    source = (
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n"
        "from sarra.config.settings_base import SettingsBase\n"
        "@dataclass(frozen=True, slots=True, kw_only=True)\n"
        "class Settings(SettingsBase):\n"
        '    """A loaded configuration of one component, typed: one field per valued option."""\n'
        f"{body}"
    )
    namespace: dict[str, Any] = {"__name__": "sarra.config.settings"}
    exec(source, namespace)
    return namespace["Settings"]


def _outcome(call: Any) -> tuple[object, ...]:
    try:
        return ("returned", call())
    except Exception as exc:
        return ("raised", type(exc), str(exc))


def test_the_written_out_methods_are_what_dataclass_builds(env: dict[str, str]) -> None:
    import copy
    import dataclasses
    import functools
    import inspect

    ref = _as_dataclass_builds_it()

    def described(cls: Any) -> list[tuple[object, ...]]:
        return [
            (f.name, f.type, f.init, f.repr, f.hash, f.compare, f.kw_only, f.metadata, f.default)
            for f in dataclasses.fields(cls)
        ] + [(f.default_factory,) for f in dataclasses.fields(cls)]

    assert described(Settings) == described(ref)
    assert repr(Settings.__dataclass_params__) == repr(ref.__dataclass_params__)  # type: ignore[attr-defined]
    assert set(vars(Settings)) == set(vars(ref))
    assert (Settings.__slots__, Settings.__match_args__) == (ref.__slots__, ref.__match_args__)
    assert Settings.__mro__[1:] == ref.__mro__[1:] and dataclasses.is_dataclass(Settings)
    params = [
        (p.name, p.kind, p.default, p.annotation)
        for p in inspect.signature(Settings).parameters.values()
    ]
    assert params == [
        (p.name, p.kind, p.default, p.annotation)
        for p in inspect.signature(ref).parameters.values()
    ]

    s = load_settings("subscribe", None, env=env)
    values = {f.name: getattr(s, f.name) for f in dataclasses.fields(Settings)}
    r = ref(**values)
    assert repr(s) == repr(r)
    other = dataclasses.replace(s, prefetch=s.prefetch + 1)
    assert repr(other) == repr(dataclasses.replace(r, prefetch=r.prefetch + 1))
    assert isinstance(other, Settings) and other.prefetch == s.prefetch + 1
    assert (s == dataclasses.replace(s), s == other, s != other) == (True, False, True)
    assert r == dataclasses.replace(r)
    assert s.__eq__(r) is NotImplemented and s.__eq__(1) is NotImplemented
    assert _outcome(lambda: hash(s)) == _outcome(lambda: hash(r))  # unhashable mappingproxy
    hashable = {"plugins": (), "headers_add": (), "declared": ()}
    assert hash(dataclasses.replace(s, **hashable)) == hash(dataclasses.replace(r, **hashable))
    assert _outcome(lambda: repr(copy.copy(s))) == _outcome(lambda: repr(copy.copy(r)))
    for name in ("prefetch", "no_such_field"):
        assert _outcome(functools.partial(setattr, s, name, 1)) == _outcome(
            functools.partial(setattr, r, name, 1)
        )
        assert _outcome(functools.partial(delattr, s, name)) == _outcome(
            functools.partial(delattr, r, name)
        )
    assert _outcome(lambda: Settings()) == _outcome(lambda: ref())
    assert _outcome(lambda: Settings(**values, extra=1)) == _outcome(lambda: ref(**values, extra=1))
    del values["hostname"]
    assert _outcome(lambda: Settings(**values)) == _outcome(lambda: ref(**values))
