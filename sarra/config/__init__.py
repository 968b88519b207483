"""Configuration: option table, v2-compatible loader, credentials, masks, paths, command line.

The public surface::

    load_config(component, config, cmdline=(), *, env=None) -> Config
    resolve_queue_name(cfg) -> str
    parse_command_line(component, argv) -> CommandLine;  format_help(component) -> str
    CredentialStore.load(path);  to_broker_url(url_text, store) -> BrokerUrl
    Mask, match(masks, url, accept_unmatch), destination_relpath(options, relpath)

Nothing here reads files or connects at import time.
"""

from sarra.config.cmdline import ACTION_NAMES, CommandLine, format_help, parse_command_line
from sarra.config.credentials import Credential, CredentialStore, parse_url, to_broker_url
from sarra.config.loader import Binding, Config, find_config, load_config, resolve_queue_name
from sarra.config.masks import Mask, destination_relpath, expand_directory, explain, match
from sarra.config.options import OPTION_COMPONENTS, Kind, Option, OptionTable, options_table

__all__ = [
    "ACTION_NAMES",
    "OPTION_COMPONENTS",
    "Binding",
    "CommandLine",
    "Config",
    "Credential",
    "CredentialStore",
    "Kind",
    "Mask",
    "Option",
    "OptionTable",
    "destination_relpath",
    "expand_directory",
    "explain",
    "find_config",
    "format_help",
    "load_config",
    "match",
    "options_table",
    "parse_command_line",
    "parse_url",
    "resolve_queue_name",
    "to_broker_url",
]
