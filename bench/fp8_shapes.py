"""Which transformer blocks and linear layers of the MAE gain from FP8, one shape at a time.

    PYTHONPATH=. python bench/fp8_shapes.py --smoke                          # CPU, tiny model (~20 s)
    PYTHONPATH=. python bench/fp8_shapes.py --size medium --batch 192        # one H100 or H200, ~3 min

The whole-model FP8 step (``pretrain_throughput.py --precision fp8``) says only whether all of it
together gains. This bench finds where the time goes: one forward of the MAE on a synthetic batch
records the input shape of every transformer block and of every linear layer inside one (the
encoder streams see only their visible tokens, as in training), then each distinct shape is timed
alone, forward + backward under bf16 autocast, compiled: a ``Block`` of that width and token count
and a ``Linear`` of that size, in bf16 and converted by torchao's float8 training with each recipe
asked for (``tensorwise``, what ``trainer.precision: fp8`` uses; ``rowwise``). Each shape's time
is multiplied by how many modules of that shape one step runs, so the tables add up to the share of
a training step each part costs, and the last column says which precision is faster there.

Blocks are timed without an attention mask (the synthetic batch has every date valid), each
compiled with ``torch.compile`` (shapes after the first of a kind compile as dynamic, which keeps
the sweep to a few compilations). The step time is the median of ``--steps`` CUDA-event timings
after ``--warmup``. Results: a markdown table printed last, and ``--json`` (default
``$OUT/fp8_shapes.json`` when ``OUT`` is set), rewritten after every measurement.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.pretrain_throughput import Timer, device_meta
from maestro.models import EncoderConfig, MAEConfig, MaestroMAE
from maestro.models.synthetic import synthetic_batch, tiny_config
from maestro.models.transformer import Block
from maestro.training.fp8 import torchao_float8

log = logging.getLogger("bench.fp8_shapes")

RECIPES = ("tensorwise", "rowwise")
"""torchao float8 training recipes (``Float8LinearConfig.from_recipe_name``)."""


@dataclass(frozen=True, order=True)
class BlockShape:
    """A transformer block's input: ``batch`` sequences of ``tokens`` tokens of ``width``."""

    batch: int
    tokens: int
    width: int
    heads: int
    hidden: int

    def label(self) -> str:
        return f"{self.batch} x {self.tokens} x {self.width} (heads {self.heads}, MLP {self.hidden})"


@dataclass(frozen=True, order=True)
class LinearShape:
    """A linear layer's matrix product: ``rows`` tokens of ``in_features`` to ``out_features``."""

    rows: int
    in_features: int
    out_features: int

    def label(self) -> str:
        return f"{self.rows} x {self.in_features} -> {self.out_features}"


