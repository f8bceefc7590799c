"""The ``predict`` command: model sources, exit codes, and no output file after a failure."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from predict_fixtures import write_raster, write_tiny_model, write_zone

from finetune.config import FinetuneConfig, ModelConfig, TaskConfig
from maestro.config import to_dict
from maestro.errors import ConfigError
from maestro.models.synthetic import tiny_config
from predict.cli import EXIT_SIGNAL, StopFlag, main
from predict.model import load_model
from predict.options import check_output, zone_folders

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny")[0]


def _args(folder: Path, zone: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model",
        str(folder),
        "--zone",
        str(zone),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        "--batch-size",
        "4",
        *extra,
    ]


def test_cli_writes_the_map_and_refuses_to_overwrite_it(folder, tmp_path, caplog) -> None:
    zone = write_zone(tmp_path / "zone", tiles=(2, 2))
    out = tmp_path / "out" / "map.tif"
    assert main(_args(folder, zone, out, "--overlap", "0")) == 0
    with rasterio.open(out) as src:
        assert (src.width, src.height) == (64, 64)
    caplog.clear()
    assert main(_args(folder, zone, out)) == 2
    assert "already exist" in caplog.text and "--overwrite" in caplog.text
    assert main(_args(folder, zone, out, "--overwrite")) == 0


def test_cli_user_errors_exit_2_with_one_line(folder, tmp_path, caplog) -> None:
    zone = write_zone(tmp_path / "zone", tiles=(2, 2), shrink={"dem": 20})
    with caplog.at_level(logging.ERROR):
        assert main(_args(folder, zone, tmp_path / "map.tif")) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "dem.tif" in errors[0].getMessage() and "same area" in errors[0].getMessage()
    caplog.clear()
    (zone / "s2_dates.json").unlink()
    assert main(_args(folder, zone, tmp_path / "map.tif")) == 2
    assert "s2_dates.json" in caplog.text
    assert main(_args(tmp_path / "nowhere", zone, tmp_path / "map.tif")) == 2
    assert main(_args(folder, zone, tmp_path / "map.png")) == 2
    assert not list(tmp_path.glob("*map*"))


def test_a_failing_tile_exits_non_zero_and_leaves_no_file(folder, tmp_path, caplog) -> None:
    zone = write_zone(tmp_path / "zone", tiles=(4, 3))
    with rasterio.open(zone / "aerial.tif") as src:
        aerial, transform = src.read(), src.transform
    write_raster(zone / "aerial.tif", aerial, transform, tiled=True)
    with rasterio.open(zone / "aerial.tif") as src:  # break one compressed block in the middle of the zone
        offset = int(src.get_tag_item("BLOCK_OFFSET_4_3", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_4_3", "TIFF", bidx=1))
    with (zone / "aerial.tif").open("r+b") as handle:
        handle.seek(offset)
        handle.write(b"\xff" * size)
    out_dir = tmp_path / "out"
    with caplog.at_level(logging.ERROR):
        code = main(_args(folder, zone, out_dir / "map.tif", "--probabilities"))
    assert code != 0
    message = caplog.records[-1].getMessage()
    assert "tile r" in message and "aerial.tif" in message and "no map was written" in message
    assert list(out_dir.iterdir()) == []


def test_a_finetuning_run_loads_its_ema_or_trained_weights(tmp_path) -> None:
    encoder = tiny_config().encoder
    config = FinetuneConfig(
        task=TaskConfig("lpis", 1), model=ModelConfig(init="random", encoder=encoder, decoder_channels=32)
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    from maestro.models.finetuning import network_config
    from maestro.models.segmenter import MaestroSegmenter

    torch.manual_seed(0)
    state = MaestroSegmenter(network_config(config.model, config.task)).state_dict()
    ema = {key: value + 1.0 if value.is_floating_point() else value for key, value in state.items()}
    torch.save(
        {
            "hyper_parameters": {"config": to_dict(config)},
            "state_dict": {f"model.{k}": v for k, v in state.items()},
            "ema_state_dict": {f"module.{k}": v for k, v in ema.items()},
            "global_step": 7,
        },
        run / "best.ckpt",
    )
    key = "head.0.weight" if "head.0.weight" in state else next(k for k in state if k.startswith("head"))
    model = load_model(str(run))
    assert torch.equal(model.network.state_dict()[key], ema[key]) and "EMA" in model.source
    assert model.tile_size == 512 and model.footprint_m == pytest.approx(102.4)
    mixed = model.task.target.names.index("mixed crops")
    assert model.task.ignored == (mixed,) and len(model.task.class_names) == model.num_classes
    assert torch.equal(load_model(str(run), weights="model").network.state_dict()[key], state[key])
    (run / "best.ckpt").unlink()
    with pytest.raises(FileNotFoundError, match="best.ckpt"):
        load_model(str(run))
    with pytest.raises(FileNotFoundError, match="neither a run directory"):
        load_model(str(tmp_path))


def test_ignored_classes_are_never_predicted(tmp_path) -> None:
    from predict.blending import Strip
    from predict.engine import classify

    logits = np.zeros((4, 2, 3), np.float32)
    logits[2] = 5.0
    invalid = np.zeros((2, 3), bool)
    invalid[0, 0] = True
    classes, probabilities = classify(Strip(0, 0, logits, invalid), ignored=(2,), probabilities=True)
    assert classes[0, 0] == 255 and (classes.ravel()[1:] != 2).all()
    assert probabilities[:, 0, 0].isnan().all() and (probabilities[2, 1] == 0).all()  # tensors
    np.testing.assert_allclose(probabilities[:, 1].sum(axis=0), 1.0, rtol=1e-6)


def test_zones_are_a_folder_or_a_list_with_unique_names(tmp_path) -> None:
    for name in ("a", "b"):
        (tmp_path / "zones" / name).mkdir(parents=True)
    (tmp_path / "zones" / ".hidden").mkdir()
    assert list(zone_folders(tmp_path / "zones")) == ["a", "b"]
    (tmp_path / "other" / "a").mkdir(parents=True)
    listing = tmp_path / "lists" / "zones.txt"
    listing.parent.mkdir()
    listing.write_text("# departments\n../zones/b\n\n../zones/a  # the first\n")
    assert zone_folders(listing) == {"b": tmp_path / "zones" / "b", "a": tmp_path / "zones" / "a"}
    listing.write_text("../zones/a\n../other/a\n")
    with pytest.raises(ConfigError, match=r"two zones are named a .*zones/a and .*other/a"):
        zone_folders(listing)
    listing.write_text("../zones/c\n")
    with pytest.raises(FileNotFoundError, match="zones/c is not a directory"):
        zone_folders(listing)


def test_zones_mode_refuses_bad_flags_before_loading_anything(folder, tmp_path, caplog) -> None:
    (tmp_path / "zones" / "a").mkdir(parents=True)
    base = ["--model", str(folder), "--zones", str(tmp_path / "zones"), "--device", "cpu"]
    cases = {
        "--overwrite is for --zone": [*base, "--out", str(tmp_path / "out"), "--overwrite"],
        "--out is a folder": [*base, "--out", str(tmp_path / "maps.tif")],
        "--unit-px must be a positive multiple of 256": [
            *base,
            "--out",
            str(tmp_path / "o"),
            "--unit-px",
            "300",
        ],
        "no such file or directory": [
            "--model",
            str(folder),
            "--zones",
            str(tmp_path / "nope"),
            "--out",
            "o",
        ],
    }
    for message, args in cases.items():
        caplog.clear()
        assert main(args) == 2, message
        assert message in caplog.text
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_sigterm_and_ctrl_c_set_the_stop_flag_and_the_handlers_come_back() -> None:
    # whatever the handlers were: a shell's background job starts with SIGINT ignored
    before, before_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopFlag() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop() and EXIT_SIGNAL[stop.signal] == 143
    assert signal.getsignal(signal.SIGTERM) is before
    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop() and EXIT_SIGNAL[stop.signal] == 130
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C interrupts at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before_int


def test_an_existing_stac_item_beside_the_map_is_not_replaced_silently(tmp_path) -> None:
    (tmp_path / "map.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"map.json already exist"):
        check_output(tmp_path / "map.tif", overwrite=False, probabilities=False)
    assert check_output(tmp_path / "map.tif", overwrite=True, probabilities=False) == tmp_path / "map.tif"
