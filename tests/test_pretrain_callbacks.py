"""Reconstruction figures show what the model predicts: an untrained model's differs from a trained one's."""

import torch
from PIL import Image

from maestro.models import MaestroMAE
from maestro.models.synthetic import synthetic_batch, tiny_config
from pretrain.callbacks import COLUMNS, GREY, display_indices, reconstruction_figure, reconstruction_panels

CONFIG = tiny_config()
SPECS = CONFIG.encoder.specs


def test_bands_follow_the_registry_display_bands():
    assert [SPECS["s2"].bands[i] for i in display_indices(SPECS["s2"])] == ["B4", "B3", "B2"]  # true colour
    assert [SPECS["aerial"].bands[i] for i in display_indices(SPECS["aerial"])] == ["R", "G", "B"]
    assert [SPECS["dem"].bands[i] for i in display_indices(SPECS["dem"])] == ["DSM"]
    assert [SPECS["s1_asc"].bands[i] for i in display_indices(SPECS["s1_asc"])] == ["VV"]


def test_panels_share_the_target_stretch_and_grey_out_what_is_not_predicted(tmp_path):
    spec = SPECS["aerial"]
    images = torch.rand(2, 1, 4, 32, 32)
    hidden = torch.zeros_like(images, dtype=torch.bool)
    hidden[..., :16, :] = True  # the top half is masked
    panels, dates = reconstruction_panels(
        spec, images, images, images, hidden, torch.ones(2, 1, dtype=torch.bool), size=32
    )
    assert list(panels) == list(COLUMNS) and dates == [0, 0]
    assert all(
        p.shape == (2, 3, 32, 32) and float(p.min()) >= 0 and float(p.max()) <= 1 for p in panels.values()
    )
    torch.testing.assert_close(
        panels["prediction"], panels["target"]
    )  # a perfect prediction looks like the target
    assert bool((panels["target"][..., 16:, :] == GREY).all()) and bool(
        (panels["masked input"][..., :16, :] == GREY).all()
    )
    path = reconstruction_figure(panels, dates, "aerial", tmp_path / "aerial.png")
    assert Image.open(path).size[0] > Image.open(path).size[1]  # four columns, two rows


def _prediction_correlations(model: MaestroMAE, batch: dict) -> dict[str, float]:
    """Correlation of the prediction and target panels over the drawn (hidden) pixels, per modality."""
    with torch.no_grad():
        out = model(
            batch["inputs"], batch["times"], batch["valid"], generator=torch.Generator().manual_seed(0)
        )
    correlations = {}
    for key, spec in model.specs.items():
        panels, _ = reconstruction_panels(
            spec,
            batch["inputs"][key],
            out["targets"][key],
            out["predictions"][key],
            out["pixel_masks"][key],
            batch["valid"][key],
        )
        drawn = (panels["target"] != GREY).any(1, keepdim=True).expand_as(panels["target"])
        pair = torch.stack([panels["target"][drawn], panels["prediction"][drawn]])
        correlations[key] = float(torch.corrcoef(pair)[0, 1])
    return correlations


def test_an_untrained_model_does_not_look_trained(single_thread):
    torch.manual_seed(0)
    batch = synthetic_batch(CONFIG, batch_size=2, seed=0)
    model = MaestroMAE(CONFIG)
    untrained = _prediction_correlations(model, batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(80):  # memorise one batch under one mask
        loss = model(
            batch["inputs"], batch["times"], batch["valid"], generator=torch.Generator().manual_seed(0)
        )["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = _prediction_correlations(model, batch)
    assert all(abs(value) < 0.3 for value in untrained.values()), untrained
    assert all(value > 0.6 for value in trained.values()), trained
