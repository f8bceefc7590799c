import torch

from maestro.modalities import ModalityOverride
from maestro.models.config import EncoderConfig
from maestro.models.embed import ModalityEmbed


def _spec(**override):
    config = EncoderConfig(
        modalities=("aerial",),
        overrides={"aerial": ModalityOverride(image_size=32, patch_size=8, **override)},
    )
    return config.specs["aerial"]


def test_tokens_are_date_group_patch_and_groupnormed_per_frame():
    embed = ModalityEmbed(_spec(), 16)
    images = torch.randn(2, 3, 4, 32, 32) * 5 + 3
    tokens = embed(images)
    assert tokens.shape == (2, 3, 1, 16, 16)  # (B, T, G, N, D)
    flat = tokens.flatten(3)  # GroupNorm(1, D) normalises each whole frame
    torch.testing.assert_close(flat.mean(-1), torch.zeros(2, 3, 1), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.var(-1, unbiased=False), torch.ones(2, 3, 1), atol=1e-3, rtol=0)


def test_patch_projection_is_kernel_equals_stride():
    embed = ModalityEmbed(_spec(), 16)
    conv = embed.groups[0].proj
    assert conv.kernel_size == (8, 8) and conv.stride == (8, 8)
    images = torch.randn(1, 4, 32, 32)
    changed = images.clone()
    changed[:, :, 8:16, 0:8] += 1  # patch (row 1, col 0) = token 4
    diff = (conv(changed) - conv(images)).abs().sum(1).flatten()
    assert diff.nonzero().flatten().tolist() == [4]


def test_one_embedding_per_band_group():
    spec = _spec(token_groups=(("NIR",), ("R", "G", "B")))
    embed = ModalityEmbed(spec, 16)
    assert [g.proj.in_channels for g in embed.groups] == [1, 3]
    images = torch.randn(1, 1, 4, 32, 32)
    tokens = embed(images)
    assert tokens.shape == (1, 1, 2, 16, 16)
    changed = images.clone()
    changed[:, :, 0] = torch.randn(32, 32)  # NIR only (network order NIR, R, G, B)
    after = embed(changed)
    torch.testing.assert_close(after[:, :, 1], tokens[:, :, 1])
    assert not torch.allclose(after[:, :, 0], tokens[:, :, 0])
