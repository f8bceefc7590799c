"""The reference architecture, read from a state dict's keys and shapes."""

from __future__ import annotations

import pytest
import torch
from reference_fixture import CHECKPOINT, MODALITIES, STREAMS, require_fixture

from maestro.errors import ConfigError
from maestro.reference.layout import StackLayout, read_layout
from maestro.reference.plan import select_weights
from maestro.reference.unpickle import read_reference_checkpoint


@pytest.fixture(scope="module")
def ema_state() -> dict[str, torch.Tensor]:
    require_fixture()
    prefix, own, report = select_weights(read_reference_checkpoint(CHECKPOINT).state, "ema")
    assert prefix == "ema_model." and all(key.startswith("model.") for key in report.skipped)
    return own


def test_the_fixture_architecture_is_read_from_its_shapes(ema_state):
    layout = read_layout(ema_state)
    assert tuple(layout.band_groups) == MODALITIES and layout.band_groups["s2"] == [10]
    assert layout.patch_sizes == {"aerial": 16, "dem": 32, "s2": 2, "s1_asc": 2, "s1_des": 2}
    assert layout.width == 24 and tuple(layout.encoders) == STREAMS
    assert layout.encoders["s2"] == StackLayout(depth=2, width=24, inner=24, mlp_hidden=48)
    assert layout.inter == StackLayout(depth=1, width=24, inner=24, mlp_hidden=48)
    assert layout.decoders["s1"] == StackLayout(depth=1, width=16, inner=16, mlp_hidden=96)
    assert layout.has_enc_to_dec and layout.classification_heads == []
    head = layout.heads["cosia"]
    assert (head.out_channels, head.pooling) == (15 * 32 * 32, "attentive")


def test_a_gap_in_the_block_indices_is_refused(ema_state):
    state = {key: value for key, value in ema_state.items() if not key.startswith("encoder.s2.layers.0.")}
    with pytest.raises(ConfigError, match=r"encoder\.s2\.layers: block indices \[1\] are not 0\.\.1"):
        read_layout(state)
