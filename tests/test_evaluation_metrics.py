"""SegmentationMetrics / SegmentationScores against hand-computed values, and across two gloo ranks."""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from multiprocess_helpers import run_forked_ranks

from maestro.evaluation import SegmentationMetrics, SegmentationScores, scores_to_dict
from maestro.labels import IGNORE_INDEX, LABEL_SETS
from maestro.tasks import get_task

X = IGNORE_INDEX
NAMES = ("a", "b", "c", "d")

# Class 3 ("d") has no ground truth but is predicted once; the ignored pixels carry predictions 3.
TARGET = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, X], [1, 1, X, 2]]])
PREDS = torch.tensor([[[0, 1, 1, 1], [0, 2, 1, 3], [1, 3, 3, 2]]])
# Counted (truth, prediction) pairs, rows = truth: (0,0) x2, (0,1); (1,1) x3, (1,3); (2,2) x2, (2,1).
CONFUSION = np.array([[2, 1, 0, 0], [0, 3, 0, 1], [0, 1, 2, 0], [0, 0, 0, 0]])


def _scores(preds: torch.Tensor = PREDS, target: torch.Tensor = TARGET, **kwargs) -> SegmentationScores:
    metrics = SegmentationMetrics(4, NAMES, **kwargs)
    metrics.update(preds, target)
    return metrics.compute()


def test_scores_match_hand_computation():
    scores = _scores()
    np.testing.assert_array_equal(scores.confusion, CONFUSION)
    assert scores.confusion.dtype == np.int64
    # class 0: TP 2, FP 0, FN 1; class 1: TP 3, FP 2, FN 1; class 2: TP 2, FP 0, FN 1.
    np.testing.assert_allclose(scores.iou[:3], [2 / 3, 3 / 6, 2 / 3])
    np.testing.assert_allclose(scores.precision[:3], [2 / 2, 3 / 5, 2 / 2])
    np.testing.assert_allclose(scores.recall[:3], [2 / 3, 3 / 4, 2 / 3])
    np.testing.assert_allclose(scores.f1[:3], [4 / 5, 6 / 9, 4 / 5])
    np.testing.assert_array_equal(scores.support, [3, 4, 3, 0])
    assert scores.overall_accuracy == pytest.approx(7 / 10)
    assert scores.miou == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert scores.mean_f1 == pytest.approx((4 / 5 + 2 / 3 + 4 / 5) / 3)


def test_class_without_ground_truth_is_nan_and_left_out_of_the_means():
    scores = _scores()
    assert scores.classes_used == (0, 1, 2)
    assert scores.names_used == ("a", "b", "c")
    assert scores.classes_without_truth == (3,)
    assert all(math.isnan(v[3]) for v in (scores.iou, scores.f1, scores.precision, scores.recall))
    assert scores.confusion[:, 3].sum() == 1  # its false positive still hurts class 1


def test_evaluated_subset_restricts_the_means_only():
    scores = SegmentationScores.from_confusion(CONFUSION, NAMES, evaluated=[0, 1, 3])
    assert scores.classes_used == (0, 1)
    assert scores.classes_without_truth == (3,)
    assert scores.miou == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert scores.iou[2] == pytest.approx(2 / 3)
    assert scores.overall_accuracy == pytest.approx(7 / 10)


def test_ignored_pixels_never_count():
    other = PREDS.clone()
    other[TARGET == X] = 0
    np.testing.assert_array_equal(_scores(other).confusion, CONFUSION)
    everything_ignored = _scores(PREDS, torch.full_like(TARGET, X))
    assert everything_ignored.confusion.sum() == 0
    assert math.isnan(everything_ignored.miou) and everything_ignored.classes_used == ()


def test_logits_and_indices_agree_and_batches_accumulate():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, 8, 8, generator=generator)
    target = torch.randint(0, 5, (6, 8, 8), generator=generator)
    target[target == 4] = X
    whole = SegmentationMetrics(5)
    whole.update(logits.argmax(1), target)
    batched = SegmentationMetrics(5)
    for start in range(0, 6, 4):
        batched.update(logits[start : start + 4], target[start : start + 4])
    assert scores_to_dict(whole.compute()) == scores_to_dict(batched.compute())


def test_reset_starts_a_new_split():
    metrics = SegmentationMetrics(4, NAMES)
    metrics.update(PREDS, TARGET)
    metrics.compute()
    metrics.reset()
    metrics.update(TARGET.clamp(max=3), TARGET)
    assert metrics.compute().overall_accuracy == 1.0


