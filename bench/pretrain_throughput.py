"""MAE pretraining throughput: samples/s, input tokens/s, step time, peak memory and MFU.

    PYTHONPATH=. python bench/pretrain_throughput.py --smoke            # CPU-testable, tiny config
    PYTHONPATH=. python bench/pretrain_throughput.py                    # the full matrix on one GPU
    PYTHONPATH=. python bench/pretrain_throughput.py --sizes medium --batch-sizes 64 --profile medium:64

One timed training step = forward under bf16 autocast (masking, encoders, decoders, pixel heads,
patch-normalised L1 loss) + backward + fused AdamW step + zero_grad, on a synthetic model-sample
batch (FLAIR-HUB default inputs: aerial 4x512 p16, dem 2x512 p32, s2 10 bands x 16 dates p2,
s1_asc/s1_des 2 bands x 4 dates p2 = 1880 tokens per sample) already on the device. Step time is
the median of per-step CUDA-event times after warm-up; samples/s = batch / median step time.

FLOPs per sample are counted once per size with :func:`maestro.models.count_flops`
(``torch.utils.flop_counter``: matrix products, convolutions, attention; forward + backward), so
MFU = FLOPs/sample x samples/s / peak (790e12: dense bf16 matrix rate measured on an H200 here).

Modes: ``eager``; ``compile`` = regional compilation (every transformer Block through
``torch.compile``: one compiled graph per block shape, reused by all blocks of that shape, so cold
start stays well under a minute per model size); ``compile-full`` = ``torch.compile`` of the whole
model (what ``pretrain`` does with ``trainer.compile``): ~2 minutes of compilation per size and
batch size, so the default matrix runs it for medium at batch 256 only (``--full-sizes``,
``--mode-batches``). ``compile-regions`` (Blocks + embeddings, encodings, pixel heads) is kept for
comparison. Default matrix: small, medium, large x compile, eager (+ compile-full) x batch 32..256.

The largest batch that fits is searched per size in the first mode by doubling from the largest
batch of the matrix until an out-of-memory error, then bisecting. The loader (first, ~1.5 min)
times the input pipeline on toy shards built on the spot (``shards.cli toy`` + ``build``): shards
-> MAESTRO preprocessing -> collate in workers -> pinned memory -> non-blocking copy to the device.
``--profile SIZE:BATCH:MODE`` adds a torch.profiler summary (top kernels, kernel classes, host
syncs); ``--attention SIZE:BATCH`` times the SDPA backends on the model's attention shapes.

Batch sizes follow ``--batch-sizes`` in every mode (``compile-full`` runs only batch 256 when no
batch size is given; ``--mode-batches`` sets a mode's own list). A batch that does not fit is
reported with its error; when it is the first of its mode, the largest batch that fits is searched
by halving and timed in its place (``--no-fallback`` turns this off).

``--precision bf16 fp8`` times each model in bf16-mixed and with FP8 matrix products in the
transformer blocks' large linear layers (torchao float8 training, as ``trainer.precision: fp8``
converts them: :mod:`maestro.training.fp8`; ``--fp8-min-features`` sets the size threshold). FLOPs
and MFU stay bf16-equivalent: the same count for both, against the bf16 peak.

A markdown table is printed at the end; full results go to ``--json`` (default
``$OUT/pretrain_throughput.json`` when ``OUT`` is set), rewritten after every measurement so a run
cut short keeps what it measured. ``--budget`` (seconds) skips what no longer fits.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maestro.errors import ConfigError
from maestro.models import EncoderConfig, MAEConfig, MaestroMAE, count_flops
from maestro.models.embed import ModalityEmbed
from maestro.models.encodings import TokenEncoding
from maestro.models.masking import num_masked
from maestro.models.pixels import PixelHead
from maestro.models.synthetic import synthetic_batch, tiny_config
from maestro.models.transformer import Block
from maestro.training.fp8 import FP8_MIN_FEATURES, convert_to_fp8
from maestro.training.optim import param_groups

log = logging.getLogger("bench.pretrain_throughput")

PEAK_FLOPS = 790e12
"""Dense bf16 matrix rate of one H200 as measured here (8192^3 bf16 matmul, random data)."""
MODES = ("eager", "compile", "compile-regions", "compile-full")
PRECISIONS = ("bf16", "fp8")
"""bf16: bf16-mixed autocast; fp8: the same, with the large block linear layers in FP8."""
DEFAULT_BATCHES = [32, 64, 128, 256]
DEFAULT_FULL_BATCHES = ["compile-full=256"]
"""What compile-full runs when no batch size is given: ~2 min of compilation per batch size."""
FULL_COMPILE_S = 200
"""Budget a whole-model compile needs (medium: ~130 s to compile on the H200 box, then the steps)."""
Batch = dict[str, dict[str, torch.Tensor]]


# ------------------------------------------------------------------------------------ results


class Results:
    """Everything measured, kept as JSON-able dicts and written after every addition."""

    def __init__(self, path: Path | None, meta: dict[str, Any]):
        self.path = path
        self.data: dict[str, Any] = {
            "meta": meta,
            "flops": {},
            "runs": [],
            "search": [],
            "loader": [],
            "profiles": [],
            "attention": [],
            "skipped": [],
        }

    def add(self, section: str, item: Any) -> None:
        if isinstance(self.data[section], dict):
            self.data[section].update(item)
        else:
            self.data[section].append(item)
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)


class Deadline:
    """Wall-clock budget for the whole run; items that would not fit are skipped and listed."""

    def __init__(self, seconds: float | None):
        self.end = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float:
        return math.inf if self.end is None else self.end - time.monotonic()

    def allows(self, seconds: float) -> bool:
        return self.left() > seconds


# ------------------------------------------------------------------------------------ model


def make_config(size: str, fusion: str, smoke: bool) -> MAEConfig:
    return tiny_config(fusion=fusion) if smoke else MAEConfig(encoder=EncoderConfig(size=size, fusion=fusion))


def make_model(
    config: MAEConfig, precision: str, device: torch.device, min_features: int = FP8_MIN_FEATURES
) -> MaestroMAE:
    """The MAE from seed 0 (the same weights in every precision), its block layers converted to
    FP8 training for ``fp8`` before it moves to the device, as the training task does."""
    torch.manual_seed(0)
    model = MaestroMAE(config)
    if precision == "fp8":
        convert_to_fp8(model, min_features)  # logs what it converts
    return model.to(device)


def make_optimizer(model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """AdamW as the pretraining stage builds it (docs/method.md betas/decay), fused on CUDA."""
    fused = device.type == "cuda"
    return torch.optim.AdamW(
        param_groups(model, 0.01),
        lr=1e-4,
        betas=(0.9, 0.99),
        weight_decay=0.01,
        fused=fused,
        foreach=None if fused else False,
    )


def pad_dates(base: Batch, missing: int) -> Batch:
    """``base`` with every other sample missing its last ``missing`` dates in each series (at most a
    quarter of a short one), as the toy data's short series do: attention then takes its
    key-masked path, as in a real run on such data. Tiling keeps the pattern (8 samples)."""
    for valid in base["valid"].values():
        count = min(missing, valid.shape[1] // 4)
        if count:
            valid[::2, -count:] = False
    return base


def make_batch(config: MAEConfig, batch_size: int, device: torch.device, base: Batch | None = None) -> Batch:
    """Synthetic batch of ``batch_size``: a small smooth-field batch tiled on the device (fast),
    with ``padded`` read off its masks once here, as the data module does on the host."""
    if base is None:
        base = synthetic_batch(config, batch_size=min(batch_size, 8), seed=0, device=device)
    reps = math.ceil(batch_size / next(iter(base["inputs"].values())).shape[0])

    def tile(t: torch.Tensor) -> torch.Tensor:
        return t.repeat(reps, *([1] * (t.ndim - 1)))[:batch_size].contiguous()

    batch = {part: {k: tile(v) for k, v in values.items()} for part, values in base.items()}
    batch["padded"] = any(not bool(v.all()) for v in batch["valid"].values())
    return batch


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16)


def train_step(
    model: Callable[..., dict], optimizer: torch.optim.Optimizer, batch: Batch, device: torch.device
) -> None:
    with autocast(device):
        out = model(batch["inputs"], batch["times"], batch["valid"], padded=batch["padded"])
    out["loss"].backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def flops_per_sample(model: MaestroMAE, config: MAEConfig, device: torch.device) -> dict[str, float]:
    batch = make_batch(config, 2, device)
    with autocast(device):
        flops = count_flops(model, batch)
    return {k: v / 2 for k, v in flops.items()}


REGIONS = {"compile": (Block,), "compile-regions": (Block, ModalityEmbed, TokenEncoding, PixelHead)}
"""Module types compiled one by one (regional compilation) per mode."""


def compile_model(model: MaestroMAE, mode: str, compile_mode: str | None) -> Callable[..., dict]:
    """``eager``: the model; ``compile``: every Block compiled (regional); ``compile-regions``: also the
    patch embeddings, token encodings and pixel heads; ``compile-full``: ``torch.compile(model)``."""
    if mode == "eager":
        return model
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    if hasattr(torch._dynamo.config, "accumulated_recompile_limit"):
        torch._dynamo.config.accumulated_recompile_limit = 4096
    if mode in REGIONS:
        for module in model.modules():
            if isinstance(module, REGIONS[mode]):
                module.compile(mode=compile_mode)
        return model
    return torch.compile(model, mode=compile_mode)


def uncompile(model: MaestroMAE) -> None:
    for module in model.modules():
        if isinstance(module, REGIONS["compile-regions"]):
            module._compiled_call_impl = None


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


# ------------------------------------------------------------------------------------ timing


class Timer:
    """Per-step device time: CUDA events on GPU, perf_counter (after the step) on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.pairs: list[tuple[Any, Any]] = []

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.pairs.append((start, end))
        else:
            start = time.perf_counter()
            yield
            self.pairs.append((start, time.perf_counter()))

    def seconds(self) -> list[float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return [s.elapsed_time(e) / 1e3 for s, e in self.pairs]
        return [e - s for s, e in self.pairs]


def run_config(
    fn: Callable[..., dict],
    optimizer: torch.optim.Optimizer,
    config: MAEConfig,
    batch_size: int,
    device: torch.device,
    warmup: int,
    steps: int,
    flops: float,
    peak: float,
    base: Batch,
) -> dict[str, Any]:
    """Time ``steps`` training steps after ``warmup``; OOM is a result, not a crash."""
    record: dict[str, Any] = {"batch": batch_size}
    batch = None
    try:
        batch = make_batch(config, batch_size, device, base)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        train_step(fn, optimizer, batch, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        record["first_step_s"] = time.perf_counter() - start
        for _ in range(max(warmup - 1, 0)):
            train_step(fn, optimizer, batch, device)
        timer = Timer(device)
        wall = time.perf_counter()
        for _ in range(steps):
            with timer.step():
                train_step(fn, optimizer, batch, device)
        times = timer.seconds()
        wall = (time.perf_counter() - wall) / steps
        step = statistics.median(times)
        samples = batch_size / step
        record.update(
            status="ok",
            step_ms=step * 1e3,
            step_ms_min=min(times) * 1e3,
            step_ms_max=max(times) * 1e3,
            wall_step_ms=wall * 1e3,
            samples_per_s=samples,
            tokens_per_s=samples * config.encoder.num_tokens,
            tflops=flops * samples / 1e12,
            mfu=flops * samples / peak,
        )
        if device.type == "cuda":
            record["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            record["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    except Exception as error:  # noqa: BLE001 - OOM (and anything else) is reported, the matrix goes on
        record.update(failure(error))
        if not is_oom(error):
            log.exception("batch %d failed", batch_size)
        else:
            log.warning("batch %d does not fit: %s", batch_size, record["error"])
    finally:
        del batch
        optimizer.zero_grad(set_to_none=True)
        free(device)
    return record


def failure(error: BaseException) -> dict[str, str]:
    """``status`` (``oom`` or ``error: Type``) and the error's first line, for the results."""
    first = (str(error).strip().splitlines() or [""])[0][:300]
    return {"status": "oom" if is_oom(error) else f"error: {type(error).__name__}", "error": first}


def fits(
    fn: Callable[..., dict],
    optimizer: torch.optim.Optimizer,
    config: MAEConfig,
    batch_size: int,
    device: torch.device,
    base: Batch,
) -> tuple[bool, float]:
    """One training step at ``batch_size``: (fits, peak GiB)."""
    batch = None
    try:
        batch = make_batch(config, batch_size, device, base)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        train_step(fn, optimizer, batch, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            return True, torch.cuda.max_memory_allocated(device) / 2**30
        return True, 0.0
    except Exception as error:  # noqa: BLE001
        if not is_oom(error):
            raise
        return False, math.nan
    finally:
        del batch
        optimizer.zero_grad(set_to_none=True)
        free(device)


def largest_batch(
    fn: Callable[..., dict],
    optimizer: torch.optim.Optimizer,
    config: MAEConfig,
    start: int,
    device: torch.device,
    base: Batch,
    limit: int,
    deadline: Deadline,
    bisect_steps: int,
) -> dict[str, Any]:
    """Doubling from a batch known to fit until OOM (or ``limit``), then ``bisect_steps`` bisections."""
    good, bad, probes = start, None, []
    while bad is None and deadline.allows(20):
        trial = good * 2
        if trial > limit:
            break
        ok, mem = fits(fn, optimizer, config, trial, device, base)
        probes.append({"batch": trial, "fits": ok, "peak_mem_gib": mem})
        good, bad = (trial, None) if ok else (good, trial)
    for _ in range(bisect_steps):
        if bad is None or bad - good <= max(good // 16, 1) or not deadline.allows(20):
            break
        trial = (good + bad) // 2
        ok, mem = fits(fn, optimizer, config, trial, device, base)
        probes.append({"batch": trial, "fits": ok, "peak_mem_gib": mem})
        good, bad = (trial, bad) if ok else (good, trial)
    return {"largest_fitting": good, "smallest_oom": bad, "limit": limit, "probes": probes}


# ------------------------------------------------------------------------------------ profile


KERNEL_CLASSES = (
    ("attention", ("flash", "fmha", "attention", "sdpa", "cudnn_generated_fort_native_sdpa")),
    ("gemm", ("gemm", "sm90_xmma", "cutlass", "cublas", "nvjet", "matmul", "dot")),
    ("conv", ("conv", "implicit", "wgrad", "dgrad", "cudnn")),
    ("optimizer", ("adam",)),
    ("norm", ("layer_norm", "group_norm", "norm")),
    (
        "copy/cat/gather",
        (
            "copy",
            "cat",
            "gather",
            "scatter",
            "index",
            "elementwise_kernel_with_index",
            "memcpy",
            "memset",
            "fill",
            "transpose",
        ),
    ),
    ("reduce", ("reduce", "sum", "topk", "sort", "radix")),
    ("triton (fused)", ("triton",)),
    ("elementwise", ("elementwise", "vectorized", "unrolled")),
)


def classify(name: str) -> str:
    lowered = name.lower()
    for label, keys in KERNEL_CLASSES:
        if any(k in lowered for k in keys):
            return label
    return "other"


def profile(
    fn: Callable[..., dict],
    optimizer: torch.optim.Optimizer,
    config: MAEConfig,
    batch_size: int,
    device: torch.device,
    base: Batch,
    steps: int = 3,
    top: int = 25,
) -> dict[str, Any]:
    """torch.profiler over ``steps`` steps: top kernels, time per kernel class, host syncs."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    batch = make_batch(config, batch_size, device, base)
    for _ in range(2):
        train_step(fn, optimizer, batch, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = time.perf_counter()
    with torch_profile(activities=activities, record_shapes=True) as prof:
        for _ in range(steps):
            train_step(fn, optimizer, batch, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    wall = (time.perf_counter() - wall) / steps
    del batch
    optimizer.zero_grad(set_to_none=True)
    free(device)

    kernels: dict[str, list[float]] = {}
    host: dict[str, int] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            if getattr(event, "is_user_annotation", False) or "#" in event.name:
                continue  # record_function ranges (Optimizer.step#AdamW.step) are not kernels
            entry = kernels.setdefault(event.name, [0.0, 0])
            entry[0] += event.device_time_total
            entry[1] += 1
        else:
            if event.name in (
                "cudaStreamSynchronize",
                "cudaDeviceSynchronize",
                "aten::item",
                "aten::_local_scalar_dense",
                "cudaMemcpyAsync",
                "cudaLaunchKernel",
                "cuLaunchKernel",
                "cudaLaunchKernelExC",
                "cuLaunchKernelEx",
            ):
                host[event.name] = host.get(event.name, 0) + 1
    device_us = sum(v[0] for v in kernels.values()) / steps
    classes: dict[str, float] = {}
    for name, (us, _) in kernels.items():
        classes[classify(name)] = classes.get(classify(name), 0.0) + us / steps
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top]
    result = {
        "batch": batch_size,
        "wall_ms_per_step": wall * 1e3,
        "kernel_ms_per_step": device_us / 1e3,
        "gpu_busy_fraction": device_us / 1e6 / wall if wall else math.nan,
        "kernels_per_step": sum(v[1] for v in kernels.values()) / steps,
        "classes_ms_per_step": {k: v / 1e3 for k, v in sorted(classes.items(), key=lambda kv: -kv[1])},
        "host_calls_per_step": {k: v / steps for k, v in host.items()},
        "top_kernels": [
            {
                "name": name[:160],
                "ms_per_step": us / steps / 1e3,
                "calls_per_step": n / steps,
                "class": classify(name),
            }
            for name, (us, n) in ranked
        ],
    }
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    result["op_table"] = prof.key_averages(group_by_input_shape=True).table(
        sort_by=sort, row_limit=40, max_name_column_width=50
    )
    return result


def print_profile(title: str, prof: dict[str, Any]) -> None:
    print(f"\n### profile: {title}")
    print(
        f"wall {prof['wall_ms_per_step']:.1f} ms/step, kernels {prof['kernel_ms_per_step']:.1f} ms/step "
        f"(GPU busy {prof['gpu_busy_fraction']:.0%}), {prof['kernels_per_step']:.0f} kernels/step"
    )
    print("classes (ms/step): " + ", ".join(f"{k} {v:.1f}" for k, v in prof["classes_ms_per_step"].items()))
    print("host calls/step: " + ", ".join(f"{k} {v:.0f}" for k, v in prof["host_calls_per_step"].items()))
    print("| kernel | class | ms/step | calls/step |\n|---|---|---:|---:|")
    for k in prof["top_kernels"]:
        print(f"| `{k['name'][:110]}` | {k['class']} | {k['ms_per_step']:.2f} | {k['calls_per_step']:.0f} |")
    sys.stdout.flush()


# ------------------------------------------------------------------------------------ attention


def attention_shapes(model: MaestroMAE) -> list[tuple[str, int, int, int, int]]:
    """(name, length, heads, head dim, blocks per step) of every SDPA call of a training forward."""
    config, encoder = model.config, model.encoder
    layouts, enc, dec = encoder.layouts, config.encoder.transformer, config.decoder
    shapes, visible = [], []
    for spec in encoder.plan:
        length = spec.length(layouts)
        keep = length - num_masked(length, config.mask_ratio)
        visible.append(keep)
        shapes.append(
            (f"enc {spec.stream}", keep, enc.num_heads, enc.width // enc.num_heads, encoder.own_depth)
        )
    if encoder.inter_depth:
        shapes.append(("inter", sum(visible), enc.num_heads, enc.width // enc.num_heads, encoder.inter_depth))
    for spec in encoder.plan:
        shapes.append(
            (f"dec {spec.stream}", spec.length(layouts), dec.num_heads, dec.width // dec.num_heads, dec.depth)
        )
    return shapes


def attention_bench(
    model: MaestroMAE, batch_size: int, device: torch.device, repeats: int = 10
) -> dict[str, Any]:
    """SDPA forward + backward per backend on the model's attention shapes (bf16, no mask)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
    }
    rows = []
    for name, length, heads, dim, blocks in attention_shapes(model):
        qkv = torch.randn(
            batch_size, length, 3, heads, dim, device=device, dtype=torch.bfloat16, requires_grad=True
        )
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # the model's (three b h l d) view of its qkv output
        grad = torch.randn(batch_size, heads, length, dim, device=device, dtype=torch.bfloat16)
        flops = 4 * batch_size * heads * length * length * dim  # forward; backward counted as 2x
        row: dict[str, Any] = {
            "name": name,
            "length": length,
            "heads": heads,
            "head_dim": dim,
            "blocks": blocks,
        }
        for label, backend in backends.items():
            try:
                with sdpa_kernel([backend]):
                    for _ in range(2):
                        F.scaled_dot_product_attention(q, k, v).backward(grad)
                    timer = Timer(device)
                    for _ in range(repeats):
                        with timer.step():
                            F.scaled_dot_product_attention(q, k, v).backward(grad)
                    ms = statistics.median(timer.seconds()) * 1e3
                row[label] = {"ms": ms, "tflops": 3 * flops / ms / 1e9, "ms_per_step": ms * blocks}
            except RuntimeError as error:
                row[label] = {"error": str(error).splitlines()[0][:120]}
            qkv.grad = None
        rows.append(row)
        del qkv, q, k, v, grad
    free(device)
    totals = {label: sum(r[label].get("ms_per_step", math.nan) for r in rows) for label in backends}
    return {"batch": batch_size, "rows": rows, "ms_per_step": totals}


def print_attention(result: dict[str, Any]) -> None:
    labels = list(result["ms_per_step"])
    print(f"\n### SDPA forward+backward per backend, batch {result['batch']} (ms per call; TFLOP/s)")
    print("| call | L | heads x dim | blocks | " + " | ".join(labels) + " |")
    print("|---|---:|---|---:|" + "---:|" * len(labels))
    for r in result["rows"]:
        cells = [f"{r[x]['ms']:.2f} ({r[x]['tflops']:.0f})" if "ms" in r[x] else "n/a" for x in labels]
        print(
            f"| {r['name']} | {r['length']} | {r['heads']}x{r['head_dim']} | {r['blocks']} | "
            + " | ".join(cells)
            + " |"
        )
    print(
        "| **per training step (ms)** | | | | "
        + " | ".join(f"{result['ms_per_step'][x]:.1f}" for x in labels)
        + " |"
    )
    sys.stdout.flush()


# ------------------------------------------------------------------------------------ loader


def loader_bench(
    args: argparse.Namespace, device: torch.device, results: Results, deadline: Deadline
) -> None:
    """Toy shards built here, then shards -> workers (decode + preprocess + collate) -> device."""
    from maestro.modalities import DEFAULT_INPUTS, with_companions
    from shards.loader import default_preprocess, make_loader

    work = Path(tempfile.mkdtemp(prefix="maestro_loader_"))
    root, out = work / "toy", work / "shards"
    start = time.perf_counter()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")])),
    }
    subprocess.run(
        [
            sys.executable,
            "-m",
            "shards.cli",
            "toy",
            "--out",
            str(root),
            "--patches",
            str(args.loader_patches),
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "shards.cli",
            "build",
            "--root",
            str(root),
            "--out",
            str(out),
            "--max-count",
            "8",
            "--workers",
            str(min(8, os.cpu_count() or 1)),
            "--no-progress",
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    log.info("toy shards built in %.1f s", time.perf_counter() - start)
    inputs = tuple(with_companions(DEFAULT_INPUTS))
    for run in args.loader_runs:
        workers, *flags = run.split(":")
        workers = int(workers)
        pin = device.type == "cuda" and "nopin" not in flags
        copy = "nocopy" not in flags
        if not deadline.allows(args.loader_seconds + 15):
            results.add("skipped", f"loader {run} (budget)")
            continue
        loader = make_loader(
            out,
            preprocess=default_preprocess("train", DEFAULT_INPUTS),
            mode="train",
            split="train",
            batch_size=args.loader_batch,
            num_workers=workers,
            modalities=inputs,
            shuffle_buffer=16,
            shuffle_initial=4,
            pin_memory=pin,
            prefetch_factor=4 if workers else None,
            batches_per_epoch=100_000,
        )
        iterator = iter(loader)
        t0 = time.perf_counter()
        first = next(iterator)
        startup = time.perf_counter() - t0
        nbytes = sum(
            v.numel() * v.element_size()
            for part in ("inputs", "times", "valid")
            for v in first[part].values()
        ) / len(first["meta"])
        del first
        samples, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.loader_seconds:
            batch = next(iterator)
            if copy:
                moved = {
                    part: {k: v.to(device, non_blocking=True) for k, v in batch[part].items()}
                    for part in ("inputs", "times", "valid")
                }
                del moved
            samples += len(batch["meta"])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - t0
        del iterator, loader
        gc.collect()
        rate = samples / elapsed
        record = {
            "run": run,
            "workers": workers,
            "batch": args.loader_batch,
            "pin_memory": pin,
            "to_device": copy and device.type == "cuda",
            "samples": samples,
            "seconds": elapsed,
            "samples_per_s": rate,
            "samples_per_s_per_worker": rate / max(workers, 1),
            "first_batch_s": startup,
            "mb_per_sample": nbytes / 1e6,
        }
        results.add("loader", record)
        print(
            f"loader {run}: {rate:7.1f} samples/s ({rate / max(workers, 1):.1f}/worker), "
            f"{nbytes / 1e6:.1f} MB/sample, first batch after {startup:.1f} s"
        )
        sys.stdout.flush()


# ------------------------------------------------------------------------------------ main


def device_meta(device: torch.device) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta.update(
            gpu=props.name,
            gpu_mem_gib=props.total_memory / 2**30,
            sms=props.multi_processor_count,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return meta


def print_tables(results: Results) -> None:
    meta = results.data["meta"]
    print(f"\n## MAESTRO pretraining throughput — {meta['date']}")
    print(f"`{meta['command']}`  ")
    print(
        f"{meta.get('gpu', meta['device'])}, torch {meta['torch']}, CUDA {meta.get('cuda')}, "
        f"{meta['cpus']} CPUs; fusion {meta['fusion']}, bf16 autocast, fused AdamW step in the timed step; "
        f"MFU against {meta['peak_flops'] / 1e12:.0f} TFLOP/s\n"
    )
    print(
        "| size | precision | mode | batch | step ms | samples/s | input tokens/s | TFLOP/s (bf16-eq.) | MFU "
        "| peak GiB | first step s |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    order = {name: i for i, name in enumerate(["tiny", "small", "medium", "base", "large"])}
    runs = sorted(
        results.data["runs"],
        key=lambda r: (
            order.get(r["size"], 9),
            PRECISIONS.index(r.get("precision", "bf16")),
            MODES.index(r["mode"]),
            r["batch"],
        ),
    )
    for r in runs:
        asked = f" (asked {r['requested_batch']})" if "requested_batch" in r else ""
        head = f"| {r['size']} | {r.get('precision', 'bf16')} | {r['mode']} | {r['batch']}{asked} |"
        if r["status"] != "ok":
            print(f"{head} {r['status']}: {r.get('error', '')[:80]} | | | | | | |")
            continue
        print(
            f"{head} {r['step_ms']:.1f} | {r['samples_per_s']:.1f} | "
            f"{r['tokens_per_s'] / 1e3:.0f}k | {r['tflops']:.0f} | {r['mfu']:.1%} | "
            f"{r.get('peak_mem_gib', math.nan):.1f} | {r['first_step_s']:.1f} |"
        )
    if results.data["flops"]:
        print("\n| size | params (M) | GFLOP/sample fwd | bwd | fwd+bwd |\n|---|---:|---:|---:|---:|")
        for size, f in results.data["flops"].items():
            print(
                f"| {size} | {f['params'] / 1e6:.4g} | {f['forward'] / 1e9:.4g} | {f['backward'] / 1e9:.4g} | "
                f"{f['total'] / 1e9:.4g} |"
            )
    if results.data["search"]:
        print(
            "\n| size | precision | mode | largest batch that fits | first OOM | probes (batch: peak GiB or OOM) |"
        )
        print("|---|---|---|---:|---:|---|")
        for s in results.data["search"]:
            probes = ", ".join(
                f"{p['batch']}: " + (f"{p['peak_mem_gib']:.0f}" if p["fits"] else "OOM") for p in s["probes"]
            )
            print(
                f"| {s['size']} | {s.get('precision', 'bf16')} | {s['mode']} | {s['largest_fitting']} | "
                f"{s['smallest_oom'] or '-'} "
                f"(limit {s['limit']}) | {probes} |"
            )
    if results.data["loader"]:
        print(
            "\n| loader workers | batch | pin memory | copy to device | samples/s | samples/s/worker | "
            "MB/sample | first batch s |"
        )
        print("|---:|---:|---|---|---:|---:|---:|---:|")
        for r in results.data["loader"]:
            print(
                f"| {r['workers']} | {r['batch']} | {r['pin_memory']} | {r['to_device']} | "
                f"{r['samples_per_s']:.1f} | {r['samples_per_s_per_worker']:.1f} | {r['mb_per_sample']:.1f} | "
                f"{r['first_batch_s']:.1f} |"
            )
    if results.data["skipped"]:
        print("\nskipped: " + "; ".join(results.data["skipped"]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny config, 2 steps, small loader check (CPU ok)"
    )
    parser.add_argument("--sizes", nargs="+", default=["small", "medium", "large"])
    parser.add_argument(
        "--modes",
        nargs="+",
        default=None,
        choices=MODES,
        help="default: compile eager compile-full (--smoke: eager); the first one is used for "
        "the largest-batch search",
    )
    parser.add_argument(
        "--batch-sizes",
        nargs="+",
        type=int,
        default=None,
        help=f"per device, in every mode (default: {' '.join(map(str, DEFAULT_BATCHES))}; compile-full "
        "then runs 256 only)",
    )
    parser.add_argument(
        "--size-batches",
        nargs="*",
        default=[],
        help="per-size batch lists, e.g. large=32,64,128 (overrides --batch-sizes for it)",
    )
    parser.add_argument(
        "--mode-batches",
        nargs="*",
        default=None,
        help="per-mode batch lists, e.g. compile-full=256 (overrides the size's list; default: "
        "compile-full=256 when neither --batch-sizes nor --size-batches is given, else none)",
    )
    parser.add_argument(
        "--full-sizes",
        nargs="*",
        default=["medium"],
        help="sizes that run compile-full (a whole-model compile takes ~2 min per size and batch)",
    )
    parser.add_argument("--fusion", default="group")
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["bf16"],
        choices=PRECISIONS,
        help="bf16 (bf16-mixed autocast) and/or fp8 (the same with FP8 block linear layers, torchao)",
    )
    parser.add_argument(
        "--fp8-min-features",
        type=int,
        default=FP8_MIN_FEATURES,
        help="fp8: smallest in/out features of a converted linear layer (maestro.training.fp8)",
    )
    parser.add_argument(
        "--fallback",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="when a mode's first batch size does not fit, time the largest that does (halving)",
    )
    parser.add_argument(
        "--padded-dates",
        type=int,
        default=0,
        help="every other sample misses this many dates per series (at most a quarter): the key-masked "
        "attention a real run takes when a batch holds short series",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (the first compiles)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    parser.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode (default; max-autotune-no-cudagraphs; reduce-overhead)",
    )
    parser.add_argument(
        "--search",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="largest-batch search per size (first mode)",
    )
    parser.add_argument("--search-limit", type=int, default=4096, help="largest batch tried")
    parser.add_argument("--bisect-steps", type=int, default=3)
    parser.add_argument(
        "--profile",
        nargs="*",
        default=[],
        help="SIZE:BATCH[:MODE] configurations to profile with torch.profiler",
    )
    parser.add_argument(
        "--attention",
        nargs="*",
        default=[],
        help="SIZE:BATCH: time SDPA backends on that model's attention shapes",
    )
    parser.add_argument("--loader", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--loader-runs",
        nargs="+",
        default=["1", "4", "8", "16", "16:nopin"],
        help="WORKERS[:nopin][:nocopy] per loader timing (nopin: no pinned memory; "
        "nocopy: batches not copied to the device)",
    )
    parser.add_argument("--loader-batch", type=int, default=32)
    parser.add_argument("--loader-seconds", type=float, default=6.0)
    parser.add_argument("--loader-patches", type=int, default=96)
    parser.add_argument("--loader-no-pin", action="store_true")
    parser.add_argument("--peak-flops", type=float, default=PEAK_FLOPS)
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds; later items are skipped (the full default matrix needs ~8.5 min on an H200)",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    if args.modes is None:
        args.modes = ["eager"] if args.smoke else ["compile", "eager", "compile-full"]
    chosen = args.batch_sizes is not None
    if args.mode_batches is None:
        args.mode_batches = [] if args.smoke or chosen or args.size_batches else list(DEFAULT_FULL_BATCHES)
    if not chosen:
        args.batch_sizes = [2, 4] if args.smoke else list(DEFAULT_BATCHES)
    if args.smoke:
        args.sizes = ["tiny"]
        args.warmup, args.steps = 1, 2
        args.search_limit = min(args.search_limit, 8)
        args.loader_runs = ["0", "2"]
        args.loader_batch, args.loader_seconds, args.loader_patches = 4, 1.0, 8
    if args.json is None and os.environ.get("OUT"):
        args.json = Path(os.environ["OUT"]) / "pretrain_throughput.json"
    return args


def fallback_batch(
    fn: Callable[..., dict],
    optimizer: torch.optim.Optimizer,
    config: MAEConfig,
    batch_size: int,
    device: torch.device,
    base: Batch,
) -> int | None:
    """The largest batch, halving from ``batch_size``, that a training step fits; None if none does."""
    trial = batch_size // 2
    while trial >= 1:
        if fits(fn, optimizer, config, trial, device, base)[0]:
            return trial
        trial //= 2
    return None


def time_batches(
    fn: Callable[..., dict],
    optimizer: torch.optim.Optimizer,
    config: MAEConfig,
    batches: list[int],
    device: torch.device,
    base: Batch,
    flops: float,
    args: argparse.Namespace,
    deadline: Deadline,
    labels: dict[str, Any],
    results: Results,
) -> int | None:
    """Time each batch size of one model and mode; the largest that ran (None if none did).

    A batch that does not fit is recorded with its error, and the ones after it are skipped (the
    list goes up: they would not fit either); if nothing of this mode ran yet, the largest batch that fits is
    searched by halving and timed instead (``requested_batch`` says what was asked for)."""
    largest_ok = None
    tag = "/".join(str(v) for v in labels.values())
    for index, batch_size in enumerate(batches):
        if not deadline.allows(30):
            results.add("skipped", f"{tag}/b{batch_size} (budget)")
            continue
        record = run_config(
            fn, optimizer, config, batch_size, device, args.warmup, args.steps, flops, args.peak_flops, base
        )
        record.update(labels)
        results.add("runs", record)
        log.info("%s", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in record.items()})
        if record["status"] == "ok":
            largest_ok = batch_size
            continue
        if record["status"] != "oom":
            continue
        if largest_ok is None and args.fallback:
            smaller = fallback_batch(fn, optimizer, config, batch_size, device, base)
            if smaller is None:
                log.warning("%s: not even a batch of 1 fits", tag)
            else:
                log.info(
                    "%s: batch %d does not fit; timing %d, the largest that does", tag, batch_size, smaller
                )
                record = run_config(
                    fn,
                    optimizer,
                    config,
                    smaller,
                    device,
                    args.warmup,
                    args.steps,
                    flops,
                    args.peak_flops,
                    base,
                )
                record.update(labels, requested_batch=batch_size)
                results.add("runs", record)
                largest_ok = smaller if record["status"] == "ok" else None
        for later in batches[index + 1 :]:
            results.add("skipped", f"{tag}/b{later} (batch {batch_size} did not fit)")
        break
    return largest_ok


def bench_model(
    model: MaestroMAE,
    config: MAEConfig,
    labels: dict[str, Any],
    batches: list[int],
    per_mode: dict[str, list[int]],
    flops: float,
    args: argparse.Namespace,
    device: torch.device,
    results: Results,
    deadline: Deadline,
) -> None:
    """Every mode of one model (one size in one precision): timed batches, profiles, batch search."""
    size = labels["size"]
    optimizer = make_optimizer(model, device)
    base = pad_dates(synthetic_batch(config, batch_size=8, seed=0, device=device), args.padded_dates)
    profiles = [p.split(":") for p in args.profile]
    for mode in args.modes:
        if mode == "compile-full" and size not in args.full_sizes and not args.smoke:
            continue
        if mode == "compile-full" and not deadline.allows(FULL_COMPILE_S):
            results.add("skipped", f"{size}/{labels['precision']}/{mode} (budget)")
            continue
        fn = compile_model(model, mode, args.compile_mode)
        mode_labels = {**labels, "mode": mode}
        largest_ok = time_batches(
            fn, optimizer, config, per_mode.get(mode, batches), device, base, flops, args, deadline,
            mode_labels, results,
        )  # fmt: skip
        for spec in profiles:
            if spec[0] == size and (spec[2] if len(spec) > 2 else args.modes[0]) == mode:
                if not deadline.allows(40):
                    results.add("skipped", f"profile {':'.join(spec)}")
                    continue
                prof = profile(fn, optimizer, config, int(spec[1]), device, base)
                prof.update(mode_labels)
                print_profile(f"{size} {labels['precision']} {mode} batch {spec[1]}", prof)
                results.add("profiles", prof)
        if args.search and mode == args.modes[0] and largest_ok is not None:
            found = largest_batch(
                fn,
                optimizer,
                config,
                largest_ok,
                device,
                base,
                args.search_limit,
                deadline,
                args.bisect_steps,
            )
            found.update(mode_labels)
            results.add("search", found)
            log.info("largest batch %s: %s", mode_labels, found)
        if mode in REGIONS:
            uncompile(model)
        sys.stdout.flush()
    del optimizer, base
    free(device)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    deadline = Deadline(args.budget)
    meta = device_meta(device) | {
        "fusion": args.fusion,
        "peak_flops": args.peak_flops,
        "steps": args.steps,
        "warmup": args.warmup,
        "compile_mode": args.compile_mode,
        "precisions": args.precision,
        "fp8_min_features": args.fp8_min_features,
    }
    results = Results(args.json, meta)
    print(json.dumps(meta))
    per_size = {k: [int(b) for b in v.split(",")] for k, v in (item.split("=") for item in args.size_batches)}
    per_mode = {k: [int(b) for b in v.split(",")] for k, v in (item.split("=") for item in args.mode_batches)}
    if args.loader:  # first: a fixed ~1.5 min that the model matrix's budget checks then account for
        loader_bench(args, device, results, deadline)

    for size in args.sizes:
        config = make_config(size, args.fusion, args.smoke)
        plain = make_model(config, "bf16", device)
        # Counted on the plain model: FP8 runs report bf16-equivalent FLOPs and MFU.
        flops = flops_per_sample(plain, config, device)
        flops["params"] = sum(p.numel() for p in plain.parameters())
        flops["tokens"] = config.encoder.num_tokens
        results.add("flops", {size: flops})
        log.info(
            "%s: %.1f M params, %.1f GFLOP/sample (fwd+bwd), %d tokens/sample",
            size,
            flops["params"] / 1e6,
            flops["total"] / 1e9,
            config.encoder.num_tokens,
        )
        for spec in (a.split(":") for a in args.attention):
            if spec[0] == size and device.type == "cuda":
                result = attention_bench(plain, int(spec[1]), device)
                result["size"] = size
                results.add("attention", result)
                print_attention(result)
        batches = per_size.get(size, args.batch_sizes)
        for precision in args.precision:
            try:
                model = (
                    plain
                    if precision == "bf16"
                    else make_model(config, precision, device, args.fp8_min_features)
                )
            except ConfigError as error:  # e.g. no layer of this size reaches --fp8-min-features
                log.error("%s/%s: %s", size, precision, error)
                results.add("skipped", f"{size}/{precision}: {error}")
                continue
            labels = {"size": size, "precision": precision}
            bench_model(
                model, config, labels, batches, per_mode, flops["total"], args, device, results, deadline
            )
            del model
            free(device)
            if device.type == "cuda" and any(mode != "eager" for mode in args.modes):
                torch._dynamo.reset()  # the next model's graphs start from a clean cache
        del plain
        free(device)

    print_tables(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
