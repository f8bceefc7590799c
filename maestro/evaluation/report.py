"""Scores on disk: ``metrics.json`` for machines and ``per_class.md`` for people.

Fractions are stored in JSON (strict: undefined values are ``null``, never ``NaN``); the table
shows percentages. The full confusion matrix is kept so any other score can be derived later.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from maestro.evaluation.metrics import SegmentationScores

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
TABLE_FILE = "per_class.md"
CONFUSION_LAYOUT = "rows: ground truth, columns: prediction"
_MISSING = "—"


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def scores_to_dict(scores: SegmentationScores) -> dict[str, Any]:
    """A JSON-serialisable view of ``scores`` (the layout of ``metrics.json``)."""
    return {
        "miou": _number(scores.miou),
        "oa": _number(scores.overall_accuracy),
        "mean_f1": _number(scores.mean_f1),
        "num_pixels": int(scores.support.sum()),
        "classes_used": list(scores.classes_used),
        "classes_used_names": list(scores.names_used),
        "evaluated": list(scores.evaluated),
        "per_class": [
            {
                "index": c,
                "name": scores.class_names[c],
                "evaluated": c in scores.evaluated,
                "iou": _number(scores.iou[c]),
                "f1": _number(scores.f1[c]),
                "precision": _number(scores.precision[c]),
                "recall": _number(scores.recall[c]),
                "support": int(scores.support[c]),
                "predicted": int(scores.predicted[c]),
            }
            for c in range(scores.num_classes)
        ],
        "confusion_layout": CONFUSION_LAYOUT,
        "confusion": scores.confusion.tolist(),
    }


def scores_from_dict(data: dict[str, Any]) -> SegmentationScores:
    """Rebuild the scores from :func:`scores_to_dict` output (they are recomputed from the confusion)."""
    names = [row["name"] for row in sorted(data["per_class"], key=lambda row: row["index"])]
    return SegmentationScores.from_confusion(
        np.asarray(data["confusion"], dtype=np.int64), names, data["evaluated"]
    )


def _percent(value: float) -> str:
    return _MISSING if math.isnan(value) else f"{100 * value:.2f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def per_class_table(scores: SegmentationScores) -> str:
    """Markdown table of per-class scores in percent with the true and predicted pixels of each
    class (a class absent from the truth has no score, but its predicted pixels still show), then
    the means and the classes they cover."""
    lines = [
        "| class | IoU | F1 | precision | recall | true pixels | predicted pixels |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c, name in enumerate(scores.class_names):
        label = _cell(name) if c in scores.evaluated else f"{_cell(name)} (not scored)"
        values = (scores.iou[c], scores.f1[c], scores.precision[c], scores.recall[c])
        pixels = f" | {int(scores.support[c]):,} | {int(scores.predicted[c]):,} |"
        lines.append(f"| {label} | " + " | ".join(_percent(v) for v in values) + pixels)
    lines += [
        "",
        f"**mIoU {_percent(scores.miou)}** · OA {_percent(scores.overall_accuracy)} · "
        f"mean F1 {_percent(scores.mean_f1)} — over {len(scores.classes_used)} of "
        f"{len(scores.evaluated)} scored classes, {int(scores.support.sum()):,} pixels.",
    ]
    missing = scores.classes_without_truth
    if missing:
        names = ", ".join(_cell(scores.class_names[c]) for c in missing)
        lines.append(f"Not in the means (no ground-truth pixel in this split): {names}.")
    return "\n".join(lines) + "\n"


def write_report(scores: SegmentationScores, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``per_class.md`` into ``out_dir`` (created); returns both paths.

    Call it from one process only (rank 0): every rank holds the same synced scores.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path, table_path = out / METRICS_FILE, out / TABLE_FILE
    metrics_path.write_text(json.dumps(scores_to_dict(scores), indent=2, allow_nan=False) + "\n")
    table_path.write_text(per_class_table(scores))
    logger.info("wrote %s and %s (mIoU %s)", metrics_path, table_path, _percent(scores.miou))
    return metrics_path, table_path
