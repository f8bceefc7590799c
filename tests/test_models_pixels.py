import torch

from maestro.modalities import ModalityOverride
from maestro.models.config import EncoderConfig
from maestro.models.pixels import PixelHead, token_mask_to_pixels


def _spec(**override):
    config = EncoderConfig(
        modalities=("aerial",), overrides={"aerial": ModalityOverride(image_size=8, patch_size=4, **override)}
    )
    return config.specs["aerial"]


def test_pixel_shuffle_puts_each_token_on_its_patch():
    spec = _spec()
    head = PixelHead(spec, 3)
    linear = head.groups[0]
    assert linear.out_features == 4 * 4 * 4  # C * p * p
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[:, 0] = 1.0  # every output pixel = feature 0 of its token
    tokens = torch.zeros(1, 1, 1, 4, 3)
    tokens[..., 0] = torch.arange(4.0)  # token n carries value n
    image = head(tokens)
    assert image.shape == (1, 1, 4, 8, 8)
    expected = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).repeat_interleave(4, 0).repeat_interleave(4, 1)
    for channel in range(4):
        assert torch.equal(image[0, 0, channel], expected)


def test_channel_order_within_a_patch_is_c_p1_p2():
    spec = _spec(token_groups=(("NIR", "R", "G", "B"),))
    head = PixelHead(spec, 1)
    with torch.no_grad():
        head.groups[0].weight.zero_()
        head.groups[0].bias.copy_(torch.arange(64.0))
    image = head(torch.zeros(1, 1, 1, 4, 1))
    assert image[0, 0, 1, 0, 0].item() == 16.0 and image[0, 0, 0, 1, 0].item() == 4.0
    assert image[0, 0, 0, 0, 1].item() == 1.0


def test_band_groups_map_back_to_band_order():
    spec = _spec(token_groups=(("R", "B"), ("NIR", "G")))  # bands: NIR, R, G, B
    head = PixelHead(spec, 2)
    assert [g.out_features for g in head.groups] == [2 * 16, 2 * 16]
    mask = torch.zeros(1, 1, 2, 4, dtype=torch.bool)
    mask[0, 0, 0, 3] = True  # group (R, B), last token
    pixels = token_mask_to_pixels(mask, spec)
    assert pixels.shape == (1, 1, 4, 8, 8)
    assert pixels[0, 0, 1, 4:, 4:].all() and pixels[0, 0, 3, 4:, 4:].all()
    assert not pixels[0, 0, 0].any() and not pixels[0, 0, 2].any()
    assert pixels.sum() == 2 * 16
