import pytest
import torch

from maestro.errors import ConfigError
from maestro.modalities import ModalityOverride
from maestro.models.encoder import MaestroEncoder, restrict, take_indices
from maestro.models.mae import MaestroMAE
from maestro.models.synthetic import synthetic_batch, tiny_config
from maestro.models.zoo import load_encoder_weights

MODES = ["shared", "monotemp", "mod", "group"]

pytestmark = pytest.mark.usefixtures("single_thread")


def _encoder(mode: str = "group") -> MaestroEncoder:
    torch.manual_seed(0)
    return MaestroEncoder(tiny_config(fusion=mode).encoder).eval()


def test_state_dict_keys_of_a_tiny_encoder_are_pinned():
    """The published layout: changing any of these names breaks every released checkpoint."""
    encoder = MaestroEncoder(
        tiny_config(
            modalities=("aerial", "s1_asc", "s1_des"),
            overrides={
                "aerial": ModalityOverride(image_size=32, patch_size=8),
                "s1_asc": ModalityOverride(image_size=4, num_dates=2),
                "s1_des": ModalityOverride(image_size=4, num_dates=2),
            },
            depth=2,
            inter_depth=1,
        ).encoder
    )
    block = [
        "norm1.weight",
        "norm1.bias",
        "attn.qkv.weight",
        "attn.proj.weight",
        "attn.proj.bias",
        "norm2.weight",
        "norm2.bias",
        "mlp.fc1.weight",
        "mlp.fc1.bias",
        "mlp.fc2.weight",
        "mlp.fc2.bias",
    ]
    expected = []
    for key in ("aerial", "s1_asc", "s1_des"):
        expected += [
            f"patch_embed.{key}.groups.0.{name}"
            for name in ("proj.weight", "proj.bias", "norm.weight", "norm.bias")
        ]
    for stream in ("aerial", "s1"):
        expected += [f"streams.{stream}.blocks.0.{name}" for name in block]
        expected += [f"streams.{stream}.norm.weight", f"streams.{stream}.norm.bias"]
    expected += [f"late_fusion.blocks.0.{name}" for name in block]
    expected += ["late_fusion.norm.weight", "late_fusion.norm.bias"]
    assert list(encoder.state_dict()) == expected


def test_mae_holds_the_encoder_under_one_prefix():
    mae = MaestroMAE(tiny_config())
    encoder = MaestroEncoder(tiny_config().encoder)
    prefixed = {k for k in mae.state_dict() if k.startswith("encoder.")}
    assert prefixed == {f"encoder.{k}" for k in encoder.state_dict()}
    encoder.load_state_dict(mae.encoder.state_dict())
    batch = synthetic_batch(tiny_config())
    with torch.no_grad():
        torch.testing.assert_close(
            encoder.eval()(**batch).tokens["s2"], mae.eval().encoder(**batch).tokens["s2"]
        )
    assert mae.no_weight_decay() == {f"mask_tokens.{k}.token" for k in tiny_config().encoder.modalities}


def test_take_indices_follows_timm():
    assert take_indices(12, None) == list(range(12))
    assert take_indices(12, 4) == [8, 9, 10, 11]
    assert take_indices(12, [-1, 2]) == [11, 2]
    with pytest.raises(ValueError, match=r"blocks 0..11"):
        take_indices(12, [12])
    with pytest.raises(ValueError, match="last 13 blocks"):
        take_indices(12, 13)


@pytest.mark.parametrize("mode", MODES)
def test_forward_intermediates_shapes_and_indices(mode):
    config = tiny_config(fusion=mode)
    encoder = _encoder(mode)
    batch = synthetic_batch(config)
    with torch.no_grad():
        out = encoder.forward_intermediates(**batch, indices=(0, 1, 2))
        last_two = encoder.forward_intermediates(**batch, indices=2)
        negative = encoder.forward_intermediates(**batch, indices=[-3])
        plain = encoder(**batch)
    assert out.mask is None and len(out.intermediates) == 3 and plain.intermediates == []
    for key, spec in config.encoder.specs.items():
        shape = (2, spec.num_dates, 1, spec.grid, spec.grid, 64)
        assert tuple(out.tokens[key].shape) == shape
        assert all(tuple(layer[key].shape) == shape for layer in out.intermediates)
        torch.testing.assert_close(out.intermediates[2][key], out.tokens[key])
        torch.testing.assert_close(plain.tokens[key], out.tokens[key])
        torch.testing.assert_close(last_two.intermediates[0][key], out.intermediates[1][key])
        torch.testing.assert_close(negative.intermediates[0][key], out.intermediates[0][key])
        assert out.valid[key].shape == (2, spec.num_dates) and out.valid[key].all()
    assert not torch.allclose(out.intermediates[0]["aerial"], out.intermediates[1]["aerial"])


