"""Every option in the table does what it says, is refused, or is a declared no-op (issue 11).

The walk covers the whole table:

- ``implemented``: code in sarra/ outside config/ reads the value (an attribute of a settings
  object, ``cfg.get("name")``, ``option(cfg, "name", ...)``), or the loader or the command
  line consume it (``v["name"]``, ``option.name == "name"``, a structural kind the loader
  turns into masks, bindings, headers or declarations); and the name appears in some test
  other than this file, test_settings.py and test_config_cmdline.py (whose list of names and
  --help check mention every option, so they prove nothing about behaviour).
- ``refused``: a config line setting it fails to load, naming file, line, option and
  "not supported"; so does the command line.
- ``no-op``: loading it warns exactly once per load, however often it is written.

A fake entry marked implemented and read nowhere shows the walk can fail.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from sarra.config import load_config
from sarra.config.cmdline import format_help, parse_command_line
from sarra.config.options import OPTIONS, STRUCTURAL_KINDS, Kind, Option, Support
from sarra.errors import ConfigError
from sarra.flow.hooks import HOOK_NAMES

ROOT = Path(__file__).resolve().parents[2]
SARRA = ROOT / "sarra"
#: the loader and the command line: what they consume is handled there
CONSUMERS_IN_CONFIG = ("loader.py", "cmdline.py")
#: names under which code outside config/ holds a loaded configuration
SETTINGS_NAMES = frozenset({"s", "cfg", "settings", "config", "conf"})
#: tests that name every option without exercising it
NAME_ONLY_TESTS = frozenset(
    {"test_option_support.py", "test_settings.py", "test_config_cmdline.py"}
)
SAMPLE = {
    Kind.BOOL: "on",
    Kind.INT: "3",
    Kind.SIZE: "4K",
    Kind.DURATION: "10",
    Kind.STR: "x",
    Kind.URL: "amqp://u@h/",
    Kind.LIST: "x",
    Kind.PLUGIN: "plug.py",
}


def _terminal(node: ast.expr) -> str | None:
    """The last identifier of a receiver: ``s`` -> s, ``self.settings`` -> settings."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _string_args(call: ast.Call) -> list[str]:
    return [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]


def reads_outside_config(files: list[Path]) -> set[str]:
    """Attribute and by-name reads of options on settings objects in ``files``."""
    found: set[str] = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                if _terminal(node.value) in SETTINGS_NAMES:
                    found.add(node.attr)
            elif isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr in ("get", "is_set"):
                    if _terminal(func.value) in SETTINGS_NAMES:
                        found.update(_string_args(node)[:1])
                elif isinstance(func, ast.Name) and func.id == "option":
                    found.update(_string_args(node)[:1])
    return found


def hooks_called(files: list[Path]) -> set[str]:
    """Hook names called on a plugins object (``self.plugins.on_file(...)``)."""
    found: set[str] = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and _terminal(func.value) == "plugins":
                found.add(func.attr)
    return found


def consumed_by_loader(files: list[Path]) -> tuple[set[str], set[str]]:
    """Option names the loader or command line consume, and the Kind members they handle."""
    names: set[str] = set()
    kinds: set[str] = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                if isinstance(node.slice.value, str):
                    names.add(node.slice.value)
            elif isinstance(node, ast.Compare):
                for side in (node.left, *node.comparators):
                    if isinstance(side, ast.Constant) and isinstance(side.value, str):
                        names.add(side.value)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr == "get":
                    names.update(_string_args(node)[:1])
            elif isinstance(node, ast.Attribute) and _terminal(node.value) == "Kind":
                kinds.add(node.attr)
    return names, kinds


@cache
def _code() -> tuple[frozenset[str], frozenset[str], frozenset[str], frozenset[str]]:
    outside = [p for p in SARRA.rglob("*.py") if p.parent.name != "config"]
    config = [SARRA / "config" / name for name in CONSUMERS_IN_CONFIG]
    names, kinds = consumed_by_loader(config)
    return (
        frozenset(reads_outside_config(outside)),
        frozenset(hooks_called(outside)),
        frozenset(names),
        frozenset(kinds),
    )


