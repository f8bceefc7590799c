"""Batch collation of model samples: stacking, padding of variable-length series, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maestro.data.collate import collate_model_samples


def model_sample(t_s2: int = 16, *, size: int = 8, patch: str = "p0", seed: int = 0) -> dict:
    """A model sample as preprocessing returns it (aerial mono-temporal, s2 with t_s2 dates)."""
    rng = np.random.default_rng(seed)
    return {
        "inputs": {
            "aerial": rng.random((1, 4, size, size), dtype=np.float32),
            "s2": rng.random((t_s2, 10, 2, 2), dtype=np.float32),
        },
        "times": {
            "aerial": np.zeros((1, 3), dtype=np.float32),
            "s2": rng.random((t_s2, 3), dtype=np.float32),
        },
        "valid": {"aerial": np.ones(1, dtype=bool), "s2": np.ones(t_s2, dtype=bool)},
        "labels": {"lc": rng.integers(0, 19, (1, size, size), dtype=np.uint8)},
        "meta": {"patch_id": patch},
    }


def test_stacks_fixed_length_samples() -> None:
    samples = [model_sample(seed=i, patch=f"p{i}") for i in range(3)]
    batch = collate_model_samples(samples)
    assert batch["inputs"]["aerial"].shape == (3, 1, 4, 8, 8)
    assert batch["inputs"]["s2"].shape == (3, 16, 10, 2, 2) and batch["inputs"]["s2"].dtype == torch.float32
    assert batch["times"]["s2"].shape == (3, 16, 3)
    assert batch["valid"]["s2"].dtype == torch.bool and batch["valid"]["s2"].all()
    assert batch["labels"]["lc"].shape == (3, 1, 8, 8) and batch["labels"]["lc"].dtype == torch.uint8
    assert [m["patch_id"] for m in batch["meta"]] == ["p0", "p1", "p2"]
    np.testing.assert_array_equal(batch["inputs"]["s2"][1].numpy(), samples[1]["inputs"]["s2"])


def test_pads_variable_length_series_with_invalid_dates() -> None:
    samples = [model_sample(5, seed=0), model_sample(9, seed=1), model_sample(7, seed=2)]
    samples[2]["valid"]["s2"][6] = False  # padding made by preprocessing stays padding
    batch = collate_model_samples(samples)
    assert batch["inputs"]["s2"].shape == (3, 9, 10, 2, 2)
    expected = np.array([[True] * 5 + [False] * 4, [True] * 9, [True] * 6 + [False] * 3])
    np.testing.assert_array_equal(batch["valid"]["s2"].numpy(), expected)
    assert not batch["inputs"]["s2"][0, 5:].any() and not batch["times"]["s2"][0, 5:].any()
    np.testing.assert_array_equal(batch["times"]["s2"][0, :5].numpy(), samples[0]["times"]["s2"])


def test_read_only_arrays_are_accepted() -> None:
    samples = [model_sample(seed=i) for i in range(2)]
    for sample in samples:
        sample["inputs"]["aerial"].setflags(write=False)
    batch = collate_model_samples(samples)
    np.testing.assert_array_equal(batch["inputs"]["aerial"][0].numpy(), samples[0]["inputs"]["aerial"])


def test_different_modality_sets_fail_clearly() -> None:
    other = model_sample(patch="p1")
    del other["inputs"]["s2"], other["times"]["s2"], other["valid"]["s2"]
    with pytest.raises(ValueError, match=r"patch p1.*inputs \['aerial'\].*\['aerial', 's2'\]"):
        collate_model_samples([model_sample(), other])


def test_different_spatial_shapes_fail_clearly() -> None:
    with pytest.raises(ValueError, match=r"inputs\['aerial'\].*patch p1.*spatial size"):
        collate_model_samples([model_sample(), model_sample(size=16, patch="p1")])


def test_different_label_sets_and_shapes_fail() -> None:
    other = model_sample(patch="p1")
    other["labels"] = {"lpis": other["labels"]["lc"]}
    with pytest.raises(ValueError, match="labels"):
        collate_model_samples([model_sample(), other])
    other = model_sample(patch="p1")
    other["labels"]["lc"] = other["labels"]["lc"][:, :4]
    with pytest.raises(ValueError, match=r"labels\['lc'\].*patch p1"):
        collate_model_samples([model_sample(), other])


def test_rejects_empty_batch_and_raw_samples() -> None:
    with pytest.raises(ValueError, match="empty"):
        collate_model_samples([])
    with pytest.raises(ValueError, match="not a model sample"):
        collate_model_samples([{"aerial": np.zeros((4, 8, 8)), "dates": {}, "meta": {}}])


def test_end_to_end_with_preprocessing() -> None:
    from maestro.data.preprocess import build_preprocess_config, preprocess_sample

    def raw(t_s1: int, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        s1_dates = np.array([20210101 + 100 * k for k in range(t_s1)], dtype=np.int32)
        return {
            "aerial": rng.integers(0, 256, (4, 16, 16), dtype=np.uint8),
            "s1_asc": rng.uniform(0, 1, (t_s1, 2, 4, 4)).astype(np.float32),
            "lc": np.zeros((1, 16, 16), dtype=np.uint8),
            "dates": {"aerial": np.array([20210615], dtype=np.int32), "s1_asc": s1_dates},
            "meta": {"patch_id": f"p{seed}"},
        }

    config = build_preprocess_config(["aerial", "s1_asc"], keep_all_dates=("s1_asc",))
    samples = [preprocess_sample(raw(3 + i, i), config, train=True, rng=i) for i in range(3)]
    batch = collate_model_samples(samples)
    assert batch["inputs"]["s1_asc"].shape == (3, 5, 2, 4, 4)
    assert batch["valid"]["s1_asc"].sum(dim=1).tolist() == [3, 4, 5]
    assert batch["inputs"]["aerial"].shape == (3, 1, 4, 16, 16) and batch["valid"]["aerial"].all()
    assert batch["labels"]["lc"].shape == (3, 1, 16, 16)


def test_batch_meta_is_one_opaque_value_to_generic_batch_walkers() -> None:
    """Pin-memory, Lightning's transfer and DDP's input mover pass the metadata by reference
    instead of rebuilding its ~20,000 values at batch 256 on every step."""
    import pickle

    from lightning.fabric.utilities.apply_func import move_data_to_device
    from torch.distributed.utils import _recursive_to
    from torch.utils.data._utils.pin_memory import pin_memory

    batch = collate_model_samples([model_sample(seed=i, patch=f"p{i}") for i in range(3)])
    meta = batch["meta"]
    assert (
        len(meta) == 3 and meta[1]["patch_id"] == "p1" and meta == [{"patch_id": f"p{i}"} for i in range(3)]
    )
    assert move_data_to_device(batch, torch.device("cpu"))["meta"] is meta
    assert _recursive_to((batch,), torch.device("cpu"), False)[0][0]["meta"] is meta
    assert pin_memory({"meta": meta})["meta"] is meta  # (pinning the tensors needs an accelerator)
    assert pickle.loads(pickle.dumps(meta)) == meta  # workers send batches to the main process


def test_flags_are_stacked_like_valid_and_must_be_in_every_sample() -> None:
    from maestro.data.collate import collate_model_samples

    def sample(dates: int) -> dict:
        flags = np.zeros((dates, 2, 2), dtype=bool)
        flags[0, 0, 0] = True
        return {
            "inputs": {"s2": np.zeros((dates, 1, 2, 2), np.float32)},
            "times": {"s2": np.zeros((dates, 3), np.float32)},
            "valid": {"s2": np.ones(dates, bool)},
            "labels": {},
            "flags": {"s2": flags},
            "meta": {},
        }

    batch = collate_model_samples([sample(2), sample(3)])
    assert batch["flags"]["s2"].shape == (2, 3, 2, 2) and batch["flags"]["s2"].dtype == torch.bool
    assert batch["flags"]["s2"][:, 0, 0, 0].all() and not batch["flags"]["s2"][0, 2].any()
    plain = sample(2)
    del plain["flags"]
    with pytest.raises(ValueError, match="some samples have flags and others not"):
        collate_model_samples([sample(2), plain])
