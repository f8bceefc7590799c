import pytest
import torch
import torch.nn.functional as F

from maestro.models.encoder import EncoderOutput
from maestro.models.heads.attentive import PixelShuffleHead, StackedPool
from maestro.models.synthetic import tiny_config

pytestmark = pytest.mark.usefixtures("single_thread")

WIDTH = 64
SPECS = tiny_config().encoder.specs  # grids: aerial 4, dem 2, s2/s1 2


def _output(batch: int = 2) -> EncoderOutput:
    generator = torch.Generator().manual_seed(0)
    tokens = {
        key: torch.randn(batch, s.num_dates, s.num_token_groups, s.grid, s.grid, WIDTH, generator=generator)
        for key, s in SPECS.items()
    }
    valid = {key: torch.ones(batch, s.num_dates, dtype=torch.bool) for key, s in SPECS.items()}
    return EncoderOutput(tokens=tokens, intermediates=[], valid=valid)


@pytest.mark.parametrize("pooling", ["attentive", "mean"])
def test_pooled_features_are_one_map_on_the_reference_grid(pooling):
    torch.manual_seed(0)
    features = StackedPool(list(SPECS), WIDTH, grid=4, pooling=pooling)(_output())
    assert features.shape == (2, WIDTH, 4, 4)


def test_mean_pooling_averages_every_resized_frame_of_every_modality():
    """The stack holds (modality x date x band group) frames, each resized to the reference grid."""
    output = _output()
    output.valid["s2"][0, 1] = False
    features = StackedPool(list(SPECS), WIDTH, grid=4, pooling="mean")(output)
    frames = []
    for key, tokens in output.tokens.items():
        for date in range(tokens.shape[1]):
            if output.valid[key][0, date]:
                frame = tokens[0, date, 0].permute(2, 0, 1)[None]
                frames.append(F.interpolate(frame, size=(4, 4), mode="bilinear", align_corners=False)[0])
    torch.testing.assert_close(features[0], torch.stack(frames).mean(dim=0))


def test_invalid_dates_of_any_modality_change_nothing():
    torch.manual_seed(0)
    pool, output = StackedPool(list(SPECS), WIDTH, grid=4).eval(), _output()
    output.valid["s1_asc"][0] = False
    output.valid["s2"][1, 2] = False
    expected = pool(output)
    output.tokens["s1_asc"][0] = float("nan")
    output.tokens["s2"][1, 2] = 1e4
    torch.testing.assert_close(pool(output), expected)


def test_pixel_shuffle_reads_channels_as_row_col_class():
    """Channel (p * f + q) * K + k fills pixel (p, q) of each token's f x f block for class k: the
    reference's layout, so its 1x1 convolution converts without a permutation."""
    head = PixelShuffleHead(8, num_classes=3, factor=2)
    torch.nn.init.zeros_(head.conv.weight)
    with torch.no_grad():
        head.conv.bias.copy_(torch.arange(12.0))
    logits = head(torch.randn(1, 8, 2, 2))
    assert logits.shape == (1, 3, 4, 4)
    for p in range(2):
        for q in range(2):
            for k in range(3):
                assert torch.all(logits[0, k, p::2, q::2] == (p * 2 + q) * 3 + k)
