import pytest
import torch
from einops import rearrange

from maestro.modalities import ModalityOverride
from maestro.models.config import EncoderConfig, MAEConfig
from maestro.models.fusion import group_tokens
from maestro.models.mae import MaestroMAE
from maestro.models.masking import num_masked
from maestro.models.synthetic import synthetic_batch, tiny_config

MODES = ["shared", "monotemp", "mod", "group"]


pytestmark = pytest.mark.usefixtures("single_thread")


def test_flairhub_default_token_counts_with_real_sizes():
    config = MAEConfig(
        encoder=EncoderConfig(width=64, depth=2, inter_depth=1),
        decoder_width=32,
        decoder_heads=1,
        decoder_depth=1,
    )
    torch.manual_seed(0)
    model = MaestroMAE(config)
    assert model.num_tokens == {"aerial": 1024, "dem": 256, "s2": 400, "s1_asc": 100, "s1_des": 100}
    assert sum(model.num_tokens.values()) == 1880
    batch = synthetic_batch(config, batch_size=1)
    assert tuple(batch["inputs"]["aerial"].shape) == (1, 1, 4, 512, 512)
    assert tuple(batch["inputs"]["s2"].shape) == (1, 16, 10, 10, 10)
    with torch.no_grad():
        out = model(**batch)
    masks = out["masks"]
    assert tuple(masks["aerial"].shape) == (1, 1, 1, 32, 32) and tuple(masks["dem"].shape) == (
        1,
        1,
        1,
        16,
        16,
    )
    assert tuple(masks["s2"].shape) == (1, 16, 1, 5, 5) and tuple(masks["s1_des"].shape) == (1, 4, 1, 5, 5)
    counts = {key: int(m.sum()) for key, m in masks.items()}
    assert counts["aerial"] == 768 and counts["dem"] == 192 and counts["s2"] == 300
    assert counts["s1_asc"] + counts["s1_des"] == 150
    assert torch.isfinite(out["loss"])
    assert tuple(out["predictions"]["aerial"].shape) == (1, 1, 4, 512, 512)


@pytest.mark.parametrize("mode", MODES)
def test_each_fusion_mode_overfits_a_fixed_batch(mode):
    torch.manual_seed(0)
    config = tiny_config(fusion=mode)
    model = MaestroMAE(config)
    batch = synthetic_batch(config, batch_size=4)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(**batch)
        optimiser.zero_grad()
        out["loss"].backward()
        optimiser.step()
        losses.append(out["loss"].item())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.92 * first, (mode, losses)


def test_forward_outputs():
    config = tiny_config()
    model = MaestroMAE(config)
    out = model(**synthetic_batch(config))
    assert set(out) == {"loss", "losses", "counts", "predictions", "targets", "masks", "pixel_masks"}
    assert set(out["losses"]) == set(config.encoder.modalities)
    for key, spec in config.encoder.specs.items():
        shape = (2, spec.num_dates, spec.num_bands, spec.image_size, spec.image_size)
        assert tuple(out["predictions"][key].shape) == shape
        assert tuple(out["targets"][key].shape) == shape
        assert out["pixel_masks"][key].dtype == torch.bool and tuple(out["pixel_masks"][key].shape) == shape
        assert tuple(out["masks"][key].shape) == (2, spec.num_dates, 1, spec.grid, spec.grid)
    weights = {key: spec.num_tokens for key, spec in config.encoder.specs.items()}
    expected = sum(weights[k] * out["losses"][k] for k in weights) / sum(weights.values())
    torch.testing.assert_close(out["loss"], expected)