@cache
def _test_text() -> str:
    tests = ROOT / "tests"
    return "\n".join(
        p.read_text(encoding="utf-8")
        for p in sorted(tests.rglob("*.py"))
        if p.name not in NAME_ONLY_TESTS
    )


def implemented_problems(option: Option) -> list[str]:
    """Why ``option`` cannot honestly be called implemented (empty: it can)."""
    read, called, loader_names, loader_kinds = _code()
    problems = []
    if option.kind in STRUCTURAL_KINDS:
        is_read = option.kind.name in loader_kinds
    elif option.kind is Kind.PLUGIN:
        # a hook is implemented when sarra declares it and calls it; ``plugin`` loads
        # modules that declare their own (sarra.flow.hooks.Plugins.from_config)
        is_read = (option.name in HOOK_NAMES and option.name in called) or (
            option.name == "plugin" and "plugins" in read
        )
    else:
        is_read = option.name in read or option.name in loader_names
    if not is_read:
        problems.append(f"{option.name}: marked implemented but no code reads it")
    words = (option.name, *option.aliases)
    # a word of its own; in Python source a config line often follows a literal "\n"
    if not any(
        re.search(rf"(?:(?<!\w)|(?<=\\n)){re.escape(w)}(?!\w)", _test_text()) for w in words
    ):
        problems.append(f"{option.name}: marked implemented but no test names it")
    return problems


def _component(option: Option) -> str:
    for component in ("subscribe", "post", "watch", "sender", "sarra", "winnow", "report"):
        if option.applies_to(component):
            return component
    return "subscribe"


def _by(support: Support) -> list[Option]:
    return [o for o in OPTIONS if o.support is support]


def _id(option: Option) -> str:
    return option.name


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    for component in ("subscribe", "post", "watch", "sender", "sarra", "winnow", "report"):
        (tmp_path / "config" / component).mkdir(parents=True)
    return {"SR_CONFIG_DIR": str(tmp_path / "config"), "SR_STATE_DIR": str(tmp_path / "state")}


def _write(env: dict[str, str], component: str, body: str) -> Path:
    file = Path(env["SR_CONFIG_DIR"]) / component / "c.conf"
    file.write_text(body, encoding="utf-8")
    return file


def _line(option: Option) -> str:
    value = option.choices[0] if option.choices else SAMPLE[option.kind]
    return f"{option.name} {value}"


# -- implemented ----------------------------------------------------------------------------


@pytest.mark.parametrize("option", _by(Support.IMPLEMENTED), ids=_id)
def test_an_implemented_option_is_read_by_code_and_named_by_a_test(option: Option) -> None:
    assert implemented_problems(option) == []


FAKE = Option("fake_option_read_nowhere", Kind.BOOL, False, "a fake, read by nothing")
FAKE_HOOK = Option("on_fake_hook", Kind.PLUGIN, (), "a hook nothing calls")


@pytest.mark.parametrize("fake", [FAKE, FAKE_HOOK], ids=_id)
def test_the_walk_fails_on_an_option_marked_implemented_that_nothing_reads(fake: Option) -> None:
    problems = implemented_problems(fake)
    assert f"{fake.name}: marked implemented but no code reads it" in problems
    assert f"{fake.name}: marked implemented but no test names it" in problems


def test_the_scanner_sees_the_reads_it_claims_to() -> None:
    tree = [SARRA / "components" / n for n in ("subscribe.py", "common.py")]
    read = reads_outside_config([*tree, SARRA / "cli" / "main.py"])
    assert {"tls_rigour", "inplace", "logrotate", "chmod_log"} <= read
    assert "vip" not in read  # refused: nothing reads it


# -- refused --------------------------------------------------------------------------------


