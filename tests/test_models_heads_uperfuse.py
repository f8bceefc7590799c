import pytest
import torch
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder

from maestro.models.encoder import EncoderOutput
from maestro.models.heads.uperfuse import (
    MatmulUPerNetDecoder,
    SegmentationHead,
    SimplePyramid,
    UPerFuseDecoder,
    upernet,
    upernet_features,
)
from maestro.models.synthetic import tiny_config

pytestmark = pytest.mark.usefixtures("single_thread")

WIDTH = 64
SPECS = tiny_config().encoder.specs  # reference grid 4 (aerial)


def _output(batch: int = 2, seed: int = 0, levels: int = 4) -> EncoderOutput:
    generator = torch.Generator().manual_seed(seed)

    def maps() -> dict[str, torch.Tensor]:
        return {
            key: torch.randn(
                batch, s.num_dates, s.num_token_groups, s.grid, s.grid, WIDTH, generator=generator
            )
            for key, s in SPECS.items()
        }

    valid = {key: torch.ones(batch, s.num_dates, dtype=torch.bool) for key, s in SPECS.items()}
    return EncoderOutput(tokens=maps(), intermediates=[maps() for _ in range(levels)], valid=valid)


def _decoder(pooling: str = "attentive") -> UPerFuseDecoder:
    torch.manual_seed(0)
    return UPerFuseDecoder(list(SPECS), WIDTH, grid=4, pooling=pooling, decoder_channels=32).eval()


def test_the_decoder_is_smp_upernet_built_from_the_pyramid_channels():
    decoder = _decoder()
    assert isinstance(decoder.upernet, UPerNetDecoder) and type(decoder.upernet) is MatmulUPerNetDecoder
    assert decoder.pyramid.out_channels == (0, 0, WIDTH, WIDTH, WIDTH, WIDTH)
    assert len(decoder.upernet.feature_norms) == 4  # smp reads features [2:]


def test_pyramid_follows_smp_strides():
    """Features at strides 1, 1/2 (0-channel placeholders), 1/4, 1/8, 1/16, 1/32 of 16 x the grid."""
    pyramid = SimplePyramid(WIDTH)
    features = pyramid([torch.randn(2, WIDTH, 4, 4) for _ in range(4)])
    assert [tuple(f.shape) for f in features] == [
        (2, 0, 64, 64),
        (2, 0, 32, 32),
        (2, WIDTH, 16, 16),
        (2, WIDTH, 8, 8),
        (2, WIDTH, 4, 4),
        (2, WIDTH, 2, 2),
    ]
    with pytest.raises(ValueError, match="4 maps"):
        pyramid([torch.randn(2, WIDTH, 4, 4)])


@pytest.mark.parametrize("pooling", ["attentive", "mean"])
def test_decoder_gives_upernet_features_at_four_times_the_reference_grid(pooling):
    with torch.no_grad():
        features = _decoder(pooling)(_output())
    assert features.shape == (2, 32, 16, 16)
    assert torch.isfinite(features).all()


def test_a_modality_without_valid_dates_contributes_nothing():
    decoder, output = _decoder(), _output()
    output.valid["s2"][1] = False
    with torch.no_grad():
        expected = decoder(output)
        for level in output.intermediates:
            level["s2"][1] = torch.randn_like(level["s2"][1]) * 100
        torch.testing.assert_close(decoder(output), expected)


def test_decoder_needs_four_depths():
    with pytest.raises(ValueError, match="4 encoder depths"):
        _decoder()(_output(levels=1))


def test_segmentation_head_resizes_logits_to_the_label_size():
    logits = SegmentationHead(32, 5, label_size=40)(torch.randn(2, 32, 16, 16))
    assert logits.shape == (2, 5, 40, 40)


@pytest.mark.parametrize("sizes", [(32, 16, 8, 4), (36, 18, 9, 5)])
def test_matmul_upernet_equals_smp_upernet_in_values_and_gradients(sizes):
    """Same weights, same outputs and input gradients as smp's interpolating forward, also at odd sizes."""
    torch.manual_seed(0)
    ours = upernet((8, 8, 8, 8), decoder_channels=16).double()
    smp = UPerNetDecoder(encoder_channels=(0, 0, 8, 8, 8, 8), encoder_depth=5, decoder_channels=16).double()
    smp.load_state_dict(ours.state_dict())  # strict: the same modules under the same names
    levels = [torch.randn(2, 8, size, size, dtype=torch.float64, requires_grad=True) for size in sizes]
    outputs = [decoder(upernet_features(levels)) for decoder in (ours, smp)]
    assert outputs[0].shape == (2, 16, sizes[0], sizes[0])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-10)
    weights = torch.randn_like(outputs[0])
    ours_grads, smp_grads = (torch.autograd.grad((out * weights).sum(), levels) for out in outputs)
    for mine, theirs in zip(ours_grads, smp_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-10)