def test_targets_are_standardised_patches_unless_turned_off():
    import dataclasses

    from maestro.models.loss import normalise_patches

    config = tiny_config()
    batch = synthetic_batch(config)
    for normalize in (True, False):
        torch.manual_seed(0)
        model = MaestroMAE(dataclasses.replace(config, normalize_targets=normalize))
        out = model(**batch, generator=torch.Generator().manual_seed(0))
        for key, spec in config.encoder.specs.items():
            pixels = batch["inputs"][key]
            want = normalise_patches(pixels, spec.patch_size, spec.norm_groups) if normalize else pixels
            torch.testing.assert_close(out["targets"][key], want)
            masked = out["pixel_masks"][key]
            error = (out["predictions"][key] - want).abs()[masked].mean()
            torch.testing.assert_close(out["losses"][key], error)


@pytest.mark.parametrize("mode", MODES)
def test_padded_dates_never_visible_and_excluded_from_loss(mode):
    torch.manual_seed(0)
    config = tiny_config(fusion=mode)
    model = MaestroMAE(config)
    batch = synthetic_batch(config, batch_size=3)
    valid = batch["valid"]
    valid["s2"][0, 2] = False
    valid["s2"][1, 1:] = False
    valid["s1_des"][2] = False  # a sample without this orbit
    valid["s1_asc"][2, 1] = False
    poisoned = {key: x.clone() for key, x in batch["inputs"].items()}
    for key, dates in valid.items():
        poisoned[key][~dates] = float("nan")
    times = {key: t.clone() for key, t in batch["times"].items()}
    times["s2"][~valid["s2"]] = float("nan")

    out = model(poisoned, times, valid, generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    for key, dates in valid.items():
        assert out["masks"][key][~dates].all(), key  # padded tokens always masked (never visible)
        assert not out["pixel_masks"][key][~dates].any(), key  # ... and out of the loss

    # the padded content has no influence at all
    clean = model(batch["inputs"], batch["times"], valid, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(clean["loss"], out["loss"])


def test_all_dates_padded_in_a_group_still_works():
    config = tiny_config()
    model = MaestroMAE(config)
    batch = synthetic_batch(config, batch_size=2)
    batch["valid"]["s1_asc"][0] = False
    batch["valid"]["s1_des"][0] = False  # sample 0 has no s1 at all: visible slots are padding
    out = model(**batch)
    assert torch.isfinite(out["loss"])
    assert not out["pixel_masks"]["s1_asc"][0].any()
    encoded = model.encode(**batch)
    assert all(torch.isfinite(t).all() for t in encoded.tokens.values())


def test_encode_with_mask_and_band_groups():
    overrides = dict(tiny_config().encoder.overrides)
    overrides["aerial"] = ModalityOverride(
        image_size=32, patch_size=8, token_groups=(("NIR",), ("R", "G", "B"))
    )
    config = tiny_config(overrides=overrides)
    model = MaestroMAE(config)
    assert len(model.mask_tokens["aerial"].token) == 2
    batch = synthetic_batch(config)
    out = model.encode(**batch, mask=True, indices=(1,))
    assert tuple(out.tokens["aerial"].shape) == (2, 1, 2, 4, 4, 64)
    assert tuple(out.mask["aerial"].shape) == (2, 1, 2, 4, 4)
    assert (out.tokens["aerial"][out.mask["aerial"]] == 0).all()
    assert (out.tokens["aerial"][~out.mask["aerial"]].abs().sum(-1) > 0).all()
    assert out.mask["aerial"].sum() == 2 * num_masked(32, 0.75)
    model(**batch)["loss"].backward()


def test_each_masked_token_gets_its_own_modality_and_band_group_mask_token():
    """Where one decoder sequence holds several mask tokens (s1_asc + s1_des in the ``s1`` group,
    aerial with two band groups), every hidden position gets its own modality's, band group's
    token. The reference places them through an unstable descending argsort and can hand a
    position another member's token; the suite keeps the placement exact (docs/method.md)."""
    overrides = dict(tiny_config().encoder.overrides)
    overrides["aerial"] = ModalityOverride(
        image_size=32, patch_size=8, token_groups=(("NIR",), ("R", "G", "B"))
    )
    torch.manual_seed(0)
    model = MaestroMAE(tiny_config(overrides=overrides)).eval()
    keys = list(model.specs)

    def token_value(key: str, group: int) -> float:
        return 10.0 * (keys.index(key) + 1) + group

    for key, mask_token in model.mask_tokens.items():
        groups, width = mask_token.token.shape
        mask_token.token.data = torch.tensor([token_value(key, g) for g in range(groups)])[:, None].expand(
            groups, width
        )
    decoder_inputs = {}
    for stream, decoder in model.decoders.items():
        decoder.register_forward_pre_hook(
            lambda _, args, stream=stream: decoder_inputs.update({stream: args[0]})
        )
    batch = synthetic_batch(model.config)
    with torch.no_grad():
        out = model(**batch, generator=torch.Generator().manual_seed(1))
    encoder = model.encoder
    _, times, _ = encoder.prepare(batch["inputs"], batch["times"], batch["valid"])
    hidden, expected = {}, {}
    for key, spec in model.specs.items():
        hidden[key] = rearrange(out["masks"][key], "b t g h w -> b t g (h w)")
        batch_size, dates, groups, tokens = hidden[key].shape
        own = torch.tensor([token_value(key, g) for g in range(groups)])
        filled = own[None, None, :, None, None].expand(
            batch_size, dates, groups, tokens, model.config.decoder.width
        )
        expected[key] = model.decoder_encoding(filled, times[key], spec.grid)  # the token + its codes
    for spec, seen, where, want in zip(
        encoder.plan,
        [decoder_inputs[spec.stream] for spec in encoder.plan],
        group_tokens(hidden, encoder.plan),
        group_tokens(expected, encoder.plan),
        strict=True,
    ):
        torch.testing.assert_close(seen[where], want[where], msg=spec.stream)
    assert hidden["s1_asc"].any() and hidden["s1_des"].any()  # both members' tokens in one sequence
    assert hidden["aerial"][:, :, 0].any() and hidden["aerial"][:, :, 1].any()


def test_input_checks_name_the_problem():
    config = tiny_config()
    model = MaestroMAE(config)
    batch = synthetic_batch(config)
    missing = {k: v for k, v in batch["inputs"].items() if k != "dem"}
    with pytest.raises(ValueError, match=r"missing \['dem'\]"):
        model(missing, batch["times"], batch["valid"])
    wrong = dict(batch["inputs"], s2=batch["inputs"]["s2"][:, :2])
    with pytest.raises(ValueError, match=r"inputs\['s2'\] has shape"):
        model(wrong, batch["times"], batch["valid"])


def test_any_subset_of_modalities_including_spot_and_hist():
    config = MAEConfig(
        encoder=EncoderConfig(
            modalities=("spot", "hist"),
            overrides={"spot": ModalityOverride(image_size=16), "hist": ModalityOverride(image_size=32)},
            width=64,
            depth=2,
            inter_depth=1,
        ),
        decoder_width=32,
        decoder_heads=2,
        decoder_depth=1,
    )
    model = MaestroMAE(config)
    out = model(**synthetic_batch(config))
    assert set(out["losses"]) == {"spot", "hist"} and torch.isfinite(out["loss"])
    assert set(model.encoder.streams) == {"spot", "hist"}


def test_streams_and_depths_per_mode():
    for mode, streams, own in [
        ("shared", {"shared"}, 3),
        ("monotemp", {"aerial", "dem", "s2", "s1_asc", "s1_des"}, 3),
        ("mod", {"aerial", "dem", "s2", "s1_asc", "s1_des"}, 2),
        ("group", {"aerial", "dem", "s2", "s1"}, 2),
    ]:
        model = MaestroMAE(tiny_config(fusion=mode))
        assert set(model.encoder.streams) == streams == set(model.decoders)
        assert all(stack.depth == own for stack in model.encoder.streams.values())
        assert (model.encoder.late_fusion is None) == (own == 3)


def test_bf16_autocast():
    config = tiny_config()
    model = MaestroMAE(config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**synthetic_batch(config))
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
