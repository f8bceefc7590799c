"""FP8 training (``trainer.precision: fp8``): torchao's float8 training on the large linear layers
of the transformer blocks, on top of bf16-mixed autocast.

Hopper and Ada GPUs multiply FP8 matrices at about twice their bf16 rate, and the linear layers of
the encoder's and the MAE decoders' transformer blocks are most of a training step. torchao's
``convert_to_float8_training`` swaps each chosen ``nn.Linear`` for a ``Float8Linear`` that casts
its input, weight and output gradient to FP8 with one dynamic scale per tensor (torchao's
"tensorwise" recipe, its fastest) for the three matrix products of a step; everything else (norms,
attention, embeddings, the pixel heads, the optimizer) stays as bf16-mixed runs it.

Why torchao rather than NVIDIA's Transformer Engine: torchao is maintained by the PyTorch team,
ships as a plain wheel (no CUDA build of its own; Transformer Engine builds against the local CUDA
toolkit), is written to be traced by ``torch.compile`` (which fuses its scaling and casts) and
keeps plain ``nn.Linear`` parameters.

That last point is what keeps checkpoints plain: a ``Float8Linear`` holds its weight and bias in
high precision under the same names, so an FP8 run's state dict has the keys, shapes and dtypes of
a bf16 run's, and its checkpoints load into unconverted models for fine-tuning, publishing and
``predict`` (``tests/test_training_fp8.py`` checks it).

Which layers: only ``nn.Linear`` layers inside a :class:`~maestro.models.transformer.Block`
(encoder streams, late fusion, MAE decoders; a segmenter's encoder), whose two dimensions are
multiples of :data:`FP8_MULTIPLE` (what the FP8 matrix kernels take) and at least
:data:`FP8_MIN_FEATURES`: below that the casts cost more than the faster product saves.
:func:`fp8_plan` lists them without converting anything, for the run's log and for tests.

torchao is imported only when an FP8 run asks for it (it loads ``torch._dynamo``, about 2 s).
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

from maestro.errors import ConfigError
from maestro.models.transformer import Block
from maestro.training.config import FP8_MULTIPLE, TrainerConfig

log = logging.getLogger(__name__)

FP8_MIN_FEATURES = TrainerConfig.fp8_min_features
"""Smallest ``in_features`` and ``out_features`` converted by default (``trainer.fp8_min_features``;
measure another with ``bench/pretrain_throughput.py --precision fp8 --fp8-min-features N``). torchao's own
automatic filter for this recipe, tuned on H100 matrix shapes, keeps a layer in bf16 when
in_features <= 4096 and out_features <= 1024."""
FP8_CAPABILITY = (8, 9)
"""Oldest CUDA compute capability with FP8 matrix units (Ada is 8.9, Hopper 9.0)."""
TORCHAO_MODULE = "torchao.float8"


@dataclass(frozen=True)
class LinearLayer:
    """One ``nn.Linear`` of a model, by its name in ``named_modules``."""

    name: str
    in_features: int
    out_features: int


@dataclass(frozen=True)
class Fp8Plan:
    """Which linear layers of a model FP8 training converts, and which it leaves alone."""

    converted: tuple[LinearLayer, ...]
    kept: tuple[LinearLayer, ...]
    """The model's other linear layers (outside the transformer blocks, or too small)."""
    min_features: int

    def summary(self) -> str:
        """The line an FP8 run logs before training: what it converts, compactly."""
        return (
            f"fp8: converting {len(self.converted)} linear layers ({', '.join(compact_names(self.converted))}), "
            f"leaving {len(self.kept)} others in bf16 (outside the transformer blocks, or a dimension "
            f"under {self.min_features} or not a multiple of {FP8_MULTIPLE})"
        )


def pays_in_fp8(layer: nn.Linear, min_features: int = FP8_MIN_FEATURES) -> bool:
    """Whether one linear layer's shape takes FP8 kernels and is large enough to gain from them."""
    dims = (layer.in_features, layer.out_features)
    return all(d % FP8_MULTIPLE == 0 and d >= min_features for d in dims)


