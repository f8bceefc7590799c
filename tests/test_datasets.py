"""The dataset registry: its rows, the readers and toy generators attached to them, and FLAIR #2
end to end through the suite's commands (toy release -> shards -> pretraining -> fine-tuning
``flair2`` -> test metrics), with the S2 super-patch size taken from the dataset row."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import dotted

from maestro.config import load_config
from maestro.data import zoo
from maestro.data.flair2.reader import Flair2Reader
from maestro.data.flairhub import FlairHubReader
from maestro.datasets import (
    DATASETS,
    DEFAULT_DATASET,
    DatasetReader,
    ReaderOptions,
    get_dataset,
    register_reader,
)
from maestro.errors import ConfigError
from maestro.modalities import DEFAULT_INPUTS, MODALITIES
from maestro.tasks import TASKS
from shards.cli import main as shards_main
from shards.manifest import read_manifest

pytestmark = pytest.mark.usefixtures("single_thread")

FLAIR2_ENCODER = {
    "modalities": ["aerial", "elevation", "s2"],
    "overrides": {
        "aerial": {"patch_size": 128},
        "elevation": {"patch_size": 128},
        "s2": {"image_size": 40, "num_dates": 4, "patch_size": 10},
    },
    "size": "tiny",
    "width": 64,
    "depth": 2,
    "inter_depth": 1,
    "grid_size": 4,
}
"""The tests' tiny encoder on FLAIR #2 inputs: 4 x 4 tokens per modality (S2: the 40 px super-patch)."""


# ------------------------------------------------------------------------------------ registry


def test_rows_name_registry_keys_and_keep_flair_hub_as_it_was():
    assert sorted(DATASETS) == ["custom", "flair-hub", "flair2"] and DEFAULT_DATASET == "flair-hub"
    hub = get_dataset("flair-hub")
    assert hub.default_inputs == DEFAULT_INPUTS and hub.tasks == ("lc", "lpis") and not hub.overrides
    assert hub.build_modalities == (*DEFAULT_INPUTS, "lc", "lpis")
    assert "elevation" not in hub.modalities and "flair2" not in hub.modalities
    flair2 = get_dataset("flair2")
    assert flair2.modalities == ("aerial", "elevation", "s2", "s2_mask", "flair2")
    assert flair2.tasks == ("flair2",) and flair2.labels == ("flair2",)
    assert flair2.image_size("s2") == flair2.image_size("s2_mask") == 40
    assert flair2.image_size("aerial") == MODALITIES["aerial"].size_px == 512
    custom = get_dataset("custom")
    assert custom.needs_config and custom.tasks == ("custom",) and custom.labels == ("label",)
    assert not any(MODALITIES[key].temporal for key in custom.modalities)  # single-date inputs only
    for row in DATASETS.values():
        assert set(row.modalities) <= set(MODALITIES) and set(row.tasks) <= set(TASKS)


def test_unknown_dataset_or_modality_is_a_config_error_listing_the_valid_ones():
    with pytest.raises(
        ConfigError,
        match=re.escape("unknown dataset 'flair3'; datasets are ['custom', 'flair-hub', 'flair2']"),
    ):
        get_dataset("flair3")
    with pytest.raises(ConfigError, match=r"dataset 'flair-hub' has no \['elevation'\]; its modalities are"):
        get_dataset("flair-hub").check_modalities(["aerial", "elevation"])


def test_readers_and_toys_are_registered_by_their_modules():
    """Importing maestro.data.zoo registers every dataset's reader and toy generator; a second
    reader for a dataset is refused."""
    assert zoo.toy_generator("flair-hub").min_patches == 3 and zoo.toy_generator("flair2").min_patches == 4
    with pytest.raises(ConfigError, match="flair2 already reads with open_flair2"):
        register_reader("flair2")(lambda options: options)


def test_both_readers_meet_the_protocol():
    """FlairHubReader and Flair2Reader offer what shards build uses: the Protocol's members."""
    members = ("__len__", "__iter__", "read", "patch_ids", "source_state")
    for cls in (FlairHubReader, Flair2Reader):
        assert all(hasattr(cls, name) for name in members), cls
    assert {"read", "source_state", "patch_ids"} <= set(dir(DatasetReader))


