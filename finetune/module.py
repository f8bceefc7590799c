"""The segmentation task: cross-entropy on one label level, scored by a split-wide confusion matrix.

Built on :class:`~maestro.training.task.TrainingTask` (EMA, optimiser, exact resume). Validation
and test use the EMA weights and accumulate one confusion matrix per split across all ranks; the
test writes the report, figures and optional prediction GeoTIFFs through :mod:`finetune.outputs`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from finetune.config import FinetuneConfig
from maestro.evaluation import SegmentationMetrics
from maestro.hub.folder import load_strict
from maestro.labels import IGNORE_INDEX
from maestro.modalities import MODALITIES
from maestro.models.baseline.model import SwinUTAE
from maestro.models.finetuning import network_config
from maestro.models.flair2.segmenter import UNetSegmenter, UTTSegmenter
from maestro.models.registry import model_type_of_config
from maestro.models.segmenter import MaestroSegmenter
from maestro.tasks import LabelTarget
from maestro.training.memory import SampleMemory, encoder_activation_bytes
from maestro.training.task import TrainingTask, batch_size_of

log = logging.getLogger(__name__)

UPERNET_CHANNEL_BYTES = 4.7
"""Activation bytes per label pixel and decoder channel of the UPerNet decoder in a training step
(its maps at a quarter of the label size; measured on CPU, see :mod:`maestro.training.memory`)."""
HEAD_CLASS_BYTES = 46
"""Activation bytes per label pixel and class of a head's full-resolution output (logits,
upsampling, the loss); measured likewise."""


def cross_entropy(logits: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean cross-entropy over the pixels not ignored; with ``weight``, each pixel weighs its class's
    weight (PyTorch's weighted mean), and a batch in which no pixel carries weight (U-T&T's U-TAE
    branch on plowed land only) gives 0 rather than NaN."""
    if weight is None:
        return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)
    total = F.cross_entropy(
        logits.float(), targets, weight=weight, ignore_index=IGNORE_INDEX, reduction="sum"
    )
    kept = targets != IGNORE_INDEX
    mass = (weight[torch.where(kept, targets, 0)] * kept).sum()
    return total / mass.clamp_min(torch.finfo(total.dtype).tiny)