def test_for_level_uses_the_nomenclature():
    lc = SegmentationMetrics.for_level(LABEL_SETS["lc"].level(1))
    assert lc.num_classes == 15 and lc.evaluated == tuple(range(15))
    lpis = SegmentationMetrics.for_level(LABEL_SETS["lpis"].level(1))
    mixed = LABEL_SETS["lpis"].level(1).names.index("mixed crops")
    assert lpis.num_classes == 23 and mixed not in lpis.evaluated and lpis.class_names[-1] == "background"


def test_unmapped_values_are_an_error_not_a_class():
    metrics = SegmentationMetrics(4)
    with pytest.raises(ValueError, match=r"target values \[7\] are not scored classes"):
        metrics.update(PREDS, TARGET.masked_fill(TARGET == X, 7))
    with pytest.raises(ValueError, match="channels"):
        metrics.update(torch.zeros(1, 3, 3, 4), TARGET)


@pytest.mark.parametrize(
    ("task", "raw"),
    [
        ("lc", [15]),
        ("lc", [15, 16, 17, 18]),
        ("lpis", [LABEL_SETS["lpis"].level(1).names.index("mixed crops")]),
    ],
)
def test_raw_ignored_label_values_are_refused_alike_with_a_clear_message(task, raw):
    """LPIS "mixed crops" lies inside the head's class range, LC 15-18 beyond it: both are raw
    label values that must be mapped to the ignore index first, and both are refused the same way."""
    level = LABEL_SETS[task].level(1)
    metrics = SegmentationMetrics.for_level(level)
    target = torch.zeros(1, 2, 4, dtype=torch.long)
    target[0, 0, : len(raw)] = torch.tensor(raw)
    with pytest.raises(
        ValueError, match=rf"target values {re.escape(str(raw))} are not scored classes"
    ) as error:
        metrics.update(torch.zeros_like(target), target)
    assert "LabelTarget.targets" in str(error.value) and str(IGNORE_INDEX) in str(error.value)
    assert metrics.confusion_matrix.confmat.sum() == 0  # nothing of the refused batch was counted
    mapped = get_task(task).target(1).targets(rearrange(target.to(torch.uint8), "b h w -> b 1 h w"))
    metrics.update(torch.zeros_like(mapped), mapped)  # the same labels, mapped: accepted
    assert metrics.compute().support.sum() == 8 - len(raw)


def _rank(rank: int, world_size: int, port: int, data: dict, out_dir: Path) -> None:
    """One gloo rank: scores every world_size-th sample, one at a time, like a DistributedSampler."""
    torch.set_num_threads(1)  # as in DataLoader workers: a forked child keeps to one thread
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=30),
    )
    try:
        metrics = SegmentationMetrics(data["num_classes"], evaluated=data["evaluated"])
        for index in range(rank, len(data["target"]), world_size):
            metrics.update(data["logits"][index : index + 1], data["target"][index : index + 1])
        (out_dir / f"rank{rank}.json").write_text(json.dumps(scores_to_dict(metrics.compute())))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_give_the_single_process_result(tmp_path: Path):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 6, 12, 12, generator=generator)  # odd count: ranks hold 3 and 2 samples
    target = torch.randint(0, 6, (5, 12, 12), generator=generator)
    target[(target == 5) | (target == 3)] = X  # class 5 never has ground truth, class 3 is not scored
    data = {"logits": logits, "target": target, "num_classes": 6, "evaluated": [0, 1, 2, 4, 5]}

    single = SegmentationMetrics(6, evaluated=data["evaluated"])
    single.update(logits, target)
    expected = json.loads(json.dumps(scores_to_dict(single.compute())))

    run_forked_ranks(_rank, 2, data, tmp_path)

    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == expected
    assert expected["classes_used"] == [0, 1, 2, 4]


def test_logits_favouring_an_ignored_class_never_count_as_its_prediction():
    """LPIS "mixed crops" keeps an output channel; when its raw logit wins, the pixel is scored as
    the best scored class instead (here the true one), never as an error in the mixed-crops column."""
    level = LABEL_SETS["lpis"].level(1)
    mixed = level.names.index("mixed crops")
    target = torch.tensor([[[0, 3], [22, IGNORE_INDEX]]])
    logits = F.one_hot(target.clamp(max=22), level.num_classes).permute(0, 3, 1, 2).float()
    logits[:, mixed] = 10.0  # the raw favourite everywhere
    metrics = SegmentationMetrics.for_level(level)
    metrics.update(logits, target)
    scores = metrics.compute()
    assert scores.predicted[mixed] == 0 and scores.overall_accuracy == 1.0 and scores.miou == 1.0
