"""What a training step will roughly need in host memory, said before a CPU run starts.

A CPU run whose batch does not fit is killed by the kernel part-way through its first step, with
no word about why. The estimate here is coarse on purpose (a few numbers of the model, the batch
and the loader) and errs mostly on the high side; it is compared with the memory the process may use,
and a run that will not fit is told which ``data.batch_size`` would.

The per-element costs were measured with fp32 fine-tuning steps on CPU (peak resident memory of
one forward and backward pass, batches of 2 and 4, encoders ``tiny`` and ``small``, UPerNet
decoders of 64 and 256 channels, the attentive head): the estimate came within -4 to +11 % of
them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from maestro.models.encoder import MaestroEncoder
from maestro.training.config import DataConfig
from shards.manifest import read_manifest
from shards.reading import local_manifest

log = logging.getLogger(__name__)

ENCODER_BYTES = 70
"""Activation bytes a training step keeps per token, width channel and transformer block of one
sample (about 17 fp32 values: norms, qkv, attention output, MLP, residuals)."""
PARAMETER_BYTES = 20
"""Per parameter: fp32 weight, gradient, the two AdamW moments and the EMA copy."""
GB = 1e9


def encoder_activation_bytes(encoder: MaestroEncoder, trains: bool = True) -> int:
    """Per sample, what a MAESTRO encoder keeps for the backward pass (one block's worth when it
    is frozen: nothing is kept, but each block's output still exists while the next runs)."""
    tokens = sum(spec.num_tokens for spec in encoder.specs.values())
    return ENCODER_BYTES * tokens * encoder.width * (encoder.depth if trains else 1)


@dataclass(frozen=True)
class SampleMemory:
    """What one training sample costs the trainer process, as a stage estimates it."""

    activations: int
    """Bytes kept for the backward pass."""
    inputs: int
    """Bytes of the sample as the model takes it (fp32 inputs, labels)."""


@dataclass(frozen=True)
class StepMemory:
    """Bytes a training step holds: activations grow with the batch, the rest does not."""

    per_sample: int
    """Activations kept for the backward pass, per sample."""
    fixed: int
    """Weights, gradients, optimizer state and EMA copy."""
    loader: int
    """Loader workers: their shuffle buffers and prefetched batches."""
    loader_per_sample: int
    """The part of ``loader`` that grows with the batch (prefetched batches)."""
    batch_size: int

    @property
    def total(self) -> int:
        return self.batch_size * self.per_sample + self.fixed + self.loader

    def largest_batch(self, available: int) -> int:
        """The largest batch whose step fits in ``available`` bytes (0 if none does)."""
        fixed = self.fixed + self.loader - self.batch_size * self.loader_per_sample
        return max(0, int((available - fixed) // (self.per_sample + self.loader_per_sample)))


PREFETCH_BATCHES = 2
"""Batches each loader worker prepares ahead (torch's default ``prefetch_factor``)."""


def encoded_sample_bytes(data: DataConfig) -> int | None:
    """Mean bytes of one training sample in its shards (from a local manifest), what each loader
    worker's shuffle buffer holds ``data.shuffle_buffer`` of."""
    file = local_manifest(data.train)
    if file is None:
        return None
    entry = read_manifest(file).split(data.train_split)
    return entry.num_bytes // max(entry.num_samples, 1)


def step_memory(model: nn.Module, sample: SampleMemory, data: DataConfig) -> StepMemory:
    """The host memory of a CPU training step of ``model`` with ``data``'s batch and loader."""
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    weights = sum(p.numel() for p in model.parameters())
    encoded = encoded_sample_bytes(data) or sample.inputs
    processes = max(data.num_workers, 1)  # without workers, the trainer process buffers itself
    prefetched = processes * PREFETCH_BATCHES * sample.inputs
    return StepMemory(
        per_sample=sample.activations + sample.inputs,
        fixed=PARAMETER_BYTES * trained + 8 * (weights - trained),  # frozen: the weight and its EMA
        loader=processes * data.shuffle_buffer * encoded + data.batch_size * prefetched,
        loader_per_sample=prefetched,
        batch_size=data.batch_size,
    )


def available_memory() -> int | None:
    """Bytes this process may still allocate: the system's available memory, or the cgroup's
    (a container's) limit less its use when that is lower; None where neither can be read."""
    amounts = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                amounts.append(int(line.split()[1]) * 1024)
    except OSError:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            amounts.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            amounts.append(int(limit) - used)
    except (OSError, ValueError):
        pass
    return min(amounts) if amounts else None


def report(memory: StepMemory, available: int | None) -> None:
    """Log what a step needs; warn, naming the batch size that fits, when it will not fit."""
    needed = (
        f"a training step at data.batch_size={memory.batch_size} needs roughly {memory.total / GB:.1f} GB "
        f"of host memory ({memory.batch_size} samples x {memory.per_sample / GB:.2f} GB, "
        f"{memory.fixed / GB:.1f} GB of weights, gradients and optimizer state, {memory.loader / GB:.1f} GB "
        "in loader workers)"
    )
    if available is None:
        log.info("%s", needed)
        return
    if memory.total <= available:
        log.info("%s; %.1f GB available", needed, available / GB)
        return
    fits = memory.largest_batch(available)
    advice = (
        f"Set data.batch_size={fits} (and trainer.accumulate_grad_batches to keep the samples per optimizer step)"
        if fits >= 1
        else "Use a smaller model or fewer loader workers (data.num_workers, data.shuffle_buffer)"
    )
    log.warning(
        "%s, but only %.1f GB is available: the run would be killed for lack of memory. %s",
        needed,
        available / GB,
        advice,
    )
