"""The inputs sections of model cards: what the network reads and how raw values are scaled,
from the modality registry and the model's encoder config, and the template's ``model:NAME`` spans
that :func:`fill_model_text` fills with this model's values (patch sizes, grid, inputs)."""

from __future__ import annotations

import re

from maestro.errors import ConfigError
from maestro.modalities import MODALITIES, Divide, ElevationWithHeight, LogBackscatter, Scaling
from maestro.models.config import EncoderConfig

MODEL_TEXT = re.compile(r"<!-- model:(?P<name>\w+) -->.*?<!-- /model -->", re.S)
"""A span of MODEL_CARD.md that gives the suite's default where the card states this model's value."""


def describe_scaling(scaling: Scaling | None) -> str:
    """The registry's scaling rule of a modality, in words."""
    if scaling is None:
        return "none"
    if isinstance(scaling, Divide):
        return f"÷ {scaling.factor:g}"
    if isinstance(scaling, LogBackscatter):
        return f"ln(max(x, {scaling.eps:g})) ÷ {scaling.divisor:g}"
    if isinstance(scaling, ElevationWithHeight):
        return (
            f"÷ {scaling.divisor:g}, then the {scaling.terrain_band} channel replaced by "
            f"{scaling.height_gain:g} × ({scaling.surface_band} − {scaling.terrain_band}): height above ground"
        )
    return repr(scaling)


def scaling_table() -> str:
    """Markdown table of the scaling of every image modality of the registry (equal rules share a row)."""
    rows: dict[str, list[str]] = {}
    for key, modality in MODALITIES.items():
        if modality.is_input:
            rows.setdefault(describe_scaling(modality.scaling), []).append(f"`{key}`")
    lines = ["| modality | scaling of the raw values |", "|---|---|"]
    lines += [f"| {', '.join(keys)} | {rule} |" for rule, keys in rows.items()]
    return "\n".join(lines)


def inputs_table(encoder: EncoderConfig, patches: bool = True) -> str:
    """Markdown table of what the network reads: bands in network order, sizes, dates, scaling
    (``patches``: the token patch sizes of a MAESTRO encoder)."""
    patch = ("| patch px ", "---:|") if patches else ("", "")
    lines = [
        f"| modality | bands (network order) | image px {patch[0]}| dates | scaling |",
        f"|---|---|---:|{patch[1]}---:|---|",
    ]
    for key, spec in encoder.specs.items():
        rule = describe_scaling(MODALITIES[key].scaling)
        size = f"{spec.image_size} | {spec.patch_size}" if patches else f"{spec.image_size}"
        lines.append(f"| `{key}` | {', '.join(spec.bands)} | {size} | {spec.num_dates} | {rule} |")
    return "\n".join(lines)


def _dates(count: int) -> str:
    return f"{count} date{'s' if count != 1 else ''} kept"


def _patch_sizes(encoder: EncoderConfig) -> str:
    sizes = ", ".join(f"`{key}` {spec.patch_size} px" for key, spec in encoder.specs.items())
    return f"this model: {sizes}"


def _input_list(encoder: EncoderConfig) -> str:
    parts = [
        f"`{key}` ({', '.join(spec.bands)}"
        + (f"; {_dates(spec.num_dates)})" if MODALITIES[key].temporal else ")")
        for key, spec in encoder.specs.items()
    ]
    return f"This model reads {', '.join(parts)}, bands in network order."


MODEL_TEXTS = {
    "patches": _patch_sizes,
    "grid": lambda encoder: f"{encoder.grid_size} × {encoder.grid_size}",
    "inputs": _input_list,
}
"""Generators of the template's ``model:NAME`` spans, from the model's encoder config."""


def fill_model_text(body: str, encoder: EncoderConfig) -> str:
    """The template text with every ``model:NAME`` span replaced by the model's own value."""

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in MODEL_TEXTS:
            raise ConfigError(
                f"the card template has an unknown <!-- model:{name} --> span; known: {sorted(MODEL_TEXTS)}"
            )
        return MODEL_TEXTS[name](encoder)

    return MODEL_TEXT.sub(replace, body)
