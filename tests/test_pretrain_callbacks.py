import torch

from maestro.models.loss import normalise_patches
from pretrain.callbacks import denormalise, reconstruction_panel


def test_denormalise_inverts_the_target_normalisation():
    images = torch.rand(2, 3, 4, 8, 8) * 5 + 2
    groups = ((0,), (1, 2, 3))
    target = normalise_patches(images, 4, groups)
    torch.testing.assert_close(denormalise(target, images, 4, groups), images, rtol=1e-4, atol=1e-4)


def test_panel_has_three_columns_per_sample_and_uses_the_first_valid_date():
    images = torch.rand(2, 3, 4, 8, 8)
    valid = torch.tensor([[False, True, True], [True, True, True]])
    hidden = torch.zeros_like(images, dtype=torch.bool)
    panel = reconstruction_panel(images, images, hidden, valid, size=16)
    assert panel.shape == (6, 3, 16, 16)
    assert float(panel.min()) >= 0 and float(panel.max()) <= 1
    # nothing hidden: input, masked input and reconstruction are the same picture
    torch.testing.assert_close(panel[0], panel[2])
