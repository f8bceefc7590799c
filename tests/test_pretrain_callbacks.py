import torch

from pretrain.callbacks import reconstruction_panel


def test_panel_has_three_columns_per_sample_and_uses_the_first_valid_date():
    images = torch.rand(2, 3, 4, 8, 8)
    valid = torch.tensor([[False, True, True], [True, True, True]])
    hidden = torch.zeros_like(images, dtype=torch.bool)
    panel = reconstruction_panel(images, images, hidden, valid, size=16)
    assert panel.shape == (6, 3, 16, 16)
    assert float(panel.min()) >= 0 and float(panel.max()) <= 1
    # nothing hidden: input, masked input and reconstruction are the same picture
    torch.testing.assert_close(panel[0], panel[2])