def segmentation_loss(
    output: dict[str, Any],
    targets: Tensor,
    aux_weight: float,
    class_weights: Tensor | None = None,
    aux_class_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Cross-entropy of the main head plus ``aux_weight`` x the mean of the auxiliary losses, each
    with its optional per-class weights (the network's :meth:`~maestro.models.registry.ModelType.loss_options`)."""
    main = cross_entropy(output["logits"], targets, class_weights)
    parts = {"main": main}
    loss = main
    aux = output.get("aux")
    if aux:
        losses = {key: cross_entropy(logits, targets, aux_class_weights) for key, logits in aux.items()}
        parts.update({f"aux_{key}": value for key, value in losses.items()})
        loss = main + aux_weight * torch.stack(list(losses.values())).mean()
    return loss, parts


class FinetuneTask(TrainingTask):
    """Encoder + head trained on one label level; validation mIoU picks the best checkpoint."""

    config_class = FinetuneConfig
    config: FinetuneConfig
    model: MaestroSegmenter | SwinUTAE | UNetSegmenter | UTTSegmenter

    def __init__(
        self, config: FinetuneConfig | dict[str, Any], encoder_state: dict[str, Tensor] | None = None
    ):
        super().__init__(config)
        model = self.config.model
        if encoder_state is not None and model.is_baseline:  # a fresh run: ImageNet backbone weights
            load_strict(
                self.model.pretrained_backbone(), encoder_state, f"ImageNet weights of {model.architecture}"
            )
        elif encoder_state is not None:  # a fresh run: start from the pretrained encoder
            load_strict(self.model.encoder, encoder_state, model.init)
        network = self.model.config
        options = model_type_of_config(network).loss_options(network)
        self.aux_weight: float = options.get("aux_weight", model.aux_weight)
        for name in ("class_weights", "aux_class_weights"):  # follow the module's device, never saved
            weights = options.get(name)
            self.register_buffer(name, None if weights is None else torch.tensor(weights), persistent=False)
        self.target: LabelTarget = self.config.task.target
        self.val_metrics = SegmentationMetrics.for_level(self.target.nomenclature)
        self.test_metrics = SegmentationMetrics.for_level(self.target.nomenclature)
        self.test_writer = None
        """Set by the stage before testing (:class:`finetune.outputs.TestOutputs`)."""

    def sample_memory(self) -> SampleMemory | None:
        """Activations of the MAESTRO encoder (:func:`encoder_activation_bytes`; one block's worth
        when frozen) and of the head at label resolution, plus the sample's fp32 inputs; no
        estimate for the supervised baselines."""
        if self.config.model.is_baseline:
            return None
        model = self.config.model
        pixels = MODALITIES[self.target.label_modality].size_px ** 2
        per_pixel = HEAD_CLASS_BYTES * self.target.num_classes
        if model.head == "uperfuse":
            per_pixel += UPERNET_CHANNEL_BYTES * model.decoder_channels
        specs = self.model.encoder.specs.values()
        inputs = sum(4 * s.num_dates * s.num_bands * s.image_size**2 for s in specs) + 8 * pixels
        activations = encoder_activation_bytes(self.model.encoder, trains=not model.probe)
        return SampleMemory(activations=activations + int(pixels * per_pixel), inputs=inputs)

    def single_sample_hint(self) -> str:
        return "" if self.config.model.is_baseline else ", or --head maestro, whose head has no BatchNorm"

    def build_model(self) -> MaestroSegmenter | SwinUTAE | UNetSegmenter | UTTSegmenter:
        """The network the run's ``model`` and ``task`` sections describe, built by its registry row."""
        config = network_config(self.config.model, self.config.task)
        return model_type_of_config(config).build(config)

    # ------------------------------------------------------------------ steps
    def forward(self, batch: dict[str, Any], model: torch.nn.Module | None = None) -> dict[str, Any]:
        model = model if model is not None else self.model
        missing = bool(self.config.eval.missing_modalities) and not self.training
        return model(
            batch["inputs"], batch["times"], batch["valid"], allow_missing=missing, padded=batch.get("padded")
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        targets = self.target.targets(batch["labels"][self.target.label_modality])
        loss, parts = segmentation_loss(
            self(batch), targets, self.aux_weight, self.class_weights, self.aux_class_weights
        )
        size = batch_size_of(batch)
        self.log("train/loss", loss, batch_size=size)  # shown by the progress bar
        if len(parts) > 1:
            for name, value in parts.items():
                self.log(f"train/loss_{name}", value, batch_size=size)
        return loss

    def _evaluate(self, batch: dict[str, Any], metrics: SegmentationMetrics) -> tuple[Tensor, Tensor]:
        """Score the batch with the EMA weights; returns (targets, predictions)."""
        targets = self.target.targets(batch["labels"][self.target.label_modality])
        predictions = self.target.classes(self(batch, self.eval_model)["logits"])  # never an ignored class
        metrics.update(predictions, targets)
        return targets, predictions

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        scores = self.val_metrics.compute()  # sums the confusion matrix over ranks
        self.val_metrics.reset()
        if scores.confusion.sum() == 0:
            return
        self.log("val/miou", float(scores.miou), prog_bar=True, sync_dist=False, rank_zero_only=False)
        self.log("val/oa", float(scores.overall_accuracy), sync_dist=False, rank_zero_only=False)

    def on_test_start(self) -> None:
        self.ensure_ema()

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        targets, predictions = self._evaluate(batch, self.test_metrics)
        if self.test_writer is not None:
            self.test_writer.add_batch(batch, targets, predictions, self.global_rank)

    def on_test_epoch_end(self) -> None:
        scores = self.test_metrics.compute()
        self.test_metrics.reset()
        self.log("test/miou", float(scores.miou), sync_dist=False, rank_zero_only=False)
        self.log("test/oa", float(scores.overall_accuracy), sync_dist=False, rank_zero_only=False)
        self.test_scores = scores
        if self.test_writer is not None and self.trainer.is_global_zero:
            self.test_writer.finish(scores)
