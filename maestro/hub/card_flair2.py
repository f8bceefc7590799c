"""The parts of a model card that differ for FLAIR #2's baselines (``unet-segmenter``, ``utt-segmenter``).

Like :mod:`maestro.hub.card_baseline` for the Swin-UTAE: the generated sections of
:mod:`maestro.hub.card` stay (metadata, inputs, classes, scores); the architecture rows, usage and
closing sections come from here, all from the published config.
"""

from __future__ import annotations

from typing import Any

from maestro.hub.card_baseline import baseline_usage
from maestro.models.registry import ModelType

FLAIR2_CITATION = """```bibtex
@article{garioud2023flair2,
  title   = {{FLAIR} \\#2: textural and temporal information for semantic segmentation from multi-source optical imagery},
  author  = {Garioud, Anatol and others},
  journal = {arXiv preprint arXiv:2305.14467},
  year    = {2023}
}
```"""


def _keys(keys: tuple[str, ...]) -> str:
    return ", ".join(f"`{key}`" for key in keys)


def flair2_parts(config: Any) -> list[tuple[str, str]]:
    """Card rows of a U-Net or U-T&T: its U-Net and, for U-T&T, its U-TAE and fusions."""
    unet = getattr(config, "unet", None) or config.utt.unet
    rows = [
        (
            "u-net",
            f"smp U-Net, encoder `{unet.encoder}`, decoder widths {list(unet.decoder_channels)}, on "
            f"{unet.in_channels} channels: the bands of {_keys(config.single_date)} concatenated; "
            f"{config.num_classes} classes at {config.label_size} px",
        )
    ]
    if hasattr(config, "utt"):
        utt = config.utt
        encoders, decoders = utt.utae.widths(True)
        rows += [
            (
                "u-tae",
                f"on `{config.series}`; widths {list(encoders)} / {list(decoders)}; L-TAE "
                f"{utt.utae.num_heads} heads, d_model {utt.utae.d_model}",
            ),
            (
                "fusion",
                f"{' + '.join(utt.fusions)} into every U-Net encoder level; footprint {utt.footprint} px; "
                f"auxiliary U-TAE loss weight {utt.aux_weight:g}",
            ),
        ]
    if config.class_weights is not None:
        zero = [i for i, weight in enumerate(config.class_weights) if weight == 0.0]
        rows.append(
            (
                "loss",
                f"class-weighted cross-entropy (channels {zero} weight 0)"
                if zero
                else "class-weighted cross-entropy",
            )
        )
    return rows


def flair2_usage(row: ModelType, repo: str) -> str:
    """How to load the network, and map a zone with it when ``predict`` can (not U-T&T)."""
    if row.zone_refusal is None:
        return baseline_usage(row, repo)
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
            f"`predict` does not map zones with it: {row.zone_refusal}",
        ]
    )


def flair2_body(config: Any) -> str:
    """The closing sections: what the model is, what it is for, its limits and the citation."""
    name = "U-T&T" if hasattr(config, "utt") else "U-Net"
    return "\n".join(
        [
            "## Model",
            "",
            f"{name} is a supervised baseline of the FLAIR #2 challenge (Garioud et al., arXiv 2305.14467), "
            f"trained here by the MAESTRO suite (`finetune --model {'utt' if name == 'U-T&T' else 'unet'}`) "
            "on the same shards, labels and scores as its MAESTRO segmenters. The U-Net segments the aerial "
            "image (R, G, B, NIR and elevation); U-T&T adds a U-TAE on the Sentinel-2 time series of a "
            "super-patch around it, whose maps are added to the U-Net's encoder levels. It has no "
            "pretraining of its own beyond the ImageNet weights its encoder may start from: it is a point "
            "of comparison for MAESTRO segmenters, not a backbone to fine-tune.",
            "",
            "## Intended use and limits",
            "",
            f"Land-cover maps at {config.label_size} px per 102.4 m patch laid out like FLAIR #2's, from the "
            "inputs listed above, preprocessed by the suite as in training. Trained on metropolitan France: "
            "other regions, sensors or processing chains are out of distribution. Maps are statistical "
            "estimates; check them against ground truth before using them for decisions about particular "
            "places.",
            "",
            "## Citation",
            "",
            FLAIR2_CITATION,
        ]
    )
