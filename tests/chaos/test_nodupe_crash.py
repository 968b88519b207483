"""Duplicate suppression across crashes: ``sr_subscribe`` with ``nodupe_ttl 300`` (its
per-instance cache file in the state directory), SIGKILLed again and again mid-download on a
slow origin and restarted each time, must end with every announced file verified, none lost,
none corrupt, nothing left in flight; and, once the storm is over, suppression still works:
the same batch posted again is suppressed, nothing downloaded twice.

The cache records a notice when it is selected, long before its file is durable; a notice
the killed instance had not finished comes back redelivered and must be processed rather
than suppressed by that entry (see :mod:`sarra.flow.nodupe`).

One instance: its redeliveries always meet its own cache (with two, half would go to the
other instance, whose cache never saw them, and hide the defect half the time).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator

import pytest

from tests.chaos import chaoskit as ck
from tests.integration.flowkit import Site, unique
from tests.servers.rabbitmq import RabbitNode

pytestmark = [pytest.mark.timeout(300)]

PREFETCH = 10


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    with ck.own_node() as n:
        yield n


def test_a_sigkill_storm_with_duplicate_suppression_on_loses_nothing_and_still_suppresses(  # type: ignore[no-untyped-def]
    node, broken_http, tmp_path
):
    rng = random.Random(11)
    tag = unique("nodupe")
    site = Site(tmp_path / "site", node.port).setup()
    batch = ck.make_batch(broken_http.root, tag, 300, size=120_000)
    base_url = f"{broken_http.base_url}/slow"
    dest = tmp_path / "dest"
    broken_http.slow_seconds = 0.2
    scenario = "SIGKILL storm, nodupe_ttl 300"
    try:
        with ck.fleet(
            site,
            tag,
            dest,
            tmp_path / "logs",
            count=1,
            prefetch=PREFETCH,
            extra="transfer_threads 4\nnodupe_ttl 300\n",
        ) as f:
            f.start()
            assert ck.post_batch(site, base_url, broken_http.root, batch) == 0
            ck.wait_until(
                lambda: ck.count_verified(dest, batch) >= 10, 120, f"10 files\n{f.tail()}"
            )
            kills = 0
            end = time.monotonic() + 20
            while time.monotonic() < end:
                if kills < 3:  # the first kills must land mid-flow
                    assert ck.count_verified(dest, batch) < batch.announced, "flow ended early"
                time.sleep(rng.uniform(1.0, 2.5))
                f.kill(0)
                kills += 1
                f.start(0)
            broken_http.slow_seconds = 0.0
            tally = ck.settle(scenario, f, batch, node, timeout=120)
            tally.assert_clean(dup_bound=kills * PREFETCH)
            log = f.log_text()
            assert "removed leftover in-flight file" in log, "no kill landed mid-download"

            # suppression still works once the storm is over: the same batch again
            suppressed = log.count("duplicate suppressed")
            placed = ck.duplicates(log, dest)
            assert ck.post_batch(site, base_url, broken_http.root, batch) == 0
            ck.wait_until(
                lambda: f.log_text().count("duplicate suppressed") - suppressed >= batch.announced,
                60,
                f"the second post to be suppressed\n{f.tail()}",
            )
            again = ck.settle("nodupe storm: same batch posted again", f, batch, node, timeout=60)
            again.assert_clean(dup_bound=placed)
            assert ck.duplicates(f.log_text(), dest) == placed, "a duplicate was downloaded"
            assert not re.search(r"\b20[15] .* \(\d+ bytes\)", f.log_text()[len(log) :])
    finally:
        broken_http.slow_seconds = 0.0
