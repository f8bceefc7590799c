"""gapfill (the stage, its CLI and outputs) and predict --reconstruct, end to end on the toy.

A tiny MAE pretrained on toy shards (8 Sentinel-2 and 6 Sentinel-1 dates per sample) is taught for
30 steps to restore clear pixels held out of its S2 series. On the test split it must beat both
temporal baselines in RMSE, the interpolation it starts from by at least 1 % (it does by about
3 %, BENCHMARKS.md "Cloud removal"): a held-out cloud rectangle leaves the date's other pixels
visible, and how far they are from their own interpolation says how far off the interpolation is
on that date. Then a toy zone is restored: only flagged pixels change, bit for bit, on the
input's grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from gapfill.cli import main as gapfill_main
from maestro.config import load_config
from maestro.data.toy import write_toy_dataset
from maestro.data.toy.zone import write_toy_zone
from predict.cli import main as predict_main
from pretrain.cli import run as pretrain
from pretrain.config import PretrainConfig
from shards.cli import main as shards_main

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).resolve().parents[1]
DATES = {"s2": 8, "s1_asc": 6, "s1_des": 6}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(toy shards of train / val / test, a pretraining run on them)."""
    work = tmp_path_factory.mktemp("gapfill")
    write_toy_dataset(work / "toy", num_patches=40, seed=0)
    args = [
        "build",
        "--root",
        str(work / "toy"),
        "--split",
        "train",
        "val",
        "test",
        "--out",
        str(work / "shards"),
    ]
    assert shards_main([*args, "--no-progress"]) == 0
    overrides = [
        f"data.train={work / 'shards'}",
        "data.val=null",
        "data.num_workers=0",
        f"trainer.output_dir={work / 'pretrain'}",
        "trainer.max_epochs=4",
        "trainer.accelerator=cpu",
        "trainer.reconstruction_every_n_steps=0",
        "model.encoder.width=64",
        "model.encoder.depth=2",
        *(f"model.encoder.overrides.{key}.num_dates={count}" for key, count in DATES.items()),
    ]
    pretrain(load_config(PretrainConfig, ROOT / "configs" / "pretrain" / "toy.yaml", overrides))
    return work / "shards", work / "pretrain"


@pytest.fixture(scope="module")
def run(pretrained: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    shards, init = pretrained
    out = tmp_path_factory.mktemp("gapfill_run") / "run"
    args = [
        "--config",
        str(ROOT / "configs" / "gapfill" / "toy.yaml"),
        "--init",
        str(init),
        "--output-dir",
        str(out),
        *(f"data.{split}={shards}" for split in ("train", "val", "test")),
        "data.num_workers=0",
        "trainer.max_epochs=10",
        "trainer.accelerator=cpu",
        "optim.base_lr=2e-3",
        "eval.num_figures=1",
    ]
    assert gapfill_main(args) == 0
    return out


def test_the_model_beats_both_temporal_baselines_on_held_out_pixels(run: Path):
    scores = json.loads((run / "test" / "metrics.json").read_text())
    assert list(scores) == ["model", "linear interpolation", "nearest clear date"]
    model = scores["model"]
    assert model["pixels"] > 300 and model["images"] > 0
    assert (
        model["pixels"] == scores["linear interpolation"]["pixels"] == scores["nearest clear date"]["pixels"]
    )
    assert model["rmse"] < 0.99 * scores["linear interpolation"]["rmse"], scores  # its starting point
    assert model["rmse"] < scores["nearest clear date"]["rmse"], scores
    assert set(model["bands"]) == {"B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"}
    assert "| linear interpolation |" in (run / "test" / "scores.md").read_text()
    assert (run / "test" / "restored_0.png").stat().st_size > 5000
    assert (run / "test" / "ndvi_0.png").stat().st_size > 5000


def test_a_zone_is_restored_on_its_grid_and_only_where_it_was_flagged(run: Path, tmp_path: Path):
    zone = tmp_path / "zone"
    write_toy_zone(zone, size_m=200.0, seed=3)
    out = tmp_path / "maps" / "s2_filled.tif"
    args = ["--model", str(run), "--reconstruct", "s2", "--zone", str(zone), "--out", str(out)]
    assert predict_main([*args, "--device", "cpu", "--no-progress"]) == 0
    with rasterio.open(out) as filled, rasterio.open(zone / "s2.tif") as source:
        with rasterio.open(zone / "s2_mask.tif") as masks:
            flags = masks.read().reshape(-1, 2, masks.height, masks.width).max(axis=1) > 0
        assert (filled.transform, filled.crs, filled.dtypes[0]) == (
            source.transform,
            source.crs,
            source.dtypes[0],
        )
        series = filled.read(list(range(1, source.count + 1)))
        restored = filled.read(list(range(source.count + 1, filled.count + 1))).astype(bool)
        original = source.read()
    assert np.array_equal(restored, flags) and restored.any()
    changed = np.repeat(restored, 10, axis=0)
    assert np.array_equal(series[~changed], original[~changed])  # clear pixels bit for bit
    assert (series[changed] != original[changed]).mean() > 0.5
    assert json.loads(out.with_name("s2_filled_dates.json").read_text()) == json.loads(
        (zone / "s2_dates.json").read_text()
    )


def test_reconstruct_refuses_a_segmenter_and_many_zones(
    run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    assert (
        predict_main(
            [
                "--model",
                str(run),
                "--reconstruct",
                "s2",
                "--zones",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "--reconstruct writes one zone's series" in caplog.text


def test_the_api_restores_shards_in_reflectance(run: Path, pretrained: tuple[Path, Path]):
    from maestro.api import load_gapfill

    model = load_gapfill(run)
    batch = next(iter(model.loader(pretrained[0], split="test", batch_size=4)))
    restored = model.restore(batch)
    series = batch["inputs"]["s2"] * 0.5  # network units (DN / 5000) -> reflectance
    flagged = batch["flags"]["s2"] & batch["valid"]["s2"][..., None, None]
    assert torch.equal(restored.replaced, flagged)
    kept = ~flagged.unsqueeze(2).expand_as(series)
    assert torch.equal(restored.series[kept], series[kept])
