"""Run and done records of ``predict``: what counts as finished, and what refuses to mix runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from predict_fixtures import FOOTPRINT, LABEL_PIXEL, write_zone

from maestro.errors import ConfigError
from maestro.models.synthetic import tiny_config
from predict.records import (
    Layout,
    create_json,
    input_stamps,
    is_done,
    open_run,
    read_json,
    run_identity,
    write_done,
)
from predict.units import Unit
from predict.zone import open_zone

KEYS = (*tiny_config().encoder.modalities, "s2_mask")
PIXELS = {key: FOOTPRINT / spec.image_size for key, spec in tiny_config().encoder.specs.items()}
OPTIONS = {"overlap": 0.25, "probabilities": None, "cloud_avoidance": True, "unit_px": 256, "weights": "ema"}


def _identity(model: str = "m1", **options) -> dict:
    return run_identity(model, f"folder {model}", {**OPTIONS, **options})


def _unit_files(layout: Layout, unit: Unit, text: bytes = b"map") -> list[Path]:
    path = layout.unit_map(unit)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text)
    return [path]


def test_run_identity_key_follows_model_and_pixel_options_not_the_source() -> None:
    assert _identity()["key"] == run_identity("m1", "elsewhere", OPTIONS)["key"]
    assert _identity()["key"] != _identity("m2")["key"]
    assert _identity()["key"] != _identity(overlap=0.5)["key"]


def test_a_new_folder_starts_a_run_and_a_second_launch_needs_resume_or_force(tmp_path) -> None:
    layout = Layout(tmp_path / "out")
    open_run(layout, _identity(), ["z"], rank=0, launch=None, resume=False, force=False)
    assert read_json(layout.run_json)["key"] == _identity()["key"]
    with pytest.raises(ConfigError, match="--resume.*--force"):
        open_run(layout, _identity(), ["z"], rank=0, launch=None, resume=False, force=False)
    open_run(layout, _identity(), ["z"], rank=0, launch=None, resume=True, force=False)


def test_ranks_of_one_launch_share_the_run_they_start_together(tmp_path) -> None:
    layout = Layout(tmp_path / "out")
    for rank in (0, 1):
        open_run(layout, _identity(), ["z"], rank=rank, launch="L1", resume=False, force=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        open_run(layout, _identity(), ["z"], rank=1, launch="L2", resume=False, force=False)


def test_resume_with_another_model_or_option_is_refused_naming_force(tmp_path) -> None:
    layout = Layout(tmp_path / "out")
    open_run(layout, _identity(), ["z"], rank=0, launch=None, resume=False, force=False)
    with pytest.raises(ConfigError, match="model folder m1.*folder m2.*--force"):
        open_run(layout, _identity("m2"), ["z"], rank=0, launch=None, resume=True, force=False)
    with pytest.raises(ConfigError, match="overlap 0.25 != 0.5"):
        open_run(layout, _identity(overlap=0.5), ["z"], rank=0, launch=None, resume=True, force=False)


def test_force_clears_this_runs_outputs_and_records_and_keeps_other_files(tmp_path) -> None:
    layout = Layout(tmp_path / "out")
    open_run(layout, _identity(), ["z"], rank=0, launch=None, resume=False, force=False)
    unit = Unit("z", 0, 0, 64, 64)
    write_done(layout, unit, _identity()["key"], {}, _unit_files(layout, unit))
    layout.zone_vrt("z").write_text("vrt")
    (layout.root / "notes.txt").write_text("mine")
    open_run(layout, _identity("m2"), ["z"], rank=0, launch=None, resume=False, force=True)
    assert read_json(layout.run_json)["model"]["id"] == "m2"
    assert not layout.unit_record(unit).exists() and not layout.unit_map(unit).exists()
    assert not layout.zone_vrt("z").exists() and (layout.root / "notes.txt").read_text() == "mine"


def test_other_ranks_wait_for_rank_0_under_force(tmp_path, monkeypatch) -> None:
    layout = Layout(tmp_path / "out")
    monkeypatch.setattr("predict.records.FORCE_WAIT_S", 0.5)
    with pytest.raises(ConfigError, match="rank 0 did not start"):
        open_run(layout, _identity(), ["z"], rank=1, launch="L", resume=False, force=True)
    open_run(layout, _identity(), ["z"], rank=0, launch="L", resume=False, force=True)
    open_run(layout, _identity(), ["z"], rank=1, launch="L", resume=False, force=True)


def test_create_json_is_exclusive(tmp_path) -> None:
    assert create_json(tmp_path / "a.json", {"x": 1})
    assert not create_json(tmp_path / "a.json", {"x": 2})
    assert read_json(tmp_path / "a.json") == {"x": 1} and os.listdir(tmp_path) == ["a.json"]


def test_a_done_record_holds_while_inputs_outputs_and_run_are_unchanged(tmp_path) -> None:
    root = write_zone(tmp_path / "zone", tiles=(2, 2))
    zone = open_zone(root, KEYS, PIXELS, LABEL_PIXEL)
    stamps = input_stamps(zone)
    assert {"aerial.tif", "s2_dates.json", "s2_mask.tif", "dem.tif"} <= set(stamps)
    assert stamps["dem.tif"] == [(root / "dem.tif").stat().st_size, (root / "dem.tif").stat().st_mtime_ns]
    layout, key = Layout(tmp_path / "out"), _identity()["key"]
    unit, other = Unit("zone", 0, 0, 64, 64), Unit("zone", 0, 64, 64, 64)
    files = _unit_files(layout, unit)
    assert not is_done(layout, unit, key, stamps)
    write_done(layout, unit, key, stamps, files)
    assert is_done(layout, unit, key, stamps)
    assert not is_done(layout, other, key, stamps)
    assert not is_done(layout, unit, _identity("m2")["key"], stamps)
    # a rewritten input (same size, new mtime) voids the record
    os.utime(root / "dem.tif", ns=(1, 1))
    assert not is_done(layout, unit, key, input_stamps(open_zone(root, KEYS, PIXELS, LABEL_PIXEL)))
    # a truncated or missing output voids it too
    files[0].write_bytes(b"m")
    assert not is_done(layout, unit, key, stamps)
    files[0].unlink()
    assert not is_done(layout, unit, key, stamps)
    layout.unit_record(unit).write_text("{broken")
    assert not is_done(layout, unit, key, stamps)


def test_done_records_hold_when_the_zone_folder_moves(tmp_path) -> None:
    root = write_zone(tmp_path / "zone", tiles=(2, 2))
    stamps = input_stamps(open_zone(root, KEYS, PIXELS, LABEL_PIXEL))
    layout, key, unit = Layout(tmp_path / "out"), _identity()["key"], Unit("zone", 0, 0, 64, 64)
    write_done(layout, unit, key, stamps, _unit_files(layout, unit))
    moved = root.rename(tmp_path / "moved")
    assert is_done(layout, unit, key, input_stamps(open_zone(moved, KEYS, PIXELS, LABEL_PIXEL)))
