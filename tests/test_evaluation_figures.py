"""Figures decode as PNGs of the documented size; colours come from the fixed palettes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from maestro.evaluation import SegmentationScores, colorize, confusion_figure, prediction_panels
from maestro.evaluation.figures import (
    GREY,
    band_range,
    confusion_figure_inches,
    panel_grid,
    prediction_panels_inches,
    stretched,
)
from maestro.labels import IGNORE_INDEX, LABEL_SETS, palette


def _scores(level) -> SegmentationScores:
    k = level.num_classes
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 20, (k, k)) + np.diag(rng.integers(50, 200, k))
    confusion[level.evaluated[0]] = 0  # a class without ground truth: a blank row
    return SegmentationScores.from_confusion(confusion, level.names[:k], level.evaluated)


@pytest.mark.parametrize(("key", "number"), [("lc", 1), ("lpis", 3)])
def test_confusion_figure_size_scales_with_classes(tmp_path, key, number):
    level = LABEL_SETS[key].level(number)
    path = confusion_figure(_scores(level), tmp_path / "sub" / "confusion.png", dpi=50)
    side = round(confusion_figure_inches(level.num_classes) * 50)
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and image.size == (side, side)
    assert confusion_figure_inches(46) > confusion_figure_inches(15) >= 6


def test_prediction_panels(tmp_path):
    level = LABEL_SETS["lpis"].level(1)
    colours = palette(level)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 16, 16, generator=generator)
    labels = torch.tensor([0, 4, 22])[torch.randint(0, 3, (3, 16, 16), generator=generator)]
    labels[:, :2] = IGNORE_INDEX
    logits = torch.randn(3, level.num_classes, 16, 16, generator=generator)
    path = prediction_panels(
        images,
        labels,
        logits,
        colours,
        tmp_path / "panels.png",
        class_names=level.names,
        max_samples=2,
        dpi=40,
    )
    shown = set(labels[:2].unique().tolist()) | set(logits[:2].argmax(1).unique().tolist())
    legend_entries = len(shown)  # the ignore index becomes the "ignored" entry
    width, height = prediction_panels_inches(2, legend_entries)
    with Image.open(path) as image:
        image.load()
        assert image.size == (round(width * 40), round(height * 40))


def test_colorize_maps_classes_to_palette_and_ignored_to_black():
    colours = [(10, 20, 30), (200, 100, 50), (1, 2, 3)]
    classes = np.array([[0, 1], [2, IGNORE_INDEX]])
    image = colorize(torch.from_numpy(classes), colours)
    assert image.dtype == np.uint8 and image.shape == (2, 2, 3)
    assert image[0, 0].tolist() == [10, 20, 30] and image[0, 1].tolist() == [200, 100, 50]
    assert image[1, 0].tolist() == [1, 2, 3] and image[1, 1].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="palette"):
        colorize(np.array([[3]]), colours)


def test_palettes_are_fixed_and_distinct():
    lc = palette(LABEL_SETS["lc"].level(1))
    assert lc[0] == (0xDB, 0x0E, 0x9A) and lc[7] == (255, 255, 255)  # building, snow
    assert len(set(lc)) == len(lc) == 19
    for level in LABEL_SETS["lpis"].levels:
        colours = palette(level)
        assert len(colours) == len(level.names) == len(set(colours))
        assert colours[level.names.index("background")] == (128, 128, 128)
        assert colours[level.names.index("mixed crops")] == (0, 0, 0)
        assert palette(level) == colours


def test_prediction_panels_never_draw_an_ignored_class_from_logits(tmp_path):
    """Logits whose raw favourite is LPIS "mixed crops" (drawn black) show the best scored class."""
    level = LABEL_SETS["lpis"].level(1)
    mixed = level.names.index("mixed crops")
    colours = palette(level)
    labels = torch.zeros(1, 16, 16, dtype=torch.long)  # all "grasses"
    logits = torch.zeros(1, level.num_classes, 16, 16)
    logits[:, 0], logits[:, mixed] = 1.0, 9.0
    path = prediction_panels(
        torch.full((1, 3, 16, 16), 0.5),
        labels,
        logits,
        colours,
        tmp_path / "panels.png",
        class_names=level.names,
        dpi=40,
        ignored_classes=level.ignored_channels,
    )
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    width, height = prediction_panels_inches(1, 1)
    top, bottom = 1 - 0.35 / height, (height - 0.35 - 3.0) / height  # the one row of panels
    row = round((1 - (top + bottom) / 2) * pixels.shape[0])
    panel = 0.98 / (3 + 2 * 0.03)  # gridspec: three axes, wspace 0.03 of an axis width
    label_x, predicted_x = (
        round((0.01 + (k + 0.5) * panel + k * 0.03 * panel) * pixels.shape[1]) for k in (1, 2)
    )
    assert tuple(pixels[row, label_x]) == colours[0]  # where the figure puts the label panel
    assert tuple(pixels[row, predicted_x]) == colours[0] != colours[mixed]


def test_band_range_takes_per_band_quantiles_over_the_chosen_pixels():
    image = torch.stack([torch.arange(101.0), 10 * torch.arange(101.0)]).reshape(2, 1, 101, 1)  # (C, T, H, W)
    where = torch.ones(1, 101, 1, dtype=torch.bool)
    low, high = band_range(image, where)
    assert low.shape == (2, 1, 1, 1)
    torch.testing.assert_close(low.flatten(), torch.tensor([2.0, 20.0]))  # 2 % of 0..100
    torch.testing.assert_close(high.flatten(), torch.tensor([98.0, 980.0]))
    where[:, 50:] = False  # only the lower half counts
    assert float(band_range(image, where)[1][0]) == pytest.approx(0.98 * 49)
    flat = torch.ones(1, 4, 4)
    low, high = band_range(flat, torch.zeros(4, 4, dtype=torch.bool))  # none chosen: all pixels
    assert float(high - low) > 0  # a flat image keeps a positive range


def test_stretched_maps_the_range_to_unit_and_greys_pixels():
    image = torch.tensor([[[0.0, 5.0, 20.0]]])  # one band, one row
    grey = torch.tensor([[False, False, True]])
    shown = stretched(image, torch.tensor(0.0), torch.tensor(10.0), grey)
    assert shown.shape == (3, 1, 3)
    torch.testing.assert_close(shown[:, 0], torch.tensor([[0.0, 0.5, GREY]] * 3))


def test_panel_grid_draws_a_row_per_label_and_refuses_other_shapes(tmp_path):
    panels = {"a": torch.rand(2, 3, 6, 6), "b": torch.rand(2, 3, 6, 6)}
    outlines = {"a": torch.zeros(2, 6, 6, dtype=torch.bool)}
    outlines["a"][0, :3] = True
    path = panel_grid(panels, ["first", "second"], "title", tmp_path / "grid.png", dpi=40, outlines=outlines)
    with Image.open(path) as image:
        image.load()
        assert image.size == (round((2 * 2.0 + 0.4) * 40), round((2 * 2.0 + 0.6) * 40))
    with pytest.raises(ValueError, match="panels"):
        panel_grid(panels, ["only one"], "title", tmp_path / "bad.png")
    with pytest.raises(ValueError, match="panels"):
        panel_grid({"a": torch.rand(2, 1, 6, 6)}, ["x", "y"], "title", tmp_path / "bad.png")
