import pytest
import torch

from maestro.models.config import EncoderConfig
from maestro.models.fusion import TokenLayout, group_tokens, plan_sequences
from maestro.models.masking import (
    PRIOR_DRAWS,
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
    # priors covering a whole group (both orbits, p 0.81) are rejected: one orbit survives
    # (0.18 / 0.19 * (1 - 0.81**16) = 0.91 expected)
    assert _rate(lambda: one_s1_orbit(masks(modality=0.9))) > 0.8


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
    other patches, in another position, and with priors rejected for its batch-mates."""
    layouts, plan = _setup(mode)
    priors = MaskPriors(modality=0.9) if mode == "group" else None  # frequent rejections
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


@pytest.mark.parametrize("generator", [None, torch.Generator().manual_seed(0)], ids=["global", "generator"])
def test_training_masks_need_no_host_sync(generator):
    """The training path (global RNG or one generator) runs on meta tensors, which hold no data:
    any ``bool(tensor)`` or ``.item()`` (a GPU->host sync on CUDA) would raise here."""
    layouts, plan = _setup("group")
    padding = {key: p.to("meta") for key, p in _padding(layouts, 4).items()}
    masks = sample_mask(plan, layouts, padding, 0.75, MaskPriors(), generator)
    for key, mask in masks.items():
        assert mask.device.type == "meta" and mask.shape == padding[key].shape and mask.dtype == torch.bool


def test_training_masks_compile_into_one_graph():
    """No ``torch.compiler.disable`` island and no data-dependent branch: a whole-graph trace."""
    layouts, plan = _setup("group")
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda padding: sample_mask(plan, layouts, padding, 0.75, MaskPriors()),
        fullgraph=True,
        backend="eager",
    )
    masks = compiled(_padding(layouts, 2))
    for spec, grouped in zip(plan, group_tokens(masks, plan), strict=True):
        assert (grouped.sum(dim=1) == num_masked(spec.length(layouts), 0.75)).all(), spec.stream
    torch._dynamo.reset()


def _redraw_loop(plan, layouts, padding, priors, generator, max_redraws):
    """The rejection loop the candidate draws replace: per sequence, redraw the priors of the
    samples they (with padding) cover entirely, at most ``max_redraws`` times, then drop them."""
    batch = next(iter(padding.values())).shape[0]
    sizes = {m: len(spec.members) for spec in plan for m in spec.members}
    padded = group_tokens(padding, plan)

    def draw():
        return group_tokens(draw_priors(layouts, sizes, batch, priors, torch.device("cpu"), generator), plan)

    chosen = draw()
    for _ in range(max_redraws):
        covered = [(c | p).all(dim=1, keepdim=True) for c, p in zip(chosen, padded, strict=True)]
        if not any(c.any() for c in covered):
            break
        chosen = [torch.where(cov, new, c) for cov, new, c in zip(covered, draw(), chosen, strict=True)]
    covered = [(c | p).all(dim=1, keepdim=True) for c, p in zip(chosen, padded, strict=True)]
    return [c & ~cov for c, cov in zip(chosen, covered, strict=True)]


@pytest.mark.parametrize("draws", [3, PRIOR_DRAWS])
def test_candidate_priors_match_the_redraw_loop_in_distribution(draws):
    """The first non-covering of R candidates is the redraw loop truncated at R draws. Modality
    prior 0.9 in the two-orbit S1 group: both orbits (0.81, covering) are rejected, so a draw
    keeps one orbit (0.09 each) or neither (0.01); after R covering draws, no prior at all."""
    all_layouts, all_plan = _setup("group")
    layouts = {key: all_layouts[key] for key in ("s1_asc", "s1_des")}
    plan = [spec for spec in all_plan if spec.members == ("s1_asc", "s1_des")]
    priors = MaskPriors(modality=0.9, date=0.0, location=0.0, band_group=0.0)
    batch = 8000
    padding = _padding(layouts, batch)

    masks = sample_mask(plan, layouts, padding, 0.75, priors, torch.Generator().manual_seed(5), draws)
    asc, des = masks["s1_asc"].flatten(1).all(-1), masks["s1_des"].flatten(1).all(-1)
    assert not (asc & des).any()  # 150 of 200 tokens masked: an orbit is whole only if its prior chose it
    ours = torch.stack([asc.float().mean(), des.float().mean(), (~asc & ~des).float().mean()])

    (old,) = _redraw_loop(plan, layouts, padding, priors, torch.Generator().manual_seed(6), draws - 1)
    old_asc, old_des = old[:, :100].all(-1), old[:, 100:].all(-1)
    assert not (old_asc & old_des).any()
    reference = torch.stack(
        [old_asc.float().mean(), old_des.float().mean(), (~old_asc & ~old_des).float().mean()]
    )

    one = 0.09 / 0.19 * (1 - 0.81**draws)
    expected = torch.tensor([one, one, 1 - 2 * one])
    # binomial standard deviation <= 0.0056 per frequency: the bounds are >= 3.8 sigma wide
    torch.testing.assert_close(ours, reference, rtol=0, atol=0.03)
    torch.testing.assert_close(ours, expected, rtol=0, atol=0.025)
    torch.testing.assert_close(reference, expected, rtol=0, atol=0.025)


def test_priors_need_whole_sequences_and_a_candidate():
    layouts, plan = _setup("shared")
    with pytest.raises(ValueError, match="mod/group"):
        sample_mask(plan, layouts, _padding(layouts, 1), 0.75, MaskPriors())
    layouts, plan = _setup("group")
    with pytest.raises(ValueError, match="prior_draws"):
        sample_mask(plan, layouts, _padding(layouts, 1), 0.75, MaskPriors(), prior_draws=0)
