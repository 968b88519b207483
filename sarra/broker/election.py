"""One active process among several, on several hosts, elected by the broker.

RabbitMQ's single-active-consumer queues (``x-single-active-consumer``) deliver to one
consumer at a time; when it goes (stopped, killed, its node or connection lost) the broker
makes the next registered consumer active and hands it the unacknowledged messages. An
:class:`Election` consumes such a queue in which one *token* message always sits: the
process that receives a token is the active one, and stays so until its connection ends.

The token carries a payload (sr_poll: what it announced), so the next holder starts where the
last one handed over. :meth:`Election.hand_over` publishes a new token (confirmed) with the
next sequence number, then acks the one held: the queue never lacks a token, and the broker,
not a local file, keeps the state that outlives the holder's host.

The first process to find the queue without messages nor consumers puts the first token
(sequence 0, empty payload). Two doing so at once leave two tokens: the holder keeps the one
with the highest sequence and acks the others.

The session runs in its own thread (one thread owns a connection), so the holder's heartbeats
go on while its caller works. :attr:`Election.active` turns false as soon as the connection
is lost: the caller checks it before each piece of work, so two holders overlap by at most
the piece of work under way when the connection went.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from sarra.broker.base import Broker, Delivery, QueueSpec
from sarra.errors import BrokerError
from sarra.notice import WireMessage

log = logging.getLogger(__name__)

#: how long a stand-by waits on the socket between checks of its stop event
POLL_EVERY = 0.5
#: wait before reconnecting after losing the broker (doubled up to RETRY_MAX)
RETRY_MIN, RETRY_MAX = 1.0, 30.0


@dataclass(frozen=True, slots=True)
class Token:
    """The decoded body of a token message."""

    seq: int
    holder: str
    payload: str

    def encode(self) -> bytes:
        doc = {"version": 1, "seq": self.seq, "holder": self.holder, "payload": self.payload}
        return zlib.compress(json.dumps(doc).encode())

    @staticmethod
    def decode(body: bytes) -> Token:
        """Raises ValueError when ``body`` is not a token (zlib, JSON, fields)."""
        try:
            doc = json.loads(zlib.decompress(body))
            return Token(int(doc["seq"]), str(doc["holder"]), str(doc["payload"]))
        except (zlib.error, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"not an election token: {e}") from e


def election_spec(name: str, queue_type: str = "classic") -> QueueSpec:
    """The durable single-active-consumer queue of an election: never expires (it keeps
    the state while every candidate is down) and is bound to nothing (tokens are published
    to it through the default exchange)."""
    return QueueSpec(name, (), durable=True, queue_type=queue_type, single_active=True)


class Election:
    """Candidate in the election held on queue ``spec.name`` (see the module docstring)."""

    def __init__(
        self,
        session: Callable[[], Broker],
        spec: QueueSpec,
        *,
        holder: str | None = None,
    ) -> None:
        self._new_session = session
        self.spec = spec
        self.holder = holder or f"{socket.gethostname()}:{threading.get_native_id()}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._active = threading.Event()
        self._held: Delivery | None = None
        self._token: Token | None = None
        self._outbox: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    # -- the caller's side -------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether this candidate holds the token on a live connection."""
        return self._active.is_set()

    def wait_active(self, timeout: float) -> bool:
        return self._active.wait(timeout)

    @property
    def payload(self) -> tuple[int, str] | None:
        """(sequence, payload) of the token held; None when not active."""
        with self._lock:
            token = self._token
        if not self.active or token is None:
            return None
        return token.seq, token.payload

    def hand_over(self, payload: str) -> None:
        """Put ``payload`` in a new token, for the next holder (published by the thread;
        a payload not yet published when the connection goes is lost with the activity,
        and the next holder starts from the last one published)."""
        self._outbox.put(payload)

    def start(self) -> Election:
        self._thread = threading.Thread(
            target=self._run, name=f"election-{self.spec.name}", daemon=True
        )
        self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Leave the election: the pending hand-over is published, then the connection
        closed, and the broker passes the token on at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the thread --------------------------------------------------------------------
    def _run(self) -> None:
        wait = RETRY_MIN
        while not self._stop.is_set():
            session: Broker | None = None
            try:
                session = self._new_session()
                session.connect()
                self._join(session)
                wait = RETRY_MIN
                while not self._stop.is_set():
                    self._publish_pending(session)
                    session.poll(POLL_EVERY)
                self._publish_pending(session)
            except BrokerError as e:
                if self.active:
                    log.warning("election %s: lost the broker, no longer active: %s",
                                self.spec.name, e)  # fmt: skip
                else:
                    log.warning("election %s: broker unreachable: %s", self.spec.name, e)
            finally:
                self._resign()
                if session is not None:
                    session.close()
            if not self._stop.wait(wait):
                wait = min(RETRY_MAX, wait * 2)

    def _join(self, session: Broker) -> None:
        messages, consumers = session.declare_queue(self.spec)
        if messages == 0 and consumers == 0:
            log.info("election %s: no token and no candidate: putting the first token",
                     self.spec.name)  # fmt: skip
            session.publish([self._message(Token(0, self.holder, ""))])
        session.consume(self.spec.name, 10, lambda d: self._on_token(session, d))
        log.info("election %s: candidate %s joined (stand-by until the broker hands it the "
                 "token)", self.spec.name, self.holder)  # fmt: skip

    def _message(self, token: Token) -> WireMessage:
        return WireMessage(
            "", self.spec.name, token.encode(), {}, content_type="application/octet-stream"
        )

    def _on_token(self, session: Broker, d: Delivery) -> None:
        try:
            token = Token.decode(d.message.body)
        except ValueError as e:
            log.error("election %s: dropping a message that is not a token: %s",
                      self.spec.name, e)  # fmt: skip
            session.ack(d)
            return
        with self._lock:
            held, current = self._held, self._token
            if current is not None and held is not None and token.seq < current.seq:
                session.ack(d)  # an older token (a race of first tokens, a requeued one)
                return
            self._held, self._token = d, token
        if held is not None:
            session.ack(held)
        if not self._active.is_set():
            log.info("election %s: active (token %d from %s)", self.spec.name, token.seq,
                     token.holder)  # fmt: skip
            self._active.set()

    def _publish_pending(self, session: Broker) -> None:
        payload: str | None = None
        while True:
            try:
                payload = self._outbox.get_nowait()
            except queue.Empty:
                break
        if payload is None or not self.active:
            return
        with self._lock:
            seq = self._token.seq + 1 if self._token is not None else 1
        # confirmed before the old token is acked (when the new one comes back)
        session.publish([self._message(Token(seq, self.holder, payload))])
        log.info("election %s: handed over token %d", self.spec.name, seq)

    def _resign(self) -> None:
        if self._active.is_set():
            log.info("election %s: no longer active", self.spec.name)
        self._active.clear()
        with self._lock:
            self._held, self._token = None, None
