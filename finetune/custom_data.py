"""``finetune --data-config``: your own dataset's shards, built under the run folder before training.

The shards of every split of the patch table go to ``{run}/shards`` (one manifest), with the
incremental build of :mod:`shards.writer`: a rerun or ``--resume`` keeps the shards whose rasters,
dates and nomenclature are unchanged and rebuilds the others. Then ``data.train`` / ``val`` /
``test`` read them (a split the table lacks is left out: no validation picks the last weights).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from finetune.config import FinetuneConfig
from maestro.data.custom.config import KEY, load_custom_data
from shards.plan import BuildConfig
from shards.writer import build

log = logging.getLogger("finetune")

SHARDS_FOLDER = "shards"


def with_custom_shards(config: FinetuneConfig) -> FinetuneConfig:
    """``config`` reading the shards of ``dataset.config``, built (or brought up to date) first."""
    source = config.dataset.config
    if source is None:
        return config
    data = load_custom_data(source)
    out = Path(config.trainer.output_dir) / SHARDS_FOLDER
    splits = data.splits
    log.info("building the shards of %s (%s) in %s: splits %s", data.config.name, source, out, list(splits))
    for split in splits:
        result = build(
            BuildConfig(
                root=data.root,
                out=out,
                split=split,
                dataset=KEY,
                data_config=source,
                skip_bad=config.dataset.skip_bad,
                max_size=256 << 20,
            )
        )
        if result.entry.skipped:
            skipped = len(result.entry.skipped)
            log.warning("%s: skipped %d bad patches (listed in %s)", split, skipped, out / "manifest.json")
    shards = str(out)
    data_config = config.data
    for field, split_field in (("train", "train_split"), ("val", "val_split"), ("test", "test_split")):
        split = getattr(data_config, split_field)
        data_config = dataclasses.replace(data_config, **{field: shards if split in splits else None})
    if data_config.val is None:
        log.warning(
            "%s has no %r split: no validation, the last weights are tested", source, config.data.val_split
        )
    return dataclasses.replace(config, data=data_config)