def capture_shapes(model: MaestroMAE, batch: dict, device: torch.device) -> tuple[Counter, Counter]:
    """How many blocks and block linear layers of each input shape one forward of ``model`` runs."""
    blocks: Counter = Counter()
    linears: Counter = Counter()
    handles = []

    def on_block(module: Block, args: tuple) -> None:
        x = args[0]
        hidden = module.mlp.fc1.out_features
        blocks[BlockShape(x.shape[0], x.shape[1], x.shape[2], module.attn.num_heads, hidden)] += 1

    def on_linear(module: nn.Linear, args: tuple) -> None:
        x = args[0]
        linears[LinearShape(x.numel() // x.shape[-1], module.in_features, module.out_features)] += 1

    for module in model.modules():
        if isinstance(module, Block):
            handles.append(module.register_forward_pre_hook(on_block))
            handles += [
                m.register_forward_pre_hook(on_linear) for m in module.modules() if isinstance(m, nn.Linear)
            ]
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            model(batch["inputs"], batch["times"], batch["valid"])
    finally:
        for handle in handles:
            handle.remove()
    return blocks, linears


def in_precision(module: nn.Module, precision: str) -> nn.Module:
    """A copy of ``module`` as it trains in ``precision``: bf16 as is, or a float8 recipe's layers."""
    module = copy.deepcopy(module)
    if precision == "bf16":
        return module
    float8 = torchao_float8()
    config = float8.Float8LinearConfig.from_recipe_name(precision)
    return float8.convert_to_float8_training(
        module, config=config, module_filter_fn=lambda m, _: isinstance(m, nn.Linear)
    )


def time_forward_backward(
    module: nn.Module, x: torch.Tensor, device: torch.device, compiled: bool, warmup: int, steps: int
) -> dict[str, float]:
    """Median milliseconds of forward + backward of ``module`` on ``x`` under bf16 autocast."""
    fn: Callable[[torch.Tensor], torch.Tensor] = torch.compile(module) if compiled else module
    x = x.detach().requires_grad_(True)
    grad: torch.Tensor | None = None

    def step() -> None:
        nonlocal grad
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = fn(x)
        if grad is None:
            grad = torch.randn_like(out)
        out.backward(grad)
        x.grad = None
        module.zero_grad(set_to_none=True)

    start = time.perf_counter()
    step()
    synchronize(device)
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        step()
    timer = Timer(device)
    for _ in range(steps):
        with timer.step():
            step()
        synchronize(device)  # each step alone: what one shape costs, not a pipeline of them
    return {"ms": statistics.median(timer.seconds()) * 1e3, "first_s": first}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    kind: str,
    shape: BlockShape | LinearShape,
    count: int,
    precisions: list[str],
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    """Every precision of one shape; an error (out of memory, a recipe the GPU lacks) is a result."""
    torch.manual_seed(0)
    if isinstance(shape, BlockShape):
        base: nn.Module = Block(shape.width, shape.heads, shape.hidden).to(device)
        x = torch.randn(shape.batch, shape.tokens, shape.width, device=device)
    else:
        base = nn.Sequential(nn.Linear(shape.in_features, shape.out_features)).to(device)
        x = torch.randn(shape.rows, shape.in_features, device=device)
    row: dict[str, Any] = {"kind": kind, "shape": asdict(shape), "label": shape.label(), "count": count}
    for precision in precisions:
        try:
            timing = time_forward_backward(
                in_precision(base, precision), x, device, args.compile, args.warmup, args.steps
            )
            row[precision] = {**timing, "per_step_ms": timing["ms"] * count}
        except Exception as error:  # noqa: BLE001 - a failed precision is reported, the sweep goes on
            row[precision] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
            log.error("%s %s %s: %s", kind, shape.label(), precision, row[precision]["error"])
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def table(rows: list[dict[str, Any]], kind: str, precisions: list[str]) -> str:
    """Markdown: one line per shape, ms per call and per step, the faster precision; totals last."""
    head = f"| {kind} | per step | " + " | ".join(f"{p} ms" for p in precisions) + " | fastest |"
    lines = [head, "|---|---:|" + "---:|" * len(precisions) + "---|"]
    totals = dict.fromkeys(precisions, 0.0)
    for row in (r for r in rows if r["kind"] == kind):
        cells, best = [], None
        for p in precisions:
            result = row.get(p, {})
            if "ms" in result:
                cells.append(f"{result['ms']:.3f}")
                totals[p] += result["per_step_ms"]
                best = p if best is None or result["ms"] < row[best]["ms"] else best
            else:
                cells.append("error" if "error" in result else "-")
        lines.append(f"| {row['label']} | {row['count']} | " + " | ".join(cells) + f" | {best or '-'} |")
    bf16 = totals.get("bf16") or None
    total_cells = [
        f"{t:.1f}" + (f" ({t / bf16:.2f}x)" if bf16 and p != "bf16" else "") for p, t in totals.items()
    ]
    lines.append("| **per step (ms)** | | " + " | ".join(total_cells) + " | |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="medium", help="encoder size of the MAE (default: medium)")
    p.add_argument("--fusion", default="group")
    p.add_argument("--batch", type=int, default=192, help="samples per training step (default: 192)")
    p.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    p.add_argument("--no-linears", dest="linears", action="store_false", help="time the blocks only")
    p.add_argument("--eager", dest="compile", action="store_false", help="no torch.compile")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument(
        "--budget", type=float, default=None, help="seconds; shapes that no longer fit are skipped"
    )
    p.add_argument(
        "--smoke", action="store_true", help="tiny model, batch 2, eager, on CPU: checks the script"
    )
    default_json = Path(os.environ["OUT"]) / "fp8_shapes.json" if "OUT" in os.environ else None
    p.add_argument("--json", type=Path, default=default_json)
    args = p.parse_args(argv)
    if args.smoke:
        args.batch, args.compile, args.warmup, args.steps = 2, False, 1, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 64
    encoder = EncoderConfig(size=args.size, fusion=args.fusion)
    config = tiny_config(fusion=args.fusion) if args.smoke else MAEConfig(encoder=encoder)
    torch.manual_seed(0)
    model = MaestroMAE(config).to(device)
    blocks, linears = capture_shapes(
        model, synthetic_batch(config, batch_size=args.batch, device=device), device
    )
    del model
    precisions = ["bf16", *args.recipes]
    meta = {
        **device_meta(device),
        "size": "tiny" if args.smoke else args.size,
        "batch": args.batch,
        "compiled": args.compile,
    }
    results: dict[str, Any] = {"meta": meta, "rows": [], "skipped": []}
    work = [("block", s, c) for s, c in sorted(blocks.items())]
    work += [("linear", s, c) for s, c in sorted(linears.items())] if args.linears else []
    end = None if args.budget is None else time.monotonic() + args.budget
    for kind, shape, count in work:
        if end is not None and time.monotonic() > end:
            results["skipped"].append(f"{kind} {shape.label()} (budget)")
            continue
        row = measure(kind, shape, count, precisions, args, device)
        results["rows"].append(row)
        log.info("%s %s x%d: %s", kind, shape.label(), count, {p: row[p].get("ms") for p in precisions})
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))
    print(
        f"\n{meta['size']}, batch {args.batch}, {'compiled' if args.compile else 'eager'}, {meta.get('gpu', 'cpu')}\n"
    )
    print(table(results["rows"], "block", precisions))
    if args.linears:
        print("\n" + table(results["rows"], "linear", precisions))
    for item in results["skipped"]:
        print(f"skipped: {item}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
