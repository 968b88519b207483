"""The command line of every ``sr_*`` component, built from the option table.

Every option is accepted as ``-name value`` or ``--name value`` (also ``--name=value``), under
its canonical name or any alias (``-pb``, ``-pbu``, ``-pbd``, ``-pe``, ``-px``, ``-to``, ``-c``,
``-sub``, ``-ptp``, ...), exactly as sr2 scripts write them. Boolean options may be given
alone (``-mirror``) or with a value (``-mirror off``). ``-path`` takes every following word up
to the next option.

``sr_post`` takes the paths to post as positional arguments. The other components take
``action [config ...]``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from sarra.config.options import (
    FLAG_KINDS,
    SR3_VALUE_CONVERTERS,
    Kind,
    Option,
    Support,
    options_table,
)
from sarra.errors import ConfigError

#: The action names the command line accepts, in help order. :data:`sarra.cli.verbs.VERBS`
#: implements each one (tests/unit/test_config_cmdline.py checks that the two agree).
ACTION_NAMES: tuple[str, ...] = (
    "start",
    "stop",
    "restart",
    "status",
    "foreground",
    "supervise",
    "cleanup",
    "declare",
    "retry-return",
    "list",
    "convert",
    "edit",
    "add",
    "remove",
    "enable",
    "disable",
    "sanity",
)
#: Components whose positional arguments are paths, not an action.
PATH_COMPONENTS = frozenset({"post"})
WHERE = "<command line>"
_FLAG_WORDS = frozenset({"on", "off", "yes", "no", "true", "false", "1", "0"})
_OFF_WORDS = frozenset({"off", "no", "false", "0"})


@dataclass(frozen=True, slots=True)
class CommandLine:
    """What was asked: the action, config names, (option, value) pairs in order, and paths.

    A flag given alone has the value ``""``. ``-c``/``--config`` values go to ``configs``;
    ``-path`` values and (for sr_post) positional arguments go to ``paths``.
    """

    action: str | None
    configs: tuple[str, ...]
    options: tuple[tuple[str, str], ...]
    paths: tuple[str, ...]

    @property
    def help(self) -> bool:
        return any(name == "help" for name, _ in self.options)

    @property
    def sr3(self) -> bool:
        """``--sr3`` (the last ``-sr3 on|off`` given wins): read sr3's configuration tree."""
        given = [value for name, value in self.options if name == "sr3"]
        return bool(given) and given[-1].lower() not in _OFF_WORDS


def _looks_like_option(word: str) -> bool:
    if len(word) < 2 or not word.startswith("-"):
        return False
    return not word[1:].replace(".", "", 1).isdigit()  # -5 is a value, not an option


def _flag_value(option: Option, following: str | None) -> bool:
    if following is None or _looks_like_option(following):
        return False
    word = following.lower()
    if word in _FLAG_WORDS:
        return True
    if option.kind is Kind.CACHING:
        return word[:1].isdigit()
    return False


def parse_command_line(component: str, argv: Sequence[str]) -> CommandLine:
    """Split ``argv`` (without the program name) for ``component``.

    Raises:
        ConfigError: unknown option (with a close match when there is one), missing value,
            or an unknown action; located at ``<command line>``.
    """
    table = options_table()
    options: list[tuple[str, str]] = []
    configs: list[str] = []
    paths: list[str] = []
    positional: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word == "--":
            positional.extend(argv[i:])
            break
        if not _looks_like_option(word):
            positional.append(word)
            continue
        name, eq, inline = word.lstrip("-").partition("=")
        option = table.resolve(name)
        if option is None:
            hint = table.suggest(name)
            extra = f" (did you mean -{hint}?)" if hint else ""
            raise ConfigError(f"unknown option{extra}", path=WHERE, option=word)
        if option.support is Support.REFUSED:
            raise ConfigError(option.support_note, path=WHERE, option=word)
        following = argv[i] if i < len(argv) else None
        if eq:
            value = inline
        elif option.kind in FLAG_KINDS:
            value = ""
            if _flag_value(option, following):
                value, i = argv[i], i + 1
        elif option.name == "path":
            taken = 0
            while i < len(argv) and not _looks_like_option(argv[i]):
                paths.append(argv[i])
                i, taken = i + 1, taken + 1
            if not taken:
                raise ConfigError("a path is required", path=WHERE, option=word)
            continue
        else:
            if following is None:
                raise ConfigError("a value is required", path=WHERE, option=word)
            value, i = following, i + 1
        if option.name == "config":
            configs.append(value)
        elif option.name == "path":
            paths.append(value)
        else:
            convert = SR3_VALUE_CONVERTERS.get(name)
            if convert is not None and value:
                try:
                    value = convert(value)
                except ValueError as exc:
                    raise ConfigError(str(exc), path=WHERE, option=word) from exc
            options.append((option.name, value))
    action: str | None = None
    if component in PATH_COMPONENTS:
        paths[:0] = positional
    elif positional:
        action = positional[0]
        if action not in ACTION_NAMES:
            raise ConfigError(
                f"unknown action {action!r}; expected one of {', '.join(ACTION_NAMES)}", path=WHERE
            )
        configs.extend(positional[1:])
    return CommandLine(action, tuple(configs), tuple(options), tuple(paths))


def _default_text(option: Option, component: str) -> str:
    value = option.default_for(component)
    if value is None or value == () or option.kind in (Kind.MASK, Kind.PLUGIN, Kind.INCLUDE):
        return ""
    if isinstance(value, bool):
        return " [default: on]" if value else " [default: off]"
    if option.kind is Kind.MODE:
        return f" [default: {value:o}]"
    return f" [default: {value}]"


def option_synopsis(option: Option) -> str:
    """``-name, -alias ... VALUE`` as shown in --help and the man page."""
    names = ", ".join(f"-{n}" for n in (option.name, *option.aliases))
    return f"{names} {option.value_hint}"


def format_help(component: str) -> str:
    """The ``--help`` text of ``sr_<component>``, generated from the option table."""
    table = options_table()
    if component in PATH_COMPONENTS:
        usage = f"usage: sr_{component} [options] [-path] PATH ..."
    else:
        usage = f"usage: sr_{component} [options] ACTION [CONFIG ...]"
    lines = [usage, ""]
    if component not in PATH_COMPONENTS:
        lines += textwrap.wrap("actions: " + ", ".join(ACTION_NAMES), 79, subsequent_indent="  ")
        lines.append("")
    lines.append("options (also --name; booleans may be given alone):")
    refused = []
    for option in table.for_component(component):
        if option.support is Support.REFUSED:
            refused.append(f"-{option.name}")
            continue
        lines.append(f"  {option_synopsis(option)}")
        lines.append(f"        {option.help}{_default_text(option, component)}")
        if option.support is Support.NOOP:
            lines.append(f"        ({option.support_note})")
    if refused:
        lines += ["", "refused (sr2 options sarra does not support yet; see sarra-options(7)):"]
        lines += textwrap.wrap(", ".join(refused), 79, initial_indent="  ", subsequent_indent="  ")
    lines += ["", "See sr_config(7) and sarra-options(7)."]
    return "\n".join(lines) + "\n"
