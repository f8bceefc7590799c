"""Generated model cards parse with huggingface_hub and carry the metadata; MODEL_CARD.md and the
README's commands stay true to the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from maestro.hub.card import (
    BEGIN,
    END,
    TEMPLATE,
    CardFacts,
    EvalData,
    build_card,
)
from maestro.hub.card_inputs import describe_scaling, scaling_table
from maestro.hub.pretrained import segmentation_task
from maestro.modalities import DEFAULT_INPUTS, MODALITIES, ModalityOverride
from maestro.models import zoo  # noqa: F401  (the networks register their types: cards name their classes)
from maestro.models.segmenter_config import SegmenterConfig
from maestro.models.synthetic import tiny_config

ROOT = Path(__file__).resolve().parents[1]
METRICS = {
    "miou": 0.65432,
    "oa": 0.8,
    "per_class": [
        {"index": 0, "name": "building", "evaluated": True, "iou": 0.9},
        {"index": 1, "name": "greenhouse", "evaluated": True, "iou": None},  # absent from the split
        {"index": 2, "name": "swimming pool", "evaluated": True, "iou": float("nan")},
        {"index": 15, "name": "clear cut", "evaluated": False, "iou": 0.1},
    ],
}


def _segmenter_facts(**changes) -> CardFacts:
    config = SegmenterConfig(
        encoder=tiny_config().encoder, num_classes=15, label_size=32, decoder_channels=16
    )
    fields = {
        "model_type": "maestro-segmenter",
        "config": config.to_dict(),
        "repo_id": "ign/maestro-lc",
        "task": segmentation_task("lc", 1),
        "metrics": METRICS,
        "test_data": EvalData("shards/flairhub", "FLAIR-HUB", "test", 1234, official=True),
        "base_model": "ign/maestro-medium",
        "weights": "EMA weights of run/best.ckpt (step 10)",
        "num_parameters": 1_500_000,
    }
    fields.update(changes)
    return CardFacts(**fields)


def test_encoder_card_metadata(tmp_path):
    facts = CardFacts(model_type="maestro-encoder", config=tiny_config().encoder.to_dict(), repo_id="ign/enc")
    path = tmp_path / "README.md"
    path.write_text(str(build_card(facts)))
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0" and data["library_name"] == "maestro-eo"
    assert data["datasets"] == ["IGNF/FLAIR-HUB"] and data["pipeline_tag"] == "feature-extraction"
    assert data["tags"] == [
        "earth-observation",
        "remote-sensing",
        "multimodal",
        "masked-autoencoder",
        "flair-hub",
    ]
    assert "base_model" not in data and "model-index" not in data
    assert "finetune --task lc --init hf:ign/enc" in card.text and "org/name" not in card.text
    assert "| `s2` | B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12 | 4 | 2 | 3 | ÷ 5000 |" in card.text


def test_segmenter_card_carries_base_model_and_model_index():
    card = ModelCard(str(build_card(_segmenter_facts())))
    data = card.data.to_dict()
    assert data["base_model"] == "ign/maestro-medium" and data["pipeline_tag"] == "image-segmentation"
    assert "segmentation" in data["tags"]
    (entry,) = data["model-index"]
    assert entry["name"] == "maestro-lc"
    (result,) = entry["results"]
    assert result["task"]["type"] == "image-segmentation"
    assert result["dataset"] == {"name": "FLAIR-HUB lc level 1", "type": "IGNF/FLAIR-HUB", "split": "test"}
    metrics = {m["name"]: (m["type"], m["value"]) for m in result["metrics"]}
    assert metrics == {
        "mIoU (%)": ("mean_iou", 65.43),
        "OA (%)": ("accuracy", 80.0),
        "IoU building (%)": ("iou", 90.0),
    }
    assert "| building | 90.00 |" in card.text and "mIoU **65.43** %" in card.text
    assert "- `0` building" in card.text and "- `14` brushwood" in card.text
    assert "EMA weights of run/best.ckpt (step 10)" in card.text and "1.50 M" in card.text
    assert "## Results on the FLAIR-HUB lc level 1 test split" in card.text and "1234 patches" in card.text


@pytest.mark.parametrize(
    ("tested", "heading"),
    [
        (EvalData("shards/toy", "toy", "test", 4, official=True), "## Results on synthetic toy data"),
        (
            EvalData("shards/mine", "FLAIR-HUB", "test", 50),
            "## Results on FLAIR-HUB data outside its official",
        ),
        (EvalData("shards/old"), "## Results on unrecorded test data"),
        (None, "## Results on unrecorded test data"),
    ],
)
def test_scores_not_measured_on_flairhub_splits_are_shown_but_not_claimed(tested, heading):
    card = ModelCard(str(build_card(_segmenter_facts(test_data=tested))))
    assert "model-index" not in card.data.to_dict() and "FLAIR-HUB lc level 1" not in card.text
    assert heading in card.text and "mIoU **65.43** %" in card.text


def test_a_card_without_metrics_has_no_results():
    card = ModelCard(str(build_card(_segmenter_facts(metrics=None, base_model=None))))
    assert "model-index" not in card.data.to_dict() and "## Results" not in card.text


def test_the_template_sections_follow_the_generated_ones(tmp_path, caplog):
    card = str(build_card(_segmenter_facts()))
    assert (
        card.index("## This model")
        < card.index("## Usage")
        < card.index("## Intended use")
        < card.index("## Citation")
    )
    assert "hf:ign/maestro-lc@v1.0" in card  # the template's org/name became the repo id
    fallback = str(build_card(_segmenter_facts(), template=tmp_path / "missing.md"))
    assert "## Intended use" not in fallback and "MODEL_CARD.md" in fallback and "not found" in caplog.text


def test_model_card_md_shows_the_registry_scalings():
    text = TEMPLATE.read_text()
    assert TEMPLATE == ROOT / "MODEL_CARD.md" and text.count(BEGIN) == 1 and text.count(END) == 1
    assert scaling_table() in text
    for key in DEFAULT_INPUTS:
        assert describe_scaling(MODALITIES[key].scaling) in text
    assert "arXiv:2506.07080" in text and "arXiv:2508.10894" in text
    assert "IGNF/FLAIR-HUB" in text


def _commands(text: str, program: str) -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [
        line.split("#")[0].strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()
    ]
    return [shlex.split(line)[1:] for line in lines if line.startswith(program + " ")]


@pytest.mark.parametrize("document", ["MODEL_CARD.md", "README.md"])
def test_documented_finetune_commands_parse(document):
    from finetune.cli import build_parser

    commands = _commands((ROOT / document).read_text(), "finetune")
    hub_inits = [c for c in commands if any(arg.startswith("hf:") for arg in c)]
    assert hub_inits, f"{document} shows no `finetune --init hf:...` command"
    inits = [build_parser().parse_known_args(argv)[0].init for argv in hub_inits]
    assert "hf:org/name" in inits and all(init.startswith("hf:") for init in inits)


def test_readme_publish_commands_parse():
    from maestro.cli import build_parser

    text = (ROOT / "README.md").read_text()
    section = text.split("## Pretrained weights", 1)[1].split("\n## ", 1)[0]
    commands = [c for c in _commands(section, "maestro") if c[0] in ("publish", "download")]
    assert any(c[0] == "publish" and "--dry-run" in c for c in commands)
    assert any(c[0] == "publish" and "--dry-run" not in c for c in commands)
    for argv in commands:
        build_parser().parse_args(argv)
    assert 'from_pretrained("org/name' in section and "finetune --task lc --init hf:org/name" in section


def test_the_card_text_gives_this_models_dates_and_patch_sizes_not_the_defaults():
    overrides = {
        "aerial": ModalityOverride(image_size=32, patch_size=4),
        "dem": ModalityOverride(image_size=32, patch_size=16),
        "s2": ModalityOverride(image_size=4, num_dates=5),
        "s1_asc": ModalityOverride(image_size=4, num_dates=2),
        "s1_des": ModalityOverride(image_size=4, num_dates=2),
    }
    encoder = tiny_config(overrides=overrides, grid_size=32).encoder
    text = str(build_card(CardFacts(model_type="maestro-encoder", config=encoder.to_dict())))
    model = text.split("\n## Model\n", 1)[1].split("\n## ", 1)[0]
    inputs = text.split("\n## Inputs\n", 1)[1].split("\n## ", 1)[0]
    assert "`aerial` 4 px" in model and "`dem` 16 px" in model and "32 × 32 grid" in model
    assert "16 px at 0.2 m" not in model and "160 × 160" not in model
    assert "`s2` (B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12; 5 dates kept)" in inputs
    assert (
        "`s1_asc` (VV, VH; 2 dates kept)" in inputs and "16 dates" not in inputs and "4 dates" not in inputs
    )
    assert "<!--" not in model + inputs


def test_a_card_of_your_own_classes_claims_no_flair_hub_data():
    from maestro.nomenclature import Nomenclature

    classes = Nomenclature.from_dict(
        {"classes": [{"value": i, "name": n} for i, n in enumerate(("other", "hedgerow", "forest"))]}
    )
    config = SegmenterConfig(encoder=tiny_config().encoder, num_classes=3, label_size=32, decoder_channels=16)
    facts = _segmenter_facts(
        config=config.to_dict(),
        task=segmentation_task("custom", 1, classes),
        metrics=None,
        test_data=EvalData("runs/hedgerows/shards", "Bocage hedgerows", "test", 40),
    )
    card = ModelCard(str(build_card(facts)))
    assert "datasets" not in card.data.to_dict()
    assert "fine-tuned on the Bocage hedgerows dataset with its own classes" in card.text
    assert "- `1` hedgerow" in card.text


def test_a_gapfill_card_shows_commands_that_restore_clouds_and_they_parse():
    from maestro.models.gapfill_config import GapFillConfig
    from predict.cli import build_parser as predict_parser
    from shards.cli import build_parser as shards_parser

    config = GapFillConfig(mae=tiny_config())
    facts = CardFacts(model_type="maestro-gapfill", config=config.to_dict(), repo_id="ign/maestro-gapfill")
    text = build_card(facts).text
    assert "| `s2` |" in text and "| `s1_des` |" in text  # the inputs table reads the MAE's encoder
    usage = text.split("## Usage", 1)[1].split("\n## ", 1)[0]
    assert "finetune --task lc" not in usage  # its encoder fine-tunes too, but that is not what it is for
    (predict,) = _commands(usage, "predict")
    (fill,) = _commands(usage, "shards")
    args = predict_parser().parse_args(predict)
    assert (args.model, args.reconstruct) == ("hf:ign/maestro-gapfill", "s2")
    args = shards_parser().parse_args(fill)
    assert (args.method, args.model) == ("model", "hf:ign/maestro-gapfill")
