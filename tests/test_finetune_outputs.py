"""What a fine-tuning run leaves behind: the report, the figures, the best checkpoint, georeferenced
prediction GeoTIFFs that agree with the scores, and a test that ``--eval-only`` reproduces."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from finetune import cli
from maestro.data.layout import PatchId, raster_relpath
from maestro.labels import palette
from maestro.modalities import MODALITIES
from maestro.tasks import get_task

PNG = b"\x89PNG\r\n\x1a\n"


def _best(out: Path) -> Path:
    """The run's best-by-val-mIoU checkpoint (``best.ckpt`` in the run or its checkpoints folder)."""
    found = [path for path in (out / "best.ckpt", out / "checkpoints" / "best.ckpt") if path.is_file()]
    assert len(found) == 1, f"expected one best.ckpt in {out}, found {found}"
    return found[0]


def _val_mious(out: Path) -> dict[int, float]:
    values = {}
    for path in sorted((out / "csv").glob("version_*/metrics.csv")):
        with path.open() as handle:
            values.update(
                {
                    int(row["step"]): float(row["val/miou"])
                    for row in csv.DictReader(handle)
                    if row.get("val/miou")
                }
            )
    return values


def test_the_test_writes_the_report_and_figures_of_the_best_checkpoint(finetuned_run, label_histogram):
    test_dir = finetuned_run.out / "test"
    metrics = json.loads((test_dir / "metrics.json").read_text())
    assert {"miou", "oa", "mean_f1", "per_class", "confusion", "classes_used", "num_pixels"} <= set(metrics)
    scores = finetuned_run.scores
    assert metrics["miou"] == pytest.approx(scores.miou) and metrics["oa"] == pytest.approx(
        scores.overall_accuracy
    )
    target = finetuned_run.config.task.target
    assert [row["name"] for row in metrics["per_class"]] == list(target.names[: target.num_classes])
    assert {"iou", "f1", "precision", "recall", "support"} <= set(metrics["per_class"][0])
    # Every pixel of the test split (here the toy val split) was scored exactly once.
    confusion = np.asarray(metrics["confusion"])
    np.testing.assert_array_equal(confusion.sum(axis=1), label_histogram("val", "lc", 1))
    assert metrics["num_pixels"] == confusion.sum()

    table = (test_dir / "per_class.md").read_text()
    assert "| class | IoU |" in table and f"**mIoU {100 * scores.miou:.2f}**" in table
    for figure in ("confusion.png", "samples.png"):
        assert (test_dir / figure).read_bytes()[:8] == PNG, figure

    # best.ckpt holds the EMA weights of the epoch with the highest validation mIoU.
    best = torch.load(_best(finetuned_run.out), map_location="cpu", weights_only=True)
    assert best["ema_state_dict"]
    mious = _val_mious(finetuned_run.out)
    assert len(mious) == finetuned_run.config.trainer.max_epochs and len(set(mious.values())) == len(mious)
    best_step = max(mious, key=mious.get)
    # Validation is logged at the index of the epoch's last batch; the checkpoint counts steps done.
    assert best["global_step"] == best_step + 1, (best["global_step"], mious)


def test_prediction_geotiffs_sit_on_the_label_grid_with_a_colour_table_and_match_the_scores(
    finetuned_run, toy_root
):
    target = finetuned_run.config.task.target
    folder = finetuned_run.out / "test" / "predictions"
    files = sorted(folder.glob("*.tif"))
    assert len(files) == 4, files  # one per patch of the test split
    colours = palette(target.nomenclature)
    predicted = np.zeros(target.num_classes, dtype=np.int64)
    for path in files:
        label_path = toy_root / raster_relpath(MODALITIES["lc"], PatchId.parse(path.stem))
        with rasterio.open(path) as prediction, rasterio.open(label_path) as label:
            assert (prediction.count, prediction.dtypes[0]) == (1, "uint8")
            assert (prediction.width, prediction.height) == (label.width, label.height) == (512, 512)
            assert prediction.crs == label.crs and prediction.crs is not None
            assert prediction.transform.almost_equals(label.transform, precision=1e-9)
            table = prediction.colormap(1)
            for value in range(target.num_classes):
                assert table[value][:3] == tuple(colours[value]), value
            classes = prediction.read(1)
            targets = target.lookup[label.read(1)]
        assert classes.max() < target.num_classes
        scored = targets != 255
        predicted += np.bincount(classes[scored], minlength=target.num_classes)
    # The rasters are the predictions that were scored: the confusion's columns count them.
    confusion = np.asarray(json.loads((finetuned_run.out / "test" / "metrics.json").read_text())["confusion"])
    np.testing.assert_array_equal(predicted, confusion.sum(axis=0))


def test_eval_only_on_the_finished_run_reproduces_its_metrics(finetuned_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finetuned_run.out, copy, symlinks=True)
    expected = json.loads((copy / "test" / "metrics.json").read_text())
    shutil.rmtree(copy / "test")
    checkpoints = sorted(p.name for p in (copy / "checkpoints").iterdir())
    config = copy / "config.yaml"
    assert (
        cli.main(
            [
                "--config",
                str(config),
                "--eval-only",
                "--output-dir",
                str(copy),
                "--accelerator",
                "cpu",
                "--devices",
                "1",
            ]
        )
        == 0
    )
    reproduced = json.loads((copy / "test" / "metrics.json").read_text())
    assert reproduced["confusion"] == expected["confusion"]
    for key in ("miou", "oa", "mean_f1"):
        assert reproduced[key] == expected[key], key
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == checkpoints  # nothing was trained
    assert len(list((copy / "test" / "predictions").glob("*.tif"))) == 4


def test_eval_only_without_a_trained_run_names_the_folder(finetune_raw, tmp_path, caplog):
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(finetune_raw(tmp_path / "never-trained")))
    assert cli.main(["--config", str(path), "--eval-only"]) == 2
    assert any("never-trained holds no trained run" in r.getMessage() for r in caplog.records)


def test_a_prediction_geotiff_is_written_without_gdal_warnings(tmp_path, caplog):
    from affine import Affine

    from finetune.outputs import write_prediction

    colours = palette(get_task("lc").target(1).nomenclature)
    raster = {"transform": list(Affine(0.2, 0, 700_000, 0, -0.2, 6_600_000)), "crs": "EPSG:2154"}
    classes = np.arange(64 * 64).reshape(64, 64) % len(colours)
    with caplog.at_level(logging.DEBUG, logger="rasterio"):
        write_prediction(tmp_path / "p.tif", classes, raster, colours)
    gdal = [r.getMessage() for r in caplog.records if "GDAL signalled" in r.getMessage()]
    assert not gdal  # e.g. "Cannot modify tag PhotometricInterpretation while writing", once per patch
    with rasterio.open(tmp_path / "p.tif") as src:
        assert (src.read(1) == classes).all() and src.colormap(1)[1][:3] == colours[1]
