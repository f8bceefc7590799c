"""The fine-tuning task at module level: the auxiliary loss and modality dropout reach the
gradients, missing inputs are an error unless allowed, and label values are checked per sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from finetune import cli
from finetune.module import FinetuneTask, segmentation_loss
from finetune.stage import datamodule, resolve
from maestro.errors import DataError
from maestro.labels import IGNORE_INDEX
from maestro.tasks import CheckedLabels, get_task

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def batch(finetune_config, tmp_path_factory) -> dict:
    """Two toy patches as the stage's own loader gives them (all five inputs, lc and lpis labels
    checked in the loader)."""
    config, _ = resolve(finetune_config(tmp_path_factory.mktemp("unused"), "data.batch_size=2"))
    data = datamodule(config, config.inputs)
    data.setup("validate")
    return next(iter(data.val_dataloader()))


def _task(finetune_config, tmp_path, *overrides: str, seed: int = 0) -> FinetuneTask:
    config, _ = resolve(finetune_config(tmp_path, *overrides))
    torch.manual_seed(seed)
    return FinetuneTask(config)


def _gradients(task: FinetuneTask, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    task.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in task.named_parameters() if p.grad is not None}


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str = "") -> float:
    keys = [k for k in a if k.startswith(prefix) and k in b]
    assert keys
    return max(float((a[k] - b[k]).abs().max()) for k in keys)


# ---------------------------------------------------------------------------------- aux loss
def test_the_aux_loss_is_main_plus_beta_times_the_mean_aux_loss_and_reaches_the_gradients(
    finetune_config, tmp_path, batch
):
    task = _task(finetune_config, tmp_path, "model.aux_heads=true", "model.aux_weight=0.5")
    task.train()
    targets = task.target.targets(batch["labels"]["lc"])
    output = task(batch)
    assert set(output["aux"]) == set(task.config.inputs)

    loss, parts = segmentation_loss(output, targets, aux_weight=0.5)
    main = F.cross_entropy(output["logits"], targets, ignore_index=IGNORE_INDEX)
    aux = [F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX) for logits in output["aux"].values()]
    torch.testing.assert_close(loss, main + 0.5 * torch.stack(aux).mean())
    assert set(parts) == {"main", *(f"aux_{key}" for key in task.config.inputs)}

    with_aux = _gradients(task, loss)
    output = task(batch)
    without_aux = _gradients(
        task, segmentation_loss({"logits": output["logits"]}, targets, aux_weight=0.5)[0]
    )
    # The aux heads learn only from their own loss, and they change what the encoder learns.
    assert any(name.startswith("model.aux_heads.") for name in with_aux)
    assert not any(name.startswith("model.aux_heads.") for name in without_aux)
    assert _max_difference(with_aux, without_aux, "model.encoder.") > 1e-6
    # The main head's own gradients do not depend on the aux losses.
    torch.testing.assert_close(with_aux["model.head.conv.weight"], without_aux["model.head.conv.weight"])

    output = task(batch)
    zero_weight = _gradients(task, segmentation_loss(output, targets, aux_weight=0.0)[0])
    assert _max_difference(zero_weight, without_aux, "model.encoder.") < 1e-7


def test_class_weights_give_each_branch_the_hand_computed_weighted_cross_entropy():
    """U-T&T's loss (FLAIR #2): the U-Net's cross-entropy with its class weights plus the aux
    weight times the U-TAE branch's with its own (plowed land, class 2 here, weighs 0 there)."""
    torch.manual_seed(0)
    logits, aux = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    targets = torch.randint(0, 3, (2, 4, 4))
    targets[0, 0] = IGNORE_INDEX  # FLAIR #2's 'other'
    main_weights, aux_weights = torch.tensor([1.0, 2.0, 1.0]), torch.tensor([1.0, 1.0, 0.0])

    def by_hand(scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        kept = targets != IGNORE_INDEX
        picked = targets[kept]
        nll = -scores.log_softmax(1).permute(0, 2, 3, 1)[kept].gather(1, picked[:, None])[:, 0]
        return (weights[picked] * nll).sum() / weights[picked].sum()

    output = {"logits": logits, "aux": {"s2": aux}}
    loss, parts = segmentation_loss(output, targets, 1.0, main_weights, aux_weights)
    torch.testing.assert_close(parts["main"], by_hand(logits, main_weights))
    torch.testing.assert_close(parts["aux_s2"], by_hand(aux, aux_weights))
    torch.testing.assert_close(loss, by_hand(logits, main_weights) + by_hand(aux, aux_weights))
    # A batch whose only scored pixels weigh 0 in a branch adds 0 to the loss there, not NaN.
    only_plowed = torch.where(targets == IGNORE_INDEX, targets, 2)
    loss, parts = segmentation_loss(output, only_plowed, 1.0, main_weights, aux_weights)
    assert float(parts["aux_s2"]) == 0.0 and torch.isfinite(loss)


# --------------------------------------------------------------------------- modality dropout
def _step_gradients(task: FinetuneTask, batch: dict, seed: int) -> dict[str, torch.Tensor]:
    task.train()
    torch.manual_seed(seed)
    return _gradients(task, task.training_step(batch, 0))


def test_modality_dropout_changes_the_training_gradients_and_only_in_training(
    finetune_config, tmp_path, batch
):
    plain = _task(finetune_config, tmp_path, "model.modality_dropout=0.0")
    dropped = _task(finetune_config, tmp_path, "model.modality_dropout=0.9")
    dropped.model.load_state_dict(plain.model.state_dict())  # same weights; only the dropout differs

    reference = _step_gradients(plain, batch, seed=0)
    with_dropout = _step_gradients(dropped, batch, seed=0)
    again = _step_gradients(dropped, batch, seed=0)
    for name in with_dropout:  # a fixed seed gives the same draw: the difference is the dropout
        torch.testing.assert_close(with_dropout[name], again[name], rtol=0, atol=0, msg=name)
    assert _max_difference(with_dropout, reference, "model.encoder.") > 1e-6
    assert _max_difference(with_dropout, reference, "model.decoder.") > 1e-6

    # Validation never drops a modality (same weights and BatchNorm statistics again first).
    dropped.model.load_state_dict(plain.model.state_dict())
    plain.eval()
    dropped.eval()
    with torch.no_grad():
        torch.testing.assert_close(dropped(batch)["logits"], plain(batch)["logits"], rtol=0, atol=0)


# ------------------------------------------------------------------------ missing modalities
def test_a_missing_input_is_an_error_naming_it_unless_missing_inputs_are_allowed(
    finetune_config, tmp_path, batch
):
    task = _task(finetune_config, tmp_path).eval()
    model = task.model
    inputs = {k: v for k, v in batch["inputs"].items() if k != "s1_asc"}
    times = {k: v for k, v in batch["times"].items() if k != "s1_asc"}
    valid = {k: v for k, v in batch["valid"].items() if k != "s1_asc"}
    with pytest.raises(ValueError, match=r"lacks configured modalities \['s1_asc'\]"):
        model(inputs, times, valid)
    with torch.no_grad():
        allowed = model(inputs, times, valid, allow_missing=True)["logits"]
        # Missing = present with no valid date: the same prediction.
        invalid = {**batch["valid"], "s1_asc": torch.zeros_like(batch["valid"]["s1_asc"])}
        reference = model(batch["inputs"], batch["times"], invalid)["logits"]
        full = model(batch["inputs"], batch["times"], batch["valid"])["logits"]
    torch.testing.assert_close(allowed, reference)
    assert not torch.allclose(allowed, full)


def test_the_task_allows_missing_inputs_only_when_evaluating_without_them(finetune_config, tmp_path, batch):
    partial = {
        **batch,
        "inputs": {k: v for k, v in batch["inputs"].items() if not k.startswith("s1")},
        "times": {k: v for k, v in batch["times"].items() if not k.startswith("s1")},
        "valid": {k: v for k, v in batch["valid"].items() if not k.startswith("s1")},
    }
    strict = _task(finetune_config, tmp_path).eval()
    with pytest.raises(ValueError, match="s1_asc"):
        strict(partial)
    tolerant = _task(finetune_config, tmp_path, "eval.missing_modalities=[s1_asc, s1_des]").eval()
    with torch.no_grad():
        assert tolerant(partial)["logits"].shape == (2, 15, 512, 512)
    tolerant.train()  # training never runs on a silently incomplete batch
    with pytest.raises(ValueError, match="s1_asc"):
        tolerant(partial)


# ------------------------------------------------------------------------------ label checks
def _sample(lpis: np.ndarray, patch_id: str = "D005-2021_AB-S1-01_0-0") -> dict:
    return {"inputs": {}, "labels": {"lpis": lpis}, "meta": {"patch_id": patch_id}}


@pytest.mark.parametrize("level", [1, 2, 3])
def test_a_label_value_outside_the_nomenclature_is_a_data_error_naming_the_patch(level):
    target = get_task("lpis").target(level)
    checked = CheckedLabels(lambda sample: sample, target)
    labels = np.zeros((3, 8, 8), dtype=np.uint8)
    labels[level - 1, 2, 3] = target.nomenclature.num_values - 1  # the largest valid value
    assert checked(_sample(labels)) is not None
    labels[level - 1, 4, 4] = target.nomenclature.num_values  # one past it
    with pytest.raises(
        DataError,
        match=rf"patch D005-2021_AB-S1-01_0-0: lpis band {level}: values "
        rf"\[{target.nomenclature.num_values}\] are outside",
    ):
        checked(_sample(labels))
    other = np.zeros((3, 8, 8), dtype=np.uint8)
    other[[b for b in range(3) if b != level - 1][0]] = 250  # other levels' bands are not this target's
    assert checked(_sample(other)) is not None


def test_a_sample_without_the_task_label_is_a_data_error_naming_the_patch():
    checked = CheckedLabels(lambda sample: sample, get_task("lc").target(1))
    with pytest.raises(DataError, match=r"patch P1: the lc task needs label 'lc', absent .*\['lpis'\]"):
        checked(_sample(np.zeros((3, 4, 4), dtype=np.uint8), patch_id="P1"))


def test_the_stage_loader_checks_the_labels_of_its_task(finetune_config, tmp_path):
    config, _ = resolve(finetune_config(tmp_path, "task.name=lpis", "task.level=3"))
    wrapped = datamodule(config, config.inputs).wrap(lambda sample: sample)
    assert isinstance(wrapped, CheckedLabels) and wrapped.target == config.task.target
    bad = np.zeros((3, 4, 4), dtype=np.uint8)
    bad[2, 0, 0] = 99
    with pytest.raises(DataError, match="patch X_1: lpis band 3"):
        wrapped(_sample(bad, patch_id="X_1"))


def test_targets_map_ignored_values_and_keep_scored_ones():
    target = get_task("lc").target(1)
    raw = torch.tensor([[[[0, 14, 15, 18]]]], dtype=torch.uint8)
    assert target.targets(raw).tolist() == [[[0, 14, IGNORE_INDEX, IGNORE_INDEX]]]
    lpis = get_task("lpis").target(2)
    mixed = lpis.names.index("mixed crops")
    raw = torch.zeros(1, 3, 1, 2, dtype=torch.uint8)
    raw[0, 1, 0] = torch.tensor([mixed, 3])
    assert lpis.targets(raw).tolist() == [[[IGNORE_INDEX, 3]]]


def test_the_frozen_probe_encoder_gets_no_gradients_and_stays_in_eval_mode(finetune_config, tmp_path, batch):
    task = _task(finetune_config, tmp_path, "model.probe=true", "model.encoder.drop_path=0.1")
    task.train()
    assert not task.model.encoder.training and task.model.decoder.training
    grads = _step_gradients(task, batch, seed=0)
    assert grads and not any(name.startswith("model.encoder.") for name in grads)
    trainable = {name for name, p in task.named_parameters() if p.requires_grad}
    assert trainable and not any(name.startswith("model.encoder.") for name in trainable)


def test_the_probe_is_a_linear_layer_on_frozen_encoder_tokens(finetune_config, tmp_path, batch):
    """``--probe`` (``model.probe=true model.head=linear``) trains one linear layer, (inputs x
    width + 1) x classes parameters, on the mean of each input's frozen final tokens: no decoder,
    no pooling queries, and the encoder gets no gradient."""
    task = _task(finetune_config, tmp_path, *cli.flag_overrides(cli.build_parser().parse_args(["--probe"])))
    assert task.config.model.probe and task.config.model.head == "linear"
    features = len(task.config.inputs) * task.config.model.encoder.transformer.width  # 5 x 64
    trainable = {name: p for name, p in task.named_parameters() if p.requires_grad}
    assert set(trainable) == {"model.head.linear.weight", "model.head.linear.bias"}
    assert sum(p.numel() for p in trainable.values()) == (features + 1) * task.target.num_classes
    grads = _step_gradients(task, batch, seed=0)
    assert set(grads) == set(trainable) and all(g.abs().sum() > 0 for g in grads.values())
    assert all(p.grad is None for p in task.model.encoder.parameters())


def test_validation_and_test_never_predict_an_ignored_class_whose_logit_wins(finetune_config, tmp_path):
    """An LPIS head whose raw logits favour the unscored "mixed crops" everywhere: the evaluation
    (EMA weights, as in validation and test) predicts the best scored class instead."""
    overrides = ("task.name=lpis", "task.level=1", "data.batch_size=2")
    config, _ = resolve(finetune_config(tmp_path, *overrides))
    data = datamodule(config, config.inputs)
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    task = _task(finetune_config, tmp_path, *overrides)
    mixed = task.target.names.index("mixed crops")
    with torch.no_grad():
        task.model.head.conv.weight.zero_()
        task.model.head.conv.bias.zero_()
        task.model.head.conv.bias[[mixed, 3]] = torch.tensor([9.0, 1.0])  # maize is the runner-up
    task.ensure_ema()
    task.eval()
    with torch.no_grad():
        assert (task(batch, task.eval_model)["logits"].argmax(dim=1) == mixed).all()
        targets, predictions = task._evaluate(batch, task.test_metrics)
    assert (predictions == 3).all()
    scores = task.test_metrics.compute()
    assert scores.predicted[mixed] == 0 and scores.predicted[3] == (targets != IGNORE_INDEX).sum()
