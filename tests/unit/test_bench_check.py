"""The bench's ``--check`` verdict (the CI bench smoke) and its reading of our post summary.

No timing is measured here: the rows are made up, and what is tested is the rule that turns
the ratios of one bench run into an exit status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.bench_core import Ctx, gross_regressions, ours_posted_rate, post_reach, tidy_run


def row(bench: str, side: str, rate: float) -> dict[str, Any]:
    unit = "msg/s" if bench == "post" else "files/s"
    return {"bench": bench, "side": side, "rate": rate, "steady_rate": rate, "unit": unit}


def healthy() -> list[dict[str, Any]]:
    return [
        row("post", "ours", 1000.0),
        row("post", "sr3", 500.0),
        row("post", "floor", 1600.0),
        row("subscribe", "ours", 400.0),
        row("subscribe", "ours2", 600.0),
        row("subscribe", "sr3", 150.0),
        row("subscribe", "floor", 800.0),
    ]


def test_no_regression_when_ours_beats_sr3_and_a_quarter_of_the_floor() -> None:
    assert gross_regressions(healthy()) == []


def test_ours_slower_than_sr3_on_one_line_is_a_regression() -> None:
    rows = healthy()
    rows[0]["rate"] = 499.0  # post: ours just under sr3
    found = gross_regressions(rows)
    assert len(found) == 1
    assert found[0].startswith("post: ours 499.0 msg/s is slower than sr3's 500.0")


def test_under_a_quarter_of_the_floor_is_a_regression() -> None:
    rows = healthy()
    rows[3]["rate"] = 199.0  # subscribe: floor 800 / 4 = 200; still above sr3's 150
    found = gross_regressions(rows)
    assert found == ["subscribe: ours 199.0 files/s is under a quarter of the floor's 800.0"]


def test_every_ours_line_is_checked_including_more_instances() -> None:
    rows = healthy()
    rows[4]["rate"] = 100.0  # ours x2 slower than sr3 and under a quarter of the floor
    found = gross_regressions(rows)
    assert len(found) == 2
    assert all(f.startswith("subscribe: ours x2 100.0") for f in found)


def test_the_v03_line_is_compared_with_sr3_in_v03() -> None:
    rows = [
        row("post", "ours", 1000.0),
        row("post", "sr3", 500.0),
        row("post", "ours-v03", 600.0),  # faster than sr3 v02, slower than sr3 v03
        row("post", "sr3-v03", 700.0),
    ]
    assert gross_regressions(rows) == ["post: ours-v03 600.0 msg/s is slower than sr3-v03's 700.0"]


def test_no_verdict_against_a_side_that_did_not_run() -> None:
    rows = [row("post", "ours", 10.0), row("subscribe", "ours", 10.0)]
    assert gross_regressions(rows) == []


def test_post_summary_line_both_forms() -> None:
    new = (
        "2026-12-07 00:45:30,032 [INFO] post/bench sarra.components.post: posted 300 file(s) "
        "(600 notices) to x_bench in 0.100s (6000/s); 0 not posted"
    )
    old = "2026-12-07 00:45:30,032 [INFO] posted 300 notices to x_bench in 0.25s (1200/s)"
    assert ours_posted_rate(new) == 6000.0
    assert ours_posted_rate(old) == 1200.0
    assert ours_posted_rate("connected\nnothing posted here\n") == 0.0


@pytest.mark.parametrize("keep", [False, True])
def test_keep_keeps_a_subscriber_runs_config_state_and_logs(tmp_path: Path, keep: bool) -> None:
    ctx = Ctx(tmp_path, None, "http://127.0.0.1", tmp_path / "www", None, None, 1.0,  # type: ignore[arg-type]
              tmp_path / "state", 1, keep=keep)  # fmt: skip
    dest, root = tmp_path / "state" / "dest_ours" / "dest", tmp_path / "state" / "b_ours"
    for d in (dest / "a", root / "state" / "subscribe" / "bench", root / "config"):
        d.mkdir(parents=True)
    (dest / "a" / "f").write_text("copy")
    (root / "state" / "subscribe" / "bench" / "retry_000.jsonl").write_text("")
    tidy_run(ctx, dest, root)
    assert not dest.exists()  # the copies go either way (verified; the --dest-fs stays free)
    assert (root / "state" / "subscribe" / "bench" / "retry_000.jsonl").exists() is keep
    assert root.exists() is keep


def test_post_reach_compares_the_ceiling_wall_time_with_what_7x_sr3_allows() -> None:
    rows = healthy()
    for r, seconds in zip(rows[:3], (0.70, 1.40, 0.30), strict=True):  # ours, sr3, floor
        r["seconds"] = seconds
    line = post_reach(rows, 7.0)
    assert line is not None
    # 7x sr3 allows 1.40 / 7 = 0.200 s; the ceiling took 0.30 s (x1.50), ours 0.70 s (x3.50)
    assert "allows 0.200 s" in line
    assert "ceiling program takes 0.300 s = x1.50" in line
    assert "ours 0.700 s = x3.50" in line


def test_post_reach_needs_sr3_and_the_floor() -> None:
    rows = [r for r in healthy() if r["side"] != "floor"]
    assert post_reach(rows, 7.0) is None
