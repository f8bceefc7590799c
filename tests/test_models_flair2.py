"""FLAIR #2's baselines: U-Net (ResNet) on aerial and U-T&T (U-Net + U-TAE, cropped / collapsed fusion)."""

from __future__ import annotations

import pytest
import torch

from maestro.errors import ConfigError
from maestro.models.baseline.config import UTAEConfig
from maestro.models.flair2.config import UNetConfig, UTTConfig
from maestro.models.flair2.fusion import CollapsedFusion, CroppedFusion, centre_crop, collapsed_widths
from maestro.models.flair2.paper import (
    PARAMETER_TOLERANCE,
    REFERENCE_ONLY,
    REFERENCE_PARAMETERS,
    count_parameters,
)
from maestro.models.flair2.unet import AerialUNet
from maestro.models.flair2.utt import UTT, utt_loss

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_UTAE = UTAEConfig(
    encoder_widths=(16, 16, 32),
    decoder_widths=(16, 16, 32),
    num_heads=4,
    d_model=16,
    d_k=2,
    kernel_size=4,
    stride=2,
    dropout=0.0,
)
"""Three stride-2 levels: an 8 px super-patch runs at 8, 4, 2 px."""


def tiny_config(**changes: object) -> UTTConfig:
    unet = UNetConfig(in_channels=5, num_classes=4, encoder="resnet18")
    return UTTConfig(unet=unet, utae=TINY_UTAE, s2_channels=3, footprint=2, **changes)


