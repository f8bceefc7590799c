import pytest
from torch import nn

from maestro.errors import ConfigError
from maestro.models.heads.registry import HEADS, HeadParts, get_head
from maestro.models.segmenter_config import SegmenterConfig
from maestro.models.synthetic import tiny_config


def test_rows_are_keyed_by_name_and_describe_themselves():
    assert set(HEADS) == {"uperfuse", "maestro", "linear"}
    for name, spec in HEADS.items():
        assert spec.name == name
        assert spec.description and "\n" not in spec.description
    assert HEADS["uperfuse"].num_depths == 4
    assert HEADS["maestro"].num_depths == 0  # final token maps only
    assert HEADS["linear"].num_depths == 0


def test_get_head_error_lists_the_valid_names():
    assert get_head("maestro") is HEADS["maestro"]
    with pytest.raises(
        ConfigError, match=r"unknown head 'upernet'; valid names are \['linear', 'maestro', 'uperfuse'\]"
    ):
        get_head("upernet")


@pytest.mark.parametrize("name", sorted(HEADS))
def test_builders_give_a_decoder_and_a_head(name):
    config = SegmenterConfig(encoder=tiny_config().encoder, num_classes=3, head=name, label_size=32)
    parts = get_head(name).build(config)
    assert isinstance(parts, HeadParts)
    assert isinstance(parts.decoder, nn.Module) and isinstance(parts.head, nn.Module)
