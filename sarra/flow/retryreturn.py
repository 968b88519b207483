"""Handing disk retry entries back to the broker, so they outlive the node that kept them.

A stopping consumer whose queue has another consumer (and ``sr_<component> retry-return``
for the state of a dead node) publishes each entry of its retry queue, with confirms, to the
configuration's own queue through the default exchange (``""``, routing key = the queue's
name: the only way to put a message in one queue alone), and removes it from the disk queue
only once confirmed. What the entry needs to be restored travels in headers of its own:

``x-sarra-retry-exchange`` / ``x-sarra-retry-topic``
    the exchange and routing key the notice first came with (the default exchange hides them);
``x-sarra-retry-attempts``, ``x-sarra-retry-first-seen``, ``x-sarra-retry-next-at``
    failed attempts so far, the time of the first failure (``retry_ttl`` counts from it) and
    when the next attempt is due (epoch seconds);
``x-sarra-retry-error``
    the last failure's message.

A consumer that receives a message through the default exchange carrying
``x-sarra-retry-exchange`` puts it back in its own disk retry queue as it was (same attempts,
same due time: not retried before it is due), then acks it.

Trust: the exchange of a delivery is set by the broker, so only a message published to the
default exchange (RabbitMQ resource ``amq.default``) is taken for a returned entry. The pump's
permissions (:func:`sarra.police.pump.permission_for`) give write on it only to the admin and
feeder accounts (write regex ``.*``); a source writes only ``^q_<u>\\..*|^xs_<u>(_.*)?$`` and a
subscriber ``^q_<u>\\..*|^xs_<u>$``, neither of which matches ``amq.default``. So the headers
are believed only from accounts that run the pump. A subscriber cannot hand its entries back:
the broker refuses (ACCESS_REFUSED) and the entries stay on disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from sarra.broker.base import Broker
from sarra.errors import AccessRefused, BrokerError, SarraError
from sarra.flow.retryqueue import RetryItem, RetryQueue
from sarra.notice import WireMessage, frozen_headers

log = logging.getLogger(__name__)

PREFIX = "x-sarra-retry-"
EXCHANGE = PREFIX + "exchange"
TOPIC = PREFIX + "topic"
ATTEMPTS = PREFIX + "attempts"
FIRST_SEEN = PREFIX + "first-seen"
NEXT_AT = PREFIX + "next-at"
ERROR = PREFIX + "error"

#: entries published per confirmed batch
BATCH = 100
#: longest last-error message carried (characters)
ERROR_MAX = 500


def _own(headers: Mapping[str, object]) -> dict[str, str]:
    """``headers`` without ours (a notice may not bring its own ``x-sarra-retry-*``)."""
    return {str(k): str(v) for k, v in headers.items() if not str(k).startswith(PREFIX)}


def to_returned(item: RetryItem, queue: str) -> WireMessage:
    """The message that puts ``item`` in ``queue`` alone, through the default exchange."""
    headers = _own(item.headers)
    headers.update(
        {
            EXCHANGE: item.exchange,
            TOPIC: item.routing_key,
            ATTEMPTS: str(item.attempts),
            FIRST_SEEN: repr(item.first_seen),
            NEXT_AT: repr(item.next_at),
            ERROR: item.last_error[:ERROR_MAX],
        }
    )
    return WireMessage(
        exchange="",
        routing_key=queue,
        body=item.body.encode("utf-8", "surrogateescape"),
        headers=frozen_headers(headers),
        content_type=item.content_type,
        delivery_mode=2,
    )


def is_returned(msg: WireMessage) -> bool:
    """Whether ``msg`` is a retry entry handed back (default exchange and our header)."""
    return msg.exchange == "" and EXCHANGE in msg.headers


def from_returned(msg: WireMessage) -> RetryItem:
    """The retry entry ``msg`` carries. Raises ValueError when a header is missing or bad."""
    h = msg.headers
    try:
        exchange, topic = str(h[EXCHANGE]), str(h[TOPIC])
        attempts = int(str(h[ATTEMPTS]))
        first_seen, next_at = float(str(h[FIRST_SEEN])), float(str(h[NEXT_AT]))
    except KeyError as e:
        raise ValueError(f"returned retry entry without header {e.args[0]}") from None
    if not exchange or not topic or attempts < 0:
        raise ValueError("returned retry entry with an empty exchange or topic")
    if not (first_seen == first_seen and next_at == next_at):  # NaN
        raise ValueError("returned retry entry with a bad time")
    body = msg.body.decode("utf-8", "surrogateescape")
    return RetryItem(
        exchange=exchange,
        routing_key=topic,
        body=body,
        headers=_own(h),
        content_type=msg.content_type,
        attempts=attempts,
        first_seen=first_seen,
        next_at=next_at,
        last_error=str(h.get(ERROR, "")),
    )


def hand_back(
    retry_queue: RetryQueue,
    session: Broker,
    queue: str,
    *,
    others_only: bool = False,
    deadline: float | None = None,
) -> tuple[int, str | None]:
    """Publish every entry of ``retry_queue`` to ``queue`` (confirmed, in batches) and remove
    each from disk once confirmed. Returns (entries returned, why the rest were kept or None).

    ``others_only`` (a stopping instance, its consumer cancelled): only when another consumer
    is on the queue. Alone, the entries would wait in the queue for this node anyway, exposed
    to its ``expire`` and ``message_ttl``; on disk they wait safely. ``deadline`` (monotonic):
    the rest stays on disk once it is passed (a stop must end before SIGKILL).

    Nothing is lost on any failure: an entry leaves the disk only after its confirm; one
    confirmed but not removed (the disk failed) is retried twice, never missed.
    """
    entries = sorted(retry_queue.items(), key=lambda it: (it.next_at, it.first_seen))
    if not entries:
        return 0, None
    returned = 0
    try:
        if not session.connected:
            session.connect()
        if others_only and session.queue_counts(queue)[1] == 0:
            return 0, "no other consumer on the queue; retried when this instance starts again"
        for start in range(0, len(entries), BATCH):
            if deadline is not None and time.monotonic() > deadline:
                return returned, "out of time for the stop"
            batch = entries[start : start + BATCH]
            session.publish([to_returned(it, queue) for it in batch])
            for it in batch:
                retry_queue.done(it)
            returned += len(batch)
    except AccessRefused as e:
        return returned, f"the broker user may not write to the default exchange ({e})"
    except BrokerError as e:
        return returned, f"broker: {e}"
    except SarraError as e:  # removal from disk failed: confirmed ones may be retried twice
        return returned, str(e)
    return returned, None


def log_hand_back(queue: str, returned: int, kept: int, reason: str | None) -> None:
    """The stop's log line about the retry entries."""
    if returned:
        log.info("%d retry entries returned to the broker (queue %s)", returned, queue)
    if kept:
        log.warning(
            "%d retry entries kept on this node (not returned: %s)",
            kept,
            reason or "unknown",
        )


def describe(item: RetryItem, now: float | None = None) -> str:
    """How a restored entry is logged: its topic, attempts and when it is due."""
    now = time.time() if now is None else now
    due = max(0.0, item.next_at - now)
    return f"{item.routing_key} (attempt {item.attempts}, due in {due:.0f} s)"
