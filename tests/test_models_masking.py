import pytest
import torch

from maestro.models.config import EncoderConfig
from maestro.models.fusion import TokenLayout, group_tokens, plan_sequences
from maestro.models.masking import (
    MaskPriors,
    SampleGenerators,
    draw_priors,
    gather_tokens,
    num_masked,
    sample_mask,
    scatter_tokens,
    visible_indices,
)


def _setup(mode, **overrides):
    specs = EncoderConfig(**overrides).specs
    layouts = {key: TokenLayout.of(spec) for key, spec in specs.items()}
    plan = plan_sequences(layouts, mode, {key: spec.fusion_group for key, spec in specs.items()})
    return layouts, plan


def _padding(layouts, batch, valid=None):
    valid = valid or {}
    out = {}
    for key, lay in layouts.items():
        dates = valid.get(key, torch.ones(batch, lay.num_dates, dtype=torch.bool))
        out[key] = (~dates)[:, :, None, None].expand(-1, -1, lay.num_groups, lay.num_patches)
    return out


def test_num_masked_rounds_and_keeps_one_visible():
    assert [num_masked(n, 0.75) for n in (1024, 256, 400, 200, 25, 2, 1)] == [
        768,
        192,
        300,
        150,
        19,
        2 - 1,
        0,
    ]


@pytest.mark.parametrize(
    ("length", "ratio", "expected"),
    [(150, 0.75, 112), (6, 0.75, 4), (14, 0.75, 10), (10, 0.75, 8), (5, 0.5, 2), (7, 0.5, 4), (2, 0.75, 1)],
)
def test_num_masked_rounds_ties_to_even_as_the_reference(length, ratio, expected):
    """The reference masks ``round(ratio * L)`` (Python's round: ties to even): 112.5 -> 112."""
    assert num_masked(length, ratio) == expected == min(round(ratio * length), length - 1)


def test_exact_count_per_group_and_no_group_fully_masked():
    layouts, plan = _setup("group")
    generator = torch.Generator().manual_seed(0)
    priors = MaskPriors()
    for _ in range(100):
        masks = sample_mask(plan, layouts, _padding(layouts, 8), 0.75, priors, generator)
        for spec, grouped in zip(plan, group_tokens(masks, plan), strict=True):
            length = spec.length(layouts)
            counts = grouped.sum(dim=1)
            assert (counts == round(0.75 * length)).all(), spec.stream
            assert (counts < length).all()


@pytest.mark.parametrize("mode", ["shared", "monotemp"])
def test_framewise_modes_mask_each_frame_independently(mode):
    layouts, plan = _setup(mode)
    masks = sample_mask(plan, layouts, _padding(layouts, 3), 0.75, None, torch.Generator().manual_seed(0))
    for key, mask in masks.items():
        per_frame = mask.sum(dim=-1)  # (B, T, G)
        assert (per_frame == num_masked(layouts[key].num_patches, 0.75)).all(), key
    s2 = masks["s2"]
    assert not all(torch.equal(s2[0, 0], s2[0, t]) for t in range(1, 16))


def test_prior_shapes():
    layouts, _ = _setup("group")
    sizes = {"aerial": 1, "dem": 1, "s2": 1, "s1_asc": 2, "s1_des": 2}
    only = dict.fromkeys(("modality", "date", "location", "band_group"), 0.0)
    draw = lambda **p: draw_priors(layouts, sizes, 64, MaskPriors(**{**only, **p}), torch.device("cpu"))  # noqa: E731
    dates = draw(date=0.5)["s2"]
    assert (dates == dates[:, :, :1, :1]).all()  # whole dates
    assert dates.any() and not dates.all()
    assert not draw(date=1.0)["aerial"].any()  # no date prior for a single date
    locations = draw(location=0.5)["s2"]
    assert (locations == locations[:, :1]).all()  # same positions across dates
    modality = draw(modality=0.5)
    assert not modality["aerial"].any()  # single-modality group: no modality prior
    assert (modality["s1_asc"] == modality["s1_asc"][:, :1, :1, :1]).all() and modality["s1_asc"].any()


def _rate(masks_fn, draws=40):
    return sum(masks_fn() for _ in range(draws)) / draws


