"""The shovel's flow: copy each accepted notice to ``post_exchange``, nothing transferred.

Each accepted notice becomes one :attr:`~sarra.flow.work.WorkItem.outgoing` message; the
consuming loop publishes it with publisher confirms on the post session and acks the input
delivery only afterwards (see :mod:`sarra.components.shovel` for the guarantees).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sarra.codec import v02
from sarra.codec.paths import cut_topic, topic_for
from sarra.config.settings import Settings
from sarra.errors import ConfigError
from sarra.flow.events import log_event, log_failure
from sarra.flow.hooks import Plugins
from sarra.flow.work import WorkItem
from sarra.notice import Notice

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShovelSettings:
    """Where and how the copies are published."""

    post_exchange: str
    topic_prefix: str
    post_topic_prefix: str
    post_format: str = "v02"
    exchange_split: int = 0
    header_value_max: int = 252
    persistent: bool = True
    #: ``header name=value`` lines: set on every copy; ``header name=none``: removed
    set_headers: tuple[tuple[str, str], ...] = ()
    drop_headers: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, s: Settings) -> ShovelSettings:
        if not s.post_exchange:
            raise ConfigError(
                "sr_shovel needs a post_exchange (or a post_broker, whose xs_<user> is the "
                "default)",
                option="post_exchange",
            )
        if s.suppress_duplicates > 0:
            raise ConfigError(
                "sr_shovel copies every accepted notice and does not suppress duplicates; "
                "put an sr_winnow in the path for that",
                option="suppress_duplicates",
            )
        if s.topic_prefix.split(".")[1:2] == ["report"]:
            raise ConfigError(
                "sr_shovel copies posts, not reports; reports are routed by sr_report",
                option="topic_prefix",
            )
        return cls(
            post_exchange=s.post_exchange,
            topic_prefix=s.topic_prefix,
            post_topic_prefix=s.post_topic_prefix or s.topic_prefix,
            post_format=s.post_format,
            exchange_split=s.post_exchange_split,
            header_value_max=s.header_value_max,
            persistent=s.persistent,
            set_headers=tuple(s.headers_add.items()),
            drop_headers=tuple(s.headers_del),
        )

    @property
    def exchanges(self) -> tuple[str, ...]:
        """Every exchange copies may go to."""
        if self.exchange_split > 1:
            return tuple(f"{self.post_exchange}{i:02d}" for i in range(self.exchange_split))
        return (self.post_exchange,)


def rewrite_topic(notice: Notice, topic_prefix: str, post_topic_prefix: str) -> str:
    """The copy's topic: the notice's topic with its leading ``topic_prefix`` levels replaced by
    ``post_topic_prefix``; a topic that does not start with ``topic_prefix`` (a binding with
    another prefix) is rebuilt from the notice's path under ``post_topic_prefix``."""
    topic = notice.topic
    if topic == topic_prefix or topic.startswith(topic_prefix + "."):
        return cut_topic(post_topic_prefix + topic[len(topic_prefix) :])
    return topic_for(post_topic_prefix, notice.path)


class Shoveler:
    """select of the shovel loop (flow thread): masks, ``on_message`` plugins, then the copy
    is encoded into ``item.outgoing`` and the item settled; nothing runs in the pool."""

    def __init__(
        self,
        settings: ShovelSettings,
        accepts: Callable[[Notice], object],
        plugins: Plugins | None = None,
    ) -> None:
        self.settings = settings
        self.accepts = accepts
        self.plugins = plugins or Plugins()
        self.copied = 0
        self.rejected = 0

    def copy(self, notice: Notice) -> Notice:
        """The notice as it is posted: exchange and topic rewritten, the ``header`` lines
        applied, everything else kept."""
        s = self.settings
        if s.set_headers or s.drop_headers:
            notice = v02.derive(
                notice, set_headers=dict(s.set_headers), drop_headers=s.drop_headers
            )
        return dataclasses.replace(
            notice,
            exchange=v02.split_exchange(s.post_exchange, notice.checksum, s.exchange_split),
            topic=rewrite_topic(notice, s.topic_prefix, s.post_topic_prefix),
        )

    def select(self, item: WorkItem) -> bool:
        notice = item.notice
        if self.accepts(notice) is None:
            self.rejected += 1
            item.settle(0, "rejected by the configuration")
            return False
        if not self.plugins.empty and not self.plugins.on_message(item):
            item.settle(0, "dropped by an on_message plugin")
            return False
        s = self.settings
        copy = self.copy(item.notice)  # a plugin may have replaced the notice
        # raises MalformedMessage (417, logged and reported) when the copy cannot be encoded
        item.outgoing.append(
            v02.encode(
                copy,
                copy.exchange,
                header_value_max=s.header_value_max,
                persistent=s.persistent,
                post_format=s.post_format,
            )
        )
        self.copied += 1
        item.settle(201, "Published")
        return False

    @staticmethod
    def work(item: WorkItem) -> None:  # select settles everything
        raise AssertionError("the shovel has no transfer work")

    def summary(self) -> str:
        return f"copied {self.copied}, rejected {self.rejected}"


def log_copy(item: WorkItem) -> None:
    """on_settled: a debug line per copy, an error line per notice that could not be copied."""
    notice = item.notice
    if item.code == 201:
        log_event(log, logging.DEBUG, "copied", notice.path, 201, notice.header("source"))
    else:
        log_failure(log, item)
