"""metrics.json layout and round trip, and the per-class markdown table, on a hand-checked case."""

from __future__ import annotations

import json

import numpy as np
import pytest

from maestro.evaluation import (
    SegmentationScores,
    per_class_table,
    scores_from_dict,
    scores_to_dict,
    write_report,
)

# rows = truth; class "d" has no ground truth (one false positive), class "e" is not scored.
CONFUSION = np.array([[2, 1, 0, 0, 0], [0, 3, 0, 1, 0], [0, 1, 2, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
SCORES = SegmentationScores.from_confusion(CONFUSION, ("a", "b", "c", "d", "e|f"), evaluated=[0, 1, 2, 3])


def test_dict_layout():
    data = scores_to_dict(SCORES)
    assert set(data) == {
        "miou",
        "oa",
        "mean_f1",
        "num_pixels",
        "classes_used",
        "classes_used_names",
        "evaluated",
        "per_class",
        "confusion_layout",
        "confusion",
    }
    assert data["miou"] == pytest.approx(11 / 18)
    assert data["oa"] == pytest.approx(0.7)
    assert data["mean_f1"] == pytest.approx(34 / 45)
    assert data["num_pixels"] == 10
    assert data["classes_used"] == [0, 1, 2] and data["classes_used_names"] == ["a", "b", "c"]
    assert data["per_class"][1] == {
        "index": 1,
        "name": "b",
        "evaluated": True,
        "iou": 0.5,
        "f1": pytest.approx(2 / 3),
        "precision": 0.6,
        "recall": 0.75,
        "support": 4,
        "predicted": 5,
    }
    assert data["per_class"][3]["iou"] is None and data["per_class"][3]["support"] == 0
    assert data["per_class"][3]["predicted"] == 1  # no ground truth, but predicted once
    assert data["per_class"][4]["evaluated"] is False
    assert data["confusion"] == CONFUSION.tolist()


def test_json_round_trip():
    data = scores_to_dict(SCORES)
    loaded = json.loads(json.dumps(data, allow_nan=False))
    assert loaded == data
    again = scores_from_dict(loaded)
    assert scores_to_dict(again) == data
    np.testing.assert_array_equal(again.iou, SCORES.iou)
    assert again.classes_used == SCORES.classes_used and again.evaluated == SCORES.evaluated


def test_per_class_table():
    table = per_class_table(SCORES)
    lines = table.splitlines()
    assert lines[0] == "| class | IoU | F1 | precision | recall | true pixels | predicted pixels |"
    assert "| a | 66.67 | 80.00 | 100.00 | 66.67 | 3 | 2 |" in lines
    assert "| b | 50.00 | 66.67 | 60.00 | 75.00 | 4 | 5 |" in lines
    assert "| d | — | — | — | — | 0 | 1 |" in lines  # predicted though absent from the truth
    assert "| e\\|f (not scored) | — | — | — | — | 0 | 0 |" in lines
    assert "**mIoU 61.11** · OA 70.00 · mean F1 75.56 — over 3 of 4 scored classes, 10 pixels." in lines
    assert lines[-1] == "Not in the means (no ground-truth pixel in this split): d."


def test_write_report_writes_only_into_out_dir(tmp_path):
    out = tmp_path / "eval" / "test"
    metrics_path, table_path = write_report(SCORES, out)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "per_class.md"]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["metrics.json", "per_class.md"]
    assert json.loads(metrics_path.read_text()) == json.loads(json.dumps(scores_to_dict(SCORES)))
    assert table_path.read_text() == per_class_table(SCORES)


def test_a_class_predicted_on_half_the_pixels_but_absent_from_the_truth_shows_its_count():
    confusion = np.array([[1_000, 1_000], [0, 0]])  # half of the pixels predicted as "b", none are "b"
    scores = SegmentationScores.from_confusion(confusion, ("a", "b"))
    np.testing.assert_array_equal(scores.predicted, [1_000, 1_000])
    assert "| b | — | — | — | — | 0 | 1,000 |" in per_class_table(scores).splitlines()
