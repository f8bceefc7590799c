"""MAESTRO vs the supervised Swin-UTAE baseline: same data, same ``finetune`` run, same metrics.

    PYTHONPATH=. python bench/compare.py                       # toy data, both models, CPU ok (~minutes)
    PYTHONPATH=. python bench/compare.py --params              # full-size parameter counts vs the paper
    PYTHONPATH=. python bench/compare.py --throughput          # LC-A / LPIS-I training samples/s (GPU)

Default mode: writes a toy FLAIR-HUB tree (``shards toy``) and its shards (``shards build``) in a
work folder, then trains and tests both models with :func:`finetune.cli.run` on the same shards,
task, optimiser and epochs, and prints one side-by-side table: test mIoU and OA, parameters and
training samples/s (forward + backward + optimiser step of the training batches, data loading
excluded, the first two batches skipped). ``--scale toy`` (default) uses small models so a CPU
finishes in minutes (MAESTRO width 64, depth 3 from random weights unless ``--maestro-init``;
a narrow Swin and U-TAE); ``--scale full`` the paper's sizes (MAESTRO medium, Swin-B).

``--params``: both tables of the FLAIR-HUB paper, our parameter count of every configuration at full
size (built on the meta device, no weights) against the published one. ``--throughput``: training
step samples/s of LC-A and LPIS-I at full size on synthetic batches (bf16 autocast, fused AdamW),
per batch size, for Swin-UTAE and for MAESTRO (medium, uperfuse) on the same inputs, eager and/or
with each network's forward compiled (``--modes eager compile``). Each measurement runs in a child
process of its own (``--no-isolate`` keeps them in one): a compile that aborts the process (torch
2.11 compiling Swin-UTAE's GroupNorm on an H200 did, with a C++ error) is then one row reported as
crashed, with its signal and the end of its stderr, and each network compiles in a fresh process.
Tables print as markdown; the results also go to ``$OUT/compare.json`` when ``OUT`` is set (or
``--json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from bench.pretrain_throughput import Timer, autocast, device_meta, free, is_oom, make_batch, make_optimizer
from finetune.config import EvalConfig, FinetuneConfig, FinetuneTrainerConfig, ModelConfig, TaskConfig
from maestro.models.baseline import BaselineOptions, SwinConfig, SwinUTAE, UTAEConfig
from maestro.models.baseline.paper import PAPER_CONFIGURATIONS, baseline_config, count_parameters
from maestro.models.config import EncoderConfig
from maestro.models.segmenter import MaestroSegmenter
from maestro.models.segmenter_config import SegmenterConfig
from maestro.training.config import DataConfig
from maestro.training.optim import OptimConfig

log = logging.getLogger("compare")
TOY_OPTIONS = BaselineOptions(
    swin=SwinConfig(
        name="swin_tiny_patch4_window7_224",
        embed_dim=32,
        depths=(1, 1, 2, 1),
        num_heads=(1, 2, 4, 8),
        window_size=4,
    ),
    utae=UTAEConfig(
        encoder_widths=(16, 16, 32, 32),
        decoder_widths=(16, 16, 32, 32),
        out_widths=(16,),
        num_heads=4,
        d_model=64,
        d_k=4,
    ),
    decoder_channels=32,
)


class StepSpeed(L.Callback):
    """Training samples/s of the step itself (device-synchronised), and the model's parameter count."""

    def __init__(self, skip: int = 2):
        self.skip, self.seconds, self.samples, self.params = skip, 0.0, 0, 0
        self._start = 0.0
        self._seen = 0

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.params = sum(p.numel() for p in module.model.parameters())

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, index: int
    ) -> None:
        self._sync(module)
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, index: int
    ) -> None:
        self._sync(module)
        self._seen += 1
        if self._seen > self.skip:
            self.seconds += time.perf_counter() - self._start
            self.samples += next(iter(batch["inputs"].values())).shape[0]

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds else float("nan")


