"""Batch collation of model samples (see :mod:`maestro.sample`) into torch tensors.

Samples keep ``num_dates`` fixed per modality in the default configuration, but a series kept
whole (``PreprocessConfig.keep_all_dates``) varies in length between samples: collation pads it
to the longest series of the batch with zeros and ``valid=False``, the same convention
preprocessing uses for short series, so models only ever look at ``valid``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from maestro.sample import INPUTS, LABELS, META, TIMES, VALID, Sample

_KEYS = frozenset({INPUTS, TIMES, VALID, LABELS, META})


def _describe(index: int, sample: Sample) -> str:
    meta = sample.get(META)
    patch_id = meta.get("patch_id") if isinstance(meta, Mapping) else None
    return f"sample {index}" + (f" (patch {patch_id})" if patch_id is not None else "")


def _to_tensor(array: Any) -> torch.Tensor:
    """Zero-copy view of a numpy array (copied only when read-only, which torch cannot wrap)."""
    if isinstance(array, torch.Tensor):
        return array
    return torch.from_numpy(np.require(array, requirements="W"))


def _check_same_keys(samples: Sequence[Sample], field: str) -> list[str]:
    """Keys of ``sample[field]``, required to be identical across the batch (in first-seen order)."""
    first = list(samples[0].get(field) or {})
    for index, sample in enumerate(samples[1:], start=1):
        keys = list(sample.get(field) or {})
        if set(keys) != set(first):
            raise ValueError(
                f"cannot collate: {_describe(index, sample)} has {field} {sorted(keys)} "
                f"but {_describe(0, samples[0])} has {sorted(first)}"
            )
    return first


def _pad_stack(
    arrays: Sequence[Any], name: str, samples: Sequence[Sample], fill: float | bool = 0
) -> torch.Tensor:
    """Stack (T_i, ...) arrays into (B, max T_i, ...), padding the date axis with ``fill``."""
    tensors = [_to_tensor(a) for a in arrays]
    tail = tensors[0].shape[1:]
    for index, tensor in enumerate(tensors):
        if tensor.ndim == 0 or tensor.shape[1:] != tail:
            raise ValueError(
                f"cannot collate {name}: {_describe(index, samples[index])} has shape {tuple(tensor.shape)}, "
                f"{_describe(0, samples[0])} has (T, {', '.join(map(str, tail))}); "
                "spatial size and band count must match within a batch"
            )
    length = max(t.shape[0] for t in tensors)
    out = _batch_tensor((len(tensors), length, *tail), tensors[0].dtype)
    target = out.numpy()  # numpy copies measured ~3x faster than torch's in loader workers
    for index, tensor in enumerate(tensors):
        target[index, : tensor.shape[0]] = tensor.numpy()
        if tensor.shape[0] < length:
            target[index, tensor.shape[0] :] = fill
    return out


def _batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Uninitialised batch tensor; in a DataLoader worker it lives in shared memory already, so
    handing the batch to the main process costs no second copy (as torch's default_collate does)."""
    out = torch.empty(shape, dtype=dtype)
    return out.share_memory_() if get_worker_info() is not None else out


def collate_model_samples(samples: Sequence[Sample]) -> dict[str, Any]:
    """List of model samples -> batch: inputs (B, T, C, H, W), times (B, T, 3), valid (B, T) bool.

    Variable-length series are padded to the batch maximum with zeros and ``valid=False``.
    Labels are stacked (B, L, H, W) in their on-disk dtype (uint8); ``meta`` becomes a list of dicts. Raises ValueError
    when samples differ in modality or label sets, or in band count / spatial size.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    for index, sample in enumerate(samples):
        missing = sorted({INPUTS, TIMES, VALID} - set(sample))
        unknown = sorted(set(sample) - _KEYS)
        if missing or unknown:
            raise ValueError(
                f"cannot collate {_describe(index, sample)}: not a model sample "
                f"(missing {missing}, unexpected {unknown}); run maestro.data.preprocess first"
            )
    modalities = _check_same_keys(samples, INPUTS)
    for field in (TIMES, VALID):
        keys = _check_same_keys(samples, field)
        if set(keys) != set(modalities):
            raise ValueError(
                f"cannot collate: {field} keys {sorted(keys)} differ from inputs {sorted(modalities)}"
            )
    inputs, times, valid = {}, {}, {}
    for key in modalities:
        inputs[key] = _pad_stack([s[INPUTS][key] for s in samples], f"inputs[{key!r}]", samples)
        times[key] = _pad_stack([s[TIMES][key] for s in samples], f"times[{key!r}]", samples)
        valid[key] = _pad_stack([s[VALID][key] for s in samples], f"valid[{key!r}]", samples, fill=False)
        lengths = {inputs[key].shape[1], times[key].shape[1], valid[key].shape[1]}
        if len(lengths) != 1:
            raise ValueError(
                f"cannot collate {key!r}: inputs, times and valid disagree on the number of dates"
            )
    labels = {}
    for key in _check_same_keys(samples, LABELS):
        arrays = [_to_tensor(s[LABELS][key]) for s in samples]
        for index, array in enumerate(arrays):
            if array.shape != arrays[0].shape:
                raise ValueError(
                    f"cannot collate labels[{key!r}]: {_describe(index, samples[index])} has shape "
                    f"{tuple(array.shape)}, {_describe(0, samples[0])} has {tuple(arrays[0].shape)}"
                )
        labels[key] = _pad_stack([s[LABELS][key] for s in samples], f"labels[{key!r}]", samples)
    return {
        INPUTS: inputs,
        TIMES: times,
        VALID: valid,
        LABELS: labels,
        META: [s.get(META, {}) for s in samples],
    }
