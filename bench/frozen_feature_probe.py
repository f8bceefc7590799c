"""What frozen encoder features hold: a token-level linear probe, pretrained vs random encoder.

    PYTHONPATH=. python bench/frozen_feature_probe.py example/runs/pretrain --shards example/shards

Runs the pretrained encoder (EMA weights of the run's newest checkpoint) and random encoders of
the same configuration (``--random-seeds``, default 0) over the train split (``--train-batches`` batches) and the val
split of the shards, without masking. Each location of the finest token grid gets, per input, the
mean of its valid (date, band group) tokens, resized to that grid as the ``maestro`` head does. A
linear classifier on standardised features (full-batch Adam, 300 steps, soft targets = the label
histogram of the token's pixels) is fitted per input, on all inputs, and on aerial + DEM, for land
cover (level 1) and crop type (LPIS levels 1 and 2); every pixel of a val token gets the token's
class, and the table gives the pixel mIoU over the classes present in val. No head, optimiser or
fine-tuning budget is involved: it measures the features alone. ~5 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse

import torch

TARGETS = (("lc", 1), ("lpis", 1), ("lpis", 2))


def encoders(init: str, shards: str, random_seeds: list[int]) -> dict:
    from finetune.cli import resolve
    from finetune.config import FinetuneConfig
    from finetune.module import FinetuneTask
    from maestro.config import load_config

    common = ["model.head=maestro", "model.probe=true", f"data.train={shards}", f"data.val={shards}"]
    common += [f"data.test={shards}", "data.num_workers=0", "data.shuffle_buffer=1"]
    pretrained, state = resolve(load_config(FinetuneConfig, None, [*common, f"model.init={init}"]))
    arms = [("pretrained", state, 0)] + [(f"random (seed {seed})", None, seed) for seed in random_seeds]
    out = {}
    for name, weights, seed in arms:
        torch.manual_seed(seed)
        out[name] = (pretrained, FinetuneTask(pretrained, encoder_state=weights).eval())
    return out


def features(config, task, split: str, max_batches: int) -> tuple[dict, torch.Tensor]:
    """{input: (N, D)} per location of the finest grid, and (targets, N, pixels per token) labels."""
    from finetune.baseline import preprocess_options
    from maestro.modalities import with_companions
    from maestro.models.heads.pooling import reference_grid, token_sets
    from maestro.tasks import get_task
    from maestro.training.data import ShardDataModule, preprocess_for

    specs = dict(config.model.encoder.specs)
    members = [*with_companions(list(specs)), "lc", "lpis"]
    data = ShardDataModule(
        config.data, preprocess_for(specs, **preprocess_options(config.model)), members, seed=0
    )
    data.setup("fit")
    loader = data.train_dataloader() if split == "train" else data.val_dataloader()
    grid = reference_grid(specs)
    feats, labels = {}, []
    with torch.no_grad():
        for index, batch in enumerate(loader):
            if index >= max_batches:
                break
            encoded = task.model.encode(
                batch["inputs"], batch["times"], batch["valid"], padded=batch.get("padded")
            )
            for key, tokens in encoded.tokens.items():
                sets, valid = token_sets(tokens, encoded.valid[key], grid)
                weights = valid.float()[..., None]
                feats.setdefault(key, []).append((sets * weights).sum(1) / weights.sum(1).clamp_min(1))
            per_target = []
            for name, level in TARGETS:
                target = get_task(name).target(level)
                values = target.targets(batch["labels"][target.label_modality])
                b, h, _ = values.shape
                block = h // grid
                tokens = values.reshape(b, grid, block, grid, block).permute(0, 1, 3, 2, 4)
                per_target.append(tokens.reshape(b * grid * grid, -1))
            labels.append(torch.stack(per_target))
    return {key: torch.cat(value) for key, value in feats.items()}, torch.cat(labels, dim=1)


def histogram(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.stack([(labels == k).sum(1) for k in range(classes)], dim=1).float()


def probe_miou(train_x, train_y, val_x, val_y, classes: int) -> float:
    torch.manual_seed(0)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    soft = histogram(train_y, classes)
    soft = soft / soft.sum(1, keepdim=True).clamp_min(1)
    linear = torch.nn.Linear(train_x.shape[1], classes)
    optimiser = torch.optim.Adam(linear.parameters(), 1e-2, weight_decay=1e-4)
    for _ in range(300):
        optimiser.zero_grad()
        loss = -(soft * torch.log_softmax(linear(train_x), 1)).sum(1).mean()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        predicted = linear(val_x).argmax(1)
    pixels = histogram(val_y, classes)
    confusion = torch.stack([pixels[predicted == k].sum(0) for k in range(classes)], dim=1)  # true x pred
    hits = confusion.diag()
    iou = hits / (confusion.sum(0) + confusion.sum(1) - hits)
    return float(iou[confusion.sum(1) > 0].mean())


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
    for name, (config, task) in encoders(args.init, args.shards, args.random_seeds).items():
        train_x, train_y = features(config, task, "train", args.train_batches)
        val_x, val_y = features(config, task, "val", 10**9)
        groups = {key: [key] for key in train_x} | {"all": list(train_x), "aerial+dem": ["aerial", "dem"]}
        for t, (target_name, level) in enumerate(TARGETS):
            classes = get_task(target_name).target(level).num_classes
            cells = []
            for keys in groups.values():
                if not all(key in train_x for key in keys):
                    cells.append("-")
                    continue
                a = torch.cat([train_x[key] for key in keys], 1)
                b = torch.cat([val_x[key] for key in keys], 1)
                cells.append(f"{probe_miou(a, train_y[t], b, val_y[t], classes):.3f}")
            print(f"| {name} | {target_name}-{level} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