@pytest.mark.parametrize("option", _by(Support.REFUSED), ids=_id)
def test_a_refused_option_does_not_load_and_the_error_says_where_and_why(
    option: Option, env: dict[str, str]
) -> None:
    component = _component(option)
    file = _write(env, component, f"# a comment\nprefetch 10\n{_line(option)}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(component, str(file), env=env)
    message = str(caught.value)
    assert f"{file}:3" in message
    assert repr(option.name) in message
    assert "not supported by sarra: " + option.why in message
    assert option.why, f"{option.name} is refused without a reason"


def test_vip_in_a_poll_is_refused_naming_its_replacement_single_active_consumer(
    env: dict[str, str],
) -> None:
    (Path(env["SR_CONFIG_DIR"]) / "poll").mkdir()
    file = _write(env, "poll", "destination sftp://h/\npost_broker amqp://h/\nvip 10.0.0.9\n")
    with pytest.raises(ConfigError) as caught:
        load_config("poll", str(file), env=env)
    message = str(caught.value)
    assert f"{file}:3" in message and "'vip'" in message
    assert "replace the line with 'single_active_consumer on'" in message
    # the replacement is an option of the poll, which loads
    file.write_text("destination sftp://h/\npost_broker amqp://h/\nsingle_active_consumer on\n")
    assert load_config("poll", str(file), env=env).get("single_active_consumer") is True


@pytest.mark.parametrize("option", _by(Support.REFUSED), ids=_id)
def test_a_refused_option_is_refused_on_the_command_line_too(option: Option) -> None:
    value = option.choices[0] if option.choices else SAMPLE[option.kind]
    with pytest.raises(ConfigError, match="not supported by sarra"):
        parse_command_line(_component(option), [f"-{option.name}", value, "start"])


def test_a_refused_alias_names_the_spelling_used(env: dict[str, str]) -> None:
    file = _write(env, "subscribe", "baseurl https://dd.weather.gc.ca/\n")
    with pytest.raises(ConfigError, match=r"c\.conf:1: option 'baseurl': not supported by sarra"):
        load_config("subscribe", str(file), env=env)


def test_help_lists_refused_options_apart_and_explains_no_ops() -> None:
    text = format_help("subscribe")
    listed, _, refused = text.partition("refused (")
    assert "-vip" in refused and "-vip," not in listed
    assert "-kbytes_ps" in listed and "-kbytes_ps" not in refused
    assert "has no effect: sarra sizes its transfer buffers itself" in listed


# -- no-op ----------------------------------------------------------------------------------


@pytest.mark.parametrize("option", _by(Support.NOOP), ids=_id)
def test_a_no_op_option_loads_with_exactly_one_warning(
    option: Option, env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    component = _component(option)
    (Path(env["SR_CONFIG_DIR"]) / "default.conf").write_text(f"{_line(option)}\n")
    file = _write(env, component, f"{_line(option)}\nprefetch 10\n{_line(option)}\n")
    with caplog.at_level("WARNING", logger="sarra.config.loader"):
        value = option.choices[0] if option.choices else SAMPLE[option.kind]
        cfg = load_config(component, str(file), [(option.name, value)], env=env)
    about = [w for w in cfg.warnings if repr(option.name) in w]
    assert len(about) == 1, about
    assert "has no effect: " + option.why in about[0]
    logged = [r for r in caplog.records if repr(option.name) in r.getMessage()]
    assert len(logged) == 1
    assert cfg.prefetch == 10


def test_every_option_has_a_reason_unless_implemented() -> None:
    for option in OPTIONS:
        assert bool(option.why) is (option.support is not Support.IMPLEMENTED), option.name


def _listed(section: str) -> set[str]:
    text = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(\w+)` \|", body, flags=re.MULTILINE))


def test_docs_options_lists_exactly_the_refused_and_no_op_options() -> None:
    assert _listed("Refused") == {o.name for o in _by(Support.REFUSED)}
    assert _listed("No effect") == {o.name for o in _by(Support.NOOP)}


def test_docs_plugins_names_every_refused_hook() -> None:
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    refused_hooks = {o.name for o in _by(Support.REFUSED) if o.kind is Kind.PLUGIN}
    assert {name for name in refused_hooks if f"`{name}`" not in text} == set()


def test_the_batch_default_shown_is_the_one_sr_post_uses() -> None:
    from sarra.components.post import DEFAULT_BATCH
    from sarra.config.options import options_table

    batch = options_table()["batch"]
    assert batch.default == DEFAULT_BATCH
    assert batch.components == frozenset({"post"})  # nothing else reads it
