import pytest

from maestro.errors import ConfigError
from maestro.models.config import EncoderConfig
from maestro.models.segmenter_config import SegmenterConfig, evenly_spaced_blocks
from maestro.models.synthetic import tiny_config

TINY = tiny_config().encoder  # depth 3, width 64, reference grid 4


def _config(**changes) -> SegmenterConfig:
    return SegmenterConfig(**{"encoder": TINY, "num_classes": 4, "label_size": 32, **changes})


def test_default_blocks_are_evenly_spaced_and_end_at_the_last():
    assert SegmenterConfig(encoder=EncoderConfig(), num_classes=15).blocks == (2, 5, 8, 11)
    assert evenly_spaced_blocks(24, 4) == (5, 11, 17, 23)
    assert evenly_spaced_blocks(3, 4) == (0, 0, 1, 2)  # shallow encoders repeat a block
    assert _config(feature_indices=(0, 1, -2, -1)).blocks == (0, 1, 1, 2)
    assert _config(head="maestro").blocks == ()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"head": "upernet"}, r"unknown head 'upernet'; known heads: \['linear', 'maestro', 'uperfuse'\]"),
        ({"num_classes": 1}, "num_classes: 1 must be >= 2"),
        ({"modality_dropout": 1.0}, r"modality_dropout: 1.0 must be in \[0, 1\)"),
        ({"modality_dropout": -0.1}, "modality_dropout"),
        ({"date_pooling": "max"}, "date_pooling: 'max'"),
        ({"label_size": 0}, "label_size"),
        ({"decoder_channels": 0}, "decoder_channels"),
        ({"feature_indices": (0, 1, 2, 3)}, r"block 3 out of range; the encoder has blocks 0..2"),
        ({"feature_indices": (0, 1, -4, 2)}, "block -4 out of range"),
        ({"feature_indices": (0, 2)}, "reads 4 encoder depths"),
        ({"head": "maestro", "feature_indices": (0, 1, 2, 2)}, "only the final token maps"),
        ({"head": "maestro", "label_size": 30}, "30 is not a multiple of 4"),
    ],
)
def test_invalid_configs_fail_at_construction(changes, message):
    with pytest.raises(ConfigError, match=message):
        _config(**changes)


def test_attentive_pooling_needs_a_width_divisible_by_its_heads():
    encoder = tiny_config(width=76, num_heads=1).encoder
    with pytest.raises(ConfigError, match="divisible by 8"):
        _config(encoder=encoder)
    assert _config(encoder=encoder, date_pooling="mean").date_pooling == "mean"


def test_round_trips_through_plain_dicts():
    config = _config(head="maestro", aux_heads=True, modality_dropout=0.2)
    data = config.to_dict()
    assert isinstance(data["encoder"], dict)
    assert SegmenterConfig.from_dict(data) == config
    with pytest.raises(ConfigError, match="unknown key"):
        SegmenterConfig.from_dict({**data, "heads": "maestro"})
    assert config.replace(freeze_encoder=True).freeze_encoder
