"""maestro.api_gapfill: one raw sample in, its whole S2 series out with the flagged pixels restored,
in the sample's own units, dtype, band and date order; the preprocessing that reads whole series."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from gapfill_fixtures import ENCODER, save_tiny_gapfill, tiny_gapfill

from maestro.api import load_gapfill
from maestro.api_gapfill import LoadedGapFill, gapfill_preprocessing
from maestro.data.collate import collate_model_samples
from maestro.data.preprocess import MaestroTransform, flagged_pixels, preprocess_sample
from maestro.errors import ConfigError
from maestro.models.config import MAEConfig
from maestro.models.gapfill import MaestroGapFill, restore_series
from maestro.models.gapfill_config import GapFillConfig
from maestro.sample import DATES
from shards.format import decode_sample
from shards.manifest import read_manifest
from shards.reading import iter_shard

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedGapFill:
    return load_gapfill(save_tiny_gapfill(tmp_path_factory.mktemp("gapfill_api") / "model"))


@pytest.fixture(scope="module")
def samples(toy_shards: Path) -> list[dict]:
    record = read_manifest(toy_shards).split("val").shards[0]
    return [decode_sample(s) for s in iter_shard(str(toy_shards / record.name))]


def test_the_whole_series_preprocessing_keeps_every_target_date_and_its_flags():
    config = tiny_gapfill().config
    window, whole = gapfill_preprocessing(config), gapfill_preprocessing(config, whole_series=True)
    assert window.spec("s2").num_dates == 4 and whole.spec("s2").num_dates is None
    assert whole.keep_all_dates == ("s2",) and window.keep_all_dates == ()
    for preprocess in (window, whole):
        assert preprocess.keep_flags == ("s2",) and preprocess.cloud_avoidance is False
        assert preprocess.spec("s1_asc").num_dates == 2


def test_a_raw_sample_comes_back_restored_only_where_flagged(loaded: LoadedGapFill, samples: list[dict]):
    changed = replaced_total = 0
    for sample in samples:
        raw = sample["s2"].copy()
        restored = loaded.restore_sample(sample)
        assert restored.series.dtype == raw.dtype and restored.series.shape == raw.shape
        assert np.array_equal(restored.replaced, flagged_pixels(sample["s2_mask"], 0.0))
        kept = ~np.broadcast_to(restored.replaced[:, None], raw.shape)
        assert np.array_equal(restored.series[kept], raw[kept])  # bit for bit
        assert np.array_equal(sample["s2"], raw)  # the input is left alone
        changed += int((restored.series != raw).any(axis=1).sum())
        replaced_total += int(restored.replaced.sum())
    assert replaced_total > 0 and changed > 0.5 * replaced_total


def test_restoration_is_the_network_s_in_the_raw_units_and_date_order(
    loaded: LoadedGapFill, samples: list[dict]
):
    sample = samples[0]
    assert (np.diff(sample[DATES]["s2"]) > 0).all()  # stored in chronological order, as preprocessed
    batch = collate_model_samples([preprocess_sample(sample, loaded.series_preprocess, train=False)])
    assert batch["inputs"]["s2"].shape[1] == len(sample["s2"]) > 4  # every date, over several runs
    values, replaced = restore_series(
        loaded.model, batch["inputs"], batch["times"], batch["valid"], batch["flags"]["s2"]
    )
    expected = np.clip(np.rint(values[0].double().numpy() * 5000), 0, 65535).astype(np.uint16)  # DN
    restored = loaded.restore_sample(sample)
    pixels = np.broadcast_to(replaced[0].numpy()[:, None], expected.shape)
    assert np.array_equal(restored.series[pixels], expected[pixels])
    order = np.random.default_rng(0).permutation(len(sample["s2"]))
    shuffled = {
        **sample,
        "s2": sample["s2"][order],
        "s2_mask": sample["s2_mask"][order],
        DATES: {**sample[DATES], "s2": sample[DATES]["s2"][order]},
    }
    again = loaded.restore_sample(shuffled)
    assert np.array_equal(again.series, restored.series[order])
    assert np.array_equal(again.replaced, restored.replaced[order])


def test_a_model_of_some_bands_cannot_give_back_the_whole_series():
    s2 = dataclasses.replace(ENCODER.overrides["s2"], bands=("B2", "B3", "B4", "B8"))
    encoder = dataclasses.replace(ENCODER, overrides={**ENCODER.overrides, "s2": s2})
    config = GapFillConfig(MAEConfig(encoder, decoder_width=16, decoder_heads=2, decoder_depth=1))
    preprocess = MaestroTransform(gapfill_preprocessing(config), train=False)
    partial = LoadedGapFill(MaestroGapFill(config).eval(), preprocess, "four bands")
    with pytest.raises(ConfigError, match="reads bands"):
        partial.restore_sample({})


def test_a_batch_of_series_of_different_lengths_restores_as_each_alone(
    loaded: LoadedGapFill, samples: list[dict]
):
    lengths = [len(sample["s2"]) for sample in samples]
    assert len(set(lengths)) > 1  # the batch pads the shorter series
    together = loaded.restore_samples(samples)
    assert len(together) == len(samples)
    for sample, batched in zip(samples, together, strict=True):
        alone = loaded.restore_sample(sample)
        assert batched.series.shape == alone.series.shape == sample["s2"].shape
        assert np.array_equal(batched.replaced, alone.replaced)
        difference = np.abs(batched.series.astype(np.int64) - alone.series.astype(np.int64))
        assert difference.max() <= 1  # batched products may round the last DN the other way
    assert loaded.restore_samples([]) == []
