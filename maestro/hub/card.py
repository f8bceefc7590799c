"""Model cards of published models: ``MODEL_CARD.md`` as the template plus the model's own facts.

A card is Hub metadata (``huggingface_hub.ModelCardData``: license, library, tags, dataset, base
model, pipeline tag, and a model-index with the test scores when the run has ``metrics.json`` and
was tested on FLAIR-HUB's own splits: scores on toy or unrecorded data are shown, never claimed),
then the generated sections (this model's architecture, inputs with their scaling from the modality
registry, classes, scores, usage lines naming the repo), then the sections of the repository's
``MODEL_CARD.md`` between the ``hub-card`` markers (intended use, data, limits, citations), so the
generic text is written once and the numbers always come from the code: where that text gives the
suite's defaults (patch sizes, dates, position grid), ``<!-- model:NAME -->...<!-- /model -->``
spans are replaced by this model's values.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from maestro.errors import ConfigError
from maestro.hub.card_baseline import baseline_body, baseline_parts, baseline_usage
from maestro.hub.card_flair2 import flair2_body, flair2_parts, flair2_usage
from maestro.hub.card_inputs import fill_model_text, inputs_table
from maestro.hub.folder import suite_version
from maestro.models.registry import (
    MAESTRO_GAPFILL,
    MAESTRO_MAE,
    MAESTRO_SEGMENTER,
    SWIN_UTAE_SEGMENTER,
    UNET_SEGMENTER,
    UTT_SEGMENTER,
    ModelType,
    get_model_type,
)

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parents[2] / "MODEL_CARD.md"
BEGIN, END = "<!-- hub-card:begin -->", "<!-- hub-card:end -->"
PLACEHOLDER = "org/name"
"""Written in the template wherever the repo id goes; replaced by the real id in a card."""
"""A span of the template that states a default; replaced by the model's own value in a card."""

LICENSE = "apache-2.0"
LIBRARY = "maestro-eo"
DATASET = "IGNF/FLAIR-HUB"
TAGS = ("earth-observation", "remote-sensing", "multimodal", "masked-autoencoder", "flair-hub")


@dataclass(frozen=True)
class EvalData:
    """What a run was tested on, from its test shards' manifest (``None``: not recorded there)."""

    shards: str
    """The run's ``data.test``, as its config records it."""
    dataset: str | None = None
    """``FLAIR-HUB`` or ``toy`` (the manifest's ``dataset``); None: no manifest, or one without it."""
    split: str | None = None
    patches: int | None = None
    official: bool = False
    """The split comes from FLAIR-HUB's own split CSVs (not ``--split-csv`` / ``--split-name``)."""

    @property
    def benchmark(self) -> bool:
        """Scores on this data are FLAIR-HUB results (model-index, dataset named in the heading)."""
        return self.dataset == "FLAIR-HUB" and self.official and self.split is not None


@dataclass(frozen=True)
class CardFacts:
    """What a card says about one model; everything but the type and config is optional."""

    model_type: str
    config: Mapping[str, Any]
    """``config.json["config"]``."""
    repo_id: str | None = None
    task: Mapping[str, Any] | None = None
    """``config.json["task"]`` of a segmenter."""
    weights: str | None = None
    """Which weights, in words (EMA or trained, checkpoint, step)."""
    source: str | None = None
    """Run or checkpoint the weights come from."""
    metrics: Mapping[str, Any] | None = None
    """The run's ``test/metrics.json`` (fractions; ``miou``, ``oa``, ``per_class``)."""
    test_data: EvalData | None = None
    """What ``metrics`` were measured on; None: unknown, so never claimed as FLAIR-HUB results."""
    revision: str | None = None
    """Branch the model is published on (shown in the usage lines; None: main)."""
    base_model: str | None = None
    """Hub id of the model a fine-tuned model started from, when it came from the Hub."""
    num_parameters: int | None = None


