import dataclasses

import numpy as np
import pytest
import torch
from test_preprocess_transform import raw_sample
from torch.utils._python_dispatch import TorchDispatchMode

from maestro.data.collate import collate_model_samples
from maestro.data.preprocess import build_preprocess_config, preprocess_sample, scale_batch
from maestro.modalities import MODALITIES

INPUTS = [key for key, entry in MODALITIES.items() if entry.is_input]


@pytest.mark.parametrize("key", INPUTS)
def test_tensor_scaling_equals_the_registry_numpy_scaling_on_the_same_raw_arrays(key):
    entry = MODALITIES[key]
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.001, 3000, size=(3, len(entry.input_bands), 8, 8)).astype(entry.dtype)
    expected = entry.scaling(raw.copy(), entry.input_bands)
    got = entry.scaling.tensor(torch.from_numpy(raw.copy()), entry.input_bands).numpy()
    if entry.scales_on_device:  # the ones that travel unscaled: the very same float32 values
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_device_scaling_builds_no_tensor_from_host_data_once_warm():
    """A tensor made from a Python number at every batch is copied from pageable memory, which on
    a GPU waits for all queued work: ``predict`` and training would stall once per batch."""

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(str(func))
            return func(*args, **(kwargs or {}))

    for key in ("aerial", "s1_asc", "dem"):
        entry = MODALITIES[key]
        values = torch.ones((2, 1, len(entry.input_bands), 4, 4), dtype=getattr(torch, entry.dtype))
        entry.scaling.tensor(values, entry.input_bands)
        with Ops() as ops:
            entry.scaling.tensor(values, entry.input_bands)
        assert not [name for name in ops.names if "lift_fresh" in name], (key, ops.names)


def test_only_integer_divisions_travel_unscaled():
    assert {k for k in INPUTS if MODALITIES[k].scales_on_device} == {
        "aerial",
        "spot",
        "s2",
        "hist",
        "elevation",
    }


@pytest.mark.parametrize("train", [False, True])
def test_unscaled_integers_scaled_after_collation_equal_the_worker_path(train):
    config = build_preprocess_config(["aerial", "dem", "s2", "s1_asc"])
    deferred = dataclasses.replace(config, scale_on_device=True)
    samples = [raw_sample(seed, clouds=True) for seed in range(3)]
    plain = collate_model_samples(
        [preprocess_sample(s, config, train=train, rng=i) for i, s in enumerate(samples)]
    )
    raw = collate_model_samples(
        [preprocess_sample(s, deferred, train=train, rng=i) for i, s in enumerate(samples)]
    )
    assert raw["inputs"]["aerial"].dtype == torch.uint8 and raw["inputs"]["s2"].dtype == torch.uint16
    assert raw["inputs"]["dem"].dtype == torch.float32  # float on disk: scaled in the workers as before
    scale_batch(raw, deferred)
    for key in plain["inputs"]:
        assert torch.equal(raw["inputs"][key], plain["inputs"][key]), key
        assert torch.equal(raw["valid"][key], plain["valid"][key]) and torch.equal(
            raw["times"][key], plain["times"][key]
        )
