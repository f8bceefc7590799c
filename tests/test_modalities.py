"""The modality registry's lookups: a wrong key is a ConfigError that lists the valid ones."""

from __future__ import annotations

import re

import numpy as np
import pytest

from maestro.errors import ConfigError
from maestro.modalities import MODALITIES, get_modality, resolve


def test_get_modality_error_lists_the_valid_keys():
    assert get_modality("s2") is MODALITIES["s2"]
    with pytest.raises(
        ConfigError, match=re.escape(f"unknown modality 'sentinel2'; valid keys are {sorted(MODALITIES)}")
    ):
        get_modality("sentinel2")


def test_resolve_names_an_unknown_or_repeated_key():
    assert resolve(["aerial", "s2"]) == [MODALITIES["aerial"], MODALITIES["s2"]]
    with pytest.raises(ConfigError, match="unknown modality 'radar'"):
        resolve(["aerial", "radar"])
    with pytest.raises(ConfigError, match=r"modalities listed twice: \['s2'\]"):
        resolve(["s2", "aerial", "s2"])


def test_flair2_rows_match_the_release_rasters():
    """FLAIR #2's own rasters: the 5th band of its aerial IMG (elevation) and its grouped mask."""
    from maestro.data.flair2 import layout
    from maestro.labels import LABEL_SETS

    elevation = get_modality("elevation")
    assert (elevation.bands, elevation.dtype, elevation.pixel_size_m) == (("ELEV",), layout.AERIAL_DTYPE, 0.2)
    assert elevation.size_px == layout.AERIAL_SIZE_PX and elevation.is_input and not elevation.temporal
    assert elevation.patch_size == MODALITIES["aerial"].patch_size and elevation.dates_table is None
    assert (
        elevation.scaling is not None
        and float(elevation.scaling(np.array([255], np.uint8), ("ELEV",))[0]) == 1.0
    )
    label = get_modality("flair2")
    assert (label.kind, label.bands, label.size_px, label.label_set) == ("label", ("CLASS",), 512, "flair2")
    assert LABEL_SETS["flair2"].level(1).ignored == frozenset({12})
