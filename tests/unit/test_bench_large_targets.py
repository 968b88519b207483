"""The large-file bench's target lines (issue 14, item 5), judged on made-up summary rows:
no timing is measured here."""

from __future__ import annotations

from typing import Any

from bench.bench_large import MIB, target_lines

GIB = 1024 * MIB


def row(
    side: str, rate: float, steady: float | None = None, startup: float | None = None
) -> dict[str, Any]:
    return {"size": GIB, "side": side, "mib_per_s": rate, "steady_mib_per_s": steady,
            "startup_seconds": startup}  # fmt: skip


def test_met_targets_are_said_so() -> None:
    rows = [row("curl", 200.0), row("curl+fsync", 160.0), row("ours x1", 180.0, 190.0, 0.3),
            row("ours x2", 190.0, 195.0)]  # fmt: skip
    one, synced, two = target_lines(rows, GIB)
    assert one == ("ours x1 / curl (1024 MiB): wall 90 % (target >= 85 %: met), "
                   "steady 95 % (target >= 90 %: met); start-up 0.30 s")  # fmt: skip
    assert synced == "ours x1 / curl+fsync (1024 MiB, both durable): wall 112 %, steady 119 %"
    assert (
        two
        == "instances: ours x2 / ours x1 (1024 MiB): wall 1.06 (target >= 1.0: met), steady 1.03"
    )


def test_missed_targets_are_said_not_met() -> None:
    rows = [row("curl", 200.0), row("ours x1", 160.0, 170.0), row("ours x2", 150.0)]
    one, two = target_lines(rows, GIB)
    assert "wall 80 % (target >= 85 %: NOT met)" in one
    assert "steady 85 % (target >= 90 %: NOT met)" in one
    assert two == "instances: ours x2 / ours x1 (1024 MiB): wall 0.94 (target >= 1.0: NOT met)"


def test_no_line_without_the_sides_it_compares() -> None:
    assert target_lines([row("curl", 200.0)], GIB) == []
    assert target_lines([row("ours x1", 200.0, 210.0)], 256 * MIB) == []