def test_structured_priors_go_first():
    layouts, plan = _setup("group")
    generator = torch.Generator().manual_seed(1)
    only = dict.fromkeys(("modality", "date", "location", "band_group"), 0.0)
    padding = _padding(layouts, 16)

    def masks(**p):
        return sample_mask(plan, layouts, padding, 0.75, MaskPriors(**{**only, **p}), generator)

    def whole_dates(m):  # s2 dates fully masked, per sample
        return m["s2"].flatten(2).all(-1).float().sum(-1).mean().item()

    def whole_locations(m):  # s2 positions masked at every date
        return m["s2"].all(1).float().sum((-2, -1)).mean().item()

    def one_s1_orbit(m):  # exactly one of s1_asc / s1_des fully masked
        asc, des = m["s1_asc"].flatten(1).all(-1), m["s1_des"].flatten(1).all(-1)
        return (asc ^ des).float().mean().item()

    assert _rate(lambda: whole_dates(masks(date=0.25))) > 3.0  # ~4 of 16 expected
    assert _rate(lambda: whole_dates(masks())) < 0.5
    assert _rate(lambda: whole_locations(masks(location=0.4))) > 8.0  # ~10 of 25 expected
    assert _rate(lambda: whole_locations(masks())) < 1.0
    assert 0.25 < _rate(lambda: one_s1_orbit(masks(modality=0.25))) < 0.6  # 0.375 / (1 - 0.0625)
    assert _rate(lambda: one_s1_orbit(masks())) < 0.05
    # priors covering a whole group (both orbits, p 0.81) are redrawn: one orbit survives
    assert _rate(lambda: one_s1_orbit(masks(modality=0.9))) > 0.8  # 0.18 / 0.19 expected


def test_padded_dates_are_masked_first():
    layouts, plan = _setup("group")
    valid = {"s2": torch.ones(4, 16, dtype=torch.bool), "s1_asc": torch.ones(4, 4, dtype=torch.bool)}
    valid["s2"][0, 10:] = False  # 6 padded dates = 150 tokens < 300 masked
    valid["s2"][1, 2:] = False  # 14 padded dates = 350 tokens > 300 masked
    valid["s1_asc"][2] = False  # a whole orbit missing
    padding = _padding(layouts, 4, valid)
    for seed in range(20):
        masks = sample_mask(plan, layouts, padding, 0.75, MaskPriors(), torch.Generator().manual_seed(seed))
        assert masks["s2"][0, 10:].all()
        assert masks["s2"][1].sum() == 300 and masks["s2"][1, 2:].sum() == 300  # visible: 50 padded
        assert masks["s1_asc"][2].all() and masks["s1_des"][2].sum() == 50
        # no group is fully masked among its valid tokens
        assert not masks["s2"][0, :10].all()


def test_gather_scatter_round_trip():
    mask = torch.tensor([[True, False, True, False], [False, True, True, False]])
    keep = visible_indices(mask, 2)
    assert keep.tolist() == [[1, 3], [0, 3]]
    tokens = torch.arange(8.0).view(2, 4, 1)
    visible = gather_tokens(tokens, keep)
    assert visible.flatten().tolist() == [1, 3, 4, 7]
    full = scatter_tokens(visible, keep, 4)
    assert full.flatten().tolist() == [0, 1, 0, 3, 4, 0, 0, 7]


@pytest.mark.parametrize("mode", ["group", "shared"])
def test_per_sample_generators_make_a_mask_independent_of_its_batch(mode):
    """Validation masks follow the sample alone: the same patch gets the same mask alone, with
    other patches, in another position, and with priors redrawn for its batch-mates."""
    layouts, plan = _setup(mode)
    priors = MaskPriors(modality=0.9) if mode == "group" else None  # frequent redraws
    keys = ["a", "b", "c", "d"]

    def masks(batch_keys):
        generators = SampleGenerators.from_keys(batch_keys, seed=3, device="cpu")
        return sample_mask(plan, layouts, _padding(layouts, len(batch_keys)), 0.75, priors, generators)

    together = masks(keys)
    for index, key in enumerate(keys):
        alone = masks([key])
        for modality in together:
            assert torch.equal(alone[modality][0], together[modality][index]), (key, modality)
    reordered = masks(keys[::-1])
    assert all(torch.equal(reordered[m][0], together[m][3]) for m in together)
    assert not torch.equal(together["s2"][0], together["s2"][1])  # different patches, different masks
    other_seed = sample_mask(
        plan, layouts, _padding(layouts, 4), 0.75, priors, SampleGenerators.from_keys(keys, 4, "cpu")
    )
    assert not torch.equal(other_seed["s2"], together["s2"])