def inputs(batch: int = 2, dates: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    aerial = torch.randn(batch, 5, 64, 64, generator=generator)
    s2 = torch.randn(batch, dates, 3, 8, 8, generator=generator)
    days = torch.arange(dates, dtype=torch.float32).expand(batch, dates) * 40.0 - 60.0
    valid = torch.ones(batch, dates, dtype=torch.bool)
    return aerial, s2, days, valid


def test_unet_forward_shape_and_config_round_trip() -> None:
    config = UNetConfig(num_classes=4, encoder="resnet18")
    assert UNetConfig.from_dict(config.to_dict()) == config
    logits = AerialUNet(config).eval()(torch.randn(2, 5, 64, 64))
    assert logits.shape == (2, 4, 64, 64)


def test_utt_forward_shapes_and_variable_series_lengths() -> None:
    torch.manual_seed(0)
    model = UTT(tiny_config()).eval()
    aerial, s2, days, valid = inputs(dates=3)
    output = model(aerial, s2, days, valid)
    assert output.logits.shape == output.aux_logits.shape == (2, 4, 64, 64)
    # A longer batch: sample 0 keeps its 3 dates and gets 2 padded ones, whose values change nothing.
    _, longer, longer_days, _ = inputs(dates=5, seed=1)
    longer[0, :3], longer_days[0, :3] = s2[0], days[0]
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    padded = model(aerial, longer, longer_days, mask)
    assert torch.allclose(padded.logits[0], output.logits[0], atol=1e-5)
    longer[0, 3:] = 1e4
    assert torch.equal(model(aerial, longer, longer_days, mask).logits, padded.logits)


def test_centre_crop_window_by_hand() -> None:
    grid = torch.arange(64.0).reshape(1, 1, 8, 8)  # value = 8 * row + column
    assert centre_crop(grid, 2).flatten().tolist() == [27.0, 28.0, 35.0, 36.0]  # rows 3-4, columns 3-4
    full = torch.arange(1600.0).reshape(40, 40)
    window = centre_crop(full, 10)  # the challenge's 10 px footprint in a 40 px super-patch
    assert window[0, 0] == 15 * 40 + 15 and window[-1, -1] == 24 * 40 + 24
    with pytest.raises(ValueError, match="does not fit"):
        centre_crop(grid, 9)


def test_cropped_fusion_reads_only_the_footprint_and_collapsed_the_whole_map() -> None:
    torch.manual_seed(0)
    cropped, collapsed = CroppedFusion(4, (3, 5), footprint=2), CollapsedFusion(4, (3, 5), 0.0).eval()
    sizes = [(16, 16), (8, 8)]
    x = torch.randn(2, 4, 8, 8)
    outside = x.clone()
    outside[..., :3, :] = 100.0  # rows above the centre 2 x 2 window
    for a, b in zip(cropped(x, sizes), cropped(outside, sizes), strict=True):
        assert torch.equal(a, b)
    maps = collapsed(x, sizes)
    assert [m.shape for m in maps] == [(2, 3, 16, 16), (2, 5, 8, 8)]
    assert torch.equal(maps[0], maps[0][..., :1, :1].expand_as(maps[0]))  # one vector per sample
    assert not torch.equal(maps[0], collapsed(outside, sizes)[0])
    # Each sample gets its own vector (the reference broadcasts sample 0's to the batch).
    swapped = collapsed(x.flip(0), sizes)[0]
    assert torch.allclose(swapped, maps[0].flip(0))
    assert collapsed_widths(64, 512) == (64, 213, 362, 512)
    assert collapsed_widths(64, 64) == (64, 128, 128, 64)


@pytest.mark.parametrize("fusions", [("cropped",), ("collapsed",), ("cropped", "collapsed")])
def test_each_fusion_reaches_the_prediction(fusions: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    model = UTT(tiny_config(fusions=fusions)).eval()
    aerial, s2, days, valid = inputs()
    changed = s2.clone()
    changed[:, :, :, 3:5, 3:5] += 5.0
    assert not torch.allclose(
        model(aerial, s2, days, valid).logits, model(aerial, changed, days, valid).logits
    )


def test_utae_dropout_skips_the_sentinel_branch_in_training_only() -> None:
    torch.manual_seed(0)
    model = UTT(tiny_config(utae_dropout=0.999)).train()
    aerial, s2, days, valid = inputs()
    a = model(aerial, s2, days, valid).logits
    b = model(aerial, s2 + 3.0, days, valid).logits
    assert torch.allclose(a, b)
    model.eval()
    assert not torch.allclose(
        model(aerial, s2, days, valid).logits, model(aerial, s2 + 3.0, days, valid).logits
    )


def train_steps(model: torch.nn.Module, step, steps: int = 30) -> tuple[float, float]:
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = step()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


def test_unet_and_utt_overfit_one_batch() -> None:
    torch.manual_seed(0)
    aerial, s2, days, valid = inputs()
    target = (aerial[:, 0] > 0).long() + 2 * (aerial[:, 1] > 0).long()
    unet = AerialUNet(UNetConfig(num_classes=4, encoder="resnet18")).train()
    first, last = train_steps(unet, lambda: torch.nn.functional.cross_entropy(unet(aerial), target))
    assert last < 0.5 * first
    utt = UTT(tiny_config()).train()
    first, last = train_steps(utt, lambda: utt_loss(utt(aerial, s2, days, valid), target, aux_weight=1.0))
    assert last < 0.7 * first


def test_utt_loss_weights_each_branch() -> None:
    torch.manual_seed(0)
    output = UTT(tiny_config()).eval()(*inputs())
    target = torch.zeros(2, 64, 64, dtype=torch.long)
    target[:, :32] = 1
    cross_entropy = torch.nn.functional.cross_entropy
    main, aux = cross_entropy(output.logits, target), cross_entropy(output.aux_logits, target)
    assert torch.allclose(utt_loss(output, target, aux_weight=2.0), main + 2.0 * aux)
    # Class weight 0 for the U-TAE (the reference's "plowed land"): those pixels leave its loss.
    weight = torch.tensor([0.0, 1.0, 1.0, 1.0])
    only_ones = cross_entropy(output.aux_logits[:, :, :32], target[:, :32])
    assert torch.allclose(utt_loss(output, target, aux_class_weight=weight), main + only_ones)


def test_config_validation_and_partial_loading() -> None:
    config = UTTConfig.from_dict({"utae": {"d_k": 8}, "fusions": ["cropped"]})
    assert (config.utae.kernel_size, config.utae.stride, config.utae.d_k) == (4, 2, 8)
    assert UTTConfig.from_dict(config.to_dict()) == config
    for bad in ({"fusions": ["mean"]}, {"fusions": []}, {"utae_dropout": 1.0}, {"unet": {"num_classes": 1}}):
        with pytest.raises(ConfigError):
            UTTConfig.from_dict(bad)


def test_full_size_parameter_counts_match_the_reference_implementation() -> None:
    unet = count_parameters(UNetConfig())
    utt = count_parameters(UTTConfig())
    assert unet == REFERENCE_PARAMETERS["unet"]
    assert abs(utt - REFERENCE_PARAMETERS["utt"]) <= PARAMETER_TOLERANCE * REFERENCE_PARAMETERS["utt"]
    # The whole difference is the reference's modules we do not build.
    assert REFERENCE_PARAMETERS["utt"] - utt == sum(REFERENCE_ONLY.values())