# ------------------------------------------------------------------------------------ FLAIR #2 end to end


@pytest.fixture(scope="module")
def flair2_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``shards toy --dataset flair2`` (8 patches: 2 per domain, val one held-out train domain) and
    ``shards build --dataset flair2`` of its three splits."""
    work = tmp_path_factory.mktemp("flair2")
    assert shards_main(["toy", "--dataset", "flair2", "--out", str(work / "release"), "--patches", "8"]) == 0
    args = [
        "build",
        "--dataset",
        "flair2",
        "--root",
        str(work / "release"),
        "--split",
        "train",
        "val",
        "test",
    ]
    assert shards_main([*args, "--out", str(work / "shards"), "--max-count", "4", "--no-progress"]) == 0
    return work / "shards"


def test_flair2_shards_record_their_dataset_and_modalities(flair2_shards: Path):
    manifest = read_manifest(flair2_shards)
    assert sorted(manifest.splits) == ["test", "train", "val"]
    assert [manifest.splits[s].num_samples for s in ("train", "val", "test")] == [4, 2, 2]
    for entry in manifest.splits.values():
        assert entry.dataset_key == "flair2" and entry.dataset == "toy"  # simulated: never taken for FLAIR #2
        assert entry.modalities == ["aerial", "elevation", "s2", "flair2", "s2_mask"]


def _pretrain(shards: Path, out: Path) -> Path:
    from pretrain.cli import run
    from pretrain.config import PretrainConfig

    raw = {
        "data": {
            "train": str(shards),
            "batch_size": 2,
            "num_workers": 0,
            "batches_per_epoch": 2,
            "shuffle_buffer": 4,
        },
        "model": {"encoder": FLAIR2_ENCODER, "decoder_width": 32, "decoder_heads": 2, "decoder_depth": 1},
        "optim": {"base_lr": 1e-3},
        "trainer": {
            "output_dir": str(out),
            "max_epochs": 1,
            "checkpoint_every_n_steps": 2,
            "log_every_n_steps": 1,
            "reconstruction_every_n_steps": 0,
            "accelerator": "cpu",
            "devices": 1,
        },
    }
    run(load_config(PretrainConfig, None, dotted(raw)))
    return out


def _finetune_config(shards: Path, out: Path, *overrides: str):
    from finetune.config import FinetuneConfig

    raw = {
        "data": {
            "train": str(shards),
            "val": str(shards),
            "test": str(shards),
            "batch_size": 2,
            "num_workers": 0,
            "shuffle_buffer": 4,
            "batches_per_epoch": 2,
        },
        "task": {"name": "flair2"},
        "model": {"decoder_channels": 32, "date_pooling": "mean"},
        "trainer": {"output_dir": str(out), "max_epochs": 1, "accelerator": "cpu", "devices": 1},
        "eval": {"num_figures": 1},
    }
    return load_config(FinetuneConfig, None, [*dotted(raw), *overrides])


def test_flair2_toy_to_shards_to_pretrain_to_finetune_writes_test_metrics(
    flair2_shards: Path, tmp_path: Path
):
    from finetune.cli import run

    pretrained = _pretrain(flair2_shards, tmp_path / "pretrain")
    config = _finetune_config(flair2_shards, tmp_path / "finetune", f"model.init={pretrained}")
    scores = run(config)
    metrics = json.loads((tmp_path / "finetune" / "test" / "metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(scores.miou) and 0.0 <= metrics["miou"] <= 1.0
    assert set(scores.evaluated) <= set(range(12))  # FLAIR #2's 12 scored classes; 'other' (12) never is
    assert scores.class_names[0] == "building" and "other" not in [
        scores.class_names[c] for c in scores.evaluated
    ]
    assert (tmp_path / "finetune" / "best.ckpt").is_file()


def test_a_random_encoder_takes_the_super_patch_size_from_the_dataset_row(
    flair2_shards: Path, tmp_path: Path
):
    """No S2 image size in the config: the shards' manifest names flair2, whose row says 40 px; a
    size the config sets wins, and one the shards do not hold is refused before training."""
    from finetune.stage import check_shards, resolve

    encoder = {
        **FLAIR2_ENCODER,
        "overrides": {**FLAIR2_ENCODER["overrides"], "s2": {"num_dates": 4, "patch_size": 10}},
    }
    config, state = resolve(
        _finetune_config(flair2_shards, tmp_path, "model.init=random", f"model.encoder={json.dumps(encoder)}")
    )
    assert state is None and config.model.encoder.specs["s2"].image_size == 40
    assert config.model.encoder.specs["s2"].num_dates == 4
    check_shards(config, config.inputs)
    wrong = {
        **FLAIR2_ENCODER,
        "overrides": {**FLAIR2_ENCODER["overrides"], "s2": {"image_size": 20, "patch_size": 5}},
    }
    config, _ = resolve(
        _finetune_config(flair2_shards, tmp_path, "model.init=random", f"model.encoder={json.dumps(wrong)}")
    )
    with pytest.raises(ConfigError, match=r"s2 images of 20 px where the shards hold 40 px"):
        check_shards(config, config.inputs)


def test_reader_options_reach_the_flair_hub_reader(tmp_path: Path):
    """``open_reader('flair-hub', ...)`` is today's FlairHubReader on the tree's split CSVs."""
    from fixtures_flairhub import write_flairhub_tree

    ids = ["D001-2020_AA_0-0", "D001-2020_AA_0-1"]
    tree = write_flairhub_tree(tmp_path / "hub", ("aerial", "lc"), {"train": ids})
    reader = zoo.open_reader("flair-hub", ReaderOptions(tree.root, "train", ("aerial", "lc")))
    assert isinstance(reader, FlairHubReader) and reader.patch_ids == ids
    assert reader.read(ids[0])["aerial"].shape == (4, 512, 512)


TINY_FLAIR2 = {
    "encoder": "tu-regnetx_002",
    "decoder_channels": [16, 8, 8],
    "utae": {
        "encoder_widths": [16, 16, 32],
        "decoder_widths": [16, 16, 32],
        "num_heads": 4,
        "d_model": 16,
        "d_k": 2,
    },
}
"""FLAIR #2's baselines at test width (tests/test_finetune_flair2_baselines.py trains them to beat chance)."""


