"""sr web's session pool: one kept connection per broker and user, opened again when lost."""

from __future__ import annotations

from sarra.broker.base import QueueSpec
from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.components.common import SessionPool, queue_status, reusing_sessions


def test_status_counts_over_one_kept_session_and_reconnects_after_a_loss() -> None:
    broker = MemoryBroker()
    setup = MemorySession(broker, name="setup")
    setup.connect()
    for name in ("q_a", "q_b"):
        setup.declare_queue(QueueSpec(name, (), durable=False, auto_delete=False))
    setup.close()
    pool = SessionPool()
    made: list[MemorySession] = []

    def fresh() -> MemorySession:
        made.append(MemorySession(broker, name=f"status {len(made)}"))
        return made[-1]

    with reusing_sessions(pool):
        assert queue_status(fresh(), "q_a").backlog == 0
        assert queue_status(fresh(), "q_b").consumers == 0
        missing = queue_status(fresh(), "q_none")
        assert "no queue" in str(missing.extra["error"])
    assert len(pool) == 1 and pool.sessions() == [made[0]] and made[0].connected
    assert not made[1].connected and not made[2].connected  # never connected: reused the first
    made[0].close()  # the connection is lost
    with reusing_sessions(pool):
        assert queue_status(fresh(), "q_a").backlog == 0
    assert pool.sessions() == [made[3]] and made[3].connected
    # outside the block, status connects and closes as before
    outside = fresh()
    assert queue_status(outside, "q_a").backlog == 0 and not outside.connected
    pool.close()
    assert len(pool) == 0 and not made[3].connected
