"""FLAIR #2's U-Net and U-T&T as fine-tuning networks: their configs, the registry rows, the
fine-tuning contract and the parameter counts of the wired networks."""

from __future__ import annotations

import pytest
import torch

from maestro.errors import ConfigError
from maestro.models import zoo
from maestro.models.baseline.config import UTAEConfig
from maestro.models.baseline.inputs import day_offsets
from maestro.models.config import EncoderConfig
from maestro.models.finetuning import ModelConfig, TaskConfig, network_config
from maestro.models.flair2.config import UNetConfig, UTTConfig
from maestro.models.flair2.paper import REFERENCE_PARAMETERS, count_parameters
from maestro.models.flair2.segmenter import UNetSegmenter, UTTSegmenter
from maestro.models.flair2.segmenter_config import (
    Flair2BaselineOptions,
    UNetSegmenterConfig,
    UTTSegmenterConfig,
    default_inputs,
    task_class_weights,
)
from maestro.models.flair2.segmenter_config import network_config as flair2_network
from maestro.models.registry import model_type_of_config

pytestmark = pytest.mark.usefixtures("single_thread")

FLAIR2_INPUTS = EncoderConfig(modalities=("aerial", "elevation", "s2"), overrides={"s2": {"image_size": 40}})
AERIAL_INPUTS = EncoderConfig(modalities=("aerial", "elevation"))
TINY = Flair2BaselineOptions(
    encoder="resnet18",
    decoder_channels=(16, 8, 8),
    utae=UTAEConfig(
        encoder_widths=(16, 16, 32),
        decoder_widths=(16, 16, 32),
        num_heads=4,
        d_model=16,
        d_k=2,
        kernel_size=4,
        stride=2,
        dropout=0.0,
    ),
    footprint=2,
)


def tiny_network(architecture: str, size: int = 64) -> UNetSegmenterConfig | UTTSegmenterConfig:
    """The tiny network on 64 px single-date inputs (and an 8 px super-patch) for the flair2 task."""
    modalities = ("aerial", "elevation", "s2") if architecture == "utt" else ("aerial", "elevation")
    sizes = {"aerial": size, "elevation": size, "s2": 8}
    inputs = EncoderConfig(modalities=modalities, overrides={k: {"image_size": sizes[k]} for k in modalities})
    return flair2_network(architecture, TINY, inputs, "flair2", 12, label_size=size)


def batch(size: int = 64, dates: int = 3, seed: int = 0) -> tuple[dict, dict, dict]:
    generator = torch.Generator().manual_seed(seed)
    inputs = {
        "aerial": torch.rand(2, 1, 4, size, size, generator=generator),
        "elevation": torch.rand(2, 1, 1, size, size, generator=generator),
        "s2": torch.rand(2, dates, 10, 8, 8, generator=generator),
    }
    times = {key: torch.zeros(2, x.shape[1], 3) for key, x in inputs.items()}
    times["s2"][..., 1] = torch.tensor([100.0, 160.0, 220.0])[:dates]
    valid = {key: torch.ones(2, x.shape[1], dtype=torch.bool) for key, x in inputs.items()}
    return inputs, times, valid


# ------------------------------------------------------------------------------ configs
def test_options_default_to_the_challenge_networks_and_check_like_them() -> None:
    options = Flair2BaselineOptions()
    assert options.unet(5, 13) == UNetConfig()
    assert options.utt(5, 13, 10) == UTTConfig()
    with pytest.raises(ConfigError, match="fusions"):
        Flair2BaselineOptions(fusions=("mean",))
    with pytest.raises(ConfigError, match="decoder_channels"):
        Flair2BaselineOptions(decoder_channels=())


def test_a_flair2_run_describes_the_papers_inputs_classes_and_weights() -> None:
    unet = network_config(ModelConfig(architecture="unet", encoder=AERIAL_INPUTS), TaskConfig("flair2"))
    config = network_config(ModelConfig(architecture="utt", encoder=FLAIR2_INPUTS), TaskConfig("flair2"))
    for network in (unet.unet, config.utt.unet):
        assert (network.in_channels, network.num_classes, network.encoder) == (
            5,
            12,
            "resnet34",
        )  # no 'other'
    assert unet.class_weights == config.class_weights == (1.0,) * 12  # the paper's, 'other' being ignored
    assert unet.loss_options() == {"class_weights": unet.class_weights}
    assert config.aux_class_weights == (1.0,) * 11 + (0.0,)  # plowed land out of the U-TAE's loss
    assert config.series == "s2" and config.utt.s2_channels == 10
    assert config.loss_options() == {
        "aux_weight": 1.0,
        "class_weights": config.class_weights,
        "aux_class_weights": config.aux_class_weights,
    }
    assert task_class_weights("lc", 15) == (None, None)  # other tasks train unweighted


def test_the_registry_rows_read_the_inputs_and_round_trip_the_config() -> None:
    for architecture, name in (("unet", "unet-segmenter"), ("utt", "utt-segmenter")):
        config = tiny_network(architecture)
        row = model_type_of_config(config)
        assert row.name == name and row.needs_task and row.encoder_prefix is None and not row.maestro_card
        assert row.inputs(config) == config.encoder and row.config_from_dict(config.to_dict()) == config
        assert row.model_class in zoo.NETWORKS
    assert model_type_of_config(tiny_network("unet")).zone_refusal is None
    assert "super-patch" in model_type_of_config(tiny_network("utt")).zone_refusal


