"""A reference MAESTRO checkpoint, converted, reproduces the reference's own outputs.

The fixture was written by IGN's reference code (reduced widths); its README gives every
configuration value and a tolerance of about 2e-5 (fp32) for a port that does the date arithmetic
as the reference does.
"""

from __future__ import annotations

import json

import pytest
import torch
from einops import rearrange
from reference_fixture import (
    ATOL,
    CHECKPOINT,
    DECODER_HEADS,
    MODALITIES,
    OVERRIDES,
    RTOL,
    STREAMS,
    max_error,
    model_batch,
    reference_outputs,
    require_fixture,
)

from maestro.errors import ConfigError
from maestro.hub.folder import read_model_folder
from maestro.models.encoder import MaestroEncoder
from maestro.models.fusion import group_tokens
from maestro.models.loss import normalise_patches
from maestro.models.segmenter import MaestroSegmenter
from maestro.models.segmenter_config import SegmenterConfig
from maestro.models.zoo import load_encoder_weights
from maestro.reference.convert import convert_checkpoint, import_reference
from maestro.reference.options import TARGET_TYPES, ConversionOptions
from maestro.reference.plan import TARGETS, plan_conversion
from maestro.reference.unpickle import read_reference_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def checkpoint():
    require_fixture()
    return read_reference_checkpoint(CHECKPOINT)


@pytest.fixture(scope="module")
def outputs():
    return reference_outputs()


@pytest.fixture(scope="module")
def batch():
    return model_batch()


def encoder_of(checkpoint, weights: str, **config_changes) -> MaestroEncoder:
    conversion = convert_checkpoint(
        checkpoint, ConversionOptions(weights=weights, model_type="maestro-encoder", overrides=OVERRIDES)
    )
    config = conversion.config.replace(**config_changes) if config_changes else conversion.config
    encoder = MaestroEncoder(config, initialise=False).eval()
    encoder.load_state_dict(conversion.state, strict=True)
    return encoder


def intermediates(encoder: MaestroEncoder, batch) -> dict[str, torch.Tensor]:
    """The fixture's stored quantities, computed by the suite's encoder (keys as in outputs)."""
    inputs, times = encoder.prepare(*batch, None)[:2]
    streams = [spec.stream for spec in encoder.plan]
    out = {}
    with torch.no_grad():
        patches = {key: encoder.patch_embed[key](inputs[key]) for key in MODALITIES}
        tokens = {
            key: encoder.encoding(patches[key], times[key], encoder.specs[key].grid) for key in MODALITIES
        }
        encoded = encoder.encode_sequences(inputs, times, None, None, {encoder.own_depth - 1})
        public = encoder(*batch).tokens  # the public API gives the same final tokens, per modality
    for key in MODALITIES:
        out[f"patch.{key}"] = patches[key][:, :, 0]  # one band group
    for name, sequence in zip(streams, group_tokens(tokens, encoder.plan), strict=True):
        out[f"tokens.{name}"] = sequence
    for name, sequence in zip(streams, encoded.layers[encoder.own_depth - 1], strict=True):
        out[f"pre_inter.{name}"] = sequence
    for name, sequence in zip(streams, encoded.final, strict=True):
        out[f"enc.{name}"] = sequence
    flat = {key: rearrange(value, "b t g h w d -> b (t g h w) d") for key, value in public.items()}
    out["public.s1"] = torch.cat([flat["s1_asc"], flat["s1_des"]], dim=1)
    out["public.aerial"] = flat["aerial"]
    return out


def test_converted_encoder_reproduces_every_stored_output(checkpoint, outputs, batch):
    ours = intermediates(encoder_of(checkpoint, "model"), batch)
    for name in [f"patch.{k}" for k in MODALITIES] + [
        f"{kind}.{s}" for kind in ("tokens", "pre_inter", "enc") for s in STREAMS
    ]:
        torch.testing.assert_close(ours[name], outputs[name], atol=ATOL, rtol=RTOL, msg=name)
    torch.testing.assert_close(ours["public.s1"], ours["enc.s1"], atol=0, rtol=0)
    torch.testing.assert_close(ours["public.aerial"], ours["enc.aerial"], atol=0, rtol=0)


