"""What the baseline does to the shared model samples: standardisation and the S2 cloudy-date filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maestro.data.preprocess import build_preprocess_config, preprocess_sample
from maestro.errors import ConfigError
from maestro.modalities import MODALITIES
from maestro.models.baseline.inputs import Standardise


def raw_single_date(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "aerial": rng.integers(0, 256, (4, 8, 8), dtype=np.uint8),
        "dem": rng.uniform(50, 400, (2, 8, 8)).astype(np.float32),
        "spot": rng.integers(0, 10000, (4, 8, 8), dtype=np.uint16),
        "hist": rng.integers(0, 256, (1, 8, 8), dtype=np.uint8),
        "dates": {"aerial": np.array([20210615], np.int32), "spot": np.array([20210702], np.int32)},
        "meta": {"patch_id": "D006-2020_FF-S1-14_3-7"},
    }


@pytest.mark.parametrize("key", ["aerial", "dem", "spot", "hist"])
def test_maestro_scaled_inputs_become_raw_values_standardised_by_the_registry(key: str) -> None:
    sample = raw_single_date()
    config = build_preprocess_config([key])
    scaled = torch.from_numpy(preprocess_sample(sample, config, train=False)["inputs"][key])  # (1, C, H, W)
    bands = config.spec(key).bands
    entry = MODALITIES[key]
    order = entry.band_indices(bands)  # network order, e.g. NIR, R, G, B
    raw = sample[key][order].astype(np.float64)
    expected = (raw - np.asarray(entry.mean)[order, None, None]) / np.asarray(entry.std)[order, None, None]
    np.testing.assert_allclose(Standardise(key, bands)(scaled).numpy()[0], expected, rtol=1e-4, atol=1e-4)


def test_standardise_refuses_a_modality_without_statistics() -> None:
    with pytest.raises(ConfigError, match="statistics"):
        Standardise("s2", MODALITIES["s2"].input_bands)


def cloudy_series(dates: int = 6) -> dict:
    rng = np.random.default_rng(0)
    mask = np.zeros((dates, 2, 10, 10), dtype=np.uint16)
    mask[1, 1, :2, :2] = 80  # 4 % of the pixels: kept
    mask[2, 1, :3, :3] = 80  # 9 %: dropped
    mask[4, 0] = 100  # snow everywhere: dropped
    days = np.datetime64("2021-01-01") + np.arange(dates) * 30
    return {
        "s2": rng.integers(1, 10000, (dates, 10, 10, 10), dtype=np.uint16),
        "s2_mask": mask,
        "dates": {"s2": np.array([int(str(d).replace("-", "")) for d in days], np.int32)},
        "meta": {"patch_id": "D006-2020_FF-S1-14_3-7"},
    }


def test_s2_dates_flagged_on_more_than_the_fraction_of_pixels_become_invalid() -> None:
    sample = cloudy_series()
    overrides = {"s2": {"num_dates": 8}}
    kept = preprocess_sample(sample, build_preprocess_config(["s2"], overrides), train=False)
    assert kept["valid"]["s2"].tolist() == [True] * 6 + [False] * 2
    config = build_preprocess_config(["s2"], overrides, cloudy_date_fraction=0.05)
    out = preprocess_sample(sample, config, train=False)
    assert out["valid"]["s2"].tolist() == [True, True, False, True, False, True, False, False]
    assert (out["inputs"]["s2"][[2, 4]] == 0).all() and (out["inputs"]["s2"][[0, 1, 3, 5]] != 0).any()
    np.testing.assert_array_equal(out["times"]["s2"], kept["times"]["s2"])  # dates stay where they were


def test_cloudy_date_fraction_is_validated() -> None:
    with pytest.raises(ConfigError, match="cloudy_date_fraction"):
        build_preprocess_config(["s2"], cloudy_date_fraction=1.5)
