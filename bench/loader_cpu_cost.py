"""CPU cost per sample of the GPU training stream, as one loader worker pays it.

    PYTHONPATH=. python bench/loader_cpu_cost.py --shards /tmp/shards            # ms/sample, stages
    PYTHONPATH=. python bench/loader_cpu_cost.py --shards /tmp/shards --top 25   # + cProfile table

The pretraining data module's training stream on a GPU host: resampled shards, shuffle buffer,
MAESTRO preprocessing with the FLAIR-HUB default inputs (aerial + dem 512 px, s2 16 dates, s1
asc/des 4 dates, cloud avoidance) and ``scale_on_device`` (integer rasters unscaled), collation
into shared memory. It runs in this process (one core, one torch thread) so that cProfile sees it;
collation is told it runs in a worker, so it allocates batches in shared memory as a worker does.
Best of ``--repeats`` passes after a warm-up pass; stages are cProfile cumulative times of one
more pass, so they carry the profiler's overhead and do not add up to the wall time exactly.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import logging
import pstats
import time
from pathlib import Path
from types import SimpleNamespace

import torch

import maestro.data.collate as collate_module
from maestro.data.preprocess import MaestroTransform, build_preprocess_config
from maestro.modalities import DEFAULT_INPUTS, with_companions
from shards.loader import ShardDataset, make_dataset

log = logging.getLogger("bench.loader_cpu_cost")

STAGES = {
    "tar member reads": ("shards/reading.py", "_tagged"),
    "decode": ("shards/format.py", "decode_sample"),
    "preprocess": ("maestro/data/preprocess/transform.py", "preprocess_sample"),
    "collate (shared memory)": ("maestro/data/collate.py", "collate_model_samples"),
}


def dataset(shards: Path, batch_size: int, batches: int) -> ShardDataset:
    config = dataclasses.replace(build_preprocess_config(DEFAULT_INPUTS), scale_on_device=True)
    return make_dataset(
        shards,
        preprocess=MaestroTransform(config, train=True, seed=0),
        mode="train",
        split="train",
        batch_size=batch_size,
        num_workers=0,
        modalities=tuple(with_companions(DEFAULT_INPUTS)),
        batches_per_epoch=batches,
        shuffle_buffer=16,
    )


def one_pass(data: ShardDataset, batches: int, batch_size: int) -> int:
    stream = iter(data.pipeline)
    for _ in range(batches):
        next(stream)
    return batches * batch_size


def stage_times(stats: pstats.Stats, samples: int) -> dict[str, float]:
    """ms per sample of each stage: cumulative time of its entry point."""
    out = dict.fromkeys(STAGES, 0.0)
    for (file, _, function), row in stats.stats.items():  # type: ignore[attr-defined]
        for stage, (suffix, name) in STAGES.items():
            if function == name and file.endswith(suffix):
                out[stage] += row[3] * 1e3 / samples
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shards", type=Path, required=True, help="shard directory with a train split")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=0, help="also print the cProfile table (tottime)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    collate_module.get_worker_info = lambda: SimpleNamespace(id=0)  # shared-memory batches, as in a worker
    data = dataset(args.shards, args.batch_size, args.batches)
    one_pass(data, args.batches, args.batch_size)
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        samples = one_pass(data, args.batches, args.batch_size)
        best = min(best, (time.perf_counter() - start) / samples)
    profile = cProfile.Profile()
    profile.enable()
    samples = one_pass(data, args.batches, args.batch_size)
    profile.disable()
    stats = pstats.Stats(profile)
    log.info(
        "%.2f ms/sample (%.1f samples/s per core), best of %d passes", best * 1e3, 1 / best, args.repeats
    )
    for stage, ms in stage_times(stats, samples).items():
        log.info("  %-24s %5.2f ms/sample (cProfile)", stage, ms)
    if args.top:
        stats.sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
