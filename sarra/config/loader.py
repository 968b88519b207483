"""Load a component's configuration: defaults, files, includes, variables, command line.

Read order (later wins): built-in defaults, the component's defaults (both from the option
table), ``<config_dir>/default.conf``, ``<config_dir>/admin.conf`` (pump roles, as in sr2),
``<config_dir>/<component>.conf`` (if present), the config file, then the command-line
options. The command line winning is a deliberate change:
sr2 read the config file *after* the command line, so there the file won.

The language is sr2's: one ``keyword value`` per line (the value is the rest of the line),
``#`` starting a comment line, ``include FILE`` (``config FILE``), ``${VAR}`` substitution and
order-sensitive ``accept``/``reject`` (each captures the destination options in force) and
``subtopic`` (each binds on the exchange and topic_prefix in force). See sr_config(7).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from sarra import osport
from sarra.config import paths, plugin_names
from sarra.config.credentials import parse_url
from sarra.config.masks import NOTICE_VARIABLES, Mask, expand_variables
from sarra.config.options import (
    SR3_VALUE_CONVERTERS,
    Kind,
    Option,
    Support,
    options_table,
    parse_bandwidth,
    parse_value,
)
from sarra.config.quota import parse_quota
from sarra.errors import ConfigError, parse_on_failure

log = logging.getLogger(__name__)

_TABLE = options_table()
_CONSUMER_INFLIGHT = frozenset({"subscribe", "sender"})
_EVENTS = frozenset({"create", "delete", "link", "modify", "move", "mkdir", "rmdir"})
#: options that set Unix modes: no effect on Windows, warned about there when set explicitly
_MODE_OPTIONS = frozenset({"chmod", "chmod_dir", "chmod_log"})
_NONE_WORDS = frozenset({"none", "off", "false", "0"})
_URL_OPTIONS = frozenset(
    {
        "broker",
        "post_broker",
        "destination",
        "admin",
        "feeder",
        "management_url",
        "bandwidth_redis_serverurl",
        "nodupe_redis_serverurl",
        "quota_redis_serverurl",
    }
)
CMDLINE = "<command line>"
_COMPOUND = frozenset(
    {Kind.MASK, Kind.SUBTOPIC, Kind.INCLUDE, Kind.DECLARE, Kind.HEADER, Kind.PLUGIN, Kind.LIST}
)
_REGEX = Option("pattern", Kind.REGEX, None, "a regular expression")


@dataclass(frozen=True, slots=True)
class Binding:
    """One queue binding: ``topic_prefix.subtopic`` on ``exchange``."""

    exchange: str
    topic_prefix: str
    subtopic: str

    @property
    def routing_key(self) -> str:
        """The AMQP binding key, escaped as sr2 does (spaces, and ``#`` except a final ``.#``)."""
        key = f"{self.topic_prefix}.{self.subtopic}".replace(" ", "%20")
        if key.endswith(".#"):
            return key[:-2].replace("#", "%23") + ".#"
        return key.replace("#", "%23")


@dataclass(frozen=True)
class Config:
    """A loaded configuration: read-only. ``cfg.name`` or ``cfg.get("name")`` by any spelling."""

    component: str
    name: str | None
    path: Path | None
    values: Mapping[str, Any]
    masks: tuple[Mask, ...] = ()
    bindings: tuple[Binding, ...] = ()
    plugins: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    headers_add: Mapping[str, str] = field(default_factory=dict)
    headers_del: tuple[str, ...] = ()
    declared: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    explicit: frozenset[str] = frozenset()
    warnings: tuple[str, ...] = ()
    default_mask: Mask = field(default_factory=lambda: Mask("", True))

    def get(self, name: str, default: Any = None) -> Any:
        """The value of option ``name`` (canonical name or alias); ``default`` if unknown."""
        option = _TABLE.resolve(name)
        if option is None:
            return self.values.get(name, default)
        return self.values.get(option.name, default)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        option = _TABLE.resolve(name)
        if option is None or option.name not in self.values:
            raise AttributeError(f"no option {name!r}")
        return self.values[option.name]

    def __repr__(self) -> str:
        shown = {
            k: (_redact_url(v) if k in _URL_OPTIONS and isinstance(v, str) else v)
            for k, v in self.values.items()
            if k in self.explicit
        }
        return f"Config(component={self.component!r}, name={self.name!r}, set={shown!r})"

    __str__ = __repr__


def _redact_url(text: str) -> str:
    try:
        url = parse_url(text)
    except ConfigError:
        return "<unparsable URL>"
    return url.without_password()


def _url_user(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return parse_url(text).user or "anonymous"
    except ConfigError:
        return None


class _Loader:
    """Mutable state while reading; :meth:`finish` freezes it into a :class:`Config`."""

    def __init__(
        self, component: str, name: str | None, env: Mapping[str, str], now: float | None
    ) -> None:
        self.component = component
        self.name = name
        self.env = dict(env)
        self.now = now
        self.values: dict[str, Any] = {o.name: o.default_for(component) for o in _TABLE}
        self.explicit: set[str] = set()
        #: where each option was last set: (file, line)
        self.origin: dict[str, tuple[str, int | None]] = {}
        self.masks: list[Mask] = []
        self.bindings: list[tuple[str | None, str, str]] = []
        self.plugins: dict[str, list[str]] = {}
        self.headers_add: dict[str, str] = {}
        self.headers_del: list[str] = []
        self.declared: dict[str, list[str]] = {}
        #: the words of plain list options (``path``, ...) so far, made their value by
        #: :meth:`finish`: a tuple rebuilt at each occurrence was quadratic in sr_post's paths
        self.lists: dict[str, list[str]] = {}
        self.warnings: list[str] = []
        self.noop_warned: set[str] = set()
        self.mode_warned: set[str] = set()
        self.stack: list[Path] = []
        self.strict_components = True

    # -- reading -------------------------------------------------------------------------

    def read_file(self, file: Path, *, where: str | None = None, line: int | None = None) -> None:
        resolved = file.resolve()
        if resolved in self.stack:
            chain = " -> ".join(str(p) for p in [*self.stack, resolved])
            raise ConfigError(f"include cycle: {chain}", path=where, line=line, option="include")
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(f"no such file {file}", path=where, line=line) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {file}: {exc}", path=str(file)) from exc
        self.stack.append(resolved)
        try:
            for number, raw in enumerate(text.splitlines(), start=1):
                stripped = raw.strip()
                if not stripped or stripped.startswith("#"):
                    continue
                word, _, rest = stripped.partition(" ")
                if "\t" in word:
                    word, _, more = word.partition("\t")
                    rest = f"{more} {rest}"
                self.apply(word, rest.strip() or None, str(file), number)
        finally:
            self.stack.pop()

    def apply(self, word: str, text: str | None, where: str, line: int | None) -> None:
        """Apply one option occurrence. Raises ConfigError located at ``where:line``."""
        option = _TABLE.resolve(word.lstrip("-"))
        if option is None:
            hint = _TABLE.suggest(word.lstrip("-"))
            extra = f" (did you mean {hint!r}?)" if hint else ""
            raise ConfigError(f"unknown option{extra}", path=where, line=line, option=word)
        if option.support is Support.REFUSED:
            raise ConfigError(option.support_note, path=where, line=line, option=word)
        if option.name == "sr3" and where != CMDLINE:
            raise ConfigError(
                "command line only: the configuration tree is chosen before any file is read "
                "(give --sr3, or set SR_CONFIG_TREE=sr3)",
                path=where,
                line=line,
                option=word,
            )
        if option.support is Support.NOOP:
            if option.name not in self.noop_warned:
                self.noop_warned.add(option.name)
                message = f"{where}:{line or '-'}: option {word!r} is {option.support_note}"
                self.warnings.append(message)
                log.warning("%s", message)
        elif self.strict_components and not option.applies_to(self.component):
            message = f"{where}:{line or '-'}: option {word!r} is ignored by {self.component}"
            self.warnings.append(message)
            log.warning("%s", message)
        if option.name in _MODE_OPTIONS and osport.WINDOWS:
            self._warn_mode_on_windows(option.name, word, where, line)
        try:
            if text is not None:
                keep = NOTICE_VARIABLES if option.name == "directory" else frozenset()
                text = expand_variables(text, self._variable, now=self.now, keep=keep)
                convert = SR3_VALUE_CONVERTERS.get(word.lstrip("-"))
                if convert is not None:
                    text = convert(text)
            self._apply(option, text, where, line)
        except ConfigError as exc:
            if exc.path is not None:
                raise
            raise ConfigError(_message(exc), path=where, line=line, option=word) from exc
        except (ValueError, IndexError) as exc:
            shown = str(exc) if option.name not in _URL_OPTIONS else "bad URL"
            raise ConfigError(shown, path=where, line=line, option=word) from exc

    def _warn_mode_on_windows(self, name: str, word: str, where: str, line: int | None) -> None:
        """``chmod``, ``chmod_dir`` and ``chmod_log`` set explicitly on Windows: a warning
        naming the file and line, once per option (docs/windows.md says why not a refusal)."""
        if name in self.mode_warned:
            return
        self.mode_warned.add(name)
        message = (
            f"{where}:{line or '-'}: option {word!r} has no effect on Windows: files have "
            "ACLs, not mode bits; new files and directories inherit the ACL of the directory "
            "they are made in (for logs, the user's profile), so set that directory's ACL "
            "(icacls) to restrict or widen access"
        )
        self.warnings.append(message)
        log.warning("%s", message)

    def _apply(self, option: Option, text: str | None, where: str, line: int | None) -> None:
        if option.kind in _COMPOUND:
            if text is None:
                raise ValueError("a value is required")
            self._apply_compound(option, text, where, line)
        else:
            self._apply_scalar(option, text, where, line)
        self.explicit.add(option.name)
        self.origin[option.name] = (where, line)

    def _mask(self, pattern: str, *, accept: bool, filename: str = "") -> Mask:
        """A mask for ``pattern`` that carries the path options in force at this point of the
        file (directory, mirror, strip, ...); ``filename`` overrides the ``filename`` option."""
        v = self.values
        return Mask(
            pattern,
            accept=accept,
            directory=v["directory"],
            mirror=v["mirror"],
            strip=v["strip"],
            flatten=v["flatten"],
            base_dir=v["base_dir"],
            rename=v["rename"],
            filename=filename or v["filename"],
        )

    def _apply_compound(self, option: Option, text: str, where: str, line: int | None) -> None:
        kind, name = option.kind, option.name
        if kind is Kind.MASK:
            pattern, _, keyword = text.partition(" ")
            regex = parse_value(_REGEX, pattern)
            self.masks.append(self._mask(regex, accept=name == "accept", filename=keyword.strip()))
        elif kind is Kind.SUBTOPIC:
            if text.lower() in _NONE_WORDS:
                self.bindings.clear()
            else:
                self.bindings.append((self._exchange_now(), self.values["topic_prefix"], text))
        elif kind is Kind.INCLUDE:
            self.read_file(self._find_include(text, where), where=where, line=line)
        elif kind is Kind.DECLARE:
            role, _, rest = text.partition(" ")
            if role == "env":
                key, eq, value = rest.strip().partition("=")
                if not eq or not key:
                    raise ValueError("expected declare env NAME=value")
                self.env[key.strip()] = value.strip()
            else:
                self.declared.setdefault(role, []).extend(rest.split())
        elif kind is Kind.HEADER:
            key, eq, value = text.partition("=")
            if not eq or not key.strip():
                raise ValueError("expected header NAME=VALUE")
            if value.strip().lower() in ("none", "null"):
                self.headers_add.pop(key.strip(), None)
                self.headers_del.append(key.strip())
            else:
                self.headers_add[key.strip()] = value.strip()
        elif kind is Kind.PLUGIN:
            hooks = self.plugins.setdefault(name, [])
            if text.lower() in ("none", "off"):
                hooks.clear()
            else:
                hooks.append(_plugin_spec(text))
        elif name == "on_failure":  # one "CLASS ACTION" per line, checked here
            failure_class, action = parse_on_failure(text)
            self.values[name] = (*self.values[name], f"{failure_class} {action}")
        elif name == "quota":  # one "SOURCE bytes=SIZE files=N" per line, checked here
            source, quota = parse_quota(text)
            self.values[name] = (*self.values[name], f"{source} {quota.text()}")
        elif name == "bandwidth":  # one "NAME RATE [WEIGHT]" per line, checked here
            parse_bandwidth(text)
            self.values[name] = (*self.values[name], " ".join(text.split()))
        else:  # Kind.LIST
            # a path from the command line is one shell word, spaces and all (sr_post "a b.txt"
            # posts one file); in a file, a path line lists words as sr2's did
            words = [text] if name == "path" and where == CMDLINE else text.split()
            if name == "base_url_accept":
                for w in words:
                    parse_value(_REGEX, w)
            self.lists.setdefault(name, list(self.values[name])).extend(words)

    def _apply_scalar(self, option: Option, text: str | None, where: str, line: int | None) -> None:
        name = option.name
        value = parse_value(option, text)
        if name == "events" and value is not None:
            bad = set(value.replace(",", "|").split("|")) - _EVENTS
            if bad:
                raise ValueError(f"unknown events {sorted(bad)}; known: {sorted(_EVENTS)}")
        if name == "quota_redis_serverurl" and value:
            url = parse_url(value)
            # ConfigError, not ValueError: a URL option's ValueError is shown as "bad URL"
            if url.scheme not in ("redis", "rediss"):
                raise ConfigError(
                    f"expected a redis:// or rediss:// URL, not {url.without_password()}"
                )
            if url.path.strip("/") and not url.path.strip("/").isdigit():
                raise ConfigError(f"the path of the URL is a database number, not {url.path!r}")
        if name in _URL_OPTIONS and value and parse_url(value).password is not None:
            message = (
                f"{where}:{line or '-'}: option {option.name!r} carries a password; "
                "keep passwords in credentials.conf"
            )
            self.warnings.append(message)
            log.warning("%s", message)
        self.values[name] = value

    def _find_include(self, text: str, where: str) -> Path:
        wanted = Path(os.path.expanduser(text))
        here = Path(where).parent if where != CMDLINE else Path.cwd()
        bases = [Path("/")] if wanted.is_absolute() else [here, paths.config_dir(self.env)]
        for base in bases:
            for candidate in (base / wanted, base / f"{wanted}.conf", base / f"{wanted}.inc"):
                if candidate.is_file():
                    return candidate
        raise ConfigError(f"included file {text!r} not found (looked in {bases[0]} and config dir)")

    def _variable(self, name: str) -> str | None:
        v = self.values
        known: dict[str, Any] = {
            "HOSTNAME": socket.gethostname,
            "PROGRAM": lambda: f"sr_{self.component}",
            "CONFIG": lambda: self.name or "",
            "BROKER_USER": lambda: _url_user(v["broker"]) or _url_user(v["post_broker"]),
            "PBD": lambda: v["post_base_dir"],
            "BD": lambda: v["base_dir"],
            "SOURCE": lambda: v["source"],
        }
        if name in known:
            result: str | None = known[name]()
            return result
        return self.env.get(name)

    def _exchange_now(self) -> str | None:
        v = self.values
        user = _url_user(v["broker"])
        if v["exchange_suffix"] and user:
            return f"xs_{user}_{v['exchange_suffix']}"
        return v["exchange"]  # type: ignore[no-any-return]

    # -- derived defaults ----------------------------------------------------------------

    def finish(self, path: Path | None) -> Config:
        v = self.values
        for name, words in self.lists.items():
            v[name] = tuple(words)
        consumer = _TABLE["broker"].applies_to(self.component)
        if v["debug"]:
            v["loglevel"] = "debug"
        v["exchange"] = self._exchange_now()
        if self.component == "report" and v["exchange"] is None and _url_user(v["broker"]):
            v["exchange"] = f"xs_{_url_user(v['broker'])}"
        if v["post_broker"] and v["post_exchange"] is None:
            suffix = f"_{v['post_exchange_suffix']}" if v["post_exchange_suffix"] else ""
            v["post_exchange"] = f"xs_{_url_user(v['post_broker'])}{suffix}"
        if v["post_topic_prefix"] is None:
            v["post_topic_prefix"] = v["topic_prefix"]
        if "inflight" not in self.explicit and self.component in _CONSUMER_INFLIGHT:
            v["inflight"] = ".tmp" if v["post_broker"] is None else None
        if self.component in ("post", "watch") and v["to_clusters"] is None and v["post_broker"]:
            v["to_clusters"] = parse_url(v["post_broker"]).host
        if consumer and v["report_exchange"] is None and _url_user(v["broker"]):
            v["report_exchange"] = f"xs_{_url_user(v['broker'])}"
        if v["retry_ttl"] is None:
            v["retry_ttl"] = v["expire"]
        if v["queue_type"] == "quorum" and not v["durable"]:
            where, line = self.origin.get("durable", self.origin["queue_type"])
            raise ConfigError(
                "queue_type quorum needs a durable queue (RabbitMQ's quorum queues are always "
                "durable): remove 'durable off' or use queue_type classic",
                path=where,
                line=line,
                option="durable",
            )
        bindings: list[Binding] = []
        if consumer:
            raw = self.bindings if "subtopic" in self.explicit else []
            if not raw:
                raw = [(v["exchange"], v["topic_prefix"], "#")]
            if any(ex is None for ex, _, _ in raw) and v["broker"]:
                raise ConfigError(
                    "no exchange given", path=str(path) if path else None, option="exchange"
                )
            bindings = [Binding(ex or "", tp, sub) for ex, tp, sub in raw]
        elif "subtopic" in self.explicit:
            # posters: the topic to post with (sr_post -sub); no exchange to bind
            bindings = [Binding(ex or "", tp, sub) for ex, tp, sub in self.bindings]
        for hook, specs in self.plugins.items():
            v[hook] = tuple(specs)
        default_mask = self._mask("", accept=True)
        return Config(
            component=self.component,
            name=self.name,
            path=path,
            values=MappingProxyType(dict(v)),
            masks=tuple(self.masks),
            bindings=tuple(bindings),
            plugins=MappingProxyType({k: tuple(s) for k, s in self.plugins.items() if s}),
            headers_add=MappingProxyType(dict(self.headers_add)),
            headers_del=tuple(self.headers_del),
            declared=MappingProxyType({k: tuple(s) for k, s in self.declared.items()}),
            explicit=frozenset(self.explicit),
            warnings=tuple(self.warnings),
            default_mask=default_mask,
        )


def _plugin_spec(text: str) -> str:
    """The module to load for a plugin line: sarra's built-in for an sr2 bundled plugin or an
    sr3 built-in callback (sarra.config.plugin_names), else the spec as written.

    Raises:
        ValueError: a name sarra knows and does not provide, with the reason.
    """
    entry = plugin_names.lookup(text)
    if entry is None:
        return text
    if entry.builtin is None:
        raise ValueError(f"{entry.origin} plugin {text!r} is not available in sarra: {entry.note}")
    return entry.builtin


def _message(exc: ConfigError) -> str:
    return exc.args[0] if exc.args else str(exc)


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False where a directory on the way may not be searched."""
    try:
        return path.is_file()
    except PermissionError:
        return False


def find_config(component: str, config: str, env: Mapping[str, str] | None = None) -> Path:
    """The file for ``config``: a path, or ``<config_dir>/<component>/<name>[.conf]``.

    Raises:
        ConfigError: no such file.
    """
    given = Path(os.path.expanduser(config))
    if _is_file(given):
        return given
    base = paths.config_dir(env)
    folders = [base / name for name in paths.component_dir_names(component, env)]
    for folder in folders:
        for candidate in (folder / config, folder / f"{config}.conf"):
            if _is_file(candidate):
                return candidate
    where = " and ".join(str(f) for f in folders)
    raise ConfigError(
        f"no configuration {config!r} (looked for {given} and in {where})", path=str(given)
    )


def config_name(file: Path) -> str:
    """The configuration's name: the file name without ``.conf``."""
    return file.name[: -len(".conf")] if file.name.endswith(".conf") else file.name


def load_config(
    component: str,
    config: str | None,
    cmdline: Sequence[tuple[str, str]] = (),
    *,
    env: Mapping[str, str] | None = None,
    now: float | None = None,
) -> Config:
    """Load ``component``'s configuration ``config`` (a name or a path; None: no file).

    ``cmdline`` holds (option, value) pairs from the command line, in order (value ``""`` for
    a flag given alone); they are applied last. ``env`` replaces ``os.environ`` for variables
    and directory overrides; ``now`` fixes the clock for date variables (tests).

    Raises:
        ConfigError: unknown option, bad value, missing or unreadable file, include cycle,
            unknown variable; the error names file, line and option.
    """
    environment: Mapping[str, str] = os.environ if env is None else env
    file = find_config(component, config, environment) if config is not None else None
    loader = _Loader(component, config_name(file) if file else None, environment, now)
    loader.strict_components = False  # default.conf is shared by every component
    default_conf = paths.default_conf_path(environment)
    if default_conf.is_file():
        loader.read_file(default_conf)
    admin_conf = paths.admin_conf_path(environment)
    if admin_conf.is_file():
        loader.read_file(admin_conf)
    loader.strict_components = True
    component_conf = paths.component_conf_path(component, environment)
    if component_conf.is_file():
        loader.read_file(component_conf)
    if file is not None:
        loader.read_file(file)
    for word, value in cmdline:
        loader.apply(word, value if value != "" else None, CMDLINE, None)
    return loader.finish(file)


def load_pump_config(
    env: Mapping[str, str] | None = None, *, admin_conf: Path | None = None
) -> Config:
    """The pump-wide settings: ``default.conf`` then ``admin.conf`` of the config directory.

    This is what ``sr_police`` reads: ``admin``, ``feeder``, ``cluster``, the ``declare``
    lines (in :attr:`Config.declared`, role -> names) and ``management_url``/``mgmt_port``.
    ``admin_conf`` replaces ``<config_dir>/admin.conf``. Missing files are not an error.

    Raises:
        ConfigError: as :func:`load_config`.
    """
    environment: Mapping[str, str] = os.environ if env is None else env
    loader = _Loader("police", None, environment, None)
    loader.strict_components = False  # these files hold options of every component
    for file in (
        paths.default_conf_path(environment),
        admin_conf or paths.admin_conf_path(environment),
    ):
        if file.is_file():
            loader.read_file(file)
    return loader.finish(None)


class _Named(Protocol):
    """What names a queue: a :class:`Config` or typed :class:`~sarra.config.settings.Settings`."""

    @property
    def component(self) -> str: ...

    @property
    def name(self) -> str | None: ...

    def get(self, name: str, default: Any = None) -> Any: ...


def resolve_queue_name(cfg: _Named, env: Mapping[str, str] | None = None) -> str:
    """The queue name: ``queue_name`` if set, else the one every instance shares.

    The default, ``q_<user>.sr_<component>.<config>.<8 digits>.<8 digits>`` (sr2's form),
    is created once and kept in the state directory of the configuration, in
    ``<component>.<config>.<user>.qname``; creation is atomic, so instances starting
    together agree on one name.

    Raises:
        ConfigError: the state directory cannot be written.
    """
    if cfg.get("queue_name"):
        return str(cfg.get("queue_name"))
    user = _url_user(cfg.get("broker")) or "anonymous"
    name = cfg.name or "default"
    folder = paths.state_dir(cfg.component, name, env)
    file = folder / f"{cfg.component}.{name}.{user}.qname"
    try:
        existing = file.read_text(encoding="utf-8").strip()
        if existing:
            return existing
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot read queue name: {exc}", path=str(file)) from exc
    import secrets  # only to name a new queue: not in every start-up (hmac, random, base64)

    digits = f"{secrets.randbelow(10**8):08d}.{secrets.randbelow(10**8):08d}"
    suffix = f".{cfg.get('queue_suffix')}" if cfg.get("queue_suffix") else ""
    fresh = f"q_{user}.sr_{cfg.component}.{name}.{digits}{suffix}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temp = folder / f".{file.name}.{os.getpid()}.{secrets.token_hex(4)}"
        temp.write_text(fresh + "\n", encoding="utf-8")
        try:
            os.link(temp, file)  # fails if another instance won the race
        except FileExistsError:
            fresh = file.read_text(encoding="utf-8").strip() or fresh
        finally:
            temp.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot store queue name: {exc}", path=str(file)) from exc
    return fresh
