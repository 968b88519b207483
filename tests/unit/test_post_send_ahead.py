"""The publisher hands queued notices to the broker ahead of a flush (so the broker works while
the next ones are built) and still posts every notice exactly once per connection: what was
sent ahead on a connection that was then lost is published again by the flush."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.config.settings import load_settings
from sarra.flow.posting import SEND_AHEAD, NoticeBuilder, PostSettings, Publisher
from sarra.notice import WireMessage


class RecordingSession(MemorySession):
    """A memory session that records the sizes of what it is given to send ahead."""

    def __init__(self, broker: MemoryBroker) -> None:
        super().__init__(broker, name="poster")
        self.sends: list[int] = []

    def send(self, messages: Sequence[WireMessage]) -> None:
        self.sends.append(len(messages))
        super().send(messages)


def _publisher(tmp_path: Path, batch: int) -> tuple[Publisher, RecordingSession, MemoryBroker]:
    conf = tmp_path / "p.conf"
    conf.write_text(f"post_broker amqp://u@localhost/\npost_base_url http://h/\n"
                    f"post_base_dir {tmp_path}\n")  # fmt: skip
    env = {"SR_CONFIG_DIR": str(tmp_path / "c"), "SR_STATE_DIR": str(tmp_path / "s")}
    cfg = load_settings("post", str(conf), [], env=env)
    builder = NoticeBuilder(PostSettings.from_config(cfg, "u", "localhost"))
    broker = MemoryBroker()
    broker.exchanges.add("xs_u")
    session = RecordingSession(broker)
    return Publisher(session, builder, batch=batch), session, broker


def _add(publisher: Publisher, tmp_path: Path, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        path = tmp_path / f"f{n:04d}"
        path.write_text(str(n))
        publisher.add(publisher.builder.file_notices(str(path)), item=str(path))


def _posted(broker: MemoryBroker) -> list[str]:
    return [m.body.decode().split()[-1] for m in broker.published]


def test_notices_are_sent_ahead_before_the_flush_and_posted_once(tmp_path: Path) -> None:
    publisher, session, broker = _publisher(tmp_path, batch=1000)
    _add(publisher, tmp_path, 2 * SEND_AHEAD + 7)
    # connected by the first send-ahead, two chunks handed over, nothing confirmed yet
    assert session.connected
    assert session.sends == [SEND_AHEAD, SEND_AHEAD]
    assert publisher.published == 0 and publisher.waiting == 2 * SEND_AHEAD + 7
    publisher.flush()
    assert _posted(broker) == [f"/f{n:04d}" for n in range(2 * SEND_AHEAD + 7)]
    assert publisher.published == publisher.items_posted == 2 * SEND_AHEAD + 7
    assert publisher.waiting == 0


def test_what_was_sent_ahead_on_a_lost_connection_is_published_again(tmp_path: Path) -> None:
    publisher, session, broker = _publisher(tmp_path, batch=1000)
    _add(publisher, tmp_path, SEND_AHEAD)
    assert session.sends == [SEND_AHEAD]
    broker.drop_connections()  # the sent-ahead notices were never confirmed
    _add(publisher, tmp_path, SEND_AHEAD, start=SEND_AHEAD)
    publisher.flush()
    assert sorted(_posted(broker)) == [f"/f{n:04d}" for n in range(2 * SEND_AHEAD)]
    assert publisher.published == 2 * SEND_AHEAD and publisher.pending_items() == []


def test_a_refused_publish_after_sending_ahead_republishes_the_whole_batch(
    tmp_path: Path,
) -> None:
    publisher, _session, broker = _publisher(tmp_path, batch=1000)
    _add(publisher, tmp_path, SEND_AHEAD + 3)
    broker.fail_publishes(1)  # the flush's publish is nacked: nothing of it counts
    publisher.flush()
    assert _posted(broker) == [f"/f{n:04d}" for n in range(SEND_AHEAD + 3)]
    assert publisher.published == SEND_AHEAD + 3


def test_a_broker_that_is_down_at_the_start_is_left_to_the_flush(tmp_path: Path) -> None:
    publisher, session, broker = _publisher(tmp_path, batch=1000)
    broker.refuse_connects(1)
    _add(publisher, tmp_path, 3 * SEND_AHEAD)
    # one attempt to connect ahead, refused; no more attempts until the flush
    assert session.sends == [] and not session.connected
    publisher.flush()
    assert len(_posted(broker)) == 3 * SEND_AHEAD


def test_connecting_ahead_opens_the_connection_before_any_notice(tmp_path: Path) -> None:
    publisher, session, broker = _publisher(tmp_path, batch=1000)
    publisher.connect_ahead()
    assert session.connected and session.sends == []
    _add(publisher, tmp_path, SEND_AHEAD)
    assert session.sends == [SEND_AHEAD]  # on the connection already open
    publisher.flush()
    assert len(_posted(broker)) == SEND_AHEAD


def test_a_refused_connect_ahead_is_tried_once_then_left_to_the_flush(tmp_path: Path) -> None:
    publisher, session, broker = _publisher(tmp_path, batch=1000)
    broker.refuse_connects(1)
    publisher.connect_ahead()  # refused: no exception, not connected
    assert not session.connected
    _add(publisher, tmp_path, 2 * SEND_AHEAD)
    # the one attempt was made; sending ahead does not try again
    assert session.sends == [] and not session.connected
    publisher.flush()
    assert len(_posted(broker)) == 2 * SEND_AHEAD
