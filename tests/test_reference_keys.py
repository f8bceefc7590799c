"""Reference keys and tensors in the suite's layout."""

from __future__ import annotations

import torch
from einops import rearrange

from maestro.models.config import EncoderConfig
from maestro.models.pixels import PixelHead
from maestro.reference.keys import pixel_rows


def test_pixel_head_rows_follow_the_reference_channel_order():
    """The reference's reconstruction conv emits (p1, p2, band) per token; the suite's head
    (band, p1, p2): converted weights give the same pixels."""
    torch.manual_seed(0)
    bands, patch, width, grid = 3, 4, 16, 2
    weight, bias = torch.randn(bands * patch * patch, width, 1, 1), torch.randn(bands * patch * patch)
    tokens = torch.randn(1, 1, 1, grid * grid, width)  # (B, T, G, N, D)
    reference_out = torch.nn.functional.conv2d(
        rearrange(tokens[:, :, 0], "b t (h w) d -> (b t) d h w", h=grid), weight, bias
    )
    reference_pixels = rearrange(reference_out, "n (p1 p2 c) h w -> n c (h p1) (w p2)", p1=patch, p2=patch)

    spec = EncoderConfig(
        modalities=("spot",),
        overrides={"spot": {"bands": ("R", "G", "B"), "image_size": grid * patch}},
        size="tiny",
        depth=2,
        inter_depth=0,
    ).specs["spot"]
    head = PixelHead(spec, width)
    head.groups[0].weight.data = pixel_rows(weight, bands, patch, "w")
    head.groups[0].bias.data = pixel_rows(bias, bands, patch, "b")
    torch.testing.assert_close(head(tokens)[:, 0], reference_pixels)
