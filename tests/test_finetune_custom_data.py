"""finetune --data-config (finetune.custom_data): your own dataset and classes, end to end.

The toy bocage (4 classes: other, hedgerow, isolated tree, forest) -> finetune --data-config
(shards built under the run) -> test report in its classes -> maestro publish -> predict on
its zone, with the nomenclature's names and colours in the map."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from finetune.cli import main as finetune_main
from maestro.cli import main as maestro_main
from maestro.data.custom.toy import write_custom_toy
from predict.cli import main as predict_main

ENCODER = (
    "model.encoder={modalities: [aerial, dem], overrides: {aerial: {patch_size: 64}, dem: {patch_size: 64}}, "
    "size: tiny, width: 32, depth: 2, inter_depth: 1}"
)
SMALL = [
    "model.init=random",
    ENCODER,
    "model.decoder_channels=16",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.shuffle_buffer=4",
    "eval.num_figures=1",
]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bocage") / "bocage"
    write_custom_toy(root, num_patches=5, seed=0)
    return root


@pytest.fixture(scope="module")
def run(toy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "hedgerows"
    args = ["--data-config", str(toy / "data.yaml"), "--output-dir", str(out), *SMALL]
    assert finetune_main(args) == 0
    return out


def test_a_run_on_your_own_dataset_builds_its_shards_and_reports_in_its_classes(run: Path):
    manifest = json.loads((run / "shards" / "manifest.json").read_text())
    assert sorted(manifest["splits"]) == ["test", "train", "val"]
    assert {entry["dataset_key"] for entry in manifest["splits"].values()} == {"custom"}
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["task"]["name"] == "custom" and config["task"]["label_size"] == 512
    assert [c["name"] for c in config["task"]["nomenclature"]["classes"]] == [
        "other",
        "hedgerow",
        "isolated tree",
        "forest",
    ]
    assert config["task"]["nomenclature"]["grouping"] is None  # raw codes are the reader's business
    metrics = json.loads((run / "test" / "metrics.json").read_text())
    assert [row["name"] for row in metrics["per_class"]] == ["other", "hedgerow", "isolated tree", "forest"]
    assert "hedgerow" in (run / "test" / "per_class.md").read_text()


def test_a_published_run_maps_the_zone_in_the_nomenclature_s_names_and_colours(
    run: Path, toy: Path, tmp_path: Path
):
    folder = tmp_path / "published"
    assert (
        maestro_main(["publish", str(run), "--repo", "me/hedgerows", "--dry-run", "--out", str(folder)]) == 0
    )
    task = json.loads((folder / "config.json").read_text())["task"]
    assert task["name"] == "custom" and task["class_names"][1] == "hedgerow"
    assert task["nomenclature"]["classes"][1]["colour"] == "#1b7837"
    out = tmp_path / "hedgerows.tif"
    assert predict_main(["--model", str(folder), "--zone", str(toy / "zone"), "--out", str(out)]) == 0
    with rasterio.open(out) as src, rasterio.open(toy / "zone" / "label.tif") as reference:
        assert (src.width, src.height) == (reference.width, reference.height)
        assert src.colormap(1)[1][:3] == (0x1B, 0x78, 0x37) and src.colormap(1)[3][:3] == (0x00, 0x44, 0x1B)
        assert json.loads(src.tags()["class_names"]) == ["other", "hedgerow", "isolated tree", "forest"]
        assert set(np.unique(src.read(1))) <= {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "custom"], "--dataset custom reads your own dataset: give its --data-config YAML"),
        (
            ["--data-config", "{toy}/data.yaml", "--task", "lc"],
            "trains the custom task on your classes, not --task lc",
        ),
        (["--data-config", "{toy}/data.yaml", "--dataset", "flair2"], "not flair2"),
        (["--data-config", "{toy}/missing.yaml"], "data config .*missing.yaml does not exist"),
        (["--skip-bad"], "--skip-bad applies to a dataset read with --data-config"),
        (["--task", "custom"], "takes its classes from the dataset's nomenclature YAML"),
    ],
)
def test_user_mistakes_end_with_one_line_and_status_2(
    toy: Path, args: list[str], message: str, caplog: pytest.LogCaptureFixture
):
    args = [arg.replace("{toy}", str(toy)) for arg in args]
    assert finetune_main(args) == 2
    assert any(re.search(message, record.getMessage()) for record in caplog.records), caplog.text


def test_skip_bad_trains_on_the_good_patches_and_says_how_many_were_left_out(
    toy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    root = Path(shutil.copytree(toy, tmp_path / "bocage"))
    table = (root / "patches.csv").read_text().splitlines()
    bad = next(line.split(",")[0] for line in table[1:] if ",train," in line)
    label = root / "labels" / f"{bad}.tif"
    with rasterio.open(label) as src:
        profile, raw = src.profile, src.read()
    raw[0, 0, 0] = 77  # not in the nomenclature's grouping
    with rasterio.open(label, "w", **profile) as dst:
        dst.write(raw)
    args = ["--data-config", str(root / "data.yaml"), "--output-dir", str(tmp_path / "run"), *SMALL]
    assert finetune_main(args) == 2
    assert f"patch {bad}" in caplog.text and "label values [77]" in caplog.text
    assert finetune_main([*args, "--skip-bad"]) == 0
    skipped = json.loads((tmp_path / "run" / "shards" / "manifest.json").read_text())["splits"]["train"][
        "skipped"
    ]
    assert [entry["patch_id"] for entry in skipped] == [bad]
    assert "skipped 1 bad patches" in caplog.text