def fp8_plan(model: nn.Module, min_features: int = FP8_MIN_FEATURES) -> Fp8Plan:
    """The linear layers :func:`convert_to_fp8` would convert (module docstring), without converting."""
    in_blocks = {
        f"{name}.{sub}" if name else sub
        for name, block in model.named_modules()
        if isinstance(block, Block)
        for sub, _ in block.named_modules()
        if sub
    }
    converted, kept = [], []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        layer = LinearLayer(name, module.in_features, module.out_features)
        (converted if name in in_blocks and pays_in_fp8(module, min_features) else kept).append(layer)
    return Fp8Plan(tuple(converted), tuple(kept), min_features)


def compact_names(layers: tuple[LinearLayer, ...]) -> list[str]:
    """Layer names with block indices folded: ``encoder.streams.s2.blocks.*.{attn.qkv, mlp.fc1}``."""
    groups: dict[str, list[str]] = {}
    for layer in layers:
        folded = re.sub(r"\.\d+\.", ".*.", layer.name)
        parent, _, leaf = folded.partition(".*.")
        key, tail = (f"{parent}.*", leaf) if leaf else (folded, "")
        groups.setdefault(key, [])
        if tail not in groups[key]:
            groups[key].append(tail)
    return [
        key if tails == [""] else f"{key}.{tails[0]}" if len(tails) == 1 else f"{key}.{{{', '.join(tails)}}}"
        for key, tails in groups.items()
    ]


def convert_to_fp8(model: nn.Module, min_features: int = FP8_MIN_FEATURES) -> Fp8Plan:
    """Swap the planned linear layers of ``model`` for torchao ``Float8Linear`` layers, in place,
    and log what was converted. Call before ``torch.compile`` and before the optimizer is built
    (the parameters stay the same tensors, but compiled graphs would hold the old modules).

    A model with nothing to convert is refused: an FP8 run that trains in bf16 would report the
    wrong precision.
    """
    plan = fp8_plan(model, min_features)
    if not plan.converted:
        raise ConfigError(
            f"trainer.precision=fp8 converts the linear layers of transformer blocks of at least "
            f"{min_features} features; this model ({type(model).__name__}) has none: use bf16-mixed"
        )
    float8 = torchao_float8()
    names = {layer.name for layer in plan.converted}
    float8.convert_to_float8_training(model, module_filter_fn=lambda _, name: name in names)
    log.info("%s", plan.summary())
    log.debug("fp8 layers: %s", [f"{x.name} ({x.in_features}x{x.out_features})" for x in plan.converted])
    return plan


def check_supported(trainer: TrainerConfig) -> None:
    """Refuse ``trainer.precision=fp8`` where it cannot run, before any data is read or model built:
    on CPU, on a GPU older than compute capability 8.9, or without torchao."""
    if trainer.accelerator == "cpu" or not torch.cuda.is_available():
        raise ConfigError(
            "trainer.precision=fp8 needs NVIDIA GPUs with FP8 matrix units (compute capability 8.9 or "
            "newer: Ada, Hopper, Blackwell); this run is on CPU. Leave trainer.precision unset "
            "(bf16-mixed on GPU, 32-true on CPU)"
        )
    for index in _device_indices(trainer):
        capability = torch.cuda.get_device_capability(index)
        if capability < FP8_CAPABILITY:
            raise ConfigError(
                f"trainer.precision=fp8 needs GPUs of compute capability 8.9 or newer (Ada, Hopper, "
                f"Blackwell); GPU {index} ({torch.cuda.get_device_name(index)}) has "
                f"{capability[0]}.{capability[1]}. Use trainer.precision=bf16-mixed"
            )
    torchao_float8()


def _device_indices(trainer: TrainerConfig) -> list[int]:
    """The CUDA devices this process may train on: those ``trainer.devices`` lists, else all."""
    count = torch.cuda.device_count()
    devices = trainer.devices
    if isinstance(devices, str) and devices != "auto":
        return [int(d) for d in devices.split(",") if d]
    if isinstance(devices, int) and devices > 0:
        return list(range(min(devices, count)))
    return list(range(count))


def torchao_float8() -> ModuleType:
    """``torchao.float8``, imported on first use (optional, slow to import); a ConfigError when absent."""
    try:
        return importlib.import_module(TORCHAO_MODULE)
    except ImportError as error:
        raise ConfigError(
            f"trainer.precision=fp8 trains through torchao's float8 training, which cannot be imported "
            f"({error}): pip install torchao"
        ) from None
