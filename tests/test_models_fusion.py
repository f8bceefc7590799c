import pytest
import torch

from maestro.models.config import EncoderConfig
from maestro.models.fusion import TokenLayout, group_tokens, plan_sequences, streams, ungroup_tokens


@pytest.fixture(scope="module")
def flairhub():
    specs = EncoderConfig().specs
    layouts = {key: TokenLayout.of(spec) for key, spec in specs.items()}
    groups = {key: spec.fusion_group for key, spec in specs.items()}
    return layouts, groups


def _tokens(layouts, batch=2, trailing=(3,)):
    return {
        k: torch.randn(batch, lay.num_dates, lay.num_groups, lay.num_patches, *trailing)
        for k, lay in layouts.items()
    }


def test_group_mode_concatenates_fusion_groups(flairhub):
    layouts, groups = flairhub
    plan = plan_sequences(layouts, "group", groups)
    assert [(s.stream, s.members, s.framewise) for s in plan] == [
        ("aerial", ("aerial",), False),
        ("dem", ("dem",), False),
        ("s2", ("s2",), False),
        ("s1", ("s1_asc", "s1_des"), False),
    ]
    assert [s.length(layouts) for s in plan] == [1024, 256, 400, 200]
    assert streams("group", groups) == ["aerial", "dem", "s2", "s1"]
    tokens = _tokens(layouts)
    s1 = group_tokens(tokens, plan)[3]
    assert s1.shape == (2, 200, 3)
    torch.testing.assert_close(s1[:, :100], tokens["s1_asc"].flatten(1, 3))
    torch.testing.assert_close(s1[:, 100:], tokens["s1_des"].flatten(1, 3))


def test_mod_mode_one_sequence_per_modality(flairhub):
    layouts, groups = flairhub
    plan = plan_sequences(layouts, "mod", groups)
    assert [s.stream for s in plan] == list(layouts) == streams("mod", groups)
    assert [s.length(layouts) for s in plan] == [1024, 256, 400, 100, 100]


def test_framewise_modes_fold_frames_into_batch(flairhub):
    layouts, groups = flairhub
    shared = plan_sequences(layouts, "shared", groups)
    assert [(s.stream, s.members) for s in shared] == [
        ("shared", ("aerial",)),
        ("shared", ("dem",)),
        ("shared", ("s2", "s1_asc", "s1_des")),
    ]
    sequences = group_tokens(_tokens(layouts, batch=2), shared)
    assert [tuple(s.shape) for s in sequences] == [(2, 1024, 3), (2, 256, 3), (2 * (16 + 4 + 4), 25, 3)]
    monotemp = plan_sequences(layouts, "monotemp", groups)
    assert [s.stream for s in monotemp] == list(layouts)
    assert [s.length(layouts) for s in monotemp] == [1024, 256, 25, 25, 25]


@pytest.mark.parametrize("mode", ["shared", "monotemp", "mod", "group"])
@pytest.mark.parametrize("trailing", [(), (5,)])
def test_ungroup_inverts_group(flairhub, mode, trailing):
    layouts, groups = flairhub
    plan = plan_sequences(layouts, mode, groups)
    tokens = _tokens(layouts, batch=3, trailing=trailing)
    back = ungroup_tokens(group_tokens(tokens, plan), plan, layouts)
    assert list(back) == list(tokens)
    for key in tokens:
        assert torch.equal(back[key], tokens[key])


def test_unknown_mode_raises(flairhub):
    layouts, groups = flairhub
    with pytest.raises(ValueError, match="unknown fusion mode"):
        plan_sequences(layouts, "late", groups)
