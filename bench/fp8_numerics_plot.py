"""Loss curves of the FP8 numerics run side by side: bf16 and FP8 pretraining from the same seed.

    PYTHONPATH=. python bench/fp8_numerics_plot.py docs/fp8_numerics_loss.csv --out docs/fp8_numerics.png

Reads the ``step, bf16_loss, fp8_loss`` CSV that ``bench/fp8_device_run.sh`` writes (phase
``numerics``; the H100 run of BENCHMARKS.md is kept as docs/fp8_numerics_loss.csv) and draws both
training losses (a running mean over ``--window`` logged points, the raw points faint) and, below,
the FP8 run's relative difference to bf16 on the steps both logged. Prints, as a markdown table,
the mean loss of each run over each of ``--ranges`` (1-based optimizer steps, the CSV's 0-based
``step`` + 1) and over the last fifth of the common steps, and their ratio.
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from maestro.evaluation.figures import save_figure

log = logging.getLogger("fp8_numerics_plot")


def read_losses(path: Path) -> dict[str, dict[int, float]]:
    """``{"bf16": {step: loss}, "fp8": {step: loss}}`` from the device script's CSV."""
    losses: dict[str, dict[int, float]] = {"bf16": {}, "fp8": {}}
    with path.open() as handle:
        for row in csv.DictReader(handle):
            for name in losses:
                if row[f"{name}_loss"]:
                    losses[name][int(row["step"])] = float(row[f"{name}_loss"])
    return losses


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each point (fewer at the start)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(values) + 1) - counts]) / counts


def range_rows(losses: dict[str, dict[int, float]], ranges: list[tuple[int, int]]) -> list[str]:
    """Markdown rows ``| first-last | bf16 | fp8 | fp8 / bf16 - 1 |`` over the steps both runs logged
    in each 1-based range (ranges with no such step are left out), then the last fifth."""
    common = sorted(set(losses["bf16"]) & set(losses["fp8"]))
    spans = [(f"{lo}-{hi}", [s for s in common if lo <= s + 1 <= hi]) for lo, hi in ranges]
    tail = common[-max(len(common) // 5, 1) :]
    spans.append((f"last fifth ({tail[0] + 1}-{tail[-1] + 1})", tail))
    rows = ["| steps | bf16 loss | FP8 loss | FP8 / bf16 - 1 |", "|---|---:|---:|---:|"]
    for label, steps in spans:
        if steps:
            a = float(np.mean([losses["bf16"][s] for s in steps]))
            b = float(np.mean([losses["fp8"][s] for s in steps]))
            rows.append(f"| {label} | {a:.4f} | {b:.4f} | {100 * (b / a - 1):+.2f} % |")
    return rows


def parse_range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    try:
        return int(first), int(last)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a range is FIRST-LAST, e.g. 501-1000, got {text!r}") from None


def plot(losses: dict[str, dict[int, float]], window: int) -> Figure:
    figure = Figure(figsize=(8, 6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    for name, colour in (("bf16", "tab:blue"), ("fp8", "tab:orange")):
        steps = np.array(sorted(losses[name]))
        values = np.array([losses[name][s] for s in steps])
        top.plot(steps, values, color=colour, alpha=0.2, linewidth=0.8)
        top.plot(steps, running_mean(values, window), color=colour, label=f"{name} (mean of {window})")
    top.set_ylabel("training loss")
    top.legend()
    top.grid(alpha=0.3)
    common = np.array(sorted(set(losses["bf16"]) & set(losses["fp8"])))
    ratio = np.array([losses["fp8"][s] / losses["bf16"][s] - 1 for s in common])
    bottom.plot(common, 100 * running_mean(ratio, window), color="black")
    bottom.axhline(0, color="grey", linewidth=0.8)
    bottom.set_ylabel("fp8 / bf16 - 1 (%)")
    bottom.set_xlabel("optimizer step")
    bottom.grid(alpha=0.3)
    return figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("csv", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/fp8_numerics.png"))
    parser.add_argument("--window", type=int, default=20, help="logged points per running mean")
    parser.add_argument(
        "--ranges",
        nargs="+",
        type=parse_range,
        default=[(1, 100), (101, 300), (301, 500), (501, 1000), (1001, 1500), (1501, 2000)],
        help="1-based step ranges of the table, FIRST-LAST each",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    losses = read_losses(args.csv)
    common = sorted(set(losses["bf16"]) & set(losses["fp8"]))
    if len(common) < 2:
        raise SystemExit(f"{args.csv}: fewer than two steps logged by both runs")
    print("\n".join(range_rows(losses, args.ranges)))
    log.info("wrote %s", save_figure(plot(losses, args.window), args.out, dpi=120))


if __name__ == "__main__":
    main()
