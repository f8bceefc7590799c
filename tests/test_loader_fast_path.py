"""The training stream's fast path gives what the straightforward path gives, bit for bit.

Shard members are views of a memory-mapped shard with headers read by ``shards.tarscan``; ``.npy``
headers are parsed once per distinct header; dates are selected before pixels are converted in
training; scalings read a raw raster once; unscaled rasters may travel in disk band order; batches
are carved out of one shared-memory buffer. Each is checked against the plain computation.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from maestro.data.collate import collate_model_samples
from maestro.data.preprocess import (
    build_preprocess_config,
    date_times,
    preprocess_sample,
    scale_batch,
    scale_inplace,
    select_bands,
)
from maestro.data.preprocess.dates import pad_series, reference_date, select_dates
from maestro.data.preprocess.transform import flagged_pixels, mask_companion
from maestro.dates import PAD_DATE, _year_and_doy_datetime, year_and_doy
from maestro.modalities import DEFAULT_INPUTS, MODALITIES, with_companions
from shards.format import decode_array, decode_sample
from shards.loader import make_loader
from shards.reading import iter_shard

MEMBERS = tuple(with_companions(DEFAULT_INPUTS))


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint16).reshape(2, 3, 4),
        np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
        np.array(3.5),
        np.zeros((0, 2), dtype=np.uint8),
    ],
)
@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_decode_array_equals_np_load(array: np.ndarray, version: tuple[int, int]) -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version)
    for data in (buffer.getvalue(), bytearray(buffer.getvalue())):
        decoded = decode_array(data)
        expected = np.load(io.BytesIO(buffer.getvalue()))
        assert decoded.dtype == expected.dtype and decoded.shape == expected.shape
        assert np.array_equal(decoded, expected) and decoded.flags.writeable


def test_year_and_doy_equals_datetime64() -> None:
    days = np.arange(np.datetime64("1899-01-01"), np.datetime64("2101-01-01"), 7)
    dates = np.array([int(str(d).replace("-", "")) for d in days] + [PAD_DATE, 20210230, 20211301])
    for shape in ((-1,), (3, -1)):
        batch = dates[: dates.size // 3 * 3].reshape(shape)
        for got, want in zip(year_and_doy(batch), _year_and_doy_datetime(batch), strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)


@pytest.mark.parametrize("key", [k for k, e in MODALITIES.items() if e.is_input and e.scaling is not None])
def test_scaling_a_read_only_raster_equals_scaling_a_float32_copy(key: str) -> None:
    entry = MODALITIES[key]
    raw = np.random.default_rng(0).uniform(0.001, 3000, (2, len(entry.input_bands), 6, 6)).astype(entry.dtype)
    view = raw.view()
    view.flags.writeable = False
    got = entry.scaling(view, entry.input_bands)
    want = entry.scaling(raw.astype(np.float32), entry.input_bands)
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes()


def _reference_sample(sample: dict, config, rng: np.random.Generator | None) -> dict:
    """Preprocessing the plain way: every band converted and scaled, then dates selected (on the
    values before scaling for the rasters that ``scale_on_device`` ships unscaled)."""
    reference = reference_date(sample, config)
    inputs, times, valid = {}, {}, {}
    for spec in config.inputs:
        raw = np.asarray(sample[spec.key])
        raw = raw if spec.entry.temporal else raw[None]
        dates = sample["dates"].get(spec.key, np.full(len(raw), reference, dtype=np.int32))
        assert (np.diff(dates) >= 0).all()  # the toy series are sorted: no reordering to mirror
        companion = mask_companion(spec.key)
        flagged = None
        if companion is not None and config.cloud_avoidance:
            flagged = flagged_pixels(sample[companion.key], config.cloud_threshold)
        candidates = select_bands(raw, spec.band_indices)
        values = scale_inplace(candidates.copy(), spec.entry, spec.bands)
        if not (config.scale_on_device and spec.entry.scales_on_device):
            candidates = values
        if spec.num_dates is not None and len(values) > spec.num_dates:
            keep = select_dates(
                candidates, spec.num_dates, rng=rng, flagged=flagged, eval_offset=config.eval_offset
            )
            values, dates = values[keep], dates[keep]
        values, dates, valid[spec.key] = pad_series(values, dates, spec.num_dates)
        inputs[spec.key], times[spec.key] = values, date_times(dates, reference)
    return {"inputs": inputs, "times": times, "valid": valid, "labels": {}, "meta": sample["meta"]}


@pytest.mark.parametrize("train", [True, False])
def test_batches_equal_the_reference_path_on_real_shards(toy_shards: Path, train: bool) -> None:
    samples = [
        decode_sample(s, modalities=MEMBERS) for s in iter_shard(str(next(toy_shards.glob("train-*.tar"))))
    ]
    raw_copies = [{k: np.copy(v) for k, v in s.items() if isinstance(v, np.ndarray)} for s in samples]
    config = build_preprocess_config(DEFAULT_INPUTS)
    unscaled = dataclasses.replace(config, scale_on_device=True)

    def run(preprocess):
        rngs = [np.random.default_rng(i) if train else None for i in range(len(samples))]
        return collate_model_samples([preprocess(s, r) for s, r in zip(samples, rngs, strict=True)])

    scaled = run(lambda s, r: preprocess_sample(s, config, train=train, rng=r))
    deferred = scale_batch(run(lambda s, r: preprocess_sample(s, unscaled, train=train, rng=r)), unscaled)
    assert deferred["inputs"]["aerial"].dtype == torch.float32
    for got, plain in ((scaled, config), (deferred, unscaled)):
        want = run(lambda s, r, plain=plain: _reference_sample(s, plain, r))
        for field in ("inputs", "times", "valid"):
            for key, tensor in want[field].items():
                assert got[field][key].dtype == tensor.dtype and got[field][key].shape == tensor.shape
                assert torch.equal(got[field][key], tensor), (field, key)
    for sample, copies in zip(samples, raw_copies, strict=True):  # the raw arrays were only read
        assert all(np.array_equal(sample[k], v) for k, v in copies.items())


def test_worker_batches_are_one_shared_memory_buffer(toy_shards: Path) -> None:
    config = dataclasses.replace(build_preprocess_config(DEFAULT_INPUTS), scale_on_device=True)

    def batches(workers: int) -> list[dict]:
        from maestro.data.preprocess import MaestroTransform

        transform = MaestroTransform(config, train=False)
        loader = make_loader(
            toy_shards, preprocess=transform, mode="eval", split="val", batch_size=2, num_workers=workers,
            modalities=MEMBERS,
        )  # fmt: skip
        return list(loader)

    in_workers, in_process = batches(1), batches(0)
    assert len(in_workers) == len(in_process) > 0
    for got, want in zip(in_workers, in_process, strict=True):
        tensors = [t for field in ("inputs", "times", "valid") for t in got[field].values()]
        assert all(t.is_shared() for t in tensors)
        assert len({t.untyped_storage().data_ptr() for t in tensors}) == 1
        for field in ("inputs", "times", "valid"):
            for key, tensor in want[field].items():
                assert got[field][key].dtype == tensor.dtype and torch.equal(got[field][key], tensor)
