"""The option table: one source for the loader, the command line, ``--help`` and the man page.

Each :class:`Option` has a canonical name (the sr2 snake_case spelling), its aliases (other sr2
spellings and short flags), a :class:`Kind` that says how a value is parsed, a default (which
may differ per component), a one-line help and the components it applies to.

Value parsing lives here too (:func:`parse_value`), so the loader and the command line agree on
what ``on``, ``10m`` or ``1G`` mean. Parsers raise :class:`ValueError`; the loader turns that
into a :class:`~sarra.errors.ConfigError` naming file, line and option.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, TypeVar

from sarra.errors import on_failure_help

#: Every component an option may apply to (sr2 program names without the ``sr_`` prefix);
#: a superset of those implemented (:data:`sarra.components.IMPLEMENTED`).
OPTION_COMPONENTS: tuple[str, ...] = (
    "subscribe",
    "post",
    "watch",
    "sarra",
    "sender",
    "shovel",
    "winnow",
    "poll",
    "report",
    "log",
)

_ALL = frozenset(OPTION_COMPONENTS)
_CONSUMERS = frozenset({"subscribe", "sarra", "sender", "shovel", "winnow", "report", "log"})
_POSTERS = frozenset({"post", "watch", "poll"})
_REPOSTERS = _ALL - {"report", "log"}
#: (sr_poll downloads nothing: the options of downloads do not apply to it)
_DOWNLOADERS = frozenset({"subscribe", "sarra", "sender"})
_WATCHERS = frozenset({"post", "watch"})
#: sr_poll reads no local file and calls no plugin: the options about those do not apply to it
_NOT_POLL = _ALL - {"poll"}
#: the components whose duplicate suppression can be shared across nodes (nodupe_driver)
_SHARED_NODUPE = frozenset({"subscribe", "winnow"})
#: the components that suppress duplicates (sender, report and log refuse the options)
_NODUPE = _ALL - {"sender", "report", "log"}


class Kind(enum.Enum):
    """How an option's value is written and parsed."""

    BOOL = "bool"  # on/off/yes/no/true/false/1/0; alone means on
    INT = "int"
    SIZE = "size"  # bytes, binary suffixes K/M/G/T (optional trailing B)
    RATE = "rate"  # bytes per second, sr3's suffixes: k/m/g/t decimal, binary with i or b
    FLOAT = "float"  # a non-negative decimal number
    DURATION = "duration"  # seconds (float); suffixes s/m/h/d/w
    STR = "str"
    URL = "url"
    REGEX = "regex"  # validated with re.compile
    MODE = "mode"  # octal file mode, e.g. 644
    STRIP = "strip"  # a count of leading path elements, or a regex
    INFLIGHT = "inflight"  # NONE, a suffix/prefix (.tmp, tmp/) or a minimum age in seconds
    CACHING = "caching"  # on/off or a duration; stored as seconds, 0 meaning off
    LIST = "list"  # repeatable; each occurrence appends its words
    HEADER = "header"  # name=value, repeatable; value none/null deletes the header
    PLUGIN = "plugin"  # repeatable hook spec; none/off clears the hook
    MASK = "mask"  # accept/reject: order-sensitive, see sarra.config.masks
    SUBTOPIC = "subtopic"  # order-sensitive binding on the exchange in force
    INCLUDE = "include"  # read another file in place
    DECLARE = "declare"  # declare env NAME=value, declare source|subscriber NAME, ...


#: Kinds whose occurrences the loader turns into structure (masks, bindings, declarations,
#: headers, included files) rather than one value; typed settings carry that structure.
STRUCTURAL_KINDS = frozenset({Kind.MASK, Kind.SUBTOPIC, Kind.INCLUDE, Kind.DECLARE, Kind.HEADER})

#: Kinds that may be given without a value (on the command line or alone on a line).
FLAG_KINDS = frozenset({Kind.BOOL, Kind.CACHING})


class Support(enum.Enum):
    """What sarra does with an option it accepts (tests/unit/test_option_support.py checks it).

    ``IMPLEMENTED``: code outside the loader reads the value, and a test exercises it.
    ``REFUSED``: loading it is an error naming file, line, option and :attr:`Option.why`.
    ``NOOP``: accepted for compatibility, with one warning per load that it has no effect
    (sarra always behaves as the option asks, or the option has no meaning for sarra).
    """

    IMPLEMENTED = "implemented"
    REFUSED = "refused"
    NOOP = "no-op"


@dataclass(frozen=True, slots=True)
class Option:
    """One configuration option. ``components`` is the set it applies to."""

    name: str
    kind: Kind
    default: Any
    help: str
    components: frozenset[str] = _ALL
    aliases: tuple[str, ...] = ()
    per_component: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    choices: tuple[str, ...] = ()
    #: Captured by each accept/reject when it appears (order matters).
    captured: bool = False
    metavar: str = ""
    #: implemented, refused or a compatibility no-op; ``why`` says why for the latter two
    support: Support = Support.IMPLEMENTED
    why: str = ""

    @property
    def support_note(self) -> str:
        """What --help, the man page and the loader say of a refused or no-op option."""
        if self.support is Support.REFUSED:
            return f"not supported by sarra: {self.why}"
        if self.support is Support.NOOP:
            return f"accepted for compatibility, has no effect: {self.why}"
        return ""

    def default_for(self, component: str) -> Any:
        """The default this option has for ``component``."""
        return self.per_component.get(component, self.default)

    def applies_to(self, component: str) -> bool:
        """True if ``component`` uses this option (others accept it with a warning)."""
        return component in self.components

    @property
    def value_hint(self) -> str:
        """What a value looks like, for --help and the man page."""
        if self.metavar:
            return self.metavar
        if self.choices:
            return "|".join(self.choices)
        return _HINTS[self.kind]


_HINTS = {
    Kind.BOOL: "[on|off]",
    Kind.INT: "N",
    Kind.SIZE: "N[K|M|G]",
    Kind.RATE: "N[k|m|g][i|b]",
    Kind.FLOAT: "N",
    Kind.DURATION: "N[s|m|h|d|w]",
    Kind.STR: "TEXT",
    Kind.URL: "URL",
    Kind.REGEX: "REGEX",
    Kind.MODE: "OCTAL",
    Kind.STRIP: "N|REGEX",
    Kind.INFLIGHT: "NONE|.SUFFIX|PREFIX/|SECONDS",
    Kind.CACHING: "[on|off|DURATION]",
    Kind.LIST: "VALUE...",
    Kind.HEADER: "NAME=VALUE",
    Kind.PLUGIN: "PLUGIN",
    Kind.MASK: "REGEX [FILENAME]",
    Kind.SUBTOPIC: "PATTERN",
    Kind.INCLUDE: "FILE",
    Kind.DECLARE: "ROLE NAME",
}

