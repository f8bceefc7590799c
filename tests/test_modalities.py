"""The modality registry's lookups: a wrong key is a ConfigError that lists the valid ones."""

from __future__ import annotations

import re

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