@pytest.mark.parametrize(
    ("architecture", "modalities", "message"),
    [
        ("unet", ["s2"], "single-date images only"),
        ("unet", ["aerial", "s2"], "single-date images only"),
        ("utt", ["aerial", "elevation"], "one time series"),
        ("utt", ["aerial", "s2", "s1_asc"], "one time series"),
        ("utt", ["s2"], "one time series"),
    ],
)
def test_inputs_a_network_cannot_read_are_refused_naming_the_flag(architecture, modalities, message) -> None:
    with pytest.raises(ConfigError, match=rf"--modalities.*{message}"):
        ModelConfig(architecture=architecture, modalities=tuple(modalities))


def test_single_date_inputs_must_be_at_the_label_size_and_options_belong_to_their_model() -> None:
    spot = EncoderConfig(modalities=("aerial", "spot"))
    with pytest.raises(ConfigError, match=r"--modalities.*spot at 64 px"):
        network_config(ModelConfig(architecture="unet", encoder=spot), TaskConfig("lc"))
    with pytest.raises(ConfigError, match="aux_heads"):
        ModelConfig(architecture="utt", aux_heads=True)
    assert default_inputs("unet", ("aerial", "dem", "s2", "s1_asc")) == ("aerial", "dem")
    assert default_inputs("utt", ("aerial", "elevation", "s2")) == ("aerial", "elevation", "s2")
    with pytest.raises(ConfigError, match="in_channels"):
        UNetSegmenterConfig(EncoderConfig(modalities=("aerial",)), "flair2", UNetConfig(in_channels=5))


# ------------------------------------------------------------------------------ networks
def test_the_unet_reads_the_single_date_bands_concatenated_in_config_order() -> None:
    torch.manual_seed(0)
    model = UNetSegmenter(tiny_network("unet")).eval()
    inputs, times, valid = batch()
    out = model(inputs, times, valid)
    assert set(out) == {"logits"} and out["logits"].shape == (2, 12, 64, 64)
    stacked = torch.cat([inputs["aerial"][:, 0], inputs["elevation"][:, 0]], dim=1)
    assert torch.equal(out["logits"], model.unet(stacked))
    # A missing input is zeros when allowed (as in the other segmenters), an error otherwise.
    without = {k: v for k, v in inputs.items() if k != "elevation"}
    with pytest.raises(ValueError, match="allow_missing"):
        model(without, times, valid)
    zeros = torch.cat([inputs["aerial"][:, 0], torch.zeros(2, 1, 64, 64)], dim=1)
    assert torch.equal(model(without, times, valid, allow_missing=True)["logits"], model.unet(zeros))


def test_utt_takes_day_offsets_and_padding_and_returns_the_utae_scores_as_aux() -> None:
    torch.manual_seed(0)
    config = tiny_network("utt")
    model = UTTSegmenter(config).eval()
    inputs, times, valid = batch()
    out = model(inputs, times, valid)
    assert out["logits"].shape == out["aux"]["s2"].shape == (2, 12, 64, 64)
    aerial = torch.cat([inputs["aerial"][:, 0], inputs["elevation"][:, 0]], dim=1)
    days = day_offsets(times["s2"], config.utt.utae.reference_day)
    direct = model.utt(aerial, inputs["s2"], days, valid["s2"])
    assert torch.equal(out["logits"], direct.logits) and torch.equal(out["aux"]["s2"], direct.aux_logits)
    # A padded date changes nothing.
    padded = {**inputs, "s2": torch.cat([inputs["s2"], torch.full((2, 1, 10, 8, 8), 9.0)], dim=1)}
    padded_times = {**times, "s2": torch.cat([times["s2"], torch.zeros(2, 1, 3)], dim=1)}
    mask = {**valid, "s2": torch.cat([valid["s2"], torch.zeros(2, 1, dtype=torch.bool)], dim=1)}
    assert torch.allclose(model(padded, padded_times, mask)["logits"], out["logits"], atol=1e-5)


def test_wired_networks_have_the_parameter_counts_of_the_modules_and_the_reference() -> None:
    """The default ``finetune --model unet|utt --task flair2`` networks, counted on the meta device:
    exactly :func:`count_parameters` of their U-Net / U-T&T, which is the reference's count less
    one class channel (FLAIR #2's ignored 'other' gets none here): 145 in the U-Net head (3x3 on
    16 channels), 65 more in U-T&T's auxiliary 1x1 head (64 channels)."""
    unet_config = network_config(
        ModelConfig(architecture="unet", encoder=AERIAL_INPUTS), TaskConfig("flair2")
    )
    utt_config = network_config(ModelConfig(architecture="utt", encoder=FLAIR2_INPUTS), TaskConfig("flair2"))
    with torch.device("meta"):
        unet, utt = UNetSegmenter(unet_config), UTTSegmenter(utt_config)
    unet_count = sum(p.numel() for p in unet.parameters())
    utt_count = sum(p.numel() for p in utt.parameters())
    assert unet_count == count_parameters(unet_config.unet) == REFERENCE_PARAMETERS["unet"] - 145
    assert utt_count == count_parameters(utt_config.utt) == count_parameters(UTTConfig()) - 145 - 65
