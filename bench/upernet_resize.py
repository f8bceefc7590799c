"""smp's UPerNet decoder against MAESTRO's, whose bilinear resizes are matrix products.

    PYTHONPATH=. python bench/upernet_resize.py --smoke          # CPU, tiny shapes (~30 s)
    PYTHONPATH=. python bench/upernet_resize.py                  # one H100 or H200, ~2 min

Both decoders hold the same weights (:class:`~maestro.models.heads.uperfuse.MatmulUPerNetDecoder`
subclasses smp's and changes only its forward), so the difference is the resizes alone: smp's
``F.interpolate``, whose backward on the GPU is a scatter-add, against two matrix products each
way. The input is the uperfuse head's pyramid at the fine-tuning defaults: ``--batch`` 64, the
medium encoder's 768 channels at 128, 64, 32 and 16 px, a 256-channel decoder. The three coarser
levels are average pools of the finest, so gradients flow to one input as they flow to the
encoder in training (the pools cost the same in both rows). Forward + backward under bf16
autocast, compiled unless ``--modes`` says otherwise; median of ``--steps`` after ``--warmup``.
Results: a markdown table and ``--json`` (default ``$OUT/upernet_resize.json`` when ``OUT`` is set).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
from torch import Tensor, nn

from bench.fp8_shapes import time_forward_backward
from bench.pretrain_throughput import device_meta
from maestro.models.heads.options import PYRAMID_LEVELS
from maestro.models.heads.uperfuse import upernet, upernet_features

log = logging.getLogger("bench.upernet_resize")


class FromFinest(nn.Module):
    """The finest pyramid level in, the decoder's features out: coarser levels are 2x average pools."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = decoder

    def forward(self, finest: Tensor) -> Tensor:
        levels = [finest]
        for _ in range(PYRAMID_LEVELS - 1):
            levels.append(F.avg_pool2d(levels[-1], kernel_size=2))
        return self.decoder(upernet_features(levels))


def decoders(channels: int, decoder_channels: int) -> dict[str, nn.Module]:
    """``{"smp": smp's decoder, "matmul": MAESTRO's}`` with the same weights."""
    ours = upernet((channels,) * PYRAMID_LEVELS, decoder_channels)
    smp = UPerNetDecoder(
        encoder_channels=(0, 0, *(channels,) * PYRAMID_LEVELS),
        encoder_depth=PYRAMID_LEVELS + 1,
        decoder_channels=decoder_channels,
    )
    smp.load_state_dict(ours.state_dict())
    return {"smp": smp, "matmul": ours}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=768, help="encoder width (medium: 768)")
    parser.add_argument("--size", type=int, default=128, help="finest level's side (4 x the 32-cell grid)")
    parser.add_argument("--decoder-channels", type=int, default=256)
    parser.add_argument("--modes", nargs="+", choices=["eager", "compile"], default=["compile"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on CPU, eager, for the tests")
    default_json = Path(os.environ["OUT"]) / "upernet_resize.json" if "OUT" in os.environ else None
    parser.add_argument("--json", type=Path, default=default_json)
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.channels, args.size, args.decoder_channels = 2, 8, 32, 16
        args.modes, args.warmup, args.steps = ["eager"], 1, 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result: dict[str, Any] = {
        "meta": device_meta(device),
        "args": vars(args) | {"json": str(args.json)},
        "rows": [],
    }
    torch.manual_seed(0)
    finest = torch.randn(args.batch, args.channels, args.size, args.size, device=device)
    for mode in args.modes:
        for name, decoder in decoders(args.channels, args.decoder_channels).items():
            module = FromFinest(decoder).to(device)
            timing = time_forward_backward(module, finest, device, mode == "compile", args.warmup, args.steps)
            row = {"decoder": name, "mode": mode, **timing}
            log.info("%s %s: %.2f ms (first step %.1f s)", name, mode, timing["ms"], timing["first_s"])
            result["rows"].append(row)
            if args.json is not None:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(result, indent=2))
            del module
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(f"| decoder | mode | forward + backward ms (batch {args.batch}) | vs smp |")
    print("|---|---|---:|---:|")
    for row in result["rows"]:
        base = next(r["ms"] for r in result["rows"] if r["mode"] == row["mode"] and r["decoder"] == "smp")
        print(f"| {row['decoder']} | {row['mode']} | {row['ms']:.2f} | {row['ms'] / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
