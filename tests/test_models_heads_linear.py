"""The linear-probe head: the token means of the frozen encoder and one linear layer, nothing else."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from maestro.labels import IGNORE_INDEX
from maestro.models.encoder import EncoderOutput
from maestro.models.heads.linear import LinearHead, TokenMeans
from maestro.models.heads.options import reference_grid
from maestro.models.heads.pooling import MeanPool, token_sets
from maestro.models.segmenter import MaestroSegmenter
from maestro.models.segmenter_config import SegmenterConfig
from maestro.models.synthetic import synthetic_batch, tiny_config

pytestmark = pytest.mark.usefixtures("single_thread")

CLASSES = 4


def _probe(seed: int = 0) -> MaestroSegmenter:
    torch.manual_seed(seed)
    config = SegmenterConfig(
        encoder=tiny_config().encoder, num_classes=CLASSES, head="linear", label_size=32, freeze_encoder=True
    )
    return MaestroSegmenter(config)


def test_a_linear_probe_trains_only_its_linear_layer_and_the_encoder_gets_no_gradient():
    model = _probe().train()
    encoder = tiny_config().encoder
    features = encoder.transformer.width * len(encoder.modalities)  # 64 x 5 token means
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert set(trainable) == {"head.linear.weight", "head.linear.bias"}
    assert sum(p.numel() for p in trainable.values()) == features * CLASSES + CLASSES
    assert not list(model.decoder.parameters())  # the token means learn nothing

    labels = torch.randint(0, CLASSES, (2, 32, 32), generator=torch.Generator().manual_seed(0))
    labels[:, :4] = IGNORE_INDEX
    F.cross_entropy(model(**synthetic_batch(encoder))["logits"], labels, ignore_index=IGNORE_INDEX).backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.values())


def test_token_means_are_the_probe_features_and_each_token_paints_its_block():
    """The decoder gives what ``finetune/linear_probe.py`` computes (the mean of each location's
    valid tokens on the finest grid, per modality); the head gives a token's logits to its block."""
    encoder = tiny_config().encoder
    grid = reference_grid(encoder.specs)
    generator = torch.Generator().manual_seed(0)
    tokens, valid = {}, {}
    for key, spec in encoder.specs.items():
        side = spec.grid
        tokens[key] = torch.randn(2, spec.num_dates, 2, side, side, 8, generator=generator)
        valid[key] = torch.ones(2, spec.num_dates, dtype=torch.bool)
        if spec.num_dates > 1:
            valid[key][1, -1] = False  # a padded date in the second sample
    output = EncoderOutput(tokens=tokens, intermediates=[], valid=valid)
    means = TokenMeans(encoder.modalities, 8, grid)(output)
    expected = [
        rearrange(MeanPool()(*token_sets(tokens[key], valid[key], grid)), "(b h w) d -> b d h w", b=2, h=grid)
        for key in encoder.modalities
    ]
    torch.testing.assert_close(means, torch.cat(expected, dim=1))

    head = LinearHead(means.shape[1], CLASSES, label_size=8 * grid).eval()
    logits = head(means)
    assert logits.shape == (2, CLASSES, 8 * grid, 8 * grid)
    blocks = rearrange(logits, "b k (h p) (w q) -> b k h w (p q)", p=8, q=8)
    assert torch.equal(blocks, blocks[..., :1].expand_as(blocks))  # one value per token and class
    standardised = (means - head.norm.running_mean[:, None, None]) / torch.sqrt(
        head.norm.running_var[:, None, None] + head.norm.eps
    )
    torch.testing.assert_close(blocks[..., 0], head.linear(standardised))
