import numpy as np
import pytest
import torch
from einops import rearrange

from maestro.errors import ConfigError, DataError
from maestro.labels import IGNORE_INDEX
from maestro.tasks import TASKS, CheckedLabels, get_task, mask_ignored, predicted_classes


def test_registry_levels_and_class_counts():
    assert sorted(TASKS) == ["custom", "flair2", "lc", "lpis"]
    assert get_task("lc").levels == (1,)
    assert [get_task("lpis").target(k).num_classes for k in (1, 2, 3)] == [23, 31, 46]
    assert get_task("lc").target().num_classes == 15
    with pytest.raises(
        ConfigError, match=r"unknown task 'crops'; tasks are \['custom', 'flair2', 'lc', 'lpis'\]"
    ):
        get_task("crops")
    with pytest.raises(ConfigError, match=r"level\(s\) \[1, 2, 3\], not 4"):
        get_task("lpis").target(4)
    with pytest.raises(ConfigError, match=r"\[1\], not 2"):
        get_task("lc").target(2)


def test_the_custom_task_takes_the_user_s_classes_and_only_it_does():
    from maestro.labels import LabelLevel

    classes = LabelLevel(names=("other", "hedgerow", "unlabelled"), ignored=frozenset({2}))
    target = get_task("custom").target(1, classes)
    assert target.label_modality == "label" and target.num_classes == 2 and target.names[1] == "hedgerow"
    with pytest.raises(ConfigError, match="takes its classes from the dataset's nomenclature YAML"):
        get_task("custom").target(1)
    with pytest.raises(ConfigError, match="has its own classes"):
        get_task("lc").target(1, classes)


def test_flair2_task_scores_twelve_classes_and_ignores_other():
    """FLAIR #2's 13 grouped classes: 'other' (12) is ignored, so a head has 12 outputs, and a
    byte outside 0..12 is a data error naming the patch."""
    target = get_task("flair2").target()
    assert get_task("flair2").levels == (1,) and target.label_modality == "flair2" and target.band == 0
    assert len(target.names) == 13 and target.names[12] == "other" and target.names[0] == "building"
    assert target.num_classes == 12 and target.evaluated == list(range(12)) and target.ignored_channels == ()
    raw = torch.tensor([[[[0, 11], [12, 5]]]], dtype=torch.uint8)
    assert target.targets(raw).tolist() == [[[0, 11], [IGNORE_INDEX, 5]]]
    with pytest.raises(DataError, match=r"patch 000007.*values \[13\] are outside the flair2 level-1"):
        target.check(np.array([[[0, 13]]], dtype=np.uint8), "000007")


def test_targets_read_the_level_band_and_ignore_unknown_classes():
    target = get_task("lpis").target(2)
    labels = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    labels[0, 1] = torch.tensor([[0, 29], [30, 5]])  # 29 = mixed crops, 30 = background
    labels[0, 0] = 7  # level 1 band must not be read
    out = target.targets(labels)
    assert out.dtype == torch.int64
    assert out.tolist() == [[[0, IGNORE_INDEX], [30, 5]]]
    lc = get_task("lc").target()
    raw = torch.tensor([[[[14, 15], [18, 0]]]], dtype=torch.uint8)
    assert lc.targets(raw).tolist() == [[[14, IGNORE_INDEX], [IGNORE_INDEX, 0]]]


def test_values_outside_the_nomenclature_are_a_data_error_naming_the_patch():
    target = get_task("lc").target()
    with pytest.raises(DataError, match=r"patch P1.*values \[19, 40\] are outside the lc level-1"):
        target.check(np.array([[[0, 19], [40, 3]]], dtype=np.uint8), "P1")
    target.check(np.array([[[0, 18]]], dtype=np.uint8), "P1")  # 18 is known (ignored), not an error


def test_checked_labels_wraps_a_transform():
    target = get_task("lpis").target(1)
    ok = {"labels": {"lpis": np.zeros((3, 4, 4), np.uint8)}, "meta": {"patch_id": "A"}}
    assert CheckedLabels(lambda s: s, target)(ok) is ok
    with pytest.raises(DataError, match="needs label 'lpis'"):
        CheckedLabels(lambda s: s, target)({"labels": {"lc": np.zeros((1, 4, 4), np.uint8)}, "meta": {}})
    bad = {"labels": {"lpis": np.full((3, 4, 4), 23, np.uint8)}, "meta": {"patch_id": "B"}}
    with pytest.raises(DataError, match="patch B"):
        CheckedLabels(lambda s: s, target)(bad)


@pytest.mark.parametrize(("task", "level"), [("lpis", 1), ("lpis", 2), ("lpis", 3), ("lc", 1)])
def test_ignored_classes_are_never_predicted_even_when_their_logit_is_the_largest(task, level):
    target = get_task(task).target(level)
    mixed = [v for v in target.nomenclature.ignored if v < target.num_classes]
    assert target.ignored_channels == tuple(mixed)  # LPIS: "mixed crops" has a channel; LC 15-18 none
    if task == "lpis":
        assert target.names[target.ignored_channels[0]] == "mixed crops"
    logits = torch.zeros(2, target.num_classes, 3, 4)
    logits[:, 1] = 1.0  # the runner-up everywhere
    for channel in target.ignored_channels:
        logits[:, channel] = 50.0  # the raw favourite
    classes = target.classes(logits)
    assert classes.shape == (2, 3, 4) and (classes == 1).all()
    probabilities = mask_ignored(logits, target.ignored_channels).softmax(dim=1)
    assert (probabilities[:, list(target.ignored_channels)] == 0).all()
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2, 3, 4))
    assert logits[:, target.ignored_channels].eq(50.0).all()  # the caller's logits are left alone
    channel_last = rearrange(logits, "b k h w -> b h w k")
    assert torch.equal(predicted_classes(channel_last, target.ignored_channels, dim=-1), classes)
