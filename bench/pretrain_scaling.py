"""The real ``pretrain`` command at full size on GPUs: end-to-end samples/s against the synthetic
step rate, and how it scales over GPUs and "nodes".

Builds toy FLAIR-HUB shards at the real 512 px shapes (``shards toy`` + ``shards build``), then
runs, each as its own process tree exactly as a user launches it:

* ``synthetic``: ``bench/pretrain_throughput.py`` on batches already on the GPU (the ceiling), with
  padded dates like the toy shards' short series (``--padded-dates``);
* ``single``: ``pretrain`` on one GPU (real shard loader, EMA, logging, compile);
* ``ddp``: ``torchrun --nproc-per-node N pretrain --strategy ddp`` on N GPUs of the host;
* ``nodes``: N ``torchrun --nnodes N`` launchers of one GPU each (``CUDA_VISIBLE_DEVICES``),
  meeting at a localhost rendezvous, as N cluster nodes would;
* ``fsdp``: the ``large`` model under ``--strategy fsdp`` on N GPUs.

Samples/s come from the run's own ``perf/samples_per_sec`` log (one GPU sync per logging window),
over the windows after ``--skip-steps`` (compilation, loader warm-up). Scaling efficiency is the
N-GPU rate over N times the one-GPU rate with the same per-GPU batch and workers.

    python bench/pretrain_scaling.py --phases data synthetic single ddp nodes fsdp   # a 2-GPU host
    python bench/pretrain_scaling.py --smoke --phases data single                     # CPU, ~2 min

With ``--profile-seconds N`` the one-GPU run is also sampled with ``py-spy`` (if installed) for N
seconds after its first metrics are written, and the script prints the share of the trainer's main
thread spent in each function (inclusive): how the trainer-process costs in BENCHMARKS.md were found.

With ``--gpu-profile N`` every ``pretrain`` run records N more steps after the timed ones with
``torch.profiler`` on each rank (``trainer.profile_steps``) and the synthetic step is profiled the
same way: the script prints the device time per kernel class of the synthetic step and the one-GPU
run side by side (extra device work such as EMA, input scaling and copies shows directly) and how
busy each rank's GPU was in each run (idle gaps: input waits, or a rank waiting at the all-reduce).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "pretrain" / "flairhub_medium.yaml"
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
"""NVLink multicast stays off (shared hosts); set in every process this script starts."""
SMOKE_MODEL = [
    "model.encoder.size=tiny",
    "model.encoder.width=64",
    "model.encoder.depth=2",
    "model.encoder.inter_depth=1",
    "model.encoder.overrides.aerial.patch_size=128",
    "model.encoder.overrides.dem.patch_size=128",
    "model.decoder_width=32",
    "model.decoder_depth=1",
]

log = logging.getLogger("pretrain_scaling")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, **SAFE_ENV, "PYTHONUNBUFFERED": "1", **extra}


def _threads(args: argparse.Namespace) -> dict[str, str]:
    """``OMP_NUM_THREADS`` for the trainer processes when ``--omp-threads`` is given. Unset,
    ``torchrun`` sets 1 per process while a plain ``pretrain`` keeps torch's default (the
    physical cores), and the page-locked copy of every batch (``Tensor.copy_``) runs on that many
    threads. (8 threads per DDP process did not make two GPUs faster: BENCHMARKS.md.)"""
    return {"OMP_NUM_THREADS": str(args.omp_threads)} if args.omp_threads else {}


def _run(command: list[str], log_file: Path, env: dict[str, str] | None = None) -> None:
    log.info("$ %s", " ".join(command))
    with log_file.open("w") as out:
        subprocess.run(command, check=True, stdout=out, stderr=subprocess.STDOUT, env=env or _env(), cwd=REPO)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_data(args: argparse.Namespace) -> None:
    root, shards = args.work / "flairhub", args.work / "shards"
    if (shards / "manifest.json").is_file():
        return
    start = time.perf_counter()
    cli = [sys.executable, "-m", "shards.cli"]
    _run([*cli, "toy", "--out", str(root), "--patches", str(args.patches)], args.work / "toy.log")
    _run(
        [*cli, "build", "--root", str(root), "--split", "train", "val", "--out", str(shards)]
        + ["--max-count", "8", "--workers", str(os.cpu_count() or 2), "--no-progress"],
        args.work / "build.log",
    )
    log.info("toy shards (%d patches) in %.0f s", args.patches, time.perf_counter() - start)


def synthetic(args: argparse.Namespace) -> dict[str, Any]:
    out, size = args.work / "synthetic.json", "tiny" if args.smoke else "medium"  # --smoke: tiny there
    command = [sys.executable, "bench/pretrain_throughput.py", "--sizes", "medium", "--modes", "compile-full"]
    command += ["--batch-sizes", str(args.batch_size), "--no-search", "--no-loader", "--json", str(out)]
    command += ["--padded-dates", str(args.padded_dates), "--precision", args.precision]
    command += ["--profile", f"{size}:{args.batch_size}:compile-full"] if args.gpu_profile else []
    command += ["--smoke"] if args.smoke else []
    _run(command, args.work / "synthetic.log")
    return synthetic_result(json.loads(out.read_text()), size, args.work / "synthetic.log")


def synthetic_result(results: dict[str, Any], size: str, log_file: Path) -> dict[str, Any]:
    """The synthetic step's rate from ``bench/pretrain_throughput.py``'s JSON: its timed run (at a
    smaller batch when the asked one did not fit, which ``batch`` and ``requested_batch`` say), or
    a RuntimeError naming every failed batch and its error when none ran."""
    runs = results.get("runs", [])
    run = next((r for r in runs if r["status"] == "ok"), None)
    if run is None:
        failed = "; ".join(f"batch {r['batch']}: {r['status']} {r.get('error', '')}".strip() for r in runs)
        raise RuntimeError(f"synthetic step: no batch ran ({failed or 'no run recorded'}); see {log_file}")
    flops = results["flops"][size]["total"]
    result = {
        "samples_per_s": run["samples_per_s"],
        "mfu": run["mfu"],
        "gflop_per_sample": flops / 1e9,
        "batch": run["batch"],
        **({"requested_batch": run["requested_batch"]} if "requested_batch" in run else {}),
        **({"peak_memory_gib": round(run["peak_mem_gib"], 1)} if "peak_mem_gib" in run else {}),
    }
    for prof in results.get("profiles", [])[:1]:
        result["device_profile"] = {
            "wall_ms_per_step": prof["wall_ms_per_step"],
            "device_busy": prof["gpu_busy_fraction"],
            "classes_ms_per_step": prof["classes_ms_per_step"],
        }
    return result


def _pretrain_args(
    args: argparse.Namespace, out: Path, size: str, strategy: str, devices: int, nodes: int
) -> list:
    shards = args.work / "shards"
    overrides = [
        f"data.train={shards}",
        "data.val=null",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        f"data.batches_per_epoch={args.steps + args.gpu_profile}",
        f"model.encoder.size={size}",
        "trainer.max_epochs=1",
        f"trainer.compile={str(args.compile and strategy != 'fsdp').lower()}",
        f"trainer.log_every_n_steps={args.window}",
        "trainer.checkpoint_every_n_steps=1000000",
        "trainer.reconstruction_every_n_steps=0",
        *(["trainer.precision=fp8"] if args.precision == "fp8" else []),
        *(SMOKE_MODEL if args.smoke else []),
        # --gpu-profile: N steps after the timed ones, on every rank, outside the timed windows
        *(
            [f"trainer.profile_steps=[{args.steps},{args.steps + args.gpu_profile}]"]
            if args.gpu_profile
            else []
        ),
        *args.override,
    ]
    return [
        *("-m", "pretrain.cli", "--config", str(CONFIG), "--output-dir", str(out)),
        *("--strategy", strategy, "--devices", str(devices), "--num-nodes", str(nodes)),
        *("--accelerator", "cpu" if args.smoke else "gpu"),
        *overrides,
    ]


def measured(out: Path, skip_steps: int, last_step: int | None = None) -> dict[str, Any]:
    """Samples/s over the logged windows ending past ``skip_steps`` (and by ``last_step``): total
    samples / total time; with the share of that time the training loop waited for input (rank 0,
    and the slowest-fed rank's) and, on GPUs, the peak memory of the most loaded rank."""
    rows = []
    for path in sorted(out.glob("csv/version_*/metrics.csv")):
        with path.open() as f:
            rows += [r for r in csv.DictReader(f) if r.get("perf/samples_per_sec")]
    windows = sorted(
        (
            int(r["step"]),
            float(r["perf/samples_per_sec"]),
            float(r["perf/step_seconds"]),
            float(r.get("perf/input_wait_fraction") or "nan"),
            float(r.get("perf/input_wait_fraction_max") or r.get("perf/input_wait_fraction") or "nan"),
        )
        for r in rows
        if last_step is None or int(r["step"]) <= last_step
    )
    timed = samples = steps = waited = waited_max = 0.0
    for (previous, *_), (step, rate, step_seconds, wait, wait_max) in zip(windows, windows[1:], strict=False):
        if previous >= skip_steps:
            seconds = step_seconds * (step - previous)
            timed, samples, steps = timed + seconds, samples + rate * seconds, steps + step - previous
            waited, waited_max = waited + wait * seconds, waited_max + wait_max * seconds
    if not steps:
        raise RuntimeError(f"{out}: no logged window past step {skip_steps}; run more steps")
    peaks = [float(r["perf/peak_memory_gib"]) for r in rows if r.get("perf/peak_memory_gib")]
    return {
        "samples_per_s": samples / timed,
        "steps_timed": int(steps),
        "input_wait_fraction": round(waited / timed, 3),
        "input_wait_fraction_max": round(waited_max / timed, 3),
        "window_rates": [round(rate, 1) for _, rate, *_ in windows],
        **({"peak_memory_gib": round(max(peaks), 1)} if peaks else {}),
    }


def host_profile(samples: Path, top: int = 15) -> list[tuple[str, float]]:
    """Inclusive share of the trainer's main-thread samples per function, from ``py-spy record
    --format raw`` (one line per distinct stack: frames joined by ``;``, then a count).

    Frames on (nearly) every stack (the CLI, the fit loop) are skipped, and of a chain of wrappers
    that always appear together only the innermost is kept: the ``top`` functions that remain say
    where the host time goes."""
    counts: Counter[str] = Counter()
    depth: dict[str, int] = {}
    total = 0
    for line in samples.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        thread, *frames = stack.split(";")
        if not number.isdigit() or "MainThread" not in thread or not frames:
            continue  # other threads; the main thread outside Python (interpreter start, exit)
        frames = [frame.split(" (")[0] for frame in frames]  # drop "(file.py:line)"
        total += int(number)
        for level, frame in enumerate(frames):
            depth[frame] = max(depth.get(frame, 0), level)
        for frame in set(frames):
            counts[frame] += int(number)
    innermost: dict[int, str] = {}
    for frame, n in counts.items():
        if n < 0.95 * total and depth[frame] >= depth.get(innermost.get(n, ""), -1):
            innermost[n] = frame
    shares = sorted(((frame, round(n / total, 3)) for n, frame in innermost.items()), key=lambda x: -x[1])
    return shares[:top]


def _sample_trainer(process: subprocess.Popen, out: Path, seconds: int) -> Path | None:
    """``py-spy`` samples of the trainer for ``seconds``, once its first metrics are written (past
    compilation); None without py-spy or when the run ends first."""
    spy = shutil.which("py-spy")
    if spy is None:
        log.warning("--profile-seconds: py-spy is not installed (pip install py-spy); no host profile")
        return None
    while not any(out.glob("csv/version_*/metrics.csv")):
        if process.poll() is not None:
            return None
        time.sleep(2)
    samples = out.with_name(out.name + "-pyspy.txt")
    command = [spy, "record", "--pid", str(process.pid), "--duration", str(seconds), "--rate", "50"]
    command += ["--threads", "--idle", "--nonblocking", "--format", "raw", "--output", str(samples)]
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return samples if samples.is_file() else None


def device_profile(profile_dir: Path, top: int = 12) -> dict[str, Any]:
    """The run's ``trainer.profile_steps`` summary, with its device time per kernel class (the
    synthetic profile's classes, so the two compare line by line) and its top kernels."""
    from pretrain_throughput import classify  # this folder is on sys.path when run as a script

    summary = json.loads((profile_dir / "rank0-summary.json").read_text())
    steps = summary["steps"][1] - summary["steps"][0]
    with gzip.open(profile_dir / "rank0-trace.json.gz", "rt") as f:
        events = json.load(f)["traceEvents"]
    kernels: Counter[str] = Counter()
    for event in events:
        if event.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"):
            kernels[event["name"]] += event.get("dur", 0.0) / 1e3 / steps  # us -> ms per step
    classes: Counter[str] = Counter()
    for name, ms in kernels.items():
        classes[classify(name)] += ms
    return {
        "wall_ms_per_step": 1e3 * summary["wall_s_per_step"],
        "device_busy": summary["device_busy"],
        "classes_ms_per_step": {k: round(v, 2) for k, v in classes.most_common()},
        "top_kernels_ms_per_step": [(name[:120], round(ms, 2)) for name, ms in kernels.most_common(top)],
    }


def single(args: argparse.Namespace) -> dict[str, Any]:
    out = args.work / f"single{args.tag}"
    command = [sys.executable, *_pretrain_args(args, out, "medium", "auto", 1, 1)]
    samples = None
    if not args.profile_seconds:
        _run(command, out.with_suffix(".log"), _env(**_threads(args)))
    else:
        log.info("$ %s", " ".join(command))
        with out.with_suffix(".log").open("w") as log_file:
            env = _env(**_threads(args))
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO)
            samples = _sample_trainer(process, out, args.profile_seconds)
            if process.wait():
                raise subprocess.CalledProcessError(process.returncode, command)
    result = measured(out, args.skip_steps, args.steps)
    if samples is not None:
        result["host_profile"] = host_profile(samples)
    return _with_device_profile(result, out, args)