_TRUE = frozenset({"on", "yes", "true", "1"})
_FALSE = frozenset({"off", "no", "false", "0"})
#: binary size units; "b" is the byte itself (``100b``), dropped by parse_size after another unit
_SIZE_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DURATION_FACTORS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NONE_WORDS = frozenset({"none", "null"})


def parse_bool(text: str) -> bool:
    """Parse on/off/yes/no/true/false/1/0 (any case). Raises ValueError otherwise."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"expected one of on/off/yes/no/true/false/1/0, got {text!r}")


def parse_size(text: str) -> int:
    """Parse a byte count with an optional binary suffix: ``10``, ``4K``, ``1M``, ``2GB``."""
    word = text.strip().lower()
    if word.endswith("b") and len(word) > 1 and not word[:-1].isdigit():
        word = word[:-1]
    return _with_unit(text, word, _SIZE_UNITS, int, "size", "1024, 4K, 1M or 2G")


_RATE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b?)")
_RATE_PREFIXES = "kmgt"


def parse_rate(text: str) -> int:
    """Parse bytes per second as sr3 does (``byteRateMax``): ``500k`` is 500,000, ``1.5m``
    1,500,000; a value ending in ``i`` or ``b`` is binary (``500ki``, ``500kb``, ``500kib``
    are 512,000). Fractions of a byte are dropped."""
    word = text.strip().lower()
    match = _RATE.fullmatch(word)
    if match is None:
        raise ValueError(
            f"expected a rate in bytes/s such as 500000, 500k, 1.5m or 512ki, got {text!r}"
        )
    number, prefix, marker = match.groups()
    base = 1024 if marker else 1000
    power = _RATE_PREFIXES.index(prefix) + 1 if prefix else 0
    return int(float(number) * base**power)


#: the name of the pump total in ``bandwidth`` lines
BANDWIDTH_TOTAL = "*"


def parse_bandwidth(text: str) -> tuple[str, int, float]:
    """One ``bandwidth`` line: ``NAME RATE [WEIGHT]`` -> (name, bytes/s, weight).

    Raises ValueError (the loader adds file and line) for anything else."""
    words = text.split()
    if len(words) not in (2, 3):
        raise ValueError("expected bandwidth SOURCE|* RATE [WEIGHT], e.g. bandwidth alice 10M 2")
    name, rate_text = words[0], words[1]
    rate = parse_rate(rate_text)
    if rate <= 0:
        raise ValueError(f"a bandwidth cap must be positive, not {rate_text!r}")
    weight = 1.0
    if len(words) == 3:
        if name == BANDWIDTH_TOTAL:
            raise ValueError("bandwidth * takes no weight (weights belong to sources)")
        try:
            weight = float(words[2])
        except ValueError:
            raise ValueError(f"a bandwidth weight is a positive number, not {words[2]!r}") from None
        if not weight > 0 or weight == float("inf"):
            raise ValueError(f"a bandwidth weight is a positive number, not {words[2]!r}")
    return name, rate, weight


def parse_float(text: str) -> float:
    """Parse a non-negative decimal number: ``10``, ``2.5``."""
    try:
        number = float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number such as 10 or 2.5, got {text!r}") from None
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"expected a finite number, not negative: {text!r}")
    return number


def parse_duration(text: str) -> float:
    """Parse seconds with an optional s/m/h/d/w suffix: ``30``, ``1.5m``, ``7h``, ``2w``."""
    word = text.strip().lower()
    return _with_unit(text, word, _DURATION_FACTORS, float, "duration", "30, 10m, 7h or 2w")


_N = TypeVar("_N", int, float)


def _with_unit(
    text: str, word: str, units: Mapping[str, _N], read: Callable[[str], _N], kind: str, eg: str
) -> _N:
    """``word`` (``text`` cleaned up) as a non-negative number with an optional one-letter unit
    suffix from ``units``, times that unit. ValueError names the ``kind`` and examples ``eg``."""
    unit = word[-1:] if word[-1:] in units else ""
    try:
        number = read(word[: len(word) - len(unit)])
    except ValueError:
        raise ValueError(f"expected a {kind} such as {eg}, got {text!r}") from None
    if number < 0:
        raise ValueError(f"a {kind} cannot be negative: {text!r}")
    return number * units[unit] if unit else number


def _parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _parse_mode(text: str) -> int:
    try:
        mode = int(text.strip(), 8)
    except ValueError:
        raise ValueError(f"expected an octal file mode such as 644, got {text!r}") from None
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"file mode out of range: {text!r}")
    return mode


def _parse_regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {text!r}: {exc}") from None
    return text


def _parse_strip(text: str) -> int | str:
    word = text.strip()
    return int(word) if word.isdigit() else _parse_regex(word)


def _parse_inflight(text: str) -> float | str | None:
    word = text.strip()
    if word.lower() in _NONE_WORDS:
        return None
    if word[:1].isdigit():
        seconds = parse_duration(word)
        # sr2: an age of one second or less means no age check at all.
        return seconds if seconds > 1 else None
    return word


def _parse_caching(text: str) -> float:
    word = text.strip().lower()
    if word.isalpha() and word not in _DURATION_FACTORS:
        return 300.0 if parse_bool(word) else 0.0
    return parse_duration(word)


def _parse_url(text: str) -> str | None:
    word = text.strip()
    if word.lower() in _NONE_WORDS:
        return None
    if "://" not in word and not word.startswith("file:"):
        raise ValueError(f"expected a URL such as amqps://user@host/, got {text!r}")
    return word


def _parse_str(text: str) -> str | None:
    word = text.strip()
    return None if word.lower() in _NONE_WORDS else word


def _parse_choice(option: Option, text: str) -> str:
    word = text.strip().lower()
    if word not in option.choices:
        raise ValueError(f"expected one of {', '.join(option.choices)}, got {text!r}")
    return word


_SCALAR_PARSERS: Mapping[Kind, Any] = MappingProxyType(
    {
        Kind.BOOL: parse_bool,
        Kind.INT: _parse_int,
        Kind.SIZE: parse_size,
        Kind.RATE: parse_rate,
        Kind.FLOAT: parse_float,
        Kind.DURATION: parse_duration,
        Kind.STR: _parse_str,
        Kind.URL: _parse_url,
        Kind.REGEX: _parse_regex,
        Kind.MODE: _parse_mode,
        Kind.STRIP: _parse_strip,
        Kind.INFLIGHT: _parse_inflight,
        Kind.CACHING: _parse_caching,
    }
)


def parse_value(option: Option, text: str | None) -> Any:
    """Parse ``text`` as a value of a scalar ``option``.

    ``None`` (option given alone) means on for flag kinds. Raises ValueError with a message fit
    for the user; list-like kinds (LIST, HEADER, PLUGIN, MASK, ...) are handled by the loader.
    """
    if text is None or text.strip() == "":
        if option.kind in FLAG_KINDS:
            return True if option.kind is Kind.BOOL else 300.0
        raise ValueError("a value is required")
    if option.choices:
        return _parse_choice(option, text)
    parser = _SCALAR_PARSERS.get(option.kind)
    if parser is None:
        raise ValueError(f"{option.kind.value} options are not scalar")
    return parser(text)


class OptionTable:
    """The options by canonical name, with alias resolution and close-match suggestions."""

    def __init__(self, options: Iterable[Option]) -> None:
        self._options: dict[str, Option] = {}
        self._lookup: dict[str, Option] = {}
        for option in options:
            if option.name in self._options:
                raise ValueError(f"duplicate option {option.name!r}")
            self._options[option.name] = option
            for word in (option.name, *option.aliases):
                if word in self._lookup:
                    raise ValueError(f"{word!r} names both {self._lookup[word].name} and {option}")
                self._lookup[word] = option

    def __iter__(self) -> Any:
        return iter(self._options.values())

    def __len__(self) -> int:
        return len(self._options)

    def __getitem__(self, name: str) -> Option:
        return self._options[name]

    def resolve(self, word: str) -> Option | None:
        """The option named ``word`` (canonical name or alias; ``-`` and ``_`` equivalent)."""
        option = self._lookup.get(word)
        if option is None:
            option = self._lookup.get(word.replace("-", "_"))
        return option

    def suggest(self, word: str) -> str | None:
        """The closest known spelling of ``word``, if any is close."""
        import difflib  # only for a misspelt option: not loaded by every process

        close = difflib.get_close_matches(word, list(self._lookup), n=1, cutoff=0.75)
        return close[0] if close else None

    def for_component(self, component: str) -> tuple[Option, ...]:
        """The options ``component`` uses, in table order."""
        return tuple(o for o in self._options.values() if o.applies_to(component))


def _o(
    name: str,
    kind: Kind,
    default: Any,
    help: str,
    components: frozenset[str] = _ALL,
    aliases: tuple[str, ...] = (),
    per: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Option:
    return Option(
        name, kind, default, help, components, aliases, MappingProxyType(per or {}), **extra
    )


B, N, SZ, D, S, U = Kind.BOOL, Kind.INT, Kind.SIZE, Kind.DURATION, Kind.STR, Kind.URL
IMPLEMENTED, REFUSED, NOOP = Support.IMPLEMENTED, Support.REFUSED, Support.NOOP
_NONE: frozenset[str] = frozenset()  # accepted for sr2 compatibility, ignored (warning)

# fmt: off
#: Why a hook sarra never calls is refused (``None``: sarra calls it, see sarra.flow.hooks).
_NOT_CALLED = ("sarra never calls this hook; the hooks it calls are on_message, on_file, "
               "on_part, on_post, on_report, on_heartbeat, do_get, do_put, on_start and "
               "on_stop")
#: the components on the consumer runner (components/runner.py), which call on_report and
#: on_heartbeat
_RUNNER = frozenset({"subscribe", "sarra", "sender", "winnow"})
#: sr2's do_send took over the whole send, sr2's do_put only the write of the in-flight file
_DO_SEND = ("use do_put: its plugin is asked first for every file and sends it under its final "
            "name (the whole send, as sr2's do_send did; see docs/plugins.md)")
#: sr_poll's announcing is its own: a plugin may read pages and rewrite entries, not replace it
_DO_POLL = ("sr_poll's pass (the memory of what was announced, the lock between instances, "
            "publishing confirmed before the memory is written) is not replaceable: read other "
            "index page formats with on_html_page, rewrite or reject listed entries with "
            "on_line, or post what a program of your own finds with sr_post")
_SR2_PLUGIN_HOOKS = (
    ("on_message", ("on_msg",), _RUNNER, "run on each notice accepted", None),
    # a sender sends files it did not download: sr2's sr_sender never ran on_file either
    ("on_file", (), _DOWNLOADERS - {"sender"}, "run after each file is downloaded", None),
    ("on_part", (), _DOWNLOADERS - {"sender"}, "run after each block of a multi-part file "
     "is downloaded and verified", None),
    ("on_post", (), frozenset({"post", "watch", "sarra", "sender"}),
     "run before each notice is posted (False: not posted)", None),
    ("on_heartbeat", ("on_hb",), _RUNNER, "run about every heartbeat seconds", None),
    ("on_start", (), _RUNNER | _WATCHERS, "run when an instance starts", None),
    ("on_stop", (), _RUNNER | _WATCHERS, "run when an instance stops", None),
    ("on_report", ("on_rpt",), _RUNNER, "run before each report is published (False: not "
     "published)", None),
    ("on_watch", (), _WATCHERS, "run at each watch pass", _NOT_CALLED),
    ("on_line", (), frozenset({"poll"}),
     "rewrite (size, mtime) or reject each entry of a remote listing", None),
    ("on_html_page", (), frozenset({"poll"}),
     "read an http(s) index page of another format into entries", None),
    ("on_data", (), _DOWNLOADERS, "transform data while it is downloaded", _NOT_CALLED),
    ("do_download", (), _DOWNLOADERS, "download with a plugin for unknown schemes",
     "use do_get: its plugin is asked first for every URL, whatever the scheme (list an "
     "unknown scheme in base_url_accept)"),
    ("do_get", (), frozenset({"subscribe", "sarra"}),
     "fetch with a plugin first (True: fetched, None: sarra's own transport)", None),
    ("do_put", (), frozenset({"sender"}),
     "send with a plugin first (True: sent under the final name, None: sarra's own transport)",
     None),
    ("do_send", (), frozenset({"sender"}), "send with a plugin", _DO_SEND),
    ("do_poll", (), frozenset({"poll"}), "poll with a plugin", _DO_POLL),
    ("do_task", (), _ALL, "run a task with a plugin", _NOT_CALLED),
    ("destfn_script", (), _DOWNLOADERS | {"sender"}, "compute the destination file name",
     "use an on_message plugin that sets work.dest_rel (see sarra.flow.hooks)"),
    ("plugin", ("callback", "flowcb", "callback_prepend"), _NOT_POLL,
     "load a plugin that declares its own hooks (sr3 callback/flowcb: built-ins only, see "
     "docs/plugins.md)", None),
)

#: The literal table, in the order --help and the man page show it.
OPTIONS: tuple[Option, ...] = (
    # -- input broker, exchange, queue
    _o("broker", U, None,
       "input broker, amqp[s]://user@host[:port][,host[:port]...]/[vhost] (several hosts: "
       "the nodes of a broker cluster) or mqtt[s]://user@host[:port]/",
       _CONSUMERS, ("b",)),
    _o("exchange", S, None, "exchange to bind to (subscribe, sarra: xpublic)", _CONSUMERS,
       ("ex",), {"subscribe": "xpublic", "sender": "xpublic", "sarra": "xpublic",
                 "log": "xr_${BROKER_USER}"}),
    _o("read_sources", B, False, "bind to xs_<u> of every declared source (pump sarra)",
       frozenset({"sarra"})),
    _o("exchange_suffix", S, None, "bind to xs_<broker user>_<suffix>", _CONSUMERS,
       ("exchangeSuffix",)),
    _o("exchange_split", B, False, "each instance reads its own <exchange>NN", _CONSUMERS),
    _o("topic_prefix", S, "v02.post", "topic prefix of bindings (v02.post)", _CONSUMERS,
       ("tp", "topicPrefix"),
       {"report": "v02.report", "log": "v02.report"}),
    _o("subtopic", Kind.SUBTOPIC, "#",
       "consumers: bind to topic_prefix.<pattern> on the exchange in force; "
       "sr_post/sr_watch: the topic to post with, instead of the path's directories",
       _CONSUMERS | _WATCHERS, ("sub",)),
    _o("queue_name", S, None, "queue name (default q_<user>.sr_<component>.<config>.<random>)",
       _CONSUMERS, ("queue", "qn", "queueName")),
    _o("queue_suffix", S, None, "suffix appended to the default queue name", _CONSUMERS),
    _o("durable", B, True, "declare the queue durable", _CONSUMERS),
    _o("queue_type", S, "classic",
       "type of the queue declared: classic, or quorum (replicated over the nodes of a broker "
       "cluster, survives the loss of a minority of them; must be durable; sr_poll: of its "
       "election queue, with single_active_consumer)", _CONSUMERS | {"poll"},
       ("queueType",), choices=("classic", "quorum")),
    _o("single_active_consumer", B, False,
       "one active instance across hosts, elected by the broker: consumers declare their "
       "queue with x-single-active-consumer (one instance receives, the next takes over with "
       "its unacknowledged notices when it goes); sr_poll polls only while it holds the "
       "election of the single-active-consumer queue q_<user>.sr_poll.<config>.election on "
       "post_broker, whose token carries the poll state to the next poller (replaces sr2's "
       "vip)", _CONSUMERS | {"poll"}, ("singleActiveConsumer",)),
    _o("expire", D, 300.0, "delete the queue after this long unused (sr2 5m: override it)",
       _CONSUMERS, ("expiry",)),
    _o("message_ttl", D, None, "discard queued notices older than this", _CONSUMERS,
       ("message-ttl",)),
    _o("prefetch", N, 25, "notices fetched ahead of processing (subscribe and sarra: 100, "
       "for larger batches: half a window shares one durability barrier, one ack and, in a "
       "sarra, one confirmed publication)", _CONSUMERS,
       per={"sarra": 100, "subscribe": 100}),
    _o("reset", B, False,
       "start (and restart) afresh: delete the queue and local state first, as cleanup does, "
       "when no instance runs", _CONSUMERS),
    _o("declare_queue", B, True, "declare the queue (off on locked-down brokers)", _CONSUMERS,
       ("dq", "queueDeclare")),
    _o("bind_queue", B, True,
       "bind the queue (off: the queue is not bound, its bindings are left to the broker "
       "administrator)", _CONSUMERS, ("bq", "queueBind")),
    _o("declare_exchange", B, True, "declare the exchanges used", _ALL,
       ("de", "dx", "exchangeDeclare")),
    _o("persistent", B, True, "publish notices as persistent messages", _REPOSTERS),
    # -- selection and destination (order-sensitive)
    _o("accept", Kind.MASK, None, "accept URLs matching the regex (first match wins)", _ALL,
       ("get",)),
    _o("reject", Kind.MASK, None, "reject URLs matching the regex (first match wins)", _ALL),
    _o("accept_unmatch", B, True, "accept URLs no accept/reject matched", _ALL,
       ("accept_unmatched", "au", "acceptUnmatched"),
       {"subscribe": False, "sender": False, "poll": False}),
    _o("log_reject", B, False, "log each rejected notice", _ALL, ("logReject",)),
    _o("base_url_accept", Kind.LIST, (), "only fetch from baseUrls matching these regexes",
       _DOWNLOADERS, metavar="REGEX..."),
    _o("base_url_private", B, False,
       "fetch from baseUrls on loopback, link-local, private or unspecified addresses",
       frozenset({"subscribe"})),
    _o("file_size_max", SZ, 0, "refuse notices claiming a file larger than this (0: no bound; "
       "sr3 fileSizeMax: 1M = 1000000, 1Mi or 1MB = 1048576)", frozenset({"subscribe", "sarra"}),
       ("fileSizeMax",)),
    _o("directory", S, None, "destination directory (captured by later accept/reject)",
       _DOWNLOADERS | {"post", "watch", "poll"}, captured=True, metavar="DIR"),
    _o("base_dir", S, None, "local directory the notice paths are relative to", _NOT_POLL,
       ("bd", "baseDir", "basedir"),
       captured=True, metavar="DIR"),
    _o("mirror", B, False, "keep the relative path tree under directory", _DOWNLOADERS,
       per={"sarra": True, "sender": True}, captured=True),
    _o("strip", Kind.STRIP, 0, "drop N leading path elements, or the part matching a regex",
       _NOT_POLL, captured=True),
    _o("flatten", S, "/", "replace '/' by this in file names", _DOWNLOADERS, captured=True,
       metavar="CHAR"),
    _o("rename", S, None, "rename the file (a path; ending in / keeps the name)", _ALL, ("rn",),
       captured=True, metavar="PATH"),
    _o("filename", S, None, "sr2 file-name keyword captured by accept", _DOWNLOADERS,
       captured=True),
    _o("inflight", Kind.INFLIGHT, None,
       "download under a temporary name (.tmp, tmp/); posting: skip files younger than N s",
       _NOT_POLL),
    _o("inplace", B, False, "assemble parts into the file in place", _NOT_POLL, ("in", "assemble"),
       {"subscribe": True}),
    _o("part_expiry", D, 24 * 3600.0,
       "give up on a file received in parts after this long without progress (report 499)",
       _DOWNLOADERS),
    _o("parts_dir", S, None,
       "where the records of files received in parts (inplace on) are kept, with their "
       "locks (default: the instance's state directory); pump nodes writing one shared tree "
       "set it to one directory on that shared file system, so blocks landing on different "
       "nodes complete the file once", frozenset({"subscribe", "sarra"}), metavar="DIR"),
    _o("sync_barrier", S, "filesystem",
       "how each batch of downloads is made durable before its renames and acks: "
       "filesystem (one syncfs(2) of the destination's file system per barrier, shared by "
       "the instances of the configuration, then every file's and directory's own fsync, "
       "which finds nothing left to write: the fewest journal commits and the least CPU on "
       "a disk, but it also writes back what other programs left unwritten on that file "
       "system), or files (only the batch's own files and directories are fsync'd: other "
       "writers' data is never waited for, at the cost of a journal commit per few files). "
       "Linux; elsewhere files is what is done", frozenset({"subscribe", "sarra"}),
       choices=("filesystem", "files")),
    _o("overwrite", B, False,
       "download a whole file even when the local copy has its size, checksum and mtime "
       "(off: skip it, report 304; blocks of a file in parts are always skipped)",
       frozenset({"subscribe", "sarra"}), ("o",)),
    _o("delete", B, False,
       "delete the source once the copy, verified against its d or s sum, is durable (a file "
       "in parts once complete); where the transport can delete (sftp, file), else warned "
       "once per origin and reported 501", frozenset({"subscribe", "sarra"})),
    _o("discard", B, False,
       "delete each file placed once on_file plugins ran and its report was published "
       "(a file in parts once complete)", frozenset({"subscribe"}),
       ("d", "download-and-discard")),
    _o("notify_only", B, False, "do not download, only process notices", _CONSUMERS,
       ("n", "no_download")),
    _o("preserve_time", B, True, "set the file times from the notice (poll: send the listed "
       "time as mtime)", _DOWNLOADERS | {"poll"},
       ("pt", "timeCopy")),
    _o("preserve_mode", B, True, "set the file mode from the notice", _DOWNLOADERS,
       ("pm", "permCopy")),
    _o("chmod", Kind.MODE, 0, "mode of new files (0: leave it to the umask)", _DOWNLOADERS,
       ("default_mode", "dm", "permDefault")),
    _o("chmod_dir", Kind.MODE, 0o775, "mode of new directories", _DOWNLOADERS,
       ("default_dir_mode", "ddm", "permDirDefault")),
    _o("chmod_log", Kind.MODE, 0o600, "mode of log files", _ALL,
       ("default_log_mode", "dlm", "permLog")),
    _o("destination", U, None, "remote destination of a sender (a path after the host is the "
       "remote tree it writes in), or the server a poll lists (sr3 pollUrl)",
       frozenset({"sender", "poll"}), ("sendTo", "remoteUrl", "pollUrl")),
    _o("transfer_threads", N, 4, "parallel downloads (bounded pool, one connection each)",
       _DOWNLOADERS),
    # -- reliability
    _o("instances", N, 1, "processes sharing the queue", _ALL - {"post"}, ("instance", "i")),
    _o("attempts", N, 3, "download attempts before the retry queue", _DOWNLOADERS, ("at",)),
    _o("retry", B, True, "keep failed notices in a disk retry queue", _CONSUMERS,
       ("retry_mode",)),
    _o("retry_ttl", D, None, "drop retries older than this (default: expire)", _CONSUMERS),
    _o("on_failure", Kind.LIST, (), on_failure_help(), _CONSUMERS,
       metavar="CLASS drop|queue"),
    _o("quota", Kind.LIST, (),
       "a source's share of the pump's tree (admin.conf): sr_sarra refuses a file that would "
       "take the source over it (report 507, failure class quota); bytes=SIZE and/or files=N; "
       "repeatable, the last line for a source wins", frozenset({"sarra"}),
       metavar="SOURCE bytes=SIZE files=N"),
    _o("quota_redis_serverurl", U, None,
       "keep the quota ledger in this Redis (redis://[user@]host[:port][/db], rediss:// for "
       "TLS; the password from credentials.conf) instead of <state_dir>/quota/: shared by the "
       "nodes of a pump on one tree (admin.conf). While it is unreachable, files of sources "
       "with a quota are not written but retried later", frozenset({"sarra"}), metavar="URL"),
    _o("quota_redis_keybase", S, None, "prefix of the Redis quota ledger's keys (default "
       "sarra.quota): the same on every node of the pump", frozenset({"sarra"})),
    _o("retry_delay", D, 30.0,
       "first delay before retrying a failed notice from disk; doubles on each failure",
       _CONSUMERS),
    _o("retry_delay_max", D, 3600.0, "longest delay between retries from disk", _CONSUMERS),
    _o("timeout", D, 300.0, "transfer inactivity timeout", _ALL),
    _o("batch", N, 500, "notices per confirmed publish batch", frozenset({"post"})),
    _o("kbytes_ps", N, 0,
       "cap the transfer rate of each instance at N x 1024 bytes/s (sr2 units), downloads "
       "and sends alike, whole files and blocks (0: unlimited; with byte_rate_max, the "
       "smaller wins)", _DOWNLOADERS),
    _o("byte_rate_max", Kind.RATE, 0,
       "cap the transfer rate of each instance at this many bytes/s, read as sr3 reads "
       "byteRateMax: k, m, g are decimal (500k: 500,000 bytes/s), binary when the value ends "
       "in i or b (500ki, 500kb: 512,000); 0: unlimited; with kbytes_ps, the smaller wins",
       _DOWNLOADERS, ("byteRateMax",)),
    _o("bandwidth", Kind.LIST, (),
       "a pump-wide cap, one per line (usually in admin.conf): bandwidth SOURCE RATE [WEIGHT] "
       "caps the transfers of files from SOURCE (the notice's source) at RATE bytes/s for all "
       "processes on all nodes together; bandwidth * RATE is the pump's total, divided among "
       "the sources transferring at the time in proportion to their WEIGHT (default 1). RATE "
       "as byte_rate_max; kept in Redis at bandwidth_redis_serverurl (see sarra.flow.bandwidth)",
       _DOWNLOADERS, metavar="SOURCE|* RATE [WEIGHT]"),
    _o("bandwidth_shared", Kind.RATE, 0,
       "cap this configuration's transfers at this many bytes/s for all its instances on all "
       "nodes together (a bucket in Redis at bandwidth_redis_serverurl; 0: none)",
       _DOWNLOADERS),
    _o("bandwidth_redis_serverurl", U, None,
       "the Redis server of the pump-wide bandwidth caps (redis://[user@]host[:port][/db]; "
       "the password from credentials.conf; default: nodupe_redis_serverurl). While it is "
       "unreachable each process limits itself alone at the same rates", _DOWNLOADERS,
       metavar="URL"),
    _o("bandwidth_wait_max", D, 0.0,
       "the longest one transfer may wait, in total, on the byte rate caps (kbytes_ps, "
       "byte_rate_max, bandwidth, bandwidth_shared): when its next wait would take it past "
       "this, the transfer stops, its temporary file is removed and it fails with class "
       "bandwidth (on_failure bandwidth: queue retries it later, drop reports 499); "
       "0: wait as long as the caps require", _DOWNLOADERS),
    _o("message_rate_max", Kind.FLOAT, 0.0,
       "take at most this many notices per second from the queue, per instance (sr3's "
       "messageRateMax; 0: unlimited)", frozenset({"subscribe", "sarra", "sender", "winnow"}),
       ("messageRateMax",)),
    _o("bufsize", SZ, 1024 * 1024, "transfer buffer size", _ALL, ("bufSize",), support=NOOP,
       why="sarra sizes its transfer buffers itself"),
    _o("heartbeat", D, 300.0, "interval of on_heartbeat plugin calls (sarra's own periodic "
       "tasks run every few seconds; for the broker connection see broker_heartbeat)",
       _RUNNER, ("housekeeping",)),
    _o("broker_heartbeat", D, 60.0,
       "AMQP heartbeat proposed to the broker: a connection silent for about twice this "
       "long (a frozen broker, a blackholed link) is dropped and made again", _ALL),
    _o("sanity_log_dead", D, 450.0,
       "the sanity action restarts a running instance that has written neither its "
       "heartbeat file nor its log for longer than this (hung); 0: never", _ALL,
       ("sld", "runStateThreshold_hung")),
    _o("header_value_max", N, 252, "longest header value (UTF-8 bytes) we publish", _ALL),
    # -- reports and duplicates
    _o("report_back", B, True, "publish a report for each notice handled", _CONSUMERS,
       ("reportback", "rb"),
       {"report": False, "sarra": False, "log": False}),
    _o("report_exchange", S, None, "exchange of reports (default xs_<broker user>)", _CONSUMERS,
       ("lx", "le")),
    _o("suppress_duplicates", Kind.CACHING, 0.0,
       "drop notices seen within this time (on: 300 s)", _NODUPE,
       ("caching", "cache", "no_duplicates", "noduplicates", "nd", "sd", "nodupe_ttl"),
       {"winnow": 1200.0}),
    _o("cache_basis", S, "path", "what identifies a duplicate", _NODUPE,
       ("cb", "suppress_duplicates_basis", "sdb", "nodupe_basis"),
       choices=("data", "name", "path")),
    _o("nodupe_driver", S, "disk", "where duplicate suppression keeps its entries: disk "
       "(per instance, in its state directory) or redis (shared by the instances of this "
       "configuration on every node, at nodupe_redis_serverurl; see sarra.flow.sharedstore)",
       _SHARED_NODUPE, choices=("disk", "redis")),
    _o("nodupe_redis_serverurl", U, None, "the Redis server of nodupe_driver redis "
       "(redis://[user@]host[:port][/db], rediss:// for TLS; the password from "
       "credentials.conf)", _SHARED_NODUPE, metavar="URL"),
    _o("nodupe_redis_keybase", S, None, "prefix of this configuration's Redis keys (default "
       "sarra.nodupe.<component>.<config>): the same on every node sharing the queue",
       _SHARED_NODUPE),
    _o("nodupe_redis_claim", D, 30.0, "sr_winnow with nodupe_driver redis: how long a node's "
       "claim on a notice lasts before it is confirmed; a node that dies holding claims "
       "delays those files by this long (longer than a post's confirmation takes)",
       frozenset({"winnow"})),
    # -- posting
    _o("post_broker", U, None, "broker to post to (several amqp hosts: a broker cluster)",
       _REPOSTERS, ("pb",)),
    _o("post_exchange", S, None, "exchange to post to (default xs_<post_broker user>)",
       _REPOSTERS, ("pe", "px"), {"sarra": "xpublic"}),
    _o("post_exchange_suffix", S, None, "post to xs_<post_broker user>_<suffix>", _REPOSTERS,
       ("post_exchangeSuffix",)),
    _o("post_exchange_split", N, 0, "spread posts over N exchanges <post_exchange>NN",
       _REPOSTERS, ("pes", "pxs", "post_exchangeSplit")),
    _o("post_topic_prefix", S, None, "topic prefix of posts (default topic_prefix, v02.post)",
       _REPOSTERS, ("ptp", "post_topicPrefix")),
    _o("post_base_url", S, None, "baseUrl of the notices posted", _REPOSTERS,
       ("pbu", "url", "u", "post_url", "post_baseUrl", "post_baseurl")),
    _o("post_base_dir", S, None, "local directory the posted paths are relative to",
       _REPOSTERS - {"poll"}, ("pbd", "document_root", "dr", "post_document_root", "pdr",
                               "post_baseDir", "post_basedir", "post_documentRoot"),
       metavar="DIR"),
    _o("post_format", S, "v02", "format of the notices and reports posted: v02 (sr2) or v03 "
       "(sr3's JSON, content type application/json; use with post_topic_prefix v03)",
       _REPOSTERS, ("postFormat",), choices=("v02", "v03")),
    _o("base_url", S, None, "sr3 baseUrl", _ALL, ("baseUrl", "baseurl"), support=REFUSED,
       why="sr3 reads no baseUrl option (it is a field of each notice); the URL of the "
       "notices posted is post_base_url (sr3 post_baseUrl)"),
    _o("path", Kind.LIST, (), "files or directories to post (poll: remote directories to "
       "list, as sr3's poll reads path)", _WATCHERS | {"poll"}, ("p",),
       metavar="PATH..."),
    _o("sum", S, "d", "checksum algorithm letter (d, s, n, z,X, 0, ...; sr3 identity: sha512 "
       "is s, md5 d, md5name n, random 0, arbitrary a, cod,ALGO z,LETTER)", _REPOSTERS,
       ("identity",), {"poll": "z,d"}),
    _o("blocksize", SZ, 0, "split files into parts of this size (0: guess, 1: whole; sr3 "
       "blockSize: 1M = 1000000, 1Mi or 1MB = 1048576, and 0 is a fixed 50 MiB)",
       _REPOSTERS - {"poll"}, ("blockSize",), per={"post": 200 * 1024**2, "watch": 200 * 1024**2}),
    _o("parts", S, None, "part specification (developers only)", _REPOSTERS, support=REFUSED,
       why="a fixed part specification is not implemented; blocksize chooses the parts"),
    _o("to_clusters", S, None, "destination clusters (default: the post_broker host)",
       _REPOSTERS, ("to",)),
    _o("cluster", S, None, "name of this cluster (from_cluster)", _ALL,
       ("cl", "from_cluster", "fc")),
    _o("cluster_aliases", Kind.LIST, (), "other names of this cluster", _ALL, ("ca",)),
    _o("gateway_for", Kind.LIST, (), "clusters this one forwards to", _ALL, ("gf",)),
    _o("cluster_route", Kind.LIST, (),
       "report routing: reports of cluster NAME go to xs_<user> on BROKER (NAME BROKER)",
       frozenset({"report"}), metavar="NAME BROKER"),
    _o("peer_accounts", Kind.LIST, (),
       "report routing: users relaying other pumps' reports (passed as is)",
       frozenset({"report"}), metavar="USER..."),
    _o("log_summary", B, False, "sr_log: print a summary of what is queued, then exit",
       frozenset({"log"})),
    _o("source", S, None, "source attributed to the posts", _ALL),
    _o("source_from_exchange", B, False, "take source from the exchange name (xs_<u>)",
       _CONSUMERS, ("sfe", "sourceFromExchange"), {"sarra": True}),
    _o("events", S, "create|delete|link|modify", "events to post", _WATCHERS,
       ("e", "fileEvents")),
    _o("sleep", D, 0.0, "seconds between passes (post: 0 means once)", _ALL,
       per={"poll": 300.0}),
    _o("file_time_limit", D, 60 * 86400.0, "poll: ignore remote files whose listed time is "
       "older than this (sr3 fileAgeMax)", frozenset({"poll"}), ("fileAgeMax",)),
    _o("follow_symlinks", B, False, "post the targets of symbolic links", _WATCHERS, ("fs",)),
    _o("force_polling", B, False, "walk the tree instead of using file system events",
       _WATCHERS, ("fp",)),
    _o("post_on_start", B, True, "post the existing tree at start", _WATCHERS, ("pos",)),
    _o("randomize", B, False, "post parts in random order", _WATCHERS, ("r",)),
    _o("growing", B, False, "announce files still being written (append-only) block by "
       "block as they grow, then their final blocks once they settle (needs a fixed "
       "blocksize; receivers must be sarra with inplace on)", _WATCHERS),
    _o("growing_idle", D, 5.0, "post with growing on: a file is finished once it has not "
       "grown for this long", frozenset({"post"})),
    _o("realpath_post", B, False,
       "resolve symbolic links (os.path.realpath) in the paths given, post_base_dir and "
       "linked directories walked, and post the resolved paths (still confined to "
       "post_base_dir)", _WATCHERS, ("realpath", "real", "realpathPost")),
    _o("reconnect", B, False, "sr2's 'reconnect between chunks'", _WATCHERS,
       support=NOOP, why="sr2 parses it and never reads it; sarra keeps one broker "
       "connection per session and makes it again when it drops"),
    _o("post_outage_max", D, 0.0,
       "give up posting once the broker has been unreachable this long (0: wait forever)",
       _WATCHERS, per={"post": 300.0}),
    _o("outlet", S, "post",
       "post: publish each notice; json: print it on standard output as one JSON line "
       "[topic, headers, body] instead; url: print its retrieval URL instead (json and url "
       "never connect to the post broker)", _WATCHERS, choices=("post", "json", "url")),
    _o("xattr_disable", B, False, "do not cache checksums in extended attributes", _NOT_POLL,
       ("xattr_disabled", "xd"), support=NOOP,
       why="sarra never caches checksums in extended attributes"),
    _o("header", Kind.HEADER, None, "add a header to posts (value none: remove it)", _ALL),
    # -- hooks
    *(
        _o(n, Kind.PLUGIN, (), h, c, a, support=REFUSED if why else IMPLEMENTED, why=why or "")
        for n, a, c, h, why in _SR2_PLUGIN_HOOKS
    ),
    # -- files, roles, logging, housekeeping
    _o("include", Kind.INCLUDE, None, "read another config file here", _ALL),
    _o("config", Kind.INCLUDE, None, "config file (in a file: same as include)", _ALL, ("c",)),
    _o("declare", Kind.DECLARE, None, "declare env NAME=value, or a pump role", _ALL, ("role",)),
    _o("admin", U, None, "broker administrator account (pump)", _NONE),
    _o("feeder", U, None, "pump-internal broker account", _NONE, ("manager",)),
    _o("management_url", U, None, "RabbitMQ management API URL (sr_police; default: the "
       "admin host on mgmt_port)", _NONE),
    _o("mgmt_port", N, 15672, "RabbitMQ management API port (sr_police)", _NONE),
    _o("vip", Kind.LIST, (), "run only on the node holding one of these addresses", _ALL,
       support=REFUSED,
       why="an address is not how sarra elects the one active instance: replace the line "
       "with 'single_active_consumer on' (the broker elects one poll, or one sender, across "
       "hosts, and hands over when it goes; admin guide section 8)"),
    _o("statehost", B, False, "keep state under a per-host directory", _ALL,
       support=REFUSED,
       why="the state directory is already each host's own unless the home directory is "
       "shared: on such hosts give each its own SR_STATE_DIR (what statehost did); what pump "
       "nodes must share goes through nodupe_driver redis, parts_dir and retry-return "
       "(admin guide section 8)"),
    _o("tls_rigour", S, "normal",
       "https and ftps transfers: lax skips certificate checks, normal and strict check "
       "them (amqps connections always check)",
       frozenset({"subscribe", "sarra", "sender", "poll"}),
       ("tls_rigor", "tlsr", "tlsRigour"), choices=("lax", "normal", "strict")),
    _o("loglevel", S, "info", "log level", _ALL, ("ll", "logLevel"),
       choices=("debug", "info", "warning", "error", "critical", "none")),
    _o("debug", B, False, "same as loglevel debug", _ALL),
    _o("log_format", S, "text", "instance log lines: text, or json (one JSON object per line: "
       "time, level, context component/config/instance, logger, message, and for a per-file "
       "event also event, relPath, code, source, bytes; passwords masked; "
       "stray output such as a plugin's print stays text)",
       _ALL, ("logFormat",), choices=("text", "json")),
    _o("quiet", B, False, "no live progress line on a terminal (sr_post, and the foreground "
       "instance of a consuming component); there is none when output is not a terminal",
       _ALL, ("q",)),
    _o("logrotate", N, 5, "log files kept (rotated daily)", _ALL,
       ("lr", "logdays", "ld", "logRotateCount")),
    _o("help", B, False, "show this help and exit", _ALL, ("h",)),
    _o("sr3", B, False, "command line only: read sr3's configuration tree (~/.config/sr3/"
       "<component>/NAME.conf, its default.conf, admin.conf, credentials.conf) instead of "
       "sarra's; same as SR_CONFIG_TREE=sr3 in the environment", _ALL),
    # -- settings of sarra's built-in plugins (sarra/plugins, docs/plugins.md)
    _o("msg_delay", D, 300.0, "on_message msg_delay: hold each notice until it is this old",
       _CONSUMERS),
    _o("msg_fdelay", D, 300.0,
       "on_message msg_fdelay: hold each notice, then an existing local file, until this old",
       _DOWNLOADERS, ("fdelay",)),
    _o("file_rxpipe_name", S, None,
       "on_file file_rxpipe: named pipe that receives the path of each file placed",
       _DOWNLOADERS, ("rxpipe_name",), metavar="PATH"),
    # sr2 options kept so that old files still load; they only warn.
    *(
        _o(n, S, None, "sr2 option, ignored", _NONE, support=NOOP,
           why="an sr2 setting with no meaning for sarra")
        for n in ("use_amqplib", "use_pika", "windows_run", "report_daemons", "cache_stat",
                  "remote_config_url", "hb_memory_multiplier", "logrotate_interval",
                  "destination_timezone", "poll_without_vip", "set_passwords", "hostname")
    ),
)

#: Options of the consumers' and re-posters' groups that sr_shovel has no use for: it transfers
#: no file and rewrites nothing but the exchange, topic and ``header`` lines, so these (file
#: placement, transfers, checksums, pump policy, delays) are "ignored by shovel" with a warning
#: naming file and line when a shovel configuration sets them.
_SHOVEL_IGNORES = frozenset(
    {
        "exchange_split", "base_dir", "strip", "rename", "inflight", "inplace", "notify_only",
        "timeout", "post_base_url", "post_base_dir", "sum", "blocksize", "to_clusters",
        "cluster_aliases", "gateway_for", "source", "source_from_exchange", "sleep",
        "msg_delay", "cache_basis",
    }
)  # fmt: skip
OPTIONS = tuple(
    replace(o, components=o.components - {"shovel"}) if o.name in _SHOVEL_IGNORES else o
    for o in OPTIONS
)
# fmt: on


_SR3_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", re.IGNORECASE)
_SR3_IDENTITY = {"sha512": "s", "md5": "d", "md5name": "n", "random": "0", "arbitrary": "a"}


def parse_sr3_size(text: str) -> int:
    """An sr3 size, read as sr3 reads one in a file: decimal units (``1M`` is 1,000,000), binary
    when the value ends in ``i`` or ``b`` (``1Mi``, ``1MiB``, ``1MB``: 1,048,576)."""
    word = text.strip()
    found = _SR3_SIZE.fullmatch(word)
    if found is None:
        raise ValueError(f"expected an sr3 size such as 1000, 500k, 1M or 1Mi, got {text!r}")
    number, unit = found.group(1), found.group(2)
    binary = word[-1].lower() in ("i", "b")
    power = "kmgt".index(unit.lower()) + 1 if unit else 0
    return int(float(number) * (1024 if binary else 1000) ** power)


def _sr3_block_size(text: str) -> str:
    size = parse_sr3_size(text)
    return str(50 * 1024**2 if size == 0 else size)


def _sr3_identity(text: str) -> str:
    word = text.strip().lower()
    method, comma, algorithm = word.partition(",")
    if method == "cod" and comma and algorithm in _SR3_IDENTITY:
        return f"z,{_SR3_IDENTITY[algorithm]}"
    if word in _SR3_IDENTITY:
        return _SR3_IDENTITY[word]
    known = ", ".join([*_SR3_IDENTITY, "cod,ALGORITHM"])
    raise ValueError(f"expected an sr3 identity method ({known}), got {text!r}")


#: sr3 spellings whose values are written in sr3's units or words, and the conversion to
#: sarra's value text; the loader and the command line apply it to values given under that
#: spelling (each option's help says so).
SR3_VALUE_CONVERTERS: Mapping[str, Callable[[str], str]] = MappingProxyType(
    {
        "blockSize": _sr3_block_size,
        "fileSizeMax": lambda text: str(parse_sr3_size(text)),
        "bufSize": lambda text: str(parse_sr3_size(text)),
        "identity": _sr3_identity,
    }
)


def options_table() -> OptionTable:
    """The option table built from :data:`OPTIONS` (cheap; callers may keep one)."""
    return OptionTable(OPTIONS)
