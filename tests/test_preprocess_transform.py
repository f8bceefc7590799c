"""MAESTRO preprocessing on synthetic raw samples (no files needed)."""

from __future__ import annotations

import numpy as np
import pytest

from maestro.data.preprocess import (
    MaestroTransform,
    PreprocessConfig,
    build_preprocess_config,
    date_times,
    preprocess_sample,
    scale_inplace,
    select_bands,
)
from maestro.dates import fractional_year
from maestro.errors import ConfigError, DataError
from maestro.modalities import MODALITIES

PATCH = "D006-2020_FF-S1-14_3-7"


def _dates(rng: np.random.Generator, count: int, year: int = 2021) -> np.ndarray:
    days = np.sort(rng.choice(365, count, replace=False))
    stamps = np.datetime64(f"{year}-01-01") + days
    return np.array([int(str(d).replace("-", "")) for d in stamps], dtype=np.int32)


def raw_sample(seed: int = 0, *, t_s2: int = 30, t_s1: int = 8, size: int = 32, clouds: bool = False) -> dict:
    """A raw sample in the reader's contract, small rasters so tests stay fast."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((t_s2, 2, 10, 10), dtype=np.uint16)
    if clouds:
        mask[rng.random(t_s2) < 0.3, 1, 0, 0] = 40
    return {
        "aerial": rng.integers(0, 256, (4, size, size), dtype=np.uint8),
        "dem": rng.uniform(50, 400, (2, size, size)).astype(np.float32),
        "spot": rng.integers(0, 10000, (4, 8, 8), dtype=np.uint16),
        "hist": rng.integers(0, 256, (1, 16, 16), dtype=np.uint8),
        "s2": rng.integers(1, 10000, (t_s2, 10, 10, 10), dtype=np.uint16),
        "s2_mask": mask,
        "s1_asc": rng.uniform(0, 1, (t_s1, 2, 10, 10)).astype(np.float32),
        "s1_des": rng.uniform(0, 1, (t_s1, 2, 10, 10)).astype(np.float32),
        "lc": rng.integers(0, 19, (1, size, size), dtype=np.uint8),
        "lpis": rng.integers(0, 23, (3, size, size), dtype=np.uint8),
        "dates": {
            "aerial": np.array([20210615], dtype=np.int32),
            "spot": np.array([20210702], dtype=np.int32),
            "s2": _dates(rng, t_s2),
            "s1_asc": _dates(rng, t_s1),
            "s1_des": _dates(rng, t_s1),
        },
        "meta": {"patch_id": PATCH, "domain": "D006-2020", "rasters": {"s1_asc": {"path": "s1a.tif"}}},
    }


_sample = raw_sample


ALL_INPUTS = ("aerial", "dem", "spot", "hist", "s2", "s1_asc", "s1_des")

# ---------------------------------------------------------------------------- scaling, bands


def test_scaling_equals_design_formulas() -> None:
    sample = _sample()
    config = build_preprocess_config(ALL_INPUTS, keep_all_dates=("s2", "s1_asc", "s1_des"))
    out = preprocess_sample(sample, config, train=False)["inputs"]
    nirrgb = [3, 0, 1, 2]
    np.testing.assert_allclose(out["aerial"][0], sample["aerial"][nirrgb] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(out["spot"][0], sample["spot"][nirrgb] / 2000.0, rtol=1e-6)
    np.testing.assert_allclose(out["hist"][0], sample["hist"] / 255.0, rtol=1e-6)
    dsm, dtm = sample["dem"].astype(np.float64)
    np.testing.assert_allclose(out["dem"][0, 0], dsm / 1000.0, rtol=1e-6)
    np.testing.assert_allclose(out["dem"][0, 1], 30.0 * (dsm / 1000.0 - dtm / 1000.0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["s2"], sample["s2"] / 5000.0, rtol=1e-6)
    for key in ("s1_asc", "s1_des"):
        np.testing.assert_allclose(
            out[key], np.log(np.maximum(sample[key], 1e-10)) / 5.0, rtol=1e-5, atol=1e-6
        )
    assert all(v.dtype == np.float32 for v in out.values())


@pytest.mark.parametrize("key", ["aerial", "dem", "spot", "s1_asc", "s2"])
def test_inplace_scaling_matches_registry_callable_exactly(key: str) -> None:
    entry = MODALITIES[key]
    rng = np.random.default_rng(1)
    raw = rng.uniform(0, 500, (3, entry.num_bands, 4, 4)).astype(np.float32)
    raw[0, 0, 0, 0] = 0.0  # log of 0 goes through the epsilon
    bands = entry.input_bands
    values = select_bands(raw, entry.band_indices(bands))
    expected = entry.scaling(values.copy(), bands)
    np.testing.assert_array_equal(scale_inplace(values, entry, bands), expected)


def test_aerial_band_order_is_nir_r_g_b() -> None:
    sample = _sample()
    sample["aerial"] = np.stack([np.full((4, 4), v, dtype=np.uint8) for v in (10, 20, 30, 40)])  # R,G,B,NIR
    out = preprocess_sample(sample, PreprocessConfig(modalities=("aerial",)), train=False)
    assert out["inputs"]["aerial"].shape == (1, 4, 4, 4)
    np.testing.assert_allclose(
        out["inputs"]["aerial"][0, :, 0, 0], np.array([40, 10, 20, 30]) / 255.0, rtol=1e-6
    )


def test_band_override_selects_and_reorders() -> None:
    sample = _sample()
    config = build_preprocess_config(
        ["aerial", "s2"], {"aerial": {"bands": ["G", "R"]}, "s2": {"bands": ["B8", "B4"]}}
    )
    out = preprocess_sample(sample, config, train=False)["inputs"]
    np.testing.assert_allclose(out["aerial"][0], sample["aerial"][[1, 0]] / 255.0, rtol=1e-6)
    assert out["s2"].shape == (16, 2, 10, 10)


# ---------------------------------------------------------------------------- date selection


def test_s2_cloud_mask_drives_selection_through_the_registry() -> None:
    sample = _sample(t_s2=32)
    sample["s2_mask"][::2, 1, 3, 3] = 1  # every even date has a cloudy pixel (probability 1 > 0)
    config = PreprocessConfig(modalities=("s2",))
    for seed in range(10):
        out = preprocess_sample(sample, config, train=True, rng=seed)
        chosen = np.flatnonzero(np.isin(sample["dates"]["s2"], _dates_of(out, sample)))
        assert (chosen % 2 == 1).all()
    off = preprocess_sample(sample, PreprocessConfig(modalities=("s2",), cloud_avoidance=False), train=False)
    assert off["valid"]["s2"].all()


def _dates_of(out: dict, sample: dict) -> np.ndarray:
    """Recover the chosen s2 dates from their day-of-year rows (dates are distinct in a year)."""
    doy = out["times"]["s2"][:, 1]
    all_doy = date_times(sample["dates"]["s2"], None)[:, 1]
    return sample["dates"]["s2"][np.isin(all_doy, doy)]


def test_mask_threshold_and_missing_mask() -> None:
    sample = _sample(t_s2=32)
    sample["s2_mask"][::2, 0, 0, 0] = 30
    config = PreprocessConfig(modalities=("s2",), cloud_threshold=50)  # 30 is below: nothing flagged
    assert preprocess_sample(sample, config, train=False)["valid"]["s2"].all()
    del sample["s2_mask"]
    with pytest.raises(DataError, match="s2_mask"):
        preprocess_sample(sample, PreprocessConfig(modalities=("s2",)), train=False)


def test_eval_deterministic_train_varies_with_seed() -> None:
    sample = _sample(t_s2=60, t_s1=20, clouds=True)
    config = build_preprocess_config()
    first = preprocess_sample(sample, config, train=False)
    second = preprocess_sample(sample, config, train=False)
    for key in first["inputs"]:
        np.testing.assert_array_equal(first["inputs"][key], second["inputs"][key])
    runs = [preprocess_sample(sample, config, train=True, rng=seed)["times"]["s2"][:, 1] for seed in range(6)]
    assert any(not np.array_equal(runs[0], r) for r in runs[1:])
    again = preprocess_sample(sample, config, train=True, rng=np.random.default_rng(0))["times"]["s2"][:, 1]
    np.testing.assert_array_equal(runs[0], again)
    with pytest.raises(ValueError, match="rng"):
        preprocess_sample(sample, config, train=True)


def test_transform_object_is_reproducible_per_seed() -> None:
    sample = _sample(t_s2=60)
    config = PreprocessConfig(modalities=("s2",))
    a, b = MaestroTransform(config, train=True, seed=7), MaestroTransform(config, train=True, seed=7)
    for _ in range(3):
        np.testing.assert_array_equal(a(sample)["times"]["s2"], b(sample)["times"]["s2"])
    evaluation = MaestroTransform(config, train=False)
    np.testing.assert_array_equal(evaluation(sample)["inputs"]["s2"], evaluation(sample)["inputs"]["s2"])


def test_short_series_padded_with_valid_mask() -> None:
    sample = _sample(t_s2=10, t_s1=3)
    out = preprocess_sample(sample, build_preprocess_config(), train=False)
    assert out["inputs"]["s2"].shape == (16, 10, 10, 10)
    np.testing.assert_array_equal(out["valid"]["s2"], np.arange(16) < 10)
    np.testing.assert_allclose(out["inputs"]["s2"][:10], sample["s2"] / 5000.0, rtol=1e-6)
    assert not out["inputs"]["s2"][10:].any() and not out["times"]["s2"][10:].any()
    np.testing.assert_array_equal(out["valid"]["s1_asc"], [True, True, True, False])
    assert out["valid"]["aerial"].tolist() == [True] and out["valid"]["dem"].tolist() == [True]


def test_num_dates_none_keeps_every_date() -> None:
    sample = _sample(t_s2=23)
    out = preprocess_sample(
        sample, build_preprocess_config(["s2"], keep_all_dates=("s2",)), train=True, rng=0
    )
    assert out["inputs"]["s2"].shape[0] == 23 and out["valid"]["s2"].all()


def test_unsorted_dates_are_put_in_order() -> None:
    sample = _sample(t_s2=5)
    order = np.array([3, 0, 4, 1, 2])
    sample["s2"], sample["s2_mask"] = sample["s2"][order], sample["s2_mask"][order]
    sample["dates"]["s2"] = sample["dates"]["s2"][order]
    out = preprocess_sample(sample, PreprocessConfig(modalities=("s2",)), train=False)
    assert (np.diff(out["times"]["s2"][:5, 0]) > 0).all()
    np.testing.assert_allclose(out["inputs"]["s2"][0], sample["s2"][1] / 5000.0, rtol=1e-6)


# ---------------------------------------------------------------------------- times


def test_times_relative_to_aerial_date() -> None:
    sample = _sample(t_s2=5, t_s1=3)
    out = preprocess_sample(sample, build_preprocess_config(["aerial", "dem", "s2", "s1_asc"]), train=False)
    times = out["times"]
    ref = fractional_year(np.array([20210615]))[0]
    np.testing.assert_allclose(times["aerial"], [[0.0, 165.0, 0.0]], atol=1e-6)  # 15 June = day 165 (0-based)
    np.testing.assert_allclose(times["dem"], times["aerial"])  # no dates table: the reference date
    expected = fractional_year(sample["dates"]["s2"]) - ref
    np.testing.assert_allclose(times["s2"][:5, 0], expected, atol=1e-3)
    assert times["s2"].dtype == np.float32 and times["s2"].shape == (16, 3)
    assert (times["s2"][:, 2] == 0).all()


def test_times_reference_is_earliest_date_without_aerial() -> None:
    sample = _sample(t_s2=5, t_s1=3)
    sample["dates"]["s1_asc"] = np.array([20200110, 20200301, 20211231], dtype=np.int32)
    spot_ref = build_preprocess_config(["dem", "s2", "s1_asc"], reference_modality="spot")
    out = preprocess_sample(sample, spot_ref, train=False)
    np.testing.assert_allclose(out["times"]["dem"], [[0.0, 182.0, 0.0]])  # 2 July 2021
    del sample["dates"]["aerial"], sample["dates"]["spot"]
    out = preprocess_sample(sample, build_preprocess_config(["dem", "s2", "s1_asc"]), train=False)
    assert out["times"]["s1_asc"][0, 0] == 0.0
    np.testing.assert_allclose(out["times"]["s1_asc"][2, 0], 1 + 355 / 365.25, atol=1e-5)
    np.testing.assert_allclose(out["times"]["dem"], [[0.0, 9.0, 0.0]])


# ---------------------------------------------------------------------------- errors, passthrough


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_raise_naming_patch_and_modality(bad: float) -> None:
    sample = _sample()
    sample["s1_asc"][:, 1, 2, 2] = bad
    with pytest.raises(DataError, match=rf"{PATCH}.*s1a\.tif.*s1_asc.*non-finite"):
        preprocess_sample(sample, build_preprocess_config(), train=False)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["dates"].__setitem__("s2", s["dates"]["s2"][:-1]), "29 dates for a raster of 30"),
        (lambda s: s["dates"]["s1_asc"].__setitem__(0, 0), "zero"),
        (lambda s: s["dates"].pop("s1_des"), "no acquisition dates"),
        (lambda s: s.pop("dem"), "missing"),
        (lambda s: s.__setitem__("aerial", s["aerial"][:3]), "expected 4 bands"),
        (lambda s: s.__setitem__("s2_mask", s["s2_mask"][:-1]), "does not match"),
    ],
)
def test_bad_raw_samples_raise_data_error(edit, message: str) -> None:
    sample = _sample()
    edit(sample)
    with pytest.raises(DataError, match=message) as info:
        preprocess_sample(sample, build_preprocess_config(), train=False)
    assert info.value.patch_id == PATCH


def test_labels_keep_disk_dtype_and_meta_passthrough() -> None:
    sample = _sample()
    out = preprocess_sample(sample, PreprocessConfig(modalities=("aerial",)), train=False)
    assert set(out) == {"inputs", "times", "valid", "labels", "meta"}
    assert out["labels"]["lc"].dtype == np.uint8 and out["labels"]["lpis"].shape == (3, 32, 32)
    np.testing.assert_array_equal(out["labels"]["lc"], sample["lc"])
    assert out["meta"] is sample["meta"]
    assert set(out["inputs"]) == {"aerial"}


# ---------------------------------------------------------------------------- nan_policy: fill


def test_fill_zeroes_nan_borders_and_invalidates_mostly_nan_dates() -> None:
    sample = _sample(t_s1=4)
    sample["s1_asc"][:, :, 0, :] = np.nan  # a NaN border row on every date (10 % of each date)
    sample["s1_asc"][2] = np.nan  # one date entirely NaN
    config = PreprocessConfig(
        modalities=("s1_asc",), overrides={"s1_asc": {"num_dates": 4}}, nan_policy="fill"
    )
    out = preprocess_sample(sample, config, train=False)
    values, valid = out["inputs"]["s1_asc"], out["valid"]["s1_asc"]
    assert np.isfinite(values).all()
    assert valid.tolist() == [True, True, False, True]
    np.testing.assert_array_equal(values[:, :, 0, :], 0.0)
    np.testing.assert_array_equal(values[2], 0.0)
    reference = preprocess_sample(
        _sample(t_s1=4),
        PreprocessConfig(modalities=("s1_asc",), overrides={"s1_asc": {"num_dates": 4}}),
        train=False,
    )
    np.testing.assert_array_equal(values[[0, 1, 3], :, 1:], reference["inputs"]["s1_asc"][[0, 1, 3], :, 1:])
    with pytest.raises(DataError, match="non-finite"):  # reject stays the default
        preprocess_sample(sample, PreprocessConfig(modalities=("s1_asc",)), train=False)


def test_fill_threshold_and_date_selection_avoids_nan_dates() -> None:
    sample = _sample(t_s1=8)
    sample["s1_asc"][1:8:2, :, :6] = np.nan  # odd dates 60 % NaN; bins of 2 dates each
    fill = {"nan_policy": "fill", "overrides": {"s1_asc": {"num_dates": 4}}}
    strict = PreprocessConfig(modalities=("s1_asc",), nan_invalid_fraction=0.0, **fill)
    for seed in range(5):  # a random pick per bin would hit a NaN date in 15 of 16 draws
        out = preprocess_sample(sample, strict, train=True, rng=seed)
        assert out["valid"]["s1_asc"].all()  # the clean date of every bin was chosen
        assert np.isfinite(out["inputs"]["s1_asc"]).all()
    sample["s1_asc"][:, :, :6] = np.nan  # now every date is 60 % NaN
    assert not preprocess_sample(sample, strict, train=False)["valid"]["s1_asc"].any()
    lenient = PreprocessConfig(modalities=("s1_asc",), nan_invalid_fraction=0.7, **fill)
    assert preprocess_sample(sample, lenient, train=False)["valid"]["s1_asc"].all()


def test_fill_marks_a_mono_temporal_input_invalid() -> None:
    sample = _sample()
    sample["dem"][:] = np.nan
    out = preprocess_sample(sample, PreprocessConfig(modalities=("dem",), nan_policy="fill"), train=False)
    assert out["valid"]["dem"].tolist() == [False]
    np.testing.assert_array_equal(out["inputs"]["dem"], 0.0)


def test_keep_flags_gives_the_kept_dates_flags_padded_false() -> None:
    """``keep_flags``: the series' per-pixel mask flags of the kept dates, in date order, False on
    padding; a key without a mask or not an input is refused."""
    raw = raw_sample(t_s2=5)
    raw["s2_mask"][2, 1, 3, 4] = 80  # one cloudy pixel on the third date
    config = PreprocessConfig(modalities=("s2",), overrides={"s2": {"num_dates": 8}}, keep_flags=("s2",))
    out = preprocess_sample(raw, config, train=False)
    flags = out["flags"]["s2"]
    order = np.argsort(raw["dates"]["s2"], kind="stable")
    assert flags.shape == (8, 10, 10) and flags.dtype == bool and not flags[5:].any()
    expected = np.zeros((5, 10, 10), dtype=bool)
    expected[2, 3, 4] = True
    assert np.array_equal(flags[:5], expected[order])
    assert "flags" not in preprocess_sample(raw, PreprocessConfig(modalities=("s2",)), train=False)
    for keys in (("aerial",), ("s1_asc",)):
        with pytest.raises(ConfigError, match="keep_flags: .* are not input time series with a cloud mask"):
            PreprocessConfig(modalities=("aerial", "s1_asc", "s2"), keep_flags=keys)


def test_keep_flags_without_cloud_avoidance_flags_pixels_but_does_not_steer_date_selection() -> None:
    raw = raw_sample(t_s2=12, clouds=True)
    plain = PreprocessConfig(modalities=("s2",), overrides={"s2": {"num_dates": 4}}, cloud_avoidance=False)
    kept = PreprocessConfig(
        modalities=("s2",), overrides={"s2": {"num_dates": 4}}, cloud_avoidance=False, keep_flags=("s2",)
    )
    a, b = preprocess_sample(raw, plain, train=False), preprocess_sample(raw, kept, train=False)
    assert np.array_equal(a["inputs"]["s2"], b["inputs"]["s2"])  # the same dates
    order = np.argsort(raw["dates"]["s2"], kind="stable")
    series, masks = raw["s2"][order].astype(np.float32) / 5000.0, raw["s2_mask"][order]
    for t, values in enumerate(b["inputs"]["s2"]):
        source = next(i for i in range(12) if np.allclose(series[i], values))
        assert np.array_equal(b["flags"]["s2"][t], (masks[source] > 0).any(axis=0))
