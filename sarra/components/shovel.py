"""sr_shovel: copy notices from one broker/exchange to another, transferring no file.

Reads ``exchange`` (``subtopic`` bindings under ``topic_prefix``) on ``broker``, keeps what
``accept``/``reject`` (and ``on_message`` plugins) let through, and posts each copy on
``post_exchange`` of ``post_broker`` (default: the input broker): the topic's leading
``topic_prefix`` replaced by ``post_topic_prefix``, encoded in ``post_format`` (v02 or v03,
either way from either input), spread over ``post_exchange_split`` exchanges when asked.
pubTime, baseUrl, relPath and every header are kept.

**Nothing lost across a restart of either broker.** Each copy is published with publisher
confirms before the input delivery is acked (the consuming loop publishes
``WorkItem.outgoing`` on the post session, then acks). If the destination broker goes away,
publishing raises, the loop drops the input connection unacked and reconnects: the input
broker redelivers, and copies are sent again (at least once; a copy the destination
confirmed just before the loss may appear twice). If the input broker goes away, deliveries
not yet acked are redelivered by it. Duplicates are not suppressed (an ``sr_winnow`` does that).
"""

from __future__ import annotations

import logging

from sarra.broker.admin import ensure_exchanges
from sarra.broker.base import Broker
from sarra.components.common import MaskResolver, broker_url
from sarra.components.runner import ConsumerComponent, Flow, Instance
from sarra.config.settings import Settings
from sarra.errors import BrokerError
from sarra.flow.shovel import Shoveler, ShovelSettings, log_copy

log = logging.getLogger(__name__)


def _accepted(directory: str, rel: str) -> str:
    return rel


class ShovelComponent(ConsumerComponent):
    """sr_shovel: the declaration (defaults live in the option table)."""

    name = "shovel"

    def check(self, s: Settings) -> None:
        ShovelSettings.from_config(s)

    def _post_session(self, s: Settings) -> Broker | None:
        """A session to ``post_broker`` when it is not the input broker (else None)."""
        if s.post_broker and s.post_broker != s.broker:
            return self.session_factory(
                broker_url(s, "post_broker"), s, f"sr_shovel {s.name} (post)"
            )
        return None

    def _declare_outputs(self, s: Settings, session: Broker) -> None:
        if not s.declare_exchange:
            return
        names = ShovelSettings.from_config(s).exchanges
        try:
            session.connect()
            ensure_exchanges(session, names)
        except BrokerError as e:  # the loop reconnects; publishing will say if it is missing
            log.warning("could not declare %s: %s", ", ".join(names), e)

    def declare_outputs(self, s: Settings, session: Broker) -> None:
        post = self._post_session(s)
        try:
            self._declare_outputs(s, post or session)
        finally:
            if post is not None:
                post.close()

    def build(self, run: Instance) -> Flow:
        s = run.settings
        shoveler = Shoveler(ShovelSettings.from_config(s), MaskResolver(s, _accepted), run.plugins)
        post_session = self._post_session(s)
        self._declare_outputs(s, post_session or run.session)
        return Flow(
            shoveler.select,
            shoveler.work,
            on_settled=log_copy,
            post_session=post_session,
            threads=1,
            summary=shoveler.summary,
        )
