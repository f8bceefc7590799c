"""``predict_report.json``: per-unit rates and fractions, per-rank files merged once by the last rank."""

from __future__ import annotations

import pytest

from predict.records import Layout, read_json
from predict.report import UnitTiming, publish, rank_report


def _report(rank: int, world: int, launch: str, started: float, finished: float, km2: float) -> dict:
    timing = UnitTiming("z", f"r{rank:06d}_c000000", km2, 10.0, 2.0, 7.0, 4)
    return rank_report(rank, world, launch, "cpu", started, finished, [timing], skipped=rank)


def test_a_unit_entry_has_its_rate_and_fractions() -> None:
    entry = UnitTiming("z", "r000000_c000000", 0.5, 10.0, 2.5, 6.0, 3).entry()
    assert entry["km2_per_hour"] == pytest.approx(180.0)
    assert entry["wait_fraction"] == pytest.approx(0.25) and entry["busy_fraction"] == pytest.approx(0.6)


def test_the_last_rank_merges_every_rank_once(tmp_path) -> None:
    layout = Layout(tmp_path)
    assert not publish(layout, _report(1, 2, "L", 100.0, 112.0, 1.0))
    assert not layout.report.exists()
    assert publish(layout, _report(0, 2, "L", 101.0, 120.0, 2.0))
    merged = read_json(layout.report)
    totals = merged["totals"]
    assert totals["units"] == 2 and totals["ranks"] == 2 and totals["skipped_units"] == 1
    assert totals["wall_seconds"] == pytest.approx(20.0) and totals["km2_per_hour"] == pytest.approx(
        3 / 20 * 3600
    )
    assert totals["wait_fraction"] == pytest.approx(0.2) and totals["busy_fraction"] == pytest.approx(0.7)
    assert [r["rank"] for r in merged["ranks"]] == [0, 1]
    assert not publish(layout, _report(1, 2, "L", 100.0, 112.0, 1.0))  # merged once per launch


def test_reports_of_an_earlier_launch_are_not_merged_with_this_one(tmp_path) -> None:
    layout = Layout(tmp_path)
    assert not publish(layout, _report(1, 2, "old", 0.0, 5.0, 1.0))
    assert not publish(layout, _report(0, 2, "new", 10.0, 15.0, 1.0))
    assert publish(layout, _report(1, 2, "new", 10.0, 16.0, 1.0))
    assert read_json(layout.report)["totals"]["wall_seconds"] == pytest.approx(6.0)
