"""The Swin-UTAE learns the toy dataset's land cover and crop types (overfitting one fixed batch).

A learning check, not a benchmark: on four toy patches, a tiny model must reach an mIoU far above
predicting the majority class, through the fusion path (SPOT Swin + S2 U-TAE) for land cover and the
U-TAE-only path (S2 + both S1 orbits) for crop types. Labels are subsampled to 64 px for speed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from baseline_fixtures import TINY_SWIN, TINY_UTAE, build_shards

from maestro.evaluation import SegmentationMetrics
from maestro.labels import IGNORE_INDEX
from maestro.modalities import with_companions
from maestro.models.baseline import SwinUTAE, SwinUTAEConfig
from maestro.models.config import EncoderConfig
from maestro.tasks import get_task
from maestro.training.config import DataConfig
from maestro.training.data import ShardDataModule, preprocess_for

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def shards(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shards(toy_root, tmp_path_factory.mktemp("baseline_shards") / "shards")


def miou(predictions: torch.Tensor, targets: torch.Tensor, nomenclature) -> float:
    metrics = SegmentationMetrics.for_level(nomenclature)
    metrics.update(predictions, targets)
    return metrics.compute().miou


@pytest.mark.parametrize(
    ("task", "modalities"), [("lc", ("spot", "s2")), ("lpis", ("s2", "s1_asc", "s1_des"))]
)
def test_toy_miou_is_far_above_chance(shards: Path, task: str, modalities: tuple[str, ...]) -> None:
    encoder = EncoderConfig(modalities=modalities)  # registry sizes: SPOT 64 px, Sentinel 10 px, 16 / 4 dates
    data = DataConfig(train=str(shards), val=str(shards), batch_size=4, num_workers=0)
    members = [*with_companions(list(modalities)), task]
    loader = ShardDataModule(
        data, preprocess_for(encoder.specs, cloudy_date_fraction=0.05), members
    ).val_dataloader()
    batch = next(iter(loader))
    target = get_task(task).target(1)
    labels = target.targets(batch["labels"][task])[:, ::8, ::8]
    torch.manual_seed(0)
    config = SwinUTAEConfig(
        encoder=encoder,
        tasks={task: target.num_classes},
        label_size=64,
        swin=TINY_SWIN,
        utae=TINY_UTAE,
        decoder_channels=16,
        pretrained=False,
    )
    model = SwinUTAE(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(100):
        logits = model(batch["inputs"], batch["times"], batch["valid"])["logits"]
        loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predictions = model.eval()(batch["inputs"], batch["times"], batch["valid"])["logits"].argmax(dim=1)
    majority = torch.mode(labels[labels != IGNORE_INDEX]).values
    chance = miou(torch.full_like(labels, int(majority)), labels, target.nomenclature)
    score = miou(predictions, labels, target.nomenclature)
    assert score > 0.5 and score > 5 * chance, (score, chance)