def test_ema_weights_are_the_default_and_reproduce_the_ema_outputs(checkpoint, outputs, batch, tmp_path):
    folder = import_reference(
        CHECKPOINT, tmp_path / "mae", ConversionOptions(overrides=OVERRIDES, decoder_heads=DECODER_HEADS)
    )
    loaded = load_encoder_weights(folder)  # what `finetune --init FOLDER` reads
    encoder = MaestroEncoder(loaded.config, initialise=False).eval()
    encoder.load_state_dict(loaded.state, strict=True)
    ours = intermediates(encoder, batch)
    for stream in STREAMS:
        torch.testing.assert_close(ours[f"enc.{stream}"], outputs[f"ema.enc.{stream}"], atol=ATOL, rtol=RTOL)
        # the trained copy gives other features: loading the wrong prefix would be caught
        assert max_error(ours[f"enc.{stream}"], outputs[f"enc.{stream}"]) > 0.1
    document = json.loads((folder / "config.json").read_text())
    assert document["model_type"] == "maestro-mae"
    assert document["converted_from"]["weights"].startswith("EMA")
    assert document["config"]["encoder"]["date_offset"] == "float32"
    assert document["config"]["encoder"]["day_of_year_origin"] == 1


def test_reference_date_arithmetic_is_what_reaches_float32_precision(checkpoint, outputs, batch):
    exact = intermediates(encoder_of(checkpoint, "model", date_offset="exact"), batch)
    # exact offsets differ from the reference's float32 rounding by ~1e-4 on the time series only
    assert max_error(exact["tokens.aerial"], outputs["tokens.aerial"]) < ATOL
    assert 5e-5 < max_error(exact["tokens.s2"], outputs["tokens.s2"]) < 1e-3
    assert max_error(exact["enc.s2"], outputs["enc.s2"]) > ATOL
    shifted = intermediates(encoder_of(checkpoint, "model", day_of_year_origin=0), batch)
    assert max_error(shifted["tokens.s2"], outputs["tokens.s2"]) > 1e-3  # one day off in sin/cos


def test_reconstruction_targets_match_the_loss_normalisation(checkpoint, outputs, batch):
    encoder = encoder_of(checkpoint, "model")
    inputs = batch[0]
    for key in MODALITIES:
        spec = encoder.specs[key]
        target = normalise_patches(inputs[key], spec.patch_size, spec.norm_groups)
        torch.testing.assert_close(target, outputs[f"target.{key}"], atol=ATOL, rtol=RTOL, msg=key)


