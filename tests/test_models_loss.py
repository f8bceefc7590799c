import numpy as np
import pytest
import torch

from maestro.models.loss import (
    denormalise,
    masked_l1,
    normalise_patches,
    reconstruction_loss,
    weighted_total,
)


def _numpy_reference(images, patch, groups, eps=1e-6):
    out = np.zeros_like(images, dtype=np.float64)
    batch, dates, _, height, width = images.shape
    for b in range(batch):
        for t in range(dates):
            for i in range(0, height, patch):
                for j in range(0, width, patch):
                    for group in groups:
                        block = images[b, t, list(group), i : i + patch, j : j + patch].astype(np.float64)
                        mean, var = block.mean(), block.var(ddof=1)
                        out[b, t, list(group), i : i + patch, j : j + patch] = (block - mean) / np.sqrt(
                            var + eps
                        )
    return out


@pytest.mark.parametrize(
    ("channels", "patch", "groups"),
    [(4, 4, ((0,), (1, 2, 3))), (10, 2, ((0, 1, 2, 3), (4, 5, 6, 7), (8, 9))), (2, 2, ((0,), (1,)))],
)
def test_target_normalisation_matches_numpy(channels, patch, groups):
    rng = np.random.default_rng(0)
    images = (
        rng.normal(size=(2, 3, channels, 4 * patch, 4 * patch))
        * rng.uniform(0.1, 10, size=(1, 1, channels, 1, 1))
    ).astype(np.float32)
    ours = normalise_patches(torch.from_numpy(images), patch, groups)
    np.testing.assert_allclose(ours.numpy(), _numpy_reference(images, patch, groups), atol=1e-4, rtol=1e-4)


def test_constant_patch_normalises_to_zero():
    images = torch.full((1, 1, 2, 4, 4), 7.0)
    assert (normalise_patches(images, 2, ((0, 1),)) == 0).all()


def test_masked_l1_ignores_everything_outside_the_mask():
    prediction = torch.tensor([1.0, float("nan"), 3.0, 0.0], requires_grad=True)
    target = torch.tensor([0.0, 0.0, 1.0, float("inf")])
    mask = torch.tensor([True, False, True, False])
    loss, count = masked_l1(prediction, target, mask)
    assert loss.item() == pytest.approx(1.5) and count.item() == 2
    loss.backward()
    assert torch.isfinite(prediction.grad).all()


def test_modalities_weighted_by_token_count_and_empty_ones_dropped():
    predictions = {"a": torch.ones(4), "b": torch.zeros(4), "c": torch.zeros(4)}
    targets = {"a": torch.zeros(4), "b": torch.full((4,), 2.0), "c": torch.ones(4)}
    masks = {
        "a": torch.tensor([True, True, False, False]),
        "b": torch.ones(4, dtype=torch.bool),
        "c": torch.zeros(4, dtype=torch.bool),
    }
    weights = {"a": 300.0, "b": 100.0, "c": 1000.0}
    total, losses, counts = reconstruction_loss(predictions, targets, masks, weights)
    assert losses["a"].item() == 1.0 and losses["b"].item() == 2.0 and losses["c"].item() == 0.0
    assert {key: int(c) for key, c in counts.items()} == {"a": 2, "b": 4, "c": 0}
    assert total.item() == pytest.approx((300 * 1.0 + 100 * 2.0) / 400)
    assert weighted_total(losses, counts, weights).item() == total.item()


def test_denormalise_inverts_the_target_normalisation():
    images = torch.rand(2, 3, 4, 8, 8) * 5 + 2
    groups = ((0,), (1, 2, 3))
    target = normalise_patches(images, 4, groups)
    torch.testing.assert_close(denormalise(target, images, 4, groups), images, rtol=1e-4, atol=1e-4)
