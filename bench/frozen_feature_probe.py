"""What frozen encoder features hold: a token-level linear probe, pretrained vs random encoder.

    PYTHONPATH=. python bench/frozen_feature_probe.py example/runs/pretrain --shards example/shards

Runs the probe of ``finetune/linear_probe.py`` on the encoder of a pretraining run (EMA weights of
its newest checkpoint) and on random encoders of the same configuration (``--random-seeds``),
fitted on the first ``--train-batches`` train batches and scored on the val split: per input, on
all inputs, and on aerial + DEM, for land cover (level 1) and crop type (LPIS levels 1 and 2).
Prints one markdown row per encoder and target (val mIoU). ~2-5 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse

import torch

from finetune.linear_probe import TARGETS, linear_probe_scores, probe_encoders, token_features


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("init", help="a pretrain run, checkpoint or model folder (as finetune --init)")
    parser.add_argument("--shards", default="example/shards")
    parser.add_argument("--train-batches", type=int, default=20)
    parser.add_argument(
        "--random-seeds", type=int, nargs="+", default=[0], help="one random-encoder arm per seed"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    from maestro.tasks import get_task

    print(
        "| encoder | target | "
        + " | ".join(["aerial", "dem", "s2", "s1_asc", "s1_des", "all", "aerial+dem"])
        + " |"
    )
    print("|---|---|" + "---:|" * 7)
    for name, (config, task) in probe_encoders(args.init, args.shards, args.random_seeds).items():
        train_x, train_y = token_features(config, task, "train", args.train_batches)
        val_x, val_y = token_features(config, task, "val")
        groups = {key: [key] for key in train_x} | {"all": list(train_x), "aerial+dem": ["aerial", "dem"]}
        for t, (target_name, level) in enumerate(TARGETS):
            target = get_task(target_name).target(level)
            cells = []
            for keys in groups.values():
                if not all(key in train_x for key in keys):
                    cells.append("-")
                    continue
                a = torch.cat([train_x[key] for key in keys], 1)
                b = torch.cat([val_x[key] for key in keys], 1)
                cells.append(f"{linear_probe_scores(a, train_y[t], b, val_y[t], target).miou:.3f}")
            print(f"| {name} | {target_name}-{level} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
