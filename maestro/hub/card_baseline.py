"""The parts of a model card that differ for the supervised Swin-UTAE baseline (``swin-utae-segmenter``).

MODEL_CARD.md describes MAESTRO networks; a baseline's card keeps the generated sections of
:mod:`maestro.hub.card` (metadata, inputs, classes, scores) and takes its architecture rows, usage
and closing sections from here, all from the published config.
"""

from __future__ import annotations

from typing import Any

from maestro.models.registry import ModelType

FLAIR_HUB_CITATION = """```bibtex
@article{garioud2025flairhub,
  title   = {{FLAIR-HUB}: Large-scale Multimodal Dataset for Land Cover and Crop Mapping},
  author  = {Garioud, Anatol and Giordano, S{\\'e}bastien and David, Nicolas and Gonthier, Nicolas},
  journal = {arXiv preprint arXiv:2506.07080},
  year    = {2025}
}
```"""


def _keys(keys: tuple[str, ...]) -> str:
    return ", ".join(f"`{key}`" for key in keys) or "none"


def baseline_parts(config: Any) -> list[tuple[str, str]]:
    """Card rows of a Swin-UTAE: its Swins, U-TAEs and decoder."""
    swin, utae = config.swin, config.utae
    changed = ", ".join(f"{name} {value}" for name, value in swin.timm_kwargs().items())
    encoders, decoders = utae.widths(bool(config.single_date))
    rows = [
        (
            "swins",
            f"timm `{swin.name}`{f' ({changed})' if changed else ''}, one per single-date input: {_keys(config.single_date)}",
        ),
        (
            "u-taes",
            f"one per time series: {_keys(config.series)}; widths {list(encoders)} / {list(decoders)}; "
            f"L-TAE {utae.num_heads} heads, d_model {utae.d_model}",
        ),
        (
            "decoder",
            f"UPerNet, {config.decoder_channels} channels; {config.num_classes} classes at {config.label_size} px",
        ),
    ]
    if config.cloudy_date_fraction is not None:
        rows.append(
            (
                "preprocessing",
                f"Sentinel-2 dates flagged cloudy or snowy on more than {config.cloudy_date_fraction:.0%} of the pixels are dropped",
            )
        )
    return rows


def baseline_usage(row: ModelType, repo: str) -> str:
    """How to load the baseline and map a zone with it."""
    cls = row.model_class
    return "\n".join(
        [
            "## Usage",
            "",
            "```python",
            f"from {cls.__module__} import {cls.__name__}",
            "",
            f'model = {cls.__name__}.from_pretrained("{repo}")',
            "```",
            "",
            "Map a zone (a folder of rasters named by modality, laid out as the suite's README describes):",
            "",
            "```bash",
            f"predict --model hf:{repo} --zone ZONE --out map.tif",
            "```",
        ]
    )


def baseline_body(config: Any) -> str:
    """The closing sections: what the model is, what it is for, its limits and the citation."""
    return "\n".join(
        [
            "## Model",
            "",
            "Swin-UTAE is the supervised baseline of FLAIR-HUB (Garioud et al., arXiv 2506.07080), trained "
            "here by the MAESTRO suite (`finetune --model swin-utae`) on the same shards, labels and "
            "scores as its MAESTRO segmenters. Each single-date input goes through a Swin Transformer, "
            "each Sentinel time series through a U-TAE (a U-Net whose temporal attention weighs the "
            "dates); the stages of all inputs are fused and decoded by a UPerNet. It has no pretraining "
            "of its own beyond the ImageNet weights its Swins may start from: it is a point of comparison "
            "for MAESTRO segmenters, not a backbone to fine-tune.",
            "",
            "## Intended use and limits",
            "",
            f"Land-cover or crop-type maps at {config.label_size} px per 102.4 m patch laid out like "
            "FLAIR-HUB's, from the inputs listed above, preprocessed by the suite as in training. Trained "
            "on metropolitan France: other regions, sensors or processing chains are out of distribution. "
            "Maps are statistical estimates; check them against ground truth before using them for "
            "decisions about particular places.",
            "",
            "## Citation",
            "",
            FLAIR_HUB_CITATION,
        ]
    )