def test_forward_intermediates_rejects_unknown_blocks():
    with pytest.raises(ValueError, match=r"blocks 0..2"):
        _encoder().forward_intermediates(**synthetic_batch(tiny_config()), indices=(3,))


@pytest.mark.parametrize("mode", MODES)
def test_padding_equals_a_shorter_series(mode):
    """Padded dates are invisible: encoding 2 real dates + 1 padded one equals encoding the 2 dates."""
    torch.manual_seed(0)
    long_config = tiny_config(fusion=mode).encoder
    short_config = long_config.replace(
        overrides={**long_config.overrides, "s2": ModalityOverride(image_size=4, num_dates=2)}
    )
    long_model, short_model = MaestroEncoder(long_config).eval(), MaestroEncoder(short_config).eval()
    short_model.load_state_dict(long_model.state_dict())
    batch = synthetic_batch(long_config, batch_size=2)
    batch["valid"]["s2"][:, 2] = False
    short = {name: dict(part) for name, part in batch.items()}
    for name in ("inputs", "times", "valid"):
        short[name]["s2"] = batch[name]["s2"][:, :2]
    with torch.no_grad():
        long_out = long_model.forward_intermediates(**batch, indices=(0,))
        short_out = short_model.forward_intermediates(**short, indices=(0,))
    for key in long_config.modalities:
        expected = short_out.tokens[key]
        got = long_out.tokens[key][:, :2] if key == "s2" else long_out.tokens[key]
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        long_out.intermediates[0]["s2"][:, :2], short_out.intermediates[0]["s2"], atol=1e-5, rtol=1e-4
    )
    assert not long_out.valid["s2"][:, 2].any() and long_out.valid["s2"][:, :2].all()


def test_input_checks_name_the_problem():
    encoder = _encoder()
    batch = synthetic_batch(tiny_config())
    missing = {k: v for k, v in batch["inputs"].items() if k != "dem"}
    with pytest.raises(ValueError, match=r"missing \['dem'\]"):
        encoder(missing, batch["times"], batch["valid"])


def test_a_padding_flag_known_on_the_host_spares_the_device_sync(monkeypatch):
    import maestro.models.encoder as encoder_module

    encoder = _encoder()
    batch = synthetic_batch(tiny_config())
    with torch.no_grad():
        expected = encoder(**batch).tokens["s2"]
        monkeypatch.setattr(encoder_module, "any_padding", lambda valid: pytest.fail("host sync"))
        for padded in (False, True):  # True only adds (all-true) key masks: same function
            got = encoder.forward_intermediates(**batch, indices=[], padded=padded).tokens["s2"]
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_compiled_encoder_traces_without_graph_breaks_when_padding_is_known():
    encoder = _encoder()
    batch = synthetic_batch(tiny_config())
    explained = torch._dynamo.explain(encoder.forward_intermediates)(**batch, indices=[-1], padded=False)
    assert explained.graph_break_count == 0, explained.break_reasons


# ------------------------------------------------------------------ a subset of the inputs
def test_restrict_keeps_only_the_weights_of_the_chosen_inputs(tiny_pretrain_run):
    weights = load_encoder_weights(tiny_pretrain_run)
    subset = restrict(weights, ("aerial", "s2"))
    assert subset.config.modalities == ("aerial", "s2")
    assert set(subset.config.overrides) == {"aerial", "s2"}
    with torch.device("meta"):
        assert set(subset.state) == set(MaestroEncoder(subset.config, initialise=False).state_dict())
    assert len(subset.state) < len(weights.state)
    dropped = set(weights.state) - set(subset.state)
    assert dropped and all(any(key in name for key in ("dem", "s1")) for name in dropped), sorted(dropped)[:5]
    for key, value in subset.state.items():
        assert torch.equal(value, weights.state[key]), key
    encoder = MaestroEncoder(subset.config)
    encoder.load_state_dict(subset.state, strict=True)
    assert restrict(weights, weights.config.modalities) is weights
    assert "restricted to ['aerial', 's2']" in subset.note


def test_restrict_refuses_an_input_the_encoder_never_saw(tiny_pretrain_run):
    weights = load_encoder_weights(tiny_pretrain_run)
    with pytest.raises(ConfigError, match=r"no weights\s+for \['spot'\]"):
        restrict(weights, ("aerial", "spot"))
