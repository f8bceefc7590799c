import pytest
import torch

from maestro.models.encoder import EncoderOutput
from maestro.models.heads.aux import AuxHeads
from maestro.models.synthetic import tiny_config

pytestmark = pytest.mark.usefixtures("single_thread")

SPECS = tiny_config().encoder.specs


def test_one_head_per_modality_at_the_label_size():
    torch.manual_seed(0)
    tokens = {key: torch.randn(2, s.num_dates, 1, s.grid, s.grid, 64) for key, s in SPECS.items()}
    valid = {key: torch.ones(2, s.num_dates, dtype=torch.bool) for key, s in SPECS.items()}
    valid["dem"][0] = False
    heads = AuxHeads(list(SPECS), 64, num_classes=5, label_size=32)
    logits = heads(EncoderOutput(tokens=tokens, intermediates=[], valid=valid))
    assert list(logits) == list(SPECS)
    assert all(x.shape == (2, 5, 32, 32) for x in logits.values())
    # a modality without a valid date gives the bias only: no spatial signal
    dem = logits["dem"][0]
    torch.testing.assert_close(dem, heads["dem"].head.conv.bias[:, None, None].expand_as(dem))