def test_maestro_head_reproduces_the_reference_head(checkpoint, outputs, batch, tmp_path):
    folder = import_reference(
        CHECKPOINT,
        tmp_path / "seg",
        ConversionOptions(weights="model", model_type="maestro-segmenter", overrides=OVERRIDES),
    )
    stored = read_model_folder(folder)
    assert stored.model_type == "maestro-segmenter"
    assert stored.task["name"] == "lc" and len(stored.task["class_names"]) == 15
    config = SegmenterConfig.from_dict(stored.config)
    assert (config.head, config.num_classes, config.label_size) == ("maestro", 15, 256)
    segmenter = MaestroSegmenter(config).eval()
    segmenter.load_state_dict(stored.state, strict=True)
    with torch.no_grad():
        pooled = segmenter.forward_features(*batch)
        logits = segmenter(*batch)["logits"]
    reduced = rearrange(pooled, "b d h w -> (b h w) d")  # row b * 64 + l, l = row * 8 + col
    torch.testing.assert_close(reduced, outputs["head.cosia.reduced"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(logits[:, None, :, ::8, ::8], outputs["logits.cosia.s8"], atol=ATOL, rtol=RTOL)
    full = logits.double()  # the README's statistics of the full (2, 1, 15, 256, 256) tensor
    assert full.shape == (2, 15, 256, 256)
    assert abs(full.sum().item() - 493.646) < 0.05
    assert abs(full.abs().sum().item() - 937115.4) < 1.0
    assert abs(full.std().item() - 0.59386) < 1e-5


@pytest.mark.parametrize("model_type", ["maestro-encoder", "maestro-mae", "maestro-segmenter"])
@pytest.mark.parametrize("weights", ["ema", "model"])
def test_every_source_tensor_is_used_or_reported(checkpoint, model_type, weights):
    conversion = convert_checkpoint(
        checkpoint,
        ConversionOptions(
            weights=weights, model_type=model_type, overrides=OVERRIDES, decoder_heads=DECODER_HEADS
        ),
    )
    report = conversion.report
    assert set(report.used) | set(report.skipped) == set(checkpoint.state)
    assert not set(report.used) & set(report.skipped)
    prefix = "ema_model." if weights == "ema" else "model."
    assert all(key.startswith(prefix) for key in report.used)
    assert (
        len(report.used) == {"maestro-encoder": 129, "maestro-mae": 204, "maestro-segmenter": 137}[model_type]
    )


def test_a_shape_mismatch_names_the_source_key(checkpoint):
    state = dict(checkpoint.state)
    key = "ema_model.encoder.s2.layers.1.1.net.1.weight"
    state[key] = state[key][:40]
    with pytest.raises(ConfigError, match=r"ema_model\.encoder\.s2\.layers\.1\.1\.net\.1\.weight"):
        plan_conversion(
            state,
            checkpoint.hyper_parameters,
            ConversionOptions(model_type="maestro-encoder", overrides=OVERRIDES),
        )


def test_modalities_outside_the_registry_are_named_and_the_rest_converted(checkpoint, caplog):
    state = dict(checkpoint.state)
    for key in list(state):  # add a Landsat series with its own stream, as in S2-NAIP checkpoints
        for old in ("patch_embed.s2.", "embed_to_rec.s2.", "encoder.s2.", "decoder.s2.", "enc_to_dec.s2."):
            if old in key:
                state[key.replace(old, old.replace("s2", "landsat"))] = state[key]
        if key.endswith("mask_token.s2"):
            state[key.replace("s2", "landsat")] = state[key]
    weight = "ema_model.patch_embed.aerial.patchify_bands.0.conv.weight"  # a 3-band 'spot'
    state[weight.replace("aerial", "spot")] = state[weight][:, :3]
    with caplog.at_level("WARNING"):
        conversion = plan_conversion(
            state,
            checkpoint.hyper_parameters,
            ConversionOptions(overrides=OVERRIDES, decoder_heads=DECODER_HEADS),
        )
    report = conversion.report
    assert set(report.unsupported_modalities) == {"landsat", "spot"}
    assert "3 bands" in report.unsupported_modalities["spot"]
    assert "landsat" in caplog.text and "spot" in caplog.text
    assert conversion.config.encoder.modalities == MODALITIES
    assert any(key.startswith("ema_model.encoder.landsat.") for key in report.skipped)
    assert set(report.used) | set(report.skipped) == set(state)


def _base_layout() -> dict[str, torch.Tensor]:
    """keys_base.tsv as a state dict of shapes only (meta tensors: 2 x 336 M parameters)."""
    rows = (require_fixture() / "keys_base.tsv").read_text().splitlines()[1:]
    state = {}
    for row in rows:
        key, shape, dtype, numel = row.split("\t")
        dims = json.loads(shape)
        assert dtype == "float32" and int(numel) == (torch.Size(dims).numel())
        state[key] = torch.empty(dims, device="meta")
    return state


BASE_HYPER = {"model_size": "medium", "inter_depth": 3, "fusion_mode": "group", "type_head": "attentive"}


@pytest.mark.parametrize("model_type", ["maestro-encoder", "maestro-mae", "maestro-segmenter"])
def test_the_published_base_layout_builds_the_medium_model(model_type):
    state = _base_layout()
    assert len(state) == 1260
    conversion = plan_conversion(
        state, BASE_HYPER, ConversionOptions(model_type=model_type)
    )  # checks every shape
    report = conversion.report
    assert set(report.used) | set(report.skipped) == set(state)
    left_over = {reason for key, reason in report.skipped.items() if key.startswith("ema_model.")}
    expected = {
        "maestro-encoder": {"pretraining decoder", "segmentation/classification head"},
        "maestro-mae": {"segmentation/classification head"},
        "maestro-segmenter": {"pretraining decoder"},
    }[model_type]
    assert {reason.split(" (")[0].split(",")[0] for reason in left_over} == expected
    encoder = getattr(conversion.config, "encoder", conversion.config)
    size = encoder.transformer
    assert (size.width, size.depth, size.num_heads, size.mlp_hidden) == (768, 12, 12, 3072)
    assert encoder.inter_depth == 3 and encoder.modalities == MODALITIES
    assert sum(v.numel() for k, v in state.items() if k.startswith("ema_model.")) == 336_486_712
    if model_type == "maestro-mae":
        decoder = conversion.config.decoder
        assert (decoder.width, decoder.depth, decoder.num_heads, decoder.mlp_hidden) == (512, 3, 16, 3072)
        assert (
            sum(v.numel() for v in conversion.state.values())
            == 336_486_712 - 3840 * 769 - 5 * 768 - 1536 * 768
        )
    if model_type == "maestro-segmenter":
        assert (conversion.config.num_classes, conversion.config.label_size) == (15, 512)
    # the head's 16x16 label pixels per token fit the registry's sizes: nothing to warn about
    assert any("'cosia'" in note and "fits the registry's sizes" in note for note in report.notes)


def test_float32_year_offset_matches_absolute_float32_arithmetic():
    """The emulation gives, bit for bit, what float32 arithmetic on absolute years gives, for dates
    before and after the reference, across year ends and leap days."""
    from maestro.models.encodings import float32_year_offset

    generator = torch.Generator().manual_seed(0)
    years = torch.randint(2015, 2031, (4000,), generator=generator)
    ref_years = torch.randint(2015, 2031, (4000,), generator=generator)
    doy = torch.randint(1, 367, (4000,), generator=generator)  # the reference's 1-based days
    ref_doy = torch.randint(1, 367, (4000,), generator=generator)
    doy[:4], ref_doy[:4] = torch.tensor([1, 366, 365, 1]), torch.tensor([366, 1, 1, 365])
    absolute = (years.float() + doy.float() / 365.25) - (ref_years.float() + ref_doy.float() / 365.25)
    offset = ((years - ref_years).double() + (doy - ref_doy).double() / 365.25).float()  # the pipeline's
    emulated = float32_year_offset(offset, (doy - 1).float(), origin=1)
    assert torch.equal(emulated, absolute)


def test_date_options_are_validated():
    from maestro.models.config import EncoderConfig

    with pytest.raises(ConfigError, match="date_offset"):
        EncoderConfig(date_offset="float64")
    with pytest.raises(ConfigError, match="day_of_year_origin"):
        EncoderConfig(day_of_year_origin=2)
    assert EncoderConfig().date_offset == "exact" and EncoderConfig().day_of_year_origin == 0


def test_every_target_type_has_its_steps(checkpoint):
    assert set(TARGETS) == set(TARGET_TYPES)
    with pytest.raises(
        ConfigError, match="model_type 'maestro-baseline' is not maestro-encoder, maestro-mae"
    ):
        plan_conversion(
            checkpoint.state, checkpoint.hyper_parameters, ConversionOptions(model_type="maestro-baseline")
        )