def _with_device_profile(result: dict[str, Any], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Adds rank 0's device profile and every rank's device busy share (a rank that waits for
    input, or for the others at the all-reduce, shows lower)."""
    if args.gpu_profile and (out / "profile" / "rank0-summary.json").is_file():
        result["device_profile"] = device_profile(out / "profile")
        result["device_busy_by_rank"] = {
            path.name.split("-")[0]: round(json.loads(path.read_text())["device_busy"], 3)
            for path in sorted((out / "profile").glob("rank*-summary.json"))
        }
    return result


def ddp(args: argparse.Namespace, strategy: str = "ddp", size: str = "medium") -> dict[str, Any]:
    out = args.work / f"{strategy}{args.gpus}-{size}{args.tag}"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.gpus)]
    torchrun += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    command = [*torchrun, *_pretrain_args(args, out, size, strategy, args.gpus, 1)]
    _run(command, out.with_suffix(".log"), _env(**_threads(args)))
    return _with_device_profile(measured(out, args.skip_steps, args.steps), out, args)


def nodes(args: argparse.Namespace) -> dict[str, Any]:
    """``args.gpus`` launchers of one GPU each, as many cluster nodes meeting at a rendezvous."""
    out, port = args.work / f"nodes{args.gpus}x1{args.tag}", _free_port()
    launchers = []
    for rank in range(args.gpus):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(args.gpus)]
        command += ["--nproc-per-node", "1", "--node-rank", str(rank)]
        command += ["--master-addr", "127.0.0.1", "--master-port", str(port)]
        command += _pretrain_args(args, out, "medium", "ddp", 1, args.gpus)
        env = _env(CUDA_VISIBLE_DEVICES=str(rank), **_threads(args))
        log_file = (args.work / f"nodes-rank{rank}.log").open("w")
        launchers.append(
            subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        )
    codes = [p.wait() for p in launchers]
    if any(codes):
        raise RuntimeError(f"node launchers exited with {codes}; see {args.work}/nodes-rank*.log")
    return _with_device_profile(measured(out, args.skip_steps, args.steps), out, args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phases", nargs="+", default=["data", "synthetic", "single", "ddp", "nodes"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/maestro-scaling"))
    parser.add_argument(
        "--json", type=Path, default=Path(os.environ.get("OUT", ".")) / "pretrain_scaling.json"
    )
    parser.add_argument("--patches", type=int, default=256, help="toy patches generated (train ~70%%)")
    parser.add_argument("--batch-size", type=int, default=256, help="per GPU")
    parser.add_argument("--workers", type=int, default=15, help="loader workers per GPU")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run")
    parser.add_argument("--window", type=int, default=20, help="steps per logged throughput window")
    parser.add_argument("--skip-steps", type=int, default=60, help="steps not timed (compile, warm-up)")
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument(
        "--padded-dates",
        type=int,
        default=4,
        help="padding in the synthetic batches (bench/pretrain_throughput.py --padded-dates): toy "
        "shards hold short series, so nearly every real batch takes the key-masked attention path",
    )
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--precision",
        choices=["bf16", "fp8"],
        default="bf16",
        help="fp8: trainer.precision=fp8 in every pretrain run and --precision fp8 in the synthetic step",
    )
    parser.add_argument(
        "--override",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="more dotted config overrides for every pretrain run, e.g. data.pin_memory=false",
    )
    parser.add_argument(
        "--profile-seconds",
        type=int,
        default=0,
        help="single: sample the trainer process with py-spy for this long once its first metrics are "
        "written, and report where its main thread spends the time (needs py-spy)",
    )
    parser.add_argument(
        "--gpu-profile",
        type=int,
        default=0,
        metavar="N",
        help="record N steps after the timed ones with torch.profiler in every pretrain run (each "
        "rank's device busy share) and in the synthetic step; prints the device time per kernel "
        "class of the synthetic step and the one-GPU run side by side",
    )
    parser.add_argument(
        "--omp-threads",
        type=int,
        default=0,
        help="OMP_NUM_THREADS of every pretrain run (default: unset; torchrun then sets 1 per process)",
    )
    parser.add_argument("--tag", default="", help="suffix of the run folders (several runs in one --work)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model: checks the script")
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch_size, args.workers, args.steps, args.window, args.skip_steps = 2, 1, 6, 2, 1
        args.compile, args.gpus, args.patches = False, 1, 24
    return args


def _print_device_profiles(results: dict[str, Any]) -> None:
    profiles = {name: results.get(name, {}).get("device_profile") for name in ("synthetic", "single")}
    if not all(profiles.values()):
        return
    synthetic_profile, single_profile = profiles["synthetic"], profiles["single"]
    print("| device ms/step | synthetic | pretrain |\n|---|---:|---:|")
    for key in ("wall_ms_per_step", "device_busy"):
        print(f"| {key} | {synthetic_profile[key]:.3g} | {single_profile[key]:.3g} |")
    classes = dict.fromkeys(
        [*synthetic_profile["classes_ms_per_step"], *single_profile["classes_ms_per_step"]]
    )
    for name in classes:
        a = synthetic_profile["classes_ms_per_step"].get(name, 0.0)
        b = single_profile["classes_ms_per_step"].get(name, 0.0)
        print(f"| {name} | {a:.1f} | {b:.1f} |")
    for name, ms in single_profile["top_kernels_ms_per_step"]:
        print(f"pretrain kernel {ms:7.2f} ms/step  {name}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    phases = {
        "data": lambda: build_data(args),
        "synthetic": lambda: synthetic(args),
        "single": lambda: single(args),
        "ddp": lambda: ddp(args),
        "nodes": lambda: nodes(args),
        "fsdp": lambda: ddp(args, "fsdp", "large"),
    }
    for phase in args.phases:
        start = time.perf_counter()
        try:
            result = phases[phase]()
        except (subprocess.CalledProcessError, RuntimeError) as error:
            result = {"error": str(error)}
        if result is not None:
            result["wall_s"] = round(time.perf_counter() - start, 1)
            results[phase] = result
            log.info("%s: %s", phase, result)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    base = results.get("single", {}).get("samples_per_s")
    if base and "synthetic" in results and "samples_per_s" in results["synthetic"]:
        print(f"end to end / synthetic: {base / results['synthetic']['samples_per_s']:.1%}")
    for name in ("ddp", "nodes"):
        if base and "samples_per_s" in results.get(name, {}):
            rate = results[name]["samples_per_s"]
            print(f"{name}: {rate:.1f} samples/s, scaling efficiency {rate / (args.gpus * base):.1%}")
    _print_device_profiles(results)
    for name, result in results.items():
        if "device_busy_by_rank" in result:
            print(f"{name}: device busy by rank {result['device_busy_by_rank']}")
    for frame, share in results.get("single", {}).get("host_profile", []):
        print(f"single, trainer main thread: {share:6.1%} in {frame}")
    for name, result in results.items():
        if "input_wait_fraction" in result:  # near 0: the GPU sets the pace; large: the input pipeline
            print(
                f"{name}: the training loop waited for input {result['input_wait_fraction']:.1%} of the "
                f"time (rank 0), {result['input_wait_fraction_max']:.1%} (the slowest-fed rank)"
            )
        if "peak_memory_gib" in result:
            print(f"{name}: peak GPU memory {result['peak_memory_gib']} GiB (the most loaded rank)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
