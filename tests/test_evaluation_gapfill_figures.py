"""Gap-filling figures: the dates drawn, what each panel shows, PNG sizes and refused shapes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from maestro.evaluation.figures import GREY
from maestro.evaluation.gapfill import NIR, RED
from maestro.evaluation.gapfill_figures import (
    COLUMNS,
    TRUE_COLOUR,
    figure_dates,
    gapfill_figure,
    gapfill_panels,
    ndvi_figure,
)

T, C, H, W = 5, 10, 10, 10
DATES = [20210105, 20210301, 20210420, 20210615, 20210901]


def _series() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    truth = torch.rand(T, C, H, W, generator=generator) * 0.3
    hidden = torch.tensor([False, True, False, False, False])
    cloudy = torch.zeros(T, H, W, dtype=torch.bool)
    cloudy[3, :5] = True  # the top half of the fourth date
    inputs = truth.clone()
    inputs[3, :, :5] = 0.9  # a bright cloud
    return {"inputs": inputs, "truth": truth, "hidden": hidden, "cloudy": cloudy}


def test_true_colour_is_b4_b3_b2():
    assert TRUE_COLOUR == (2, 1, 0)


def test_large_series_draw_held_out_then_cloudiest_dates_and_a_few_clear_ones():
    hidden = torch.zeros(30, dtype=torch.bool)
    hidden[[5, 20]] = True
    cloudy = torch.zeros(30, 2, 2, dtype=torch.bool)
    cloudy[10] = True  # 100 %
    cloudy[12, 0] = True  # 50 %
    cloudy[25, 0, 0] = True  # 25 %
    # five rows: 2 held out, the cloudiest (10), then two clear dates spread over the clear ones
    assert figure_dates(hidden, cloudy, max_rows=5, clear_rows=2) == [0, 5, 10, 20, 29]
    assert figure_dates(hidden, cloudy, max_rows=7, clear_rows=2) == [0, 5, 10, 12, 20, 25, 29]
    assert figure_dates(hidden[:4], cloudy[:4], max_rows=5) == [0, 1, 2, 3]  # short series: every date


def test_panels_grey_held_out_inputs_and_a_perfect_fill_looks_like_the_truth():
    s = _series()
    panels, labels, outlines = gapfill_panels(
        s["inputs"], s["truth"], s["truth"], s["hidden"], s["cloudy"], DATES
    )
    assert list(panels) == list(COLUMNS)
    assert all(
        p.shape == (T, 3, H, W) and float(p.min()) >= 0 and float(p.max()) <= 1 for p in panels.values()
    )
    assert bool((panels["input"][1] == GREY).all())  # held out: the model never saw it
    assert not bool((panels["input"][0] == GREY).all())
    torch.testing.assert_close(panels["reconstruction"], panels["truth"])  # one stretch for all panels
    assert bool((panels["input"][3, :, :5] == 1.0).all())  # the cloud saturates: the stretch ignores it
    assert labels[1] == "2021-03-01\nheld out" and labels[3] == "2021-06-15\ncloudy 50 %"
    assert labels[0] == "2021-01-05\nclear"
    assert torch.equal(outlines, s["cloudy"])


def test_gapfill_figure_writes_one_row_per_date(tmp_path):
    s = _series()
    path = gapfill_figure(
        s["inputs"],
        s["truth"] + 0.01,
        s["truth"],
        s["hidden"],
        s["cloudy"],
        DATES,
        tmp_path / "a" / "fill.png",
        dpi=40,
    )
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        assert image.size == (round((3 * 2.0 + 0.4) * 40), round((T * 2.0 + 0.6) * 40))


@pytest.mark.parametrize("argument", ["inputs", "reconstruction", "truth", "hidden", "cloudy", "dates"])
def test_gapfill_figure_refuses_bad_shapes_naming_the_argument(tmp_path, argument):
    s = _series()
    kwargs = {
        "inputs": s["inputs"],
        "reconstruction": s["truth"],
        "truth": s["truth"],
        "hidden": s["hidden"],
        "cloudy": s["cloudy"],
        "dates": DATES,
    }
    kwargs[argument] = kwargs[argument][1:]  # one date short
    with pytest.raises(ValueError, match=argument):
        gapfill_figure(**kwargs, path=tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_gapfill_figure_refuses_masks_that_are_not_bool(tmp_path):
    s = _series()
    with pytest.raises(ValueError, match="hidden"):
        gapfill_figure(
            s["inputs"], s["truth"], s["truth"], s["hidden"].float(), s["cloudy"], DATES, tmp_path / "bad.png"
        )


def _ndvi_inputs() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    s = _series()
    reconstructed = s["cloudy"].clone()
    reconstructed[1] = True
    filled = s["truth"].clone()
    filled[:, NIR] += 0.2
    return {"input": s["inputs"], "reconstruction": filled}, reconstructed


def test_ndvi_figure_writes_one_panel_per_pixel(tmp_path):
    series, reconstructed = _ndvi_inputs()
    dates = torch.tensor([*DATES[:-1], 0])  # the last date is padding: left out
    path = ndvi_figure(series, dates, [(0, 0), (7, 3)], reconstructed, tmp_path / "ndvi.png", dpi=40)
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and image.size == (round(8.0 * 40), round((2.2 * 2 + 0.8) * 40))
    assert (RED, NIR) == (2, 6)


@pytest.mark.parametrize(
    ("change", "argument"),
    [
        (lambda a: a.update(series={}), "series"),
        (lambda a: a.update(series={**a["series"], "bad": a["series"]["input"][:, :3]}), "series 'bad'"),
        (lambda a: a.update(dates=DATES[:2]), "dates"),
        (lambda a: a.update(pixels=[(0, 10)]), "pixels"),
        (lambda a: a.update(pixels=[]), "pixels"),
        (lambda a: a.update(reconstructed=a["reconstructed"][0]), "reconstructed"),
    ],
)
def test_ndvi_figure_refuses_bad_arguments_naming_them(tmp_path, change, argument):
    series, reconstructed = _ndvi_inputs()
    arguments = {"series": series, "dates": DATES, "pixels": [(0, 0)], "reconstructed": reconstructed}
    change(arguments)
    with pytest.raises(ValueError, match=argument):
        ndvi_figure(**arguments, path=tmp_path / "bad.png")
