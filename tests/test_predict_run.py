"""``predict --zones``: ranks, stops and resumes, changed inputs and models give the maps of one
uninterrupted process, bit for bit, and redo only what they must.

Zones are real GeoTIFFs written by :mod:`predict_fixtures`, mapped by the tiny model on CPU with
units of 256 px, so zone ``a`` (288 px wide) has a unit boundary that tiles straddle.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from predict_fixtures import write_tiny_model, write_zone

from predict.cli import main
from predict.records import Layout, read_json

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).parent.parent
FLAGS = ["--device", "cpu", "--no-progress", "--unit-px", "256", "--workers", "0"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    return write_tiny_model(root / "one", seed=0)[0], write_tiny_model(root / "two", seed=1)[0]


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``a``: 288 x 64 px (2 units), ``b``: 96 x 96 px (1 unit)."""
    root = tmp_path_factory.mktemp("zones")
    write_zone(root / "a", tiles=(9, 2), seed=0)
    write_zone(root / "b", tiles=(3, 3), seed=1)
    return root


@pytest.fixture(scope="module")
def reference(models, zones, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted process."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(["--model", str(models[0]), "--zones", str(zones), "--out", str(out), *FLAGS]) == 0
    return out


@pytest.fixture(scope="module")
def long_zones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One zone of 800 x 64 px (4 units): time to stop a run half-way."""
    root = tmp_path_factory.mktemp("long_zones")
    write_zone(root / "c", tiles=(25, 2), seed=2)
    return root


def _maps(out: Path) -> dict[str, np.ndarray]:
    maps = {}
    for vrt in sorted(out.glob("*.vrt")):
        with rasterio.open(vrt) as src:
            maps[vrt.stem] = src.read()
    return maps


def _assert_same_maps(out: Path, reference: Path, names: tuple[str, ...] = ("a", "b")) -> None:
    ours, theirs = _maps(out), _maps(reference)
    assert set(ours) == set(theirs) == {*names, "mosaic"}
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def _stamps(out: Path) -> dict[str, int]:
    """mtime_ns of every done record and unit file."""
    files = [*(out / ".predict" / "units").rglob("*.json"), *out.glob("*/r*.tif")]
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in files}


def _records(out: Path) -> list[Path]:
    try:
        return list((out / ".predict" / "units").rglob("*.json"))
    except OSError:  # a record being renamed into place
        return []


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LOCAL_", "RANK", "WORLD_"))}
    path = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}


def test_the_reference_run_writes_every_product(reference, zones) -> None:
    layout = Layout(reference)
    assert sorted(p.name for p in (reference / "a").iterdir()) == [
        "r000000_c000000.tif",
        "r000000_c000256.tif",
    ]
    with rasterio.open(reference / "a.vrt") as src, rasterio.open(zones / "a" / "aerial.tif") as zone:
        assert (src.width, src.height, src.transform) == (288, 64, zone.transform)
    item = json.loads((reference / "a.json").read_text())
    assert item["assets"]["map"]["href"] == "./a.vrt" and item["properties"]["proj:shape"] == [64, 288]
    report = read_json(layout.report)
    assert report["totals"]["units"] == 3 and {u["zone"] for u in report["units"]} == {"a", "b"}
    assert all(u["wait_fraction"] >= 0 and u["busy_fraction"] > 0 for u in report["units"])


def test_a_zone_map_is_the_same_with_or_without_a_unit_boundary(models, zones, reference, tmp_path) -> None:
    """The single-map mode with one unit as wide as the zone: today's map, equal to the units'."""
    out = tmp_path / "a.tif"
    args = ["--model", str(models[0]), "--zone", str(zones / "a"), "--out", str(out)]
    assert main([*args, "--device", "cpu", "--no-progress", "--workers", "0"]) == 0  # one 10240 px unit
    with rasterio.open(out) as single, rasterio.open(reference / "a.vrt") as units:
        np.testing.assert_array_equal(single.read(), units.read())
        assert single.profile["blockxsize"] == 512 and single.tags()["task"] == "lc"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.tif"]  # the work folder is gone


def test_two_ranks_under_torchrun_equal_one_process_bit_for_bit(models, zones, reference, tmp_path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += [
        "-m",
        "predict.cli",
        "--model",
        str(models[0]),
        "--zones",
        str(zones),
        "--out",
        str(out),
        *FLAGS,
    ]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[rank 0]" in done.stderr and "[rank 1]" in done.stderr
    _assert_same_maps(out, reference)
    report = read_json(Layout(out).report)
    assert report["totals"]["ranks"] == 2 and report["totals"]["units"] == 3
    # LPT by pixels: a's big unit to rank 0, b and a's narrow unit to rank 1: a's boundary is between ranks
    assert {r["rank"]: r["totals"]["units"] for r in report["ranks"]} == {0: 1, 1: 2}


def test_sigterm_then_resume_equals_an_uninterrupted_run_and_redoes_no_unit(models, long_zones, tmp_path):
    out, uninterrupted = tmp_path / "out", tmp_path / "uninterrupted"
    args = ["--model", str(models[0]), "--zones", str(long_zones)]
    process = subprocess.Popen(
        [sys.executable, "-m", "predict.cli", *args, "--out", str(out), *FLAGS],
        env=_env(),
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 240
    while not _records(out) and process.poll() is None:
        assert time.monotonic() < deadline, "no unit was finished"
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    assert "units done; run again with --resume" in stderr
    before = _stamps(out)
    assert 1 <= len([k for k in before if k.endswith(".json")]) < 4, before
    assert not list(out.glob("*/.*"))  # the unit in flight left nothing behind
    assert not (out / "mosaic.vrt").exists()
    assert main([*args, "--out", str(out), *FLAGS]) == 2  # neither --resume nor --force
    assert main([*args, "--out", str(out), *FLAGS, "--resume"]) == 0
    after = _stamps(out)
    assert {k: after[k] for k in before} == before, (before, after)  # finished units untouched
    assert len(after) == 8, after
    assert main([*args, "--out", str(uninterrupted), *FLAGS]) == 0
    _assert_same_maps(out, uninterrupted, ("c",))


def test_a_rewritten_raster_redoes_exactly_its_zones_units(models, zones, tmp_path) -> None:
    root = tmp_path / "zones"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for path in (zones / name).iterdir():
            (root / name / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    args = ["--model", str(models[0]), "--zones", str(root), "--out", str(out), *FLAGS]
    assert main(args) == 0
    before = _stamps(out)
    (root / "b" / "dem.tif").write_bytes((root / "b" / "dem.tif").read_bytes())  # same pixels, rewritten
    assert main([*args, "--resume"]) == 0
    after = _stamps(out)
    changed = sorted(k for k in before if after[k] != before[k])
    assert changed == [".predict/units/b/r000000_c000000.json", "b/r000000_c000000.tif"]
    assert read_json(Layout(out).report)["totals"]["skipped_units"] == 2


def test_resume_with_another_model_is_refused_and_force_starts_over(
    models, zones, reference, tmp_path, caplog
):
    out = tmp_path / "out"
    for path in reference.rglob("*"):  # a finished run of the first model
        if path.is_file():
            (out / path.relative_to(reference)).parent.mkdir(parents=True, exist_ok=True)
            (out / path.relative_to(reference)).write_bytes(path.read_bytes())
    args = ["--model", str(models[1]), "--zones", str(zones), "--out", str(out), *FLAGS]
    with caplog.at_level(logging.ERROR):
        assert main([*args, "--resume"]) == 2
    message = caplog.records[-1].getMessage()
    assert "another model" in message and "--force" in message
    before = _stamps(out)
    assert main([*args, "--force"]) == 0
    after = _stamps(out)
    assert all(after[k] != before[k] for k in before)  # every unit redone
    fresh = tmp_path / "fresh"
    assert main(["--model", str(models[1]), "--zones", str(zones), "--out", str(fresh), *FLAGS]) == 0
    _assert_same_maps(out, fresh)
    assert not all(
        np.array_equal(a, b) for a, b in zip(_maps(out).values(), _maps(reference).values(), strict=True)
    )