# ---------------------------------------------------------------------------------------- scores
def _percent(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(100.0 * float(value), 2)


def _scored_classes(metrics: Mapping[str, Any]) -> list[tuple[str, float]]:
    return [
        (str(row["name"]), iou)
        for row in metrics.get("per_class", ())
        if row.get("evaluated", True) and (iou := _percent(row.get("iou"))) is not None
    ]


def _dataset_name(task: Mapping[str, Any] | None) -> str:
    if not task:
        return "FLAIR-HUB"
    return f"FLAIR-HUB {task.get('name', '?')} level {task.get('level', '?')}"


def eval_results(
    metrics: Mapping[str, Any], task: Mapping[str, Any] | None, split: str = "test"
) -> list[EvalResult]:
    """The model-index entries of a test on FLAIR-HUB: mIoU, OA and one IoU per scored class, in percent."""
    common = {
        "task_type": "image-segmentation",
        "task_name": "Semantic segmentation",
        "dataset_type": DATASET,
        "dataset_name": _dataset_name(task),
        "dataset_split": split,
    }
    results = []
    for metric, name, value in (
        ("mean_iou", "mIoU (%)", metrics.get("miou")),
        ("accuracy", "OA (%)", metrics.get("oa")),
    ):
        if (number := _percent(value)) is not None:
            results.append(EvalResult(metric_type=metric, metric_name=name, metric_value=number, **common))
    for class_name, iou in _scored_classes(metrics):
        results.append(
            EvalResult(metric_type="iou", metric_name=f"IoU {class_name} (%)", metric_value=iou, **common)
        )
    return results


# ---------------------------------------------------------------------------------------- sections
def _model_name(facts: CardFacts) -> str:
    return facts.repo_id.split("/")[-1] if facts.repo_id else facts.model_type


def card_data(facts: CardFacts) -> ModelCardData:
    """The card's YAML metadata."""
    row = get_model_type(facts.model_type)
    tags = [tag for tag in TAGS if row.maestro_card or tag != "masked-autoencoder"]
    tags += ["segmentation"] if row.needs_task else []
    tested = facts.test_data
    benchmark = facts.metrics and tested is not None and tested.benchmark
    results = eval_results(facts.metrics, facts.task, str(tested.split)) if benchmark else None
    return ModelCardData(
        license=LICENSE,
        library_name=LIBRARY,
        tags=tags,
        datasets=None if _own_classes(facts) else [DATASET],
        base_model=facts.base_model,
        pipeline_tag=row.pipeline_tag,
        model_name=_model_name(facts),
        eval_results=results or None,
    )


def _own_classes(facts: CardFacts) -> bool:
    """A segmenter of a user's dataset and classes (the ``custom`` task): FLAIR-HUB is at most the
    data its encoder was pretrained on, never what it maps."""
    return bool(facts.task) and facts.task.get("name") == "custom"


def _decoders(config: Any) -> list[tuple[str, str]]:
    decoder = config.decoder
    return [
        (
            "decoders",
            f"one per encoder stream; width {decoder.width}; depth {decoder.depth}; mask ratio {config.mask_ratio:g}",
        )
    ]


def _head(config: Any) -> list[tuple[str, str]]:
    blocks = ", ".join(str(b) for b in config.blocks) or "final tokens"
    return [
        (
            "head",
            f"`{config.head}` on encoder blocks {blocks}; date pooling `{config.date_pooling}`; "
            f"{config.num_classes} classes at {config.label_size} px",
        )
    ]


PARTS = {
    MAESTRO_MAE: _decoders,
    MAESTRO_SEGMENTER: _head,
    SWIN_UTAE_SEGMENTER: baseline_parts,
    UNET_SEGMENTER: flair2_parts,
    UTT_SEGMENTER: flair2_parts,
}
"""The card rows of what a model type adds to (or has instead of) a MAESTRO encoder."""
BODIES = {SWIN_UTAE_SEGMENTER: baseline_body, UNET_SEGMENTER: flair2_body, UTT_SEGMENTER: flair2_body}
"""The closing sections of the types whose card does not copy MODEL_CARD.md's."""


def _architecture(row: ModelType, config: Any) -> list[tuple[str, str]]:
    rows = []
    if row.encoder_prefix is not None:
        encoder = row.encoder_config(config)
        size = encoder.transformer
        rows.append(
            (
                "encoder",
                f"preset `{encoder.size}`; width {size.width}; depth {size.depth}, of which late fusion "
                f"{encoder.effective_inter_depth}; attention heads {size.num_heads}; fusion `{encoder.fusion}`",
            )
        )
    part = PARTS.get(row)
    return rows + (part(config) if part is not None else [])


def _this_model(facts: CardFacts, row: ModelType, config: Any) -> str:
    lines = ["## This model", "", "| | |", "|---|---|", f"| model type | `{row.name}`: {row.description} |"]
    lines += [f"| {name} | {text} |" for name, text in _architecture(row, config)]
    if facts.num_parameters is not None:
        lines.append(f"| parameters | {facts.num_parameters / 1e6:.2f} M |")
    if facts.weights:
        lines.append(f"| weights | {facts.weights} |")
    if facts.source:
        lines.append(f"| checkpoint | `{facts.source}` |")
    if facts.base_model:
        lines.append(f"| started from | [{facts.base_model}](https://huggingface.co/{facts.base_model}) |")
    lines.append(f"| suite version | maestro-eo {suite_version()} |")
    lines += ["", "### Inputs", "", inputs_table(row.inputs(config), patches=row.encoder_prefix is not None)]
    if facts.task:
        names: Sequence[str] = facts.task.get("class_names", ())
        ignored = set(facts.task.get("ignored", ()))
        lines += ["", f"### Classes: {facts.task.get('name')} level {facts.task.get('level')}", ""]
        lines += [
            f"- `{i}` {name}" + (" (ignored value: not trained, not scored)" if i in ignored else "")
            for i, name in enumerate(names)
        ]
    return "\n".join(lines)


def _patches(tested: EvalData) -> str:
    return f"{tested.patches} patches" if tested.patches is not None else "patches not counted"


def _tested_on(facts: CardFacts) -> list[str]:
    """The results heading and the sentence naming the data the scores were measured on."""
    tested = facts.test_data or EvalData(shards="(not recorded)")
    where = f"shards `{tested.shards}`"
    if tested.benchmark:
        return [
            f"## Results on the {_dataset_name(facts.task)} {tested.split} split",
            "",
            f"Tested on {_patches(tested)} of FLAIR-HUB's `{tested.split}` split ({where}).",
        ]
    if tested.dataset == "toy":
        return [
            "## Results on synthetic toy data",
            "",
            f"Tested on the `{tested.split}` split of a simulated tree written by `shards toy` "
            f"({_patches(tested)}, {where}): these scores check the pipeline; they are not FLAIR-HUB results.",
        ]
    if tested.dataset is not None:
        return [
            f"## Results on {tested.dataset} data outside its official splits",
            "",
            f"Tested on split `{tested.split}` built from a custom split CSV ({_patches(tested)}, {where}): "
            f"not a result on FLAIR-HUB's own {tested.split} split.",
        ]
    return [
        "## Results on unrecorded test data",
        "",
        f"The run's test data ({where}) has no manifest that names its dataset here: "
        "these scores are not claimed as FLAIR-HUB results.",
    ]


def _results(facts: CardFacts) -> str:
    metrics = facts.metrics or {}
    miou, oa = _percent(metrics.get("miou")), _percent(metrics.get("oa"))
    lines = [*_tested_on(facts), ""]
    lines += [f"mIoU **{miou}** %, overall accuracy **{oa}** % (one confusion matrix over the whole split)."]
    classes = _scored_classes(metrics)
    if classes:
        lines += ["", "| class | IoU (%) |", "|---|---:|"] + [
            f"| {name} | {iou:.2f} |" for name, iou in classes
        ]
    return "\n".join(lines)


def _usage(facts: CardFacts, row: ModelType) -> str:
    repo = (facts.repo_id or PLACEHOLDER) + (f"@{facts.revision}" if facts.revision else "")
    if row in (UNET_SEGMENTER, UTT_SEGMENTER):
        return flair2_usage(row, repo)
    if row.encoder_prefix is None:
        return baseline_usage(row, repo)
    cls = row.model_class.__name__
    lines = [
        "## Usage",
        "",
        "```python",
        f"from {row.model_class.__module__} import {cls}",
        "",
        f'model = {cls}.from_pretrained("{repo}")',
        "```",
        "",
    ]
    if row is MAESTRO_GAPFILL:
        target = facts.config.get("target", "s2")
        lines += [
            f"Restore the cloudy `{target}` pixels of a zone, or of a shard set:",
            "",
            "```bash",
            f"predict --model hf:{repo} --reconstruct {target} --zone zones/D033 --out maps/D033_{target}_filled.tif",
            f"shards fill --from shards --out shards_filled --method model --model hf:{repo}",
            "```",
        ]
        return "\n".join(lines)
    lines += [
        "Fine-tune its encoder on FLAIR-HUB land cover (any model type with an encoder works as `--init`):",
        "",
        "```bash",
        f"finetune --task lc --init hf:{repo}",
        "```",
    ]
    return "\n".join(lines)


def template_body(path: Path | None = None) -> str:
    """The shared sections of ``MODEL_CARD.md`` (between the hub-card markers)."""
    path = path or TEMPLATE
    if not path.is_file():
        log.warning(
            "%s not found (installed without the source tree): the card has the generated sections only", path
        )
        return "See the MAESTRO suite's MODEL_CARD.md for intended use, limitations and citations."
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise ConfigError(f"{path} lacks the {BEGIN} / {END} markers around the sections copied into cards")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def build_card(facts: CardFacts, template: Path | None = None) -> ModelCard:
    """The full card: metadata, generated sections, then the template's shared sections."""
    row = get_model_type(facts.model_type)
    config = row.config_from_dict(facts.config)
    title = f"# {_model_name(facts)}"
    intro = (
        f"{row.description}, built with the MAESTRO suite (maestro-eo) for "
        f"[FLAIR-HUB](https://huggingface.co/datasets/{DATASET}) inputs. Weights are safetensors only; "
        "loading is strict."
    )
    if _own_classes(facts):
        data = facts.test_data.dataset if facts.test_data is not None and facts.test_data.dataset else None
        intro += (
            f" It was fine-tuned on {'the ' + data + ' dataset' if data and data != 'toy' else 'its own dataset'}"
            " with its own classes (the `custom` task, below); what the sections after them say of "
            "FLAIR-HUB concerns the encoder's pretraining."
        )
    sections = [title, intro, _this_model(facts, row, config)]
    if facts.metrics:
        sections.append(_results(facts))
    sections.append(_usage(facts, row))
    if row.maestro_card:
        body = fill_model_text(template_body(template), row.encoder_config(config))
    else:
        body = BODIES[row](config)
    if facts.repo_id:
        body = body.replace(PLACEHOLDER, facts.repo_id)
    sections.append(body)
    content = f"---\n{card_data(facts).to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n"
    return ModelCard(content)
