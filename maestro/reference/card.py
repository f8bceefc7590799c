"""The README.md of a converted folder: provenance, licence, architecture, what was left out."""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from maestro.reference.options import Weights
from maestro.reference.plan import Conversion
from maestro.reference.sources import SourceInfo
from maestro.reference.unpickle import ReferenceCheckpoint

REFERENCE_REPO = "https://github.com/IGNF/MAESTRO"
LICENCE_UNKNOWN = (
    "The licence is not stated in the checkpoint: check the licence on the source's model card (for a Hub "
    "repo, the `license` field of its README.md) before using or redistributing these weights."
)


def card_licence(card: str | None) -> str | None:
    """The ``license`` (and ``license_name`` / ``license_link``) of a Hub card's YAML header."""
    if not card or not card.startswith("---"):
        return None
    header, _, _ = card[3:].partition("\n---")
    try:
        data = yaml.safe_load(header)
    except yaml.YAMLError:
        return None
    if not isinstance(data, Mapping) or not data.get("license"):
        return None
    parts = [str(data["license"])]
    if data.get("license_name"):
        parts.append(f"({data['license_name']})")
    if data.get("license_link"):
        parts.append(f"<{data['license_link']}>")
    return " ".join(parts) + ", as stated on the source's model card"


def summary(conversion: Conversion) -> list[str]:
    """What a conversion did, one line per fact (for logs and the CLI)."""
    report = conversion.report
    lines = [
        f"{len(report.used)} tensors of {report.prefix or 'the state dict'}* converted into a {conversion.model_type}"
    ]
    lines += [f"left out {count} tensors: {reason}" for reason, count in report.skipped_summary().items()]
    lines += [f"modality {mod} not converted: {why}" for mod, why in report.unsupported_modalities.items()]
    lines += [f"note: {note}" for note in report.notes]
    return lines


def model_card(
    conversion: Conversion,
    checkpoint: ReferenceCheckpoint,
    info: SourceInfo,
    licence: str | None,
    digest: str,
    weights: Weights,
) -> str:
    """README.md of a converted folder: provenance, licence, architecture, what was left out."""
    report = conversion.report
    config = conversion.config
    encoder = getattr(config, "encoder", config)
    size = encoder.transformer
    which = (
        "exponential moving average (`ema_model.*`)"
        if report.prefix == "ema_model."
        else "trained (`model.*`)"
    )
    if weights == "ema" and report.prefix != "ema_model.":
        which += " (the checkpoint has no EMA copy)"
    repo_line = (
        f"[{info.repo_id}](https://huggingface.co/{info.repo_id}) at revision `{info.revision or 'main'}`"
        if info.repo_id
        else f"the local file `{info.path.name}`"
    )
    modalities = ", ".join(f"`{m}`" for m in encoder.modalities)
    lines = [
        "---",
        "library_name: maestro-eo",
        "tags:",
        "- earth-observation",
        "- maestro",
        "- converted",
        "---",
        "",
        "# MAESTRO weights converted from the reference implementation",
        "",
        f"MAESTRO weights from {repo_line}, written by the reference code ({REFERENCE_REPO}) and "
        f"converted to this suite's `{conversion.model_type}` layout by `maestro import-reference`. The "
        "values are the publisher's; tensors were only renamed, reshaped or had their rows reordered.",
        "",
        "## Source",
        "",
        f"- repository: {info.repo_id or 'none (local file)'}",
        f"- revision: {info.revision or 'n/a'}",
        f"- file: `{info.filename or info.path.name}` (sha256 `{digest}`)",
        f"- weights: {which}",
    ]
    for key, value in checkpoint.metadata.items():
        lines.append(f"- {key}: {value}")
    lines += [
        "",
        "## Licence",
        "",
        f"The weights keep their publisher's licence: {licence}." if licence else LICENCE_UNKNOWN,
        "",
        "## Model",
        "",
        f"- inputs: {modalities}; fusion `{encoder.fusion}`, {size.depth} blocks of width {size.width} "
        f"({size.num_heads} heads, MLP {size.mlp_hidden}), the last {encoder.effective_inter_depth} on all "
        "streams together",
        "- date code as in the reference: day of year counted from 1, year offset rounded as its float32 "
        "arithmetic does (`day_of_year_origin: 1`, `date_offset: float32` in config.json)",
        "- not stored in the checkpoint: band order, from the suite's modality registry (the reference's "
        "FLAIR-HUB configuration); image sizes and dates per series, given to the converter or assumed from "
        "the registry (the conversion report says which)",
    ]
    if report.unsupported_modalities:
        lines += ["", "## Not converted", ""]
        lines += [f"- modality `{mod}`: {why}" for mod, why in report.unsupported_modalities.items()]
    lines += ["", "## Conversion report", ""]
    lines += [f"- {line}" for line in summary(conversion)]
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "finetune --task lc --init path/to/this/folder",
        "```",
        "",
        "```python",
        "from maestro.api import load_encoder",
        'model = load_encoder("path/to/this/folder")  # the encoder with its preprocessing',
        "```",
        "",
    ]
    return "\n".join(lines)
