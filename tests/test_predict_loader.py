"""``predict``'s tile loader: batches within one unit, worker processes equal to in-process reads,
failures naming the tile, workers that die with the process that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from predict_fixtures import write_raster, write_tiny_model, write_zone
from processes import live_children, running

from maestro.data.collate import collate_model_samples
from maestro.errors import DataError
from predict.loader import JobBatches, TileError, TileLoader, _merge, model_inputs
from predict.model import PredictModel, load_model
from predict.tiling import stride_for
from predict.units import plan_units, unit_tiles
from predict.zone import Zone, open_zone

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> PredictModel:
    folder, _ = write_tiny_model(tmp_path_factory.mktemp("model") / "tiny")
    return load_model(str(folder))


def _open(model: PredictModel, root: Path) -> Zone:
    pixels = {key: model.input_pixel_m(key) for key in model.specs}
    return open_zone(root, model.rasters(), pixels, model.label_pixel_m)


def _work(model: PredictModel, zone: Zone, unit_px: int = 256) -> list:
    stride = stride_for(model.tile_size, 0.25)
    units = plan_units(zone.root.name, zone.grid, unit_px)
    return [(zone, unit_tiles(zone.grid, model.tile_size, stride, unit)) for unit in units]


def _loader(model: PredictModel, work: list, workers: int, batch_size: int = 4, parts: int = 1) -> TileLoader:
    sizes, preprocess = model_inputs(model, True, torch.device("cpu"))
    return TileLoader(work, sizes, preprocess, model.tile_size, batch_size, workers, parts=parts)


def test_batches_never_cross_a_job() -> None:
    batches = list(JobBatches([5, 3, 4], 4))
    assert batches == [
        [(0, 0), (0, 1), (0, 2), (0, 3)],
        [(0, 4)],
        [(1, 0), (1, 1), (1, 2)],
        [(2, 0), (2, 1), (2, 2), (2, 3)],
    ]
    assert len(JobBatches([5, 3, 4], 4)) == 4
    parts = list(JobBatches([5, 3, 4], 4, part_size=3))  # a batch's parts, never across batches
    assert parts == [
        [(0, 0), (0, 1), (0, 2)],
        [(0, 3)],
        [(0, 4)],
        [(1, 0), (1, 1), (1, 2)],
        [(2, 0), (2, 1), (2, 2)],
        [(2, 3)],
    ]
    assert len(JobBatches([5, 3, 4], 4, part_size=3)) == 6


def _flat(batch) -> dict[str, torch.Tensor]:
    out = {f"{part}.{key}": value for part, values in batch.batch.items() for key, value in values.items()}
    return {**out, "invalid": batch.invalid}


def test_worker_processes_give_the_batches_read_in_process(model, tmp_path) -> None:
    zone = _open(model, write_zone(tmp_path / "zone", tiles=(10, 2)))  # two units: 256 and 64 columns
    work = _work(model, zone)
    assert [len(tiles) for _, tiles in work] == [33, 9]  # 3 tile rows x 11 and 3 tile columns
    with _loader(model, work, workers=0) as loader:
        here = list(loader)
    with _loader(model, work, workers=2) as loader:
        there = list(loader)
    with _loader(model, work, workers=2, parts=3) as loader:  # read in parts, put together again
        assert len(loader) == len(here)
        joined = list(loader)
    expected = [(job, start, min(4, n - start)) for job, n in ((0, 33), (1, 9)) for start in range(0, n, 4)]
    assert [(b.job, b.start, len(b.tiles)) for b in here] == expected
    assert all(b.tiles == tuple(work[b.job][1][b.start : b.start + len(b.tiles)]) for b in here)
    for batches in (there, joined):
        assert [(b.job, b.start, b.tiles, b.padded) for b in batches] == [
            (b.job, b.start, b.tiles, b.padded) for b in here
        ]
        for a, b in zip(here, batches, strict=True):
            one, other = _flat(a), _flat(b)
            assert one.keys() == other.keys()
            for key in one:
                assert one[key].dtype == other[key].dtype and torch.equal(one[key], other[key]), key


def test_parts_put_together_equal_one_collate_of_their_tiles_with_series_of_other_lengths() -> None:
    rng = np.random.default_rng(0)

    def sample(dates: int) -> dict:
        return {
            "inputs": {"s2": rng.integers(0, 9, (dates, 2, 3, 3)).astype(np.uint16)},
            "times": {"s2": rng.normal(size=(dates, 3)).astype(np.float32)},
            "valid": {"s2": np.ones(dates, dtype=bool)},
        }

    samples = [sample(dates) for dates in (2, 3, 1, 2)]  # the longest series is in the first part
    parts = [
        {**collate_model_samples(group), "invalid": torch.zeros((len(group), 3, 3), dtype=torch.bool)}
        for group in (samples[:2], samples[2:])
    ]
    batch, invalid = _merge(parts, torch.device("cpu"))
    whole = collate_model_samples(samples)
    for field in ("inputs", "times", "valid"):
        assert batch[field]["s2"].dtype == whole[field]["s2"].dtype
        assert torch.equal(batch[field]["s2"], whole[field]["s2"]), field
    assert invalid.shape == (4, 3, 3)


def _corrupt(path: Path) -> None:
    """Garbage over the second half of the file: the header reads, the compressed blocks there do not."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    middle = len(data) // 2
    data[middle:] = rng.integers(0, 256, len(data) - middle, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_raster_names_the_tile_and_the_file(model, tmp_path, workers) -> None:
    root = write_zone(tmp_path / "zone", tiles=(4, 4))
    with rasterio.open(root / "aerial.tif") as src:
        values, transform = src.read(), src.transform
    write_raster(root / "aerial.tif", values, transform, tiled=True)  # compressed blocks
    _corrupt(root / "aerial.tif")
    zone = _open(model, root)
    with pytest.raises(TileError) as failure, _loader(model, _work(model, zone), workers) as loader:
        list(loader)
    message = str(failure.value)
    assert message.startswith("tile r") and "aerial.tif" in message and "\n" not in message
    assert isinstance(failure.value.cause, DataError) and failure.value.cause.path == str(root / "aerial.tif")


SCRIPT = """
import sys, time
from pathlib import Path
import torch
from predict.loader import TileLoader, model_inputs
from predict.model import load_model
from predict.tiling import stride_for
from predict.units import plan_units, unit_tiles
from predict.zone import open_zone

model = load_model(sys.argv[1])
zone = open_zone(Path(sys.argv[2]), model.rasters(), {k: model.input_pixel_m(k) for k in model.specs}, model.label_pixel_m)
unit = plan_units("z", zone.grid, 256)[0]
work = [(zone, unit_tiles(zone.grid, model.tile_size, stride_for(model.tile_size, 0.0), unit))] * 1000
sizes, preprocess = model_inputs(model, True, torch.device("cpu"))
loader = iter(TileLoader(work, sizes, preprocess, model.tile_size, 1, 2))
next(loader)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_loader_workers_die_with_a_killed_mapper(model, tmp_path) -> None:
    """A mapping process SIGKILLed (as the kernel's OOM killer does) takes its reader processes with it."""
    folder, _ = write_tiny_model(tmp_path / "model")
    zone = write_zone(tmp_path / "zone", tiles=(2, 2))
    script = tmp_path / "mapper.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    mapper = subprocess.Popen(
        [sys.executable, str(script), str(folder), str(zone)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert mapper.stdout.readline().strip() == "ready", mapper.stderr.read()[-2000:]
        workers = live_children(mapper.pid)
        assert len(workers) == 2
        mapper.send_signal(signal.SIGKILL)
        mapper.wait()
        deadline = time.monotonic() + 2  # torch alone notices only within 5 s, and not while blocked
        while (survivors := [pid for pid in workers if running(pid)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)  # leave nothing behind, then fail
        assert not survivors, f"reader processes {survivors} outlived their killed mapper"
    finally:
        if mapper.poll() is None:
            mapper.kill()
            mapper.wait()
        mapper.stdout.close()
        mapper.stderr.close()
