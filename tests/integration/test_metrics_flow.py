"""Per-instance metrics against real servers: sr_post -> RabbitMQ -> sr_subscribe -> nginx,
and the instance's metrics file counts exactly what was sent."""

from __future__ import annotations

from sarra.flow.metrics import read_metrics
from tests.integration.flowkit import (
    ReportTap,
    Site,
    make_files,
    post,
    running_subscriber,
    unique,
    wait_for,
)


def _metrics(site: Site, name: str) -> dict | None:  # type: ignore[type-arg]
    found = list(site.state_dir.rglob(f"sr_subscribe_{name}_000.metrics.json"))
    return read_metrics(found[0]) if found else None


def test_the_metrics_file_counts_the_files_bytes_rejects_and_failures_sent(  # type: ignore[no-untyped-def]
    site, nginx, tmp_path
):
    tag = unique("met")
    src = nginx.root / tag
    names = ["a.txt", "b.txt", "c.txt", "skip.me"]
    files = make_files(src, names, size=3000)
    sent_bytes = sum(p.stat().st_size for p in files if not p.name.startswith("skip"))
    dest = tmp_path / "dest"
    name = f"sub_{tag}"
    site.write_subscribe(
        name,
        f"exchange xs_guest\nsubtopic {tag}.#\ndirectory {dest}\nmirror on\nstrip 1\n"
        "expire 10m\nreject .*skip.*\naccept .*\n",
    )
    tap = ReportTap(site.broker_url(), "xs_guest").start()
    try:
        with running_subscriber(site, name):
            assert post(site, nginx.base_url, nginx.root, [src]) == 0
            # announced under nginx's URL but not there: 404, reported 499, retried later
            elsewhere = tmp_path / "elsewhere"
            (gone,) = make_files(elsewhere / tag, ["gone.txt"])
            assert post(site, nginx.base_url, elsewhere, [gone]) == 0
            wait_for(lambda: len(tap.about(".txt")) >= 4, what="the reports")

            def published() -> bool:  # every few seconds, while running
                doc = _metrics(site, name)
                return doc is not None and doc["files"] == 3 and doc["state"] == "running"

            wait_for(published, timeout=20, what="a metrics file counting the files")
    finally:
        tap.stop()
    doc = _metrics(site, name)  # the last one, written on stop
    assert doc is not None
    assert doc["state"] == "stopped"
    assert doc["notices"]["in"] == 5
    assert doc["files"] == 3
    assert doc["bytes"] == sent_bytes
    assert doc["rejects"] == 1
    assert doc["codes"] == {"0": 1, "201": 3, "499": 1}
    by_code: dict[str, int] = {}
    for counts in doc["by_source"].values():
        for code, n in counts.items():
            by_code[code] = by_code.get(code, 0) + n
    assert by_code == {"201": 3, "499": 1}  # every outcome but the rejection, by source
    assert doc["lag"]["last"] is not None and 0 <= doc["lag"]["last"] < 60
    assert doc["retry"]["depth"] == 1
    assert doc["retry"]["oldest_age"] >= 0
    assert doc["queue"].startswith("q_guest")
