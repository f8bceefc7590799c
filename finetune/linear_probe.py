"""Token-level linear probe of a frozen encoder: what its features hold, with no head to train.

Every location of the finest token grid gets, per input modality, the mean of its valid (date,
band group) tokens, resized to that grid as the ``maestro`` head does. A linear classifier on
standardised features is fitted to convergence (full-batch Adam; soft targets: the label histogram
of the token's pixels) and every pixel of a val token gets the token's class. No head, decoder or
fine-tuning budget is involved, so two encoders are compared on their features alone; with few
labelled patches this is the setting in which pretraining is meant to pay off.
``bench/frozen_feature_probe.py`` prints the full table (every input, LC and LPIS).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor

from finetune.config import FinetuneConfig
from finetune.module import FinetuneTask
from finetune.stage import preprocess_options, resolve
from maestro.config import load_config
from maestro.evaluation.metrics import SegmentationMetrics, SegmentationScores
from maestro.modalities import with_companions
from maestro.models.heads.options import reference_grid
from maestro.models.heads.pooling import MeanPool, token_sets
from maestro.tasks import LabelTarget, get_task
from maestro.training.data import ShardDataModule, preprocess_for

TARGETS: tuple[tuple[str, int], ...] = (("lc", 1), ("lpis", 1), ("lpis", 2))
"""(task, level) pairs whose labels :func:`token_features` returns, in this order."""


def probe_encoders(
    init: str, shards: str, random_seeds: Sequence[int] = (0,)
) -> dict[str, tuple[FinetuneConfig, FinetuneTask]]:
    """The encoder of ``init`` (as ``finetune --init``) and random ones of the same configuration,
    one per seed, as frozen tasks in eval mode reading ``shards``."""
    common = ["model.head=maestro", "model.probe=true", f"data.train={shards}", f"data.val={shards}"]
    common += [f"data.test={shards}", "data.num_workers=0", "data.shuffle_buffer=1"]
    config, state = resolve(load_config(FinetuneConfig, None, [*common, f"model.init={init}"]))
    arms = [("pretrained", state, 0)] + [(f"random (seed {seed})", None, seed) for seed in random_seeds]
    out = {}
    for name, weights, seed in arms:
        torch.manual_seed(seed)
        out[name] = (config, FinetuneTask(config, encoder_state=weights).eval())
    return out


def token_features(
    config: FinetuneConfig, task: FinetuneTask, split: str, max_batches: int | None = None
) -> tuple[dict[str, Tensor], Tensor]:
    """``{modality: (N, D)}`` features per location of the finest grid over ``split`` ("train":
    the first ``max_batches`` batches of the seeded stream; "val": all of it) and the labels
    ``(len(TARGETS), N, pixels per token)`` of those locations."""
    specs = dict(config.model.encoder.specs)
    members = [*with_companions(list(specs)), "lc", "lpis"]
    data = ShardDataModule(config.data, preprocess_for(specs, **preprocess_options(config)), members, seed=0)
    data.setup("fit")
    loader = data.train_dataloader() if split == "train" else data.val_dataloader()
    grid = reference_grid(specs)
    targets = [get_task(name).target(level) for name, level in TARGETS]
    mean = MeanPool()
    feats: dict[str, list[Tensor]] = {}
    labels = []
    with torch.no_grad():
        for index, batch in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            encoded = task.model.encode(
                batch["inputs"], batch["times"], batch["valid"], padded=batch.get("padded")
            )
            for key, tokens in encoded.tokens.items():
                feats.setdefault(key, []).append(mean(*token_sets(tokens, encoded.valid[key], grid)))
            per_target = [
                rearrange(
                    target.targets(batch["labels"][target.label_modality]),
                    "b (h p1) (w p2) -> (b h w) (p1 p2)",
                    h=grid,
                    w=grid,
                )
                for target in targets
            ]
            labels.append(torch.stack(per_target))
    return {key: torch.cat(value) for key, value in feats.items()}, torch.cat(labels, dim=1)


def _histogram(labels: Tensor, num_classes: int) -> Tensor:
    """``(N, pixels)`` class ids -> ``(N, num_classes)`` pixel counts (ignored pixels count nowhere)."""
    return torch.stack([(labels == k).sum(1) for k in range(num_classes)], dim=1).float()


def linear_probe_scores(
    train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor, target: LabelTarget, steps: int = 300
) -> SegmentationScores:
    """Fit a linear classifier on token features ``train_x (N, D)`` with token labels ``train_y
    (N, pixels)`` of ``target``; the val pixels' scores, each pixel predicted as its token."""
    torch.manual_seed(0)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, val_x = (train_x - mean) / std, (val_x - mean) / std
    soft = _histogram(train_y, target.num_classes)
    soft = soft / soft.sum(1, keepdim=True).clamp_min(1)
    linear = torch.nn.Linear(train_x.shape[1], target.num_classes)
    optimiser = torch.optim.Adam(linear.parameters(), 1e-2, weight_decay=1e-4)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = -(soft * torch.log_softmax(linear(train_x), 1)).sum(1).mean()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        predicted = target.classes(linear(val_x))  # never an ignored class (LPIS mixed crops)
    metrics = SegmentationMetrics.for_level(target.nomenclature)
    metrics.update(predicted[:, None].expand_as(val_y), val_y)
    return metrics.compute()
