"""Evaluation of segmentation: split-wide confusion matrix, scores, report files and figures."""

from maestro.evaluation.figures import colorize, confusion_figure, prediction_panels
from maestro.evaluation.metrics import SegmentationMetrics, SegmentationScores
from maestro.evaluation.report import per_class_table, scores_from_dict, scores_to_dict, write_report

__all__ = [
    "SegmentationMetrics",
    "SegmentationScores",
    "colorize",
    "confusion_figure",
    "per_class_table",
    "prediction_panels",
    "scores_from_dict",
    "scores_to_dict",
    "write_report",
]
