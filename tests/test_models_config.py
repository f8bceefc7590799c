import copy

import pytest

from maestro.errors import ConfigError
from maestro.modalities import ModalityOverride
from maestro.models.config import SIZES, EncoderConfig, MAEConfig
from maestro.models.legacy import upgrade_mae_config
from maestro.models.mae import MaestroMAE
from maestro.models.synthetic import tiny_config


def _mae(**fields):
    """MAE config from a flat field mapping (encoder fields go to the encoder section)."""
    split = upgrade_mae_config(fields)
    return MAEConfig(encoder=EncoderConfig(**split.pop("encoder", {})), **split)


def test_flairhub_defaults_resolve_from_registry():
    mae = MAEConfig()
    config = mae.encoder
    specs = config.specs
    assert list(specs) == ["aerial", "dem", "s2", "s1_asc", "s1_des"]
    assert specs["aerial"].bands == ("NIR", "R", "G", "B")
    assert (specs["aerial"].patch_size, specs["aerial"].image_size, specs["aerial"].grid) == (16, 512, 32)
    assert (specs["dem"].patch_size, specs["dem"].grid) == (32, 16)
    assert (specs["s2"].num_dates, specs["s2"].num_bands, specs["s2"].grid) == (16, 10, 5)
    assert specs["s1_asc"].num_dates == 4 and specs["s1_asc"].fusion_group == "s1"
    assert specs["s2"].norm_groups == ((0, 1, 2, 3), (4, 5, 6, 7), (8, 9))
    assert specs["aerial"].norm_groups == ((0,), (1, 2, 3))
    assert specs["aerial"].token_groups == ((0, 1, 2, 3),)
    assert {k: s.num_tokens for k, s in specs.items()} == {
        "aerial": 1024,
        "dem": 256,
        "s2": 400,
        "s1_asc": 100,
        "s1_des": 100,
    }
    assert config.num_tokens == 1880
    assert (config.fusion, config.inter_depth, mae.mask_ratio, config.grid_size) == ("group", 3, 0.75, 160)


@pytest.mark.parametrize(
    ("size", "width", "depth", "heads", "mlp", "decoder_depth"),
    [
        ("tiny", 192, 12, 3, 384, 1),
        ("small", 384, 12, 6, 768, 2),
        ("medium", 768, 12, 12, 3072, 3),
        ("large", 1024, 24, 16, 4096, 4),
    ],
)
def test_size_table(size, width, depth, heads, mlp, decoder_depth):
    config = MAEConfig(encoder=EncoderConfig(size=size))
    encoder = config.encoder.transformer
    assert encoder.width == width and encoder.depth == depth
    assert encoder.num_heads == heads and encoder.width // heads == 64
    assert encoder.mlp_hidden == mlp
    decoder = config.decoder
    assert (decoder.width, decoder.num_heads, decoder.depth) == (512, 16, decoder_depth)
    assert decoder.mlp_hidden == 4 * width
    assert size in SIZES


def test_spot_and_hist_are_valid_inputs():
    config = EncoderConfig(modalities=("spot", "hist"))
    assert config.specs["spot"].num_tokens == 16 * 16
    assert config.specs["hist"].num_tokens == 32 * 32


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"modalities": ("aerial", "radar")}, "unknown modality 'radar'"),
        ({"modalities": ("s2", "s2_mask")}, "'s2_mask' is a mask, not a network input"),
        ({"modalities": ("aerial", "lc")}, "'lc' is a label, not a network input"),
        ({"modalities": ()}, "at least one"),
        ({"modalities": ("dem", "dem")}, "listed twice"),
        (
            {"overrides": {"aerial": ModalityOverride(patch_size=12)}},
            "patch size 12 does not divide image size 512",
        ),
        (
            {"overrides": {"s2": ModalityOverride(patch_size=5, image_size=15)}},
            "does not divide the common position grid",
        ),
        ({"grid_size": 100}, "does not divide the common position grid 100x100"),
        ({"fusion": "early"}, "unknown fusion mode 'early'"),
        ({"inter_depth": 12}, "inter_depth: 12 must be in"),
        ({"inter_depth": -1}, "inter_depth"),
        ({"overrides": {"aerial": ModalityOverride(bands=("R", "SWIR"))}}, "unknown band"),
        ({"overrides": {"aerial": ModalityOverride(token_groups=(("NIR",), ("R",)))}}, "token_groups"),
        ({"overrides": {"spot": ModalityOverride(patch_size=2)}}, "not in modalities"),
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"p_drop_date": 1.5}, "p_drop_date"),
        ({"size": "huge"}, "size"),
        ({"width": 102}, "multiple of 4"),
        ({"width": 128, "num_heads": 3}, "not divisible"),
    ],
)
def test_bad_configs_fail_at_construction(fields, message):
    with pytest.raises(ConfigError, match=message):
        _mae(**fields)


def test_from_dict_reads_yaml_like_data_and_round_trips():
    data = {
        "modalities": ["aerial", "s2"],
        "overrides": {
            "s2": {
                "num_dates": 8,
                "token_groups": [["B2", "B3", "B4", "B5"], ["B6", "B7", "B8", "B8A", "B11", "B12"]],
            }
        },
        "size": "small",
        "fusion": "mod",
    }
    config = EncoderConfig.from_dict(data)
    assert config.specs["s2"].num_dates == 8 and config.specs["s2"].num_token_groups == 2
    assert config.specs["s2"].num_tokens == 8 * 2 * 25
    assert EncoderConfig.from_dict(config.to_dict()) == config
    mae = MAEConfig.from_dict({"encoder": data, "mask_ratio": 0.6})
    assert mae.encoder == config and MAEConfig.from_dict(mae.to_dict()) == mae


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"modalites": ["aerial"]}, r"unknown key\(s\) \['modalites'\]"),
        ({"overrides": {"aerial": {"patch": 8}}}, r"overrides.aerial: unknown key\(s\) \['patch'\]"),
        ({"fusion": "late"}, "not one of"),
        ({"modalities": ["aerial", "nope"]}, "unknown modality 'nope'"),
    ],
)
def test_from_dict_rejects_unknown_keys_and_values(data, message):
    with pytest.raises(ConfigError, match=message):
        EncoderConfig.from_dict(data)


def test_plain_dict_overrides_are_accepted_and_copied():
    overrides = {"aerial": {"image_size": 64}}
    config = EncoderConfig(modalities=("aerial",), overrides=overrides)
    overrides["aerial"] = {"image_size": 128}
    assert config.specs["aerial"].image_size == 64
    assert isinstance(config.overrides["aerial"], ModalityOverride)


def test_models_never_mutate_configs():
    config = tiny_config()
    before = copy.deepcopy(config)
    MaestroMAE(config)
    assert config == before and config.to_dict() == before.to_dict()


def test_replace_validates():
    config = tiny_config().encoder
    assert config.replace(fusion="shared").fusion == "shared"
    with pytest.raises(ConfigError, match="inter_depth"):
        config.replace(inter_depth=3)


def test_mae_config_rejects_an_encoder_key_at_its_own_level():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['fusion'\]"):
        MAEConfig.from_dict({"fusion": "mod"})
