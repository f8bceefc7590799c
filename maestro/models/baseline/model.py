"""Swin-UTAE: the supervised multimodal baseline of FLAIR-HUB, on the suite's model-sample batches.

Data flow (docs/method.md, "Supervised baseline: Swin-UTAE")::

    single-date {aerial, dem, spot, hist}: standardise -> Swin (one per modality)   4 stages /4 ... /32
    time series {s2, s1_asc, s1_des}: day offsets [monthly average] -> U-TAE        4 levels at 10 px
    -> per stage: resize to the reference Swin, concatenate, 1x1 conv              (StageFusion)
    -> per task: smp UPerNetDecoder -> 1x1 conv -> label size                     {task: (B, K_t, H, W)}
    S1/S2-only: the U-TAE logits, averaged over the present Sentinel modalities   (no Swin, no UPerNet)
    optional aux heads, per modality and task: a UPerNet on that Swin's stages alone, or a 1x1 conv
    on that U-TAE's logits.

It takes the same ``(inputs, times, valid)`` batches as :class:`~maestro.models.segmenter.MaestroSegmenter`
and ``forward`` returns the same ``{"logits", "aux"}`` (for the first task), so fine-tuning trains,
evaluates and checkpoints either model with one code path. :meth:`SwinUTAE.forward_tasks` returns
every task's output, one decoder per entry of ``config.tasks`` (the ``finetune`` command configures one).

Missing and dropped modalities. As in the MAESTRO segmenter, a modality without any valid date
(absent with ``allow_missing``, or removed by modality dropout in training) contributes zeros:
its stage maps and logits are multiplied by its presence, and the S1/S2-only average counts only
the present modalities.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from segmentation_models_pytorch.base.initialization import initialize_decoder, initialize_head
from torch import Tensor, nn

from maestro.hub.pretrained import HubModel
from maestro.models.baseline.config import SwinUTAEConfig
from maestro.models.baseline.fusion import StageFusion, TaskDecoder
from maestro.models.baseline.inputs import Standardise, day_offsets, monthly_average
from maestro.models.baseline.swin import SwinBackbone
from maestro.models.baseline.utae import UTAE
from maestro.models.heads.pooling import resample
from maestro.models.heads.uperfuse import SegmentationHead
from maestro.models.registry import register_model_type
from maestro.models.segmenter import SegmenterOutput, complete_batch, drop_modalities

Tensors = Mapping[str, Tensor]
log = logging.getLogger(__name__)


@register_model_type("swin-utae-segmenter")
class SwinUTAE(nn.Module, HubModel):
    """Swin per single-date modality, U-TAE per time series, stage fusion, one UPerNet per task."""

    def __init__(self, config: SwinUTAEConfig):
        super().__init__()
        self.config = config
        specs = config.encoder.specs
        self.single, self.series = config.single_date, config.series
        self.fused = bool(self.single)
        self.standardise = nn.ModuleDict({key: Standardise(key, specs[key].bands) for key in self.single})
        self.swins = nn.ModuleDict(
            {
                key: SwinBackbone(config.swin, specs[key].num_bands, specs[key].image_size, config.pretrained)
                for key in self.single
            }
        )
        series_logits = config.total_classes if not self.fused or config.aux_heads else None
        self.utaes = nn.ModuleDict(
            {
                key: UTAE(config.utae, specs[key].num_bands, series_logits, fused=self.fused)
                for key in self.series
            }
        )
        self.fusion: StageFusion | None = None
        self.decoders = nn.ModuleDict()
        if self.fused:
            self.reference = max(self.single, key=lambda key: specs[key].image_size)
            stages = self.swins[self.reference].out_channels
            if len(config.modalities) > 1:
                channels = {key: self._channels(key) for key in config.modalities}
                self.fusion = StageFusion(channels, stages)
            for task, classes in config.tasks.items():
                self.decoders[task] = TaskDecoder(stages, config.decoder_channels, classes, config.label_size)
        elif len(config.tasks) > 1:  # one shared U-TAE output, split into tasks by a 1x1 conv each
            for task, classes in config.tasks.items():
                self.decoders[task] = SegmentationHead(config.total_classes, classes, config.label_size)
        self.aux_heads = nn.ModuleDict()
        if config.aux_heads:
            for key in config.modalities:
                self.aux_heads[key] = nn.ModuleDict(
                    {task: self._aux_head(key, classes) for task, classes in config.tasks.items()}
                )
        for module in (self.decoders, self.aux_heads):
            initialize_decoder(module)
        if self.fusion is not None:
            initialize_head(self.fusion)
        log.debug(
            "swin-utae: swins %s, u-taes %s, tasks %s", list(self.single), list(self.series), config.tasks
        )

    def _channels(self, key: str) -> tuple[int, ...]:
        if key in self.swins:
            return self.swins[key].out_channels
        return self.config.utae.widths(self.fused)[1]

    def _aux_head(self, key: str, classes: int) -> nn.Module:
        config = self.config
        if key in self.swins:
            return TaskDecoder(
                self.swins[key].out_channels, config.decoder_channels, classes, config.label_size
            )
        return SegmentationHead(config.total_classes, classes, config.label_size)

    # ------------------------------------------------------------------ encoders
    def _present(self, valid: Tensor, like: Tensor) -> Tensor:
        return valid.any(dim=1).to(like.dtype)[:, None, None, None]

    def _encode_single(self, key: str, x: Tensor, valid: Tensor) -> list[Tensor]:
        stages = self.swins[key](self.standardise[key](x[:, 0]))
        return [stage * self._present(valid, stage) for stage in stages]

    def _encode_series(
        self, key: str, x: Tensor, times: Tensor, valid: Tensor
    ) -> tuple[list[Tensor], Tensor | None]:
        if self.config.utae.monthly_average:
            x, times, valid = monthly_average(x, times, valid)
        out = self.utaes[key](x, day_offsets(times, self.config.utae.reference_day), valid)
        present = self._present(valid, out.maps[0])
        logits = out.logits * present if out.logits is not None else None
        return [level * present for level in out.maps], logits

    # ------------------------------------------------------------------ forward
    def forward_tasks(
        self,
        inputs: Tensors,
        times: Tensors,
        valid: Tensors | None = None,
        *,
        allow_missing: bool = False,
        padded: bool | None = None,
    ) -> dict[str, SegmenterOutput]:
        """``{task: {"logits": (B, K_t, H, W), "aux": {modality: (B, K_t, H, W)}}}`` for every task.

        ``padded`` (whether ``valid`` has padded dates, known on the host) is accepted for the
        fine-tuning contract and not needed: every mask here is applied on the device without a sync.
        """
        config = self.config
        inputs, times, valid = complete_batch(inputs, times, valid, config.encoder.specs, allow_missing)
        valid = {key: valid[key] for key in config.modalities}
        if self.training and config.modality_dropout > 0:
            valid = drop_modalities(valid, config.modality_dropout)
        maps: dict[str, list[Tensor]] = {}
        series_logits: dict[str, Tensor] = {}
        for key in self.single:
            maps[key] = self._encode_single(key, inputs[key], valid[key])
        for key in self.series:
            maps[key], logits = self._encode_series(key, inputs[key], times[key], valid[key])
            if logits is not None:
                series_logits[key] = logits
        outputs: dict[str, SegmenterOutput] = {
            task: {"logits": logits} for task, logits in self._main(maps, series_logits, valid).items()
        }
        for key, heads in self.aux_heads.items():
            features = maps[key] if key in self.swins else series_logits[key]
            for task, head in heads.items():
                outputs[task].setdefault("aux", {})[key] = head(features)
        return outputs

    def _main(
        self, maps: dict[str, list[Tensor]], series_logits: dict[str, Tensor], valid: Tensors
    ) -> dict[str, Tensor]:
        config = self.config
        if self.fused:
            if self.fusion is None:
                stages = maps[self.reference]
            else:
                stages = self.fusion(maps, [stage.shape[-1] for stage in maps[self.reference]])
            return {task: decoder(stages) for task, decoder in self.decoders.items()}
        stacked = torch.stack([series_logits[key] for key in self.series])
        present = torch.stack([valid[key].any(dim=1) for key in self.series]).to(stacked.dtype)
        logits = stacked.sum(dim=0) / present.sum(dim=0).clamp_min(1.0)[:, None, None, None]
        if not self.decoders:
            return {next(iter(config.tasks)): resample(logits, config.label_size)}
        return {task: head(logits) for task, head in self.decoders.items()}

    def forward(
        self,
        inputs: Tensors,
        times: Tensors,
        valid: Tensors | None = None,
        *,
        allow_missing: bool = False,
        padded: bool | None = None,
    ) -> SegmenterOutput:
        """The first task's ``{"logits", "aux"}``: the fine-tuning contract of the MAESTRO segmenter."""
        outputs = self.forward_tasks(inputs, times, valid, allow_missing=allow_missing, padded=padded)
        return outputs[next(iter(self.config.tasks))]

    def pretrained_backbone(self) -> nn.Module:
        """Where a fresh run's ImageNet weights go: the Swins (:func:`~maestro.models.baseline.swin.imagenet_state`)."""
        return self.swins

    def no_weight_decay(self) -> set[str]:
        """Full names exempt from weight decay beyond biases and norms: Swin position tables, L-TAE queries."""
        names = {f"swins.{key}.{name}" for key, swin in self.swins.items() for name in swin.no_weight_decay()}
        return names | {name for name, _ in self.named_parameters() if name.endswith("ltae.query")}
