"""Segmentation scores from one confusion matrix accumulated over a whole split (docs/method.md, "Evaluation").

Pixel counts are summed over every batch and every process before anything is divided, so the
scores do not depend on batch size, on the number of processes or on how samples are sharded.
mIoU averages the scored classes that have ground truth in the split, never weighted by frequency.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from maestro.labels import IGNORE_INDEX, LabelLevel
from maestro.tasks import predicted_classes

logger = logging.getLogger(__name__)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise division that yields NaN where the denominator is zero."""
    out = np.full(numerator.shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


@dataclass(frozen=True, eq=False)
class SegmentationScores:
    """Scores of one split; per-class arrays are indexed by class value.

    A class without ground-truth pixels in the split has NaN IoU, F1, precision and recall (its
    false positives remain visible in ``confusion``) and is left out of ``miou`` and ``mean_f1``.
    A class with ground truth that is never predicted has precision 0. Arrays are read-only.
    """

    class_names: tuple[str, ...]
    evaluated: tuple[int, ...]
    """Classes that may enter the means (the nomenclature's scored classes)."""
    confusion: np.ndarray
    """``(K, K)`` int64 pixel counts; rows are ground truth, columns predictions."""
    iou: np.ndarray
    f1: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    support: np.ndarray
    """Ground-truth pixels per class (int64)."""
    overall_accuracy: float
    """Correct pixels over all counted pixels (those whose target is not the ignore index)."""
    miou: float
    mean_f1: float
    classes_used: tuple[int, ...]
    """Evaluated classes with at least one ground-truth pixel: the classes averaged in the means."""

    @classmethod
    def from_confusion(
        cls,
        confusion: np.ndarray | Tensor,
        class_names: Sequence[str] | None = None,
        evaluated: Sequence[int] | None = None,
    ) -> SegmentationScores:
        """All scores from a ``(K, K)`` confusion matrix (rows ground truth, columns predictions)."""
        if isinstance(confusion, Tensor):
            confusion = confusion.detach().cpu().numpy()
        counts = np.array(confusion, dtype=np.int64)
        if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
            raise ValueError(f"confusion must be a square matrix, got shape {counts.shape}")
        if (counts < 0).any():
            raise ValueError("confusion holds negative counts")
        num_classes = counts.shape[0]
        names = _class_names(num_classes, class_names)
        scored = _evaluated(num_classes, evaluated)

        true_positive = np.diag(counts)
        support = counts.sum(axis=1)
        predicted = counts.sum(axis=0)
        has_truth = support > 0
        false_positive = predicted - true_positive
        false_negative = support - true_positive

        iou = _ratio(true_positive, true_positive + false_positive + false_negative)
        f1 = _ratio(2 * true_positive, 2 * true_positive + false_positive + false_negative)
        recall = _ratio(true_positive, support)
        precision = np.where(predicted > 0, _ratio(true_positive, predicted), 0.0)
        for values in (iou, f1, precision, recall):
            values[~has_truth] = np.nan

        used = tuple(c for c in scored if has_truth[c])
        total = int(support.sum())
        return cls(
            class_names=names,
            evaluated=scored,
            confusion=_frozen(counts),
            iou=_frozen(iou),
            f1=_frozen(f1),
            precision=_frozen(precision),
            recall=_frozen(recall),
            support=_frozen(support),
            overall_accuracy=float(true_positive.sum() / total) if total else float("nan"),
            miou=float(iou[list(used)].mean()) if used else float("nan"),
            mean_f1=float(f1[list(used)].mean()) if used else float("nan"),
            classes_used=used,
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def predicted(self) -> np.ndarray:
        """Pixels predicted as each class (int64), over the counted pixels: a class absent from the
        truth has no score but may still take many pixels, and this says how many."""
        return self.confusion.sum(axis=0)

    @property
    def names_used(self) -> tuple[str, ...]:
        return tuple(self.class_names[c] for c in self.classes_used)

    @property
    def classes_without_truth(self) -> tuple[int, ...]:
        """Evaluated classes left out of the means because the split has no pixel of them."""
        return tuple(c for c in self.evaluated if c not in self.classes_used)


def _class_names(num_classes: int, class_names: Sequence[str] | None) -> tuple[str, ...]:
    if class_names is None:
        return tuple(f"class {c}" for c in range(num_classes))
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    return tuple(class_names)


def _evaluated(num_classes: int, evaluated: Sequence[int] | None) -> tuple[int, ...]:
    if evaluated is None:
        return tuple(range(num_classes))
    scored = tuple(sorted({int(c) for c in evaluated}))
    if scored and not (scored[0] >= 0 and scored[-1] < num_classes):
        raise ValueError(f"evaluated classes {list(scored)} outside 0..{num_classes - 1}")
    return scored


def _spans(values: Sequence[int]) -> str:
    """``[0, 1, 2, 3, 5]`` -> ``"0-3, 5"``: a long class list in a message stays one short line."""
    spans: list[list[int]] = []
    for value in values:
        if spans and value == spans[-1][1] + 1:
            spans[-1][1] = value
        else:
            spans.append([value, value])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


class SegmentationMetrics(torch.nn.Module):
    """Accumulates one confusion matrix over a split and turns it into :class:`SegmentationScores`.

    A thin module around torchmetrics' ``MulticlassConfusionMatrix``: its int64 state is summed
    across processes when :meth:`compute` runs under ``torch.distributed``, and it moves with the
    LightningModule that owns it. (It is not itself a ``torchmetrics.Metric``: a Metric's
    ``compute`` may only return tensors or mutable collections, not a frozen result.)

    Targets are training targets, not raw labels: every value is a scored class (``evaluated``)
    or ``ignore_index``. Anything else is refused with a ValueError, whether it lies inside the
    class range (LPIS "mixed crops") or beyond it (land cover 15-18), so a raw label is never
    scored as a class; :meth:`maestro.tasks.LabelTarget.targets` does the mapping. Logits become
    classes among the scored ones only (:func:`maestro.tasks.predicted_classes`).
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        evaluated: Sequence[int] | None = None,
        ignore_index: int = IGNORE_INDEX,
        validate_args: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index {ignore_index} is a class index (num_classes={num_classes})")
        self.class_names = _class_names(num_classes, class_names)
        self.evaluated = _evaluated(num_classes, evaluated)
        self.ignore_index = ignore_index
        self.confusion_matrix = MulticlassConfusionMatrix(
            num_classes, ignore_index=ignore_index, normalize="none", validate_args=validate_args
        )
        scored = torch.zeros(num_classes, dtype=torch.bool)
        scored[list(self.evaluated)] = True
        self.register_buffer("scored", scored, persistent=False)  # moves with the module, not saved
        self.unscored = tuple(c for c in range(num_classes) if c not in self.evaluated)
        """Channels never taken when logits become classes (ignored classes inside the range)."""

    @classmethod
    def for_level(
        cls, level: LabelLevel, ignore_index: int = IGNORE_INDEX, validate_args: bool = True
    ) -> SegmentationMetrics:
        """Metrics for a nomenclature level: its head's classes, their names and the scored ones."""
        num_classes = level.num_classes
        return cls(num_classes, level.names[:num_classes], level.evaluated, ignore_index, validate_args)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: ``preds`` class indices ``(B, H, W)`` or logits ``(B, K, H, W)``, ``target`` ``(B, H, W)``.

        Pixels whose target is ``ignore_index`` are not counted, whatever their prediction. A
        target value that is neither a scored class nor ``ignore_index`` is a ValueError (class
        docstring); nothing of that batch is counted. Logits are argmaxed over the scored classes.
        """
        if preds.ndim == target.ndim + 1:
            if preds.shape[1] != self.num_classes:
                raise ValueError(f"logits have {preds.shape[1]} channels, expected {self.num_classes}")
            preds = predicted_classes(preds, self.unscored, dim=1)
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape")
        target = target.long()
        self._check_target(target)
        self.confusion_matrix.update(preds.long(), target)

    def _check_target(self, target: Tensor) -> None:
        """Refuse target values outside the scored classes and the ignore index (one device sync)."""
        in_range = (target >= 0) & (target < self.num_classes)
        scored = self.scored.to(target.device)[target.clamp(0, self.num_classes - 1)] & in_range
        bad = ~scored & (target != self.ignore_index)
        if not bool(bad.any()):
            return
        values = [int(v) for v in torch.unique(target[bad]).cpu()]
        raise ValueError(
            f"target values {values[:10]} are not scored classes (scored: {_spans(self.evaluated)}) nor "
            f"the ignore index {self.ignore_index}. SegmentationMetrics takes training targets, not raw "
            f"labels: map raw labels with maestro.tasks.LabelTarget.targets, which turns ignored values "
            f"(LPIS mixed crops, land cover 15-18) into {self.ignore_index}"
        )

    def compute(self) -> SegmentationScores:
        """Scores over everything updated since the last reset, on every process alike."""
        confusion = self.confusion_matrix.compute()
        scores = SegmentationScores.from_confusion(confusion, self.class_names, self.evaluated)
        logger.debug("scored %d pixels over %d classes", int(scores.support.sum()), len(scores.classes_used))
        return scores

    def reset(self) -> None:
        self.confusion_matrix.reset()

    def forward(self, preds: Tensor, target: Tensor) -> None:
        """Same as :meth:`update`; metrics are only read at the end of a split."""
        self.update(preds, target)
