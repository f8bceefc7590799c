"""Preprocessing configuration: registry defaults, overrides and validation at construction."""

from __future__ import annotations

import pytest

from maestro.data.preprocess import PreprocessConfig, build_preprocess_config


def test_config_defaults_come_from_registry() -> None:
    config = build_preprocess_config()
    assert config.modalities == ("aerial", "dem", "s2", "s1_asc", "s1_des")
    assert config.spec("aerial").bands == ("NIR", "R", "G", "B")
    assert config.spec("s2").num_dates == 16 and config.spec("s1_des").num_dates == 4
    assert config.spec("aerial").num_dates is None
    assert build_preprocess_config(["s2"], keep_all_dates=("s2",)).spec("s2").num_dates is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: build_preprocess_config(["sentinel3"]), "unknown input modality"),
        (lambda: build_preprocess_config(["aerial"], {"aerial": {"bands": ["R", "SWIR"]}}), "no band 'SWIR'"),
        (lambda: build_preprocess_config(["aerial"], {"aerial": {"bands": ["R", "R"]}}), "twice"),
        (lambda: build_preprocess_config(["aerial"], {"aerial": {"bands": []}}), "at least one band"),
        (lambda: build_preprocess_config(["s2"], {"s2": {"num_dates": 0}}), ">= 1"),
        (lambda: build_preprocess_config(["aerial"], {"aerial": {"num_dates": 3}}), "mono-temporal"),
        (lambda: build_preprocess_config(["s2_mask"]), "mask, not a network input"),
        (lambda: build_preprocess_config(["lc"]), "label, not a network input"),
        (lambda: PreprocessConfig(modalities=()), "at least one"),
        (lambda: PreprocessConfig(modalities=("s2", "s2")), "twice"),
        (lambda: PreprocessConfig(modalities=("s2",), cloud_threshold=-1), "cloud_threshold"),
        (lambda: PreprocessConfig(modalities=("s2",), eval_offset="middle"), "eval_offset"),
        (lambda: build_preprocess_config(["s2"], {"s1_asc": {"num_dates": 2}}), "not inputs"),
        (lambda: build_preprocess_config(["s2"], {"s2": {"dates": 2}}), "unknown override"),
        (lambda: build_preprocess_config(["s2"], clouds=False), "unknown preprocessing options"),
        (lambda: PreprocessConfig(modalities=("s1_asc",), nan_policy="ignore"), "nan_policy must be"),
        (lambda: PreprocessConfig(modalities=("s1_asc",), nan_invalid_fraction=1.5), "nan_invalid_fraction"),
    ],
)
def test_config_validation(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_nan_policy_defaults_to_reject() -> None:
    config = build_preprocess_config(["s1_asc"])
    assert (config.nan_policy, config.nan_invalid_fraction) == ("reject", 0.5)
    assert build_preprocess_config(["s1_asc"], nan_policy="fill").nan_policy == "fill"
