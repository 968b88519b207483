"""The sarra form of an sr2 or sr3 configuration file (``sr_<component> convert FILE``).

Each option line is rewritten with the option's canonical name (``topicPrefix`` becomes
``topic_prefix``, ``callback log`` becomes ``plugin sarra.plugins.log``); a line sarra would
refuse (an unknown option, a refused option, a plugin sarra does not provide, a bad value) and
a line that has no effect in sarra are kept as comments, preceded by a comment giving the
reason. Comments and blank lines are kept; values are not changed (variables stay unexpanded),
and ``include`` lines are kept as they are: convert the included files too.

The result loads without refusals, except for what depends on other files or on values
checked only as a whole (a missing include, an exchange left unset).
"""

from __future__ import annotations

from sarra.config import plugin_names
from sarra.config.options import (
    FLAG_KINDS,
    SR3_VALUE_CONVERTERS,
    STRUCTURAL_KINDS,
    Kind,
    Option,
    Support,
    options_table,
    parse_value,
)

_TABLE = options_table()
_MARK = "# sarra:"


def convert_line(component: str, raw: str) -> list[str]:
    """The lines that replace ``raw`` in the sarra form of a ``component`` configuration."""
    stripped = raw.strip()
    if not stripped or stripped.startswith("#"):
        return [raw.rstrip()]
    word, _, rest = stripped.replace("\t", " ", 1).partition(" ")
    value = rest.strip()
    option = _TABLE.resolve(word.lstrip("-"))
    if option is None:
        hint = _TABLE.suggest(word.lstrip("-"))
        extra = f" (did you mean {hint!r}?)" if hint else ""
        return _commented(f"option {word!r}: unknown option{extra}", stripped)
    if option.support is Support.REFUSED:
        return _commented(f"option {word!r}: {option.support_note}", stripped)
    convert = SR3_VALUE_CONVERTERS.get(word.lstrip("-"))
    if convert is not None and value and "${" not in value:
        try:
            value = convert(value)
        except ValueError as exc:
            return _commented(f"option {word!r}: {exc}", stripped)
    problem, value = _check_value(option, value)
    if problem:
        return _commented(f"option {word!r}: {problem}", stripped)
    if option.support is Support.NOOP:
        return _commented(f"option {word!r}: {option.support_note}", stripped)
    note = []
    if not option.applies_to(component):
        note = [f"{_MARK} option {option.name!r} is ignored by {component}"]
    return [*note, f"{option.name} {value}".rstrip()]


def convert_text(component: str, text: str) -> str:
    """The sarra form of a whole file's text."""
    out: list[str] = []
    for raw in text.splitlines():
        out.extend(convert_line(component, raw))
    return "\n".join(out) + "\n"


def _commented(reason: str, line: str) -> list[str]:
    return [f"{_MARK} {reason}", f"# {line}"]


def _check_value(option: Option, value: str) -> tuple[str | None, str]:
    """(why the value would be refused, or None; the value to write)."""
    if option.kind is Kind.PLUGIN:
        if not value:
            return "a value is required", value
        entry = plugin_names.lookup(value)
        if entry is None or value.lower() in ("none", "off"):
            return None, value
        if entry.builtin is None:
            return f"{entry.origin} plugin {value!r} is not available in sarra: {entry.note}", value
        return None, entry.builtin
    if option.kind in STRUCTURAL_KINDS or option.kind is Kind.LIST:
        return (None if value else "a value is required"), value
    if not value and option.kind in FLAG_KINDS:
        return None, value
    if "${" in value:
        return None, value  # checked when loaded, once the variable is known
    try:
        parse_value(option, value or None)
    except ValueError as exc:
        return str(exc), value
    return None, value
