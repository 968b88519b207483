"""Render the option table as a roff man page, sarra-options(7).

``python -m sarra.config.manpage > man/sarra-options.7`` regenerates the page; a test checks
that the committed page matches, so the table, ``--help`` and the page never drift apart.
"""

from __future__ import annotations

from sarra.config.cmdline import option_synopsis
from sarra.config.options import OPTION_COMPONENTS, Option, Support, options_table


def _roff(text: str) -> str:
    """Escape text for roff: backslashes, and leading dots or quotes."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def _default(option: Option) -> str:
    shown = []
    value = option.default
    if value not in (None, ()):
        shown.append(f"default {_show(option, value)}")
    for component, special in sorted(option.per_component.items()):
        shown.append(f"{component}: {_show(option, special)}")
    return "; ".join(shown)


def _show(option: Option, value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if option.kind.value == "mode" and isinstance(value, int):
        return f"{value:o}"
    return str(value)


def render() -> str:
    """The whole page as roff text."""
    out = [
        '.TH SARRA-OPTIONS 7 "" "sarra" "sarra manual"',
        ".SH NAME",
        "sarra\\-options \\- every configuration option of the sr_* components",
        ".SH DESCRIPTION",
        "Options are written one per line in configuration files (see",
        ".BR sr_config (7))",
        "or as",
        ".B \\-name value",
        "on the command line. Every name listed after the first is an alias (sr2 spelling).",
        "This page is generated from the option table that also drives parsing and --help.",
        "An option marked",
        ".B Refused",
        "is one sarra does not support (yet): a configuration that sets it does not load, and",
        "the error names the file, the line, the option and why. An option marked",
        ".B No effect",
        "is accepted so that sr2 files load unchanged, with one warning per load.",
        ".SH OPTIONS",
    ]
    for option in options_table():
        out.append(".TP")
        out.append(f".B {_roff(option_synopsis(option))}")
        out.append(_roff(option.help[:1].upper() + option.help[1:] + "."))
        details = _default(option)
        if details:
            out.append(".br")
            out.append(_roff(f"({details})"))
        if option.support is Support.REFUSED:
            out.append(".br")
            out.append(_roff(f"Refused: {option.support_note}."))
        elif option.support is Support.NOOP:
            out.append(".br")
            out.append(_roff(f"No effect: {option.support_note}; one warning per load."))
        components = sorted(option.components)
        if not components and option.support is Support.NOOP:
            continue
        out.append(".br")
        if not components:
            out.append("Read by sr_police (pump settings); other components warn and ignore it.")
        elif len(components) == len(OPTION_COMPONENTS):
            out.append("Components: all.")
        else:
            out.append(_roff(f"Components: {', '.join(components)}."))
    out += [".SH SEE ALSO", ".BR sr_config (7)"]
    return "\n".join(out) + "\n"


def main() -> None:
    """Print the page to standard output."""
    print(render(), end="")


if __name__ == "__main__":
    main()