# ------------------------------------------------------------------------------ toy comparison
def toy_shards(work: Path, patches: int, modalities: list[str], task: str) -> Path:
    """``shards toy`` + ``shards build`` (train, val, test) into ``work``, reused when already there."""
    from shards.cli import main as shards

    root, out = work / "toy", work / "shards"
    if not root.exists() and shards(["toy", "--out", str(root), "--patches", str(patches)]) != 0:
        raise SystemExit("shards toy failed")
    if not (out / "manifest.json").exists():
        code = shards(
            [
                "build",
                "--root",
                str(root),
                "--split",
                "train",
                "val",
                "test",
                "--out",
                str(out),
                "--modalities",
                *modalities,
                task,
                "--max-count",
                "16",
                "--no-progress",
            ]
        )
        if code != 0:
            raise SystemExit("shards build failed")
    return out


def model_section(name: str, args: argparse.Namespace) -> ModelConfig:
    modalities = tuple(args.modalities)
    if name == "swin-utae":
        options = TOY_OPTIONS if args.scale == "toy" else BaselineOptions()
        return ModelConfig(
            architecture="swin-utae", modalities=modalities, pretrained=args.pretrained, baseline=options
        )
    if args.maestro_init != "random":
        return ModelConfig(init=args.maestro_init, modalities=modalities)
    size = {"width": 64, "depth": 3, "inter_depth": 1} if args.scale == "toy" else {}
    encoder = EncoderConfig(modalities=modalities, size="tiny" if args.scale == "toy" else "medium", **size)
    return ModelConfig(init="random", encoder=encoder, decoder_channels=64 if args.scale == "toy" else 256)


def compare(args: argparse.Namespace) -> dict[str, Any]:
    from finetune.cli import run  # reads GeoTIFF predictions through rasterio: only this mode needs it

    work = args.workdir or Path(tempfile.mkdtemp(prefix="maestro-compare-"))
    shards = toy_shards(work, args.patches, args.modalities, args.task)
    data = DataConfig(
        train=str(shards),
        val=str(shards),
        test=str(shards),
        batch_size=args.batch_size,
        num_workers=args.workers,
    )
    runs = work / "runs" / time.strftime("%Y%m%d-%H%M%S")  # toy data is reused, runs never are
    rows = []
    for name in args.models:
        config = FinetuneConfig(
            data=data,
            task=TaskConfig(args.task, args.level),
            model=model_section(name, args),
            optim=OptimConfig(base_lr=args.lr, end_fraction=0.5),
            trainer=FinetuneTrainerConfig(
                output_dir=runs / name,
                max_epochs=args.epochs,
                accelerator=args.accelerator,
                devices=1,
                ema_decay=args.ema,
                log_every_n_steps=1,
                seed=args.seed,
            ),
            eval=EvalConfig(num_figures=2),
        )
        speed = StepSpeed()
        L.seed_everything(args.seed, workers=True)
        scores = run(config, callbacks=[speed])
        rows.append(
            {
                "model": name,
                "miou": scores.miou,
                "oa": scores.overall_accuracy,
                "params_m": speed.params / 1e6,
                "samples_per_s": speed.samples_per_s,
            }
        )
        log.info("%s", rows[-1])
    print(
        f"\nToy {args.task} level {args.level}, inputs {','.join(args.modalities)}, {args.epochs} epochs, "
        f"scale {args.scale}, {args.accelerator}\n"
    )
    print("| model | test mIoU | test OA | parameters (M) | training samples/s |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['model']} | {100 * row['miou']:.1f} | {100 * row['oa']:.1f} | {row['params_m']:.2f} | "
            f"{row['samples_per_s']:.1f} |"
        )
    return {"mode": "compare", "work": str(work), "rows": rows}