def test_the_readme_datasets_commands_run_as_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """README "Datasets": toy release -> shards -> finetune flair2 from a random encoder, then the
    U-Net and U-T&T baselines, each line as typed, fine-tuning shrunk to test scale as
    tests/test_readme_commands.py does (the encoder's S2 override sets no image size: the 40 px come
    from the dataset row)."""
    from test_readme_commands import PROGRAMS, TRAIN_SHRINK, readme_commands

    keys = ("modalities", "width", "depth", "inter_depth", "grid_size")
    tiny = {f"model.encoder.{key}": FLAIR2_ENCODER[key] for key in keys}
    overrides = {**FLAIR2_ENCODER["overrides"], "s2": {"num_dates": 4, "patch_size": 10}}
    (tmp_path / "configs").symlink_to(Path(__file__).resolve().parents[1] / "configs")
    monkeypatch.chdir(tmp_path)
    commands = readme_commands("Datasets")
    assert [argv[:3] for _, argv in commands] == [
        ["shards", "toy", "--dataset"],
        ["shards", "build", "--dataset"],
        ["finetune", "--task", "flair2"],
        ["finetune", "--model", "unet"],
        ["finetune", "--model", "utt"],
    ]
    for _line, argv in commands:
        words = []
        if argv[:2] == ["finetune", "--task"]:
            words = [*TRAIN_SHRINK, *dotted({**tiny, "model.encoder.overrides": overrides})]
        elif argv[0] == "finetune":  # the baselines: random weights (no download), tiny widths
            words = [*TRAIN_SHRINK, "--no-pretrained", *dotted({"model.flair2": TINY_FLAIR2})]
        assert PROGRAMS[argv[0]]([*argv[1:], *words]) == 0, argv
    for run in ("flair2-level1", "flair2-level1-unet", "flair2-level1-utt"):
        metrics = json.loads(Path(f"runs/finetune/{run}/test/metrics.json").read_text())
        assert 0.0 <= metrics["miou"] <= 1.0, run
