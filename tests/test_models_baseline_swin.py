"""The baseline's Swins: timm's features_only backbones, ImageNet weights or a clear error, never silently random."""

from __future__ import annotations

import pytest
import timm
import torch
from baseline_fixtures import TINY_SWIN, tiny_config

from maestro.models.baseline import PretrainedWeightsError, SwinUTAE
from maestro.models.baseline.swin import SwinBackbone, imagenet_state

pytestmark = pytest.mark.usefixtures("single_thread")
SIZES = dict(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=4)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty Hugging Face cache, as on the development machines."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))


def test_stages_are_channels_first_at_strides_4_to_32() -> None:
    swin = SwinBackbone(TINY_SWIN, in_chans=2, img_size=64)
    stages = swin(torch.randn(2, 2, 64, 64))
    assert [tuple(s.shape) for s in stages] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 2, 2)]
    assert swin.out_channels == (8, 16, 32, 64)
    assert swin.no_weight_decay() and all(
        name.endswith("relative_position_bias_table") for name in swin.no_weight_decay()
    )


def test_missing_weights_without_network_are_an_error_that_says_what_to_do(offline) -> None:
    with pytest.raises(PretrainedWeightsError, match="--no-pretrained") as error:
        SwinUTAE(tiny_config(("aerial",), pretrained=True))
    assert "swin_tiny_patch4_window7_224" in str(error.value) and "HF_HOME" in str(error.value)
    with pytest.raises(PretrainedWeightsError):
        imagenet_state(tiny_config(("aerial", "s2"), pretrained=True))
    assert SwinUTAE(tiny_config(("aerial",), pretrained=False))  # random weights only when asked for


def test_weights_load_through_timms_own_path_adapted_to_bands_and_size(tmp_path, offline) -> None:
    source = timm.create_model(TINY_SWIN.name, pretrained=False, img_size=64, **SIZES)  # RGB, 64 px
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    swin = SwinBackbone(
        TINY_SWIN,
        in_chans=4,
        img_size=32,
        pretrained=True,
        pretrained_cfg_overlay={"file": str(tmp_path / "weights.pth")},
    )
    loaded, original = swin.state_dict(), source.state_dict()
    assert loaded["body.patch_embed.proj.weight"].shape[1] == 4  # timm adapts the first convolution
    torch.testing.assert_close(
        loaded["body.layers_0.blocks.0.mlp.fc1.weight"], original["layers.0.blocks.0.mlp.fc1.weight"]
    )
    table = "layers_{}.blocks.0.attn.relative_position_bias_table"
    torch.testing.assert_close(
        loaded[f"body.{table.format(0)}"], original[table.format(0).replace("_", ".", 1)]
    )
    assert loaded[f"body.{table.format(3)}"].shape == (1, 1)  # a 1x1 window at 32 px: resized by timm