# ------------------------------------------------------------------------------ parameters
def parameters() -> dict[str, Any]:
    rows = []
    for key, row in PAPER_CONFIGURATIONS.items():
        count = count_parameters(baseline_config(key)) / 1e6
        rows.append(
            {
                "config": key,
                "inputs": list(row.modalities),
                "params_m": count,
                "paper_m": row.params_m,
                "difference": count / row.params_m - 1,
            }
        )
    print("| configuration | inputs | ours (M) | paper (M) | difference |")
    print("|---|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['config']} | {', '.join(row['inputs'])} | {row['params_m']:.2f} | {row['paper_m']:.1f} | "
            f"{100 * row['difference']:+.1f} % |"
        )
    return {"mode": "params", "rows": rows}


# ------------------------------------------------------------------------------ throughput
def network(name: str, key: str, device: torch.device) -> tuple[torch.nn.Module, EncoderConfig, int]:
    config = baseline_config(key, pretrained=False)
    if name == "swin-utae":
        return SwinUTAE(config).to(device), config.encoder, config.total_classes
    segmenter = SegmenterConfig(
        encoder=config.encoder, num_classes=config.total_classes, label_size=config.label_size
    )
    return MaestroSegmenter(segmenter).to(device), config.encoder, config.total_classes


def measure(
    name: str, key: str, batch_size: int, mode: str, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    record: dict[str, Any] = {"model": name, "config": key, "batch": batch_size, "mode": mode}
    try:
        model, encoder, classes = network(name, key, device)
        record["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
        if mode == "compile":
            model.compile()  # the module's forward; the loss and optimizer step stay eager, as in finetune
        batch = make_batch(encoder, batch_size, device)
        labels = torch.randint(0, classes, (batch_size, 512, 512), device=device)
        optimizer = make_optimizer(model, device)

        def step() -> None:
            # ``padded`` read on the host, as finetune passes it: no device sync, no graph break
            with autocast(device):
                output = model(batch["inputs"], batch["times"], batch["valid"], padded=batch["padded"])
            F.cross_entropy(output["logits"].float(), labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        step()  # compiles in compile mode
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        record["first_step_s"] = time.perf_counter() - started
        for _ in range(args.warmup - 1):
            step()
        timer = Timer(device)
        for _ in range(args.steps):
            with timer.step():
                step()
        times = sorted(timer.seconds())
        median = times[len(times) // 2]
        record.update(status="ok", step_ms=1e3 * median, samples_per_s=batch_size / median)
        if device.type == "cuda":
            record["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    except Exception as error:  # noqa: BLE001 - an OOM is a result; anything else is reported and logged
        record["status"] = "oom" if is_oom(error) else f"error: {type(error).__name__}: {str(error)[:300]}"
        if not is_oom(error):
            log.exception("%s %s batch %d failed", name, key, batch_size)
    finally:
        free(device)
    return record


def run_child(
    command: list[str],
    result: Path,
    record: dict[str, Any],
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> list[dict[str, Any]]:
    """Run ``command``, a process that writes ``{"runs": [...]}`` to ``result``, and return its runs;
    a process that dies first (an abort, a segfault, a kill) gives ``record`` with status
    ``crashed``, how it ended and the last lines of its stderr, so the other measurements go on.
    One still running after ``timeout`` seconds (a compile that does not end) is killed and gives
    ``timed out``, with its stderr so far."""
    try:
        done = subprocess.run(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as expired:
        stderr = (
            expired.stderr.decode(errors="replace") if isinstance(expired.stderr, bytes) else expired.stderr
        )
        return [{**record, "status": f"timed out after {timeout:.0f} s", "error": _tail(stderr or "")}]
    if done.returncode == 0 and result.is_file():
        return json.loads(result.read_text())["runs"]
    ended = (
        f"signal {signal.Signals(-done.returncode).name}"
        if done.returncode < 0
        else f"exit {done.returncode}"
    )
    return [{**record, "status": f"crashed ({ended})", "error": _tail(done.stderr)}]


def _tail(stderr: str, lines: int = 5) -> str:
    """The last non-blank lines of a child's stderr, joined on one line for a table cell."""
    return " | ".join([line for line in stderr.splitlines() if line.strip()][-lines:])[-600:]


def measure_isolated(
    name: str, key: str, batch_size: int, mode: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """:func:`measure` in a child process of this script (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="compare-") as folder:
        result = Path(folder) / "run.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--throughput", "--no-isolate"]
        command += ["--configs", key, "--models", name, "--modes", mode, "--batch-sizes", str(batch_size)]
        command += ["--warmup", str(args.warmup), "--steps", str(args.steps), "--json", str(result)]
        record = {"model": name, "config": key, "batch": batch_size, "mode": mode}
        # the script imports the repository's packages (bench, maestro): its root on the child's path
        root = str(Path(__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        }
        return run_child(command, result, record, env, timeout=args.child_timeout)


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    runs: list[dict[str, Any]] = []
    for key in args.configs:
        for name in args.models:
            for mode in args.modes:
                for size in args.batch_sizes:
                    if args.isolate:
                        runs.extend(measure_isolated(name, key, size, mode, args))
                    else:
                        runs.append(measure(name, key, size, mode, args, device))
                    log.info("%s", runs[-1])
                    if args.json is not None:  # after every run: a run cut short keeps what it measured
                        args.json.parent.mkdir(parents=True, exist_ok=True)
                        args.json.write_text(json.dumps({"mode": "throughput", "runs": runs}, indent=2))
                    if mode == "compile" and not args.isolate:
                        torch._dynamo.reset()
    print(
        "| configuration | model | mode | batch | samples/s | step ms | peak GiB | params M | first step s |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        if r.get("status") != "ok":
            print(
                f"| {r['config']} | {r['model']} | {r['mode']} | {r['batch']} | {r.get('status')} "
                f"{r.get('error', '')[:80]} | | | | |"
            )
            continue
        peak = f"{r['peak_mem_gib']:.1f}" if "peak_mem_gib" in r else "n/a"  # CUDA only
        print(
            f"| {r['config']} | {r['model']} | {r['mode']} | {r['batch']} | {r['samples_per_s']:.1f} | "
            f"{r['step_ms']:.1f} | {peak} | {r['params_m']:.1f} | {r['first_step_s']:.0f} |"
        )
    return {"mode": "throughput", "meta": device_meta(device), "runs": runs}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--params", action="store_true", help="parameter counts of the paper's configurations")
    mode.add_argument("--throughput", action="store_true", help="LC-A / LPIS-I training samples/s, synthetic")
    parser.add_argument(
        "--models", nargs="+", default=["maestro", "swin-utae"], choices=["maestro", "swin-utae"]
    )
    parser.add_argument("--task", default="lpis", choices=["lc", "lpis"])
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--modalities", nargs="+", default=["spot", "s2", "s1_asc", "s1_des"])
    parser.add_argument("--scale", choices=["toy", "full"], default="toy")
    parser.add_argument(
        "--maestro-init", default="random", help="MAESTRO weights: random or any finetune --init"
    )
    parser.add_argument("--pretrained", action="store_true", help="ImageNet Swins (needs network or a cache)")
    parser.add_argument("--patches", type=int, default=64, help="toy patches (split into train/val/test)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3, help="base lr of both runs (one recipe for both)")
    parser.add_argument("--ema", type=float, default=0.9)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="toy data and runs (default: a new temporary folder)")
    parser.add_argument(
        "--configs", nargs="+", default=["LC-A", "LPIS-I"], help="--throughput: configurations"
    )
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[4, 8, 16], help="--throughput")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=["eager", "compile"],
        default=["eager"],
        help="--throughput: eager, and/or each model's forward under torch.compile",
    )
    parser.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--throughput: each measurement in a child process (a crash is one reported row)",
    )
    parser.add_argument(
        "--child-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="--throughput, isolated: a measurement still running after this is killed and reported",
    )
    parser.add_argument("--warmup", type=int, default=3, help="--throughput")
    parser.add_argument("--steps", type=int, default=10, help="--throughput")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(os.environ["OUT"]) / "compare.json" if os.environ.get("OUT") else None,
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = parameters() if args.params else throughput(args) if args.throughput else compare(args)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
