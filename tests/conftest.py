"""Session fixtures: a small toy FLAIR-HUB tree and its shards, built once per test run."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

LONGEST_FILES = (
    "test_finetune_crop_inputs.py",
    "test_finetune_linear_probe.py",
    "test_pretrain_launchers.py",
    "test_pretrain.py",
    "test_readme_commands.py",
    "test_finetune_flair2_baselines.py",
    "test_gapfill.py",
    "test_datasets.py",
    "test_training_signals.py",
    "test_finetune_cli.py",
    "test_predict_run.py",
    "test_models_baseline_learning.py",
    "test_hub_cache.py",
)
"""The test files that take longest on 2 cores (about 5 and 3 minutes for the first two, then 2 to
0.5), roughly longest first; each xdist worker starts with two files, so the third file goes with
the first and the fourth with the second."""


TEMP_SPACE_NEEDED_GB = 4.0
"""What the suite's temporary folders need: 2.5 GB at their peak on 2 workers, with a margin for a
third and fourth. The end-to-end tests write tiny but real shards and checkpoints (~150 MB each);
three rules keep the peak low. A passing test's ``tmp_path`` is removed as it ends
(``tmp_path_retention_policy`` in pyproject.toml); the folders a test file's own fixtures made go when
the file ends (``_test_file_folders``); only what session fixtures made (``SESSION_FOLDERS``) lives
until the run ends. A failure keeps its folders for a look."""


class _SessionFolders:
    """The temporary folders that session fixtures make while they are set up, whatever fixture makes
    them: they outlive every test file. A plugin, not a hook of this file: session fixtures are set
    up on the session node, above ``tests/``, where this file's hooks are not called."""

    def __init__(self) -> None:
        self.folders: set[Path] = set()

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest):
        if fixturedef.scope != "session" or fixturedef.argname == "tmp_path_factory":
            return (yield)
        base = request.config._tmp_path_factory.getbasetemp()  # what the tmp_path_factory fixture returns
        before = set(base.iterdir())
        try:
            return (yield)
        finally:
            self.folders |= set(base.iterdir()) - before


SESSION_FOLDERS = _SessionFolders()


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SESSION_FOLDERS, "maestro-session-folders")


@pytest.fixture(scope="module", autouse=True)
def _test_file_folders(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Remove, when a test file ends, the temporary folders its fixtures and tests made (a module
    fixture's folder otherwise stays until the whole run ends), unless one of its tests failed."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    failures = request.session.testsfailed
    yield
    if request.session.testsfailed > failures:
        return
    for folder in set(base.iterdir()) - before - SESSION_FOLDERS.folders:
        if folder.is_symlink():  # pytest's ``<name>current`` link to the newest numbered folder
            folder.unlink()
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _temp_space_line(config: pytest.Config) -> tuple[str, bool]:
    base = Path(config.option.basetemp or tempfile.gettempdir())
    free_gb = shutil.disk_usage(base if base.exists() else tempfile.gettempdir()).free / 1e9
    low = free_gb < TEMP_SPACE_NEEDED_GB
    line = f"temporary folder {base}: {free_gb:.1f} GB free"
    if low:
        line += (
            f"; WARNING: the suite needs about {TEMP_SPACE_NEEDED_GB:.0f} GB there (set TMPDIR or --basetemp)"
        )
    return line, low


def pytest_report_header(config: pytest.Config) -> str:
    return _temp_space_line(config)[0]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Warn, even under ``-q``, when the temporary folder is short of room: a full disk shows up as
    hundreds of fixture errors far from their cause."""
    line, low = _temp_space_line(session.config)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if low and reporter is not None and not hasattr(session.config, "workerinput"):
        reporter.write_line(line, yellow=True, bold=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the longest files first. ``make test`` gives each file to one pytest-xdist worker
    (``--dist loadfile --no-loadscope-reorder``) in collection order: a long file collected late
    kept one core busy for minutes after the other had run out of work."""
    rank = {name: position for position, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from maestro.data.toy import write_toy_dataset

    root = tmp_path_factory.mktemp("toy") / "flairhub"
    write_toy_dataset(root, num_patches=24, seed=0)
    return root


@pytest.fixture(scope="session")
def toy_shards(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shards.cli import main

    out = tmp_path_factory.mktemp("toy_shards") / "shards"
    code = main(
        [
            "build",
            "--root",
            str(toy_root),
            "--split",
            "train",
            "val",
            "--out",
            str(out),
            "--max-count",
            "4",
            "--no-progress",
        ]
    )
    assert code == 0
    return out


@pytest.fixture(scope="module")
def build_toy_shards(tmp_path_factory: pytest.TempPathFactory):
    """Factory: a toy FLAIR-HUB tree of ``num_patches`` (seed 0) and its train/val shards of
    ``max_count`` samples each, for the tests that need more parcels than ``toy_shards`` holds
    (a few hundred MB: they go when the test file ends)."""
    from maestro.data.toy import write_toy_dataset
    from shards.cli import main

    def build(name: str, num_patches: int, max_count: int) -> Path:
        work = tmp_path_factory.mktemp(name)
        write_toy_dataset(work / "flairhub", num_patches=num_patches, seed=0)
        args = ["build", "--root", str(work / "flairhub"), "--split", "train", "val"]
        args += ["--out", str(work / "shards"), "--max-count", str(max_count), "--no-progress"]
        assert main(args) == 0
        return work / "shards"

    return build


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models run fastest on one thread, and the CI cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------- fine-tuning
# A tiny encoder for stage tests: 4 x 4 aerial/DEM tokens (patch 128 of 512 px), S2 tokens of one
# 10 m pixel (10 x 10, where the crop phenology is), 2 x 2 S1 tokens, width 64, two blocks.
FINETUNE_ENCODER = {
    "modalities": ["aerial", "dem", "s2", "s1_asc", "s1_des"],
    "overrides": {
        "aerial": {"patch_size": 128},
        "dem": {"patch_size": 128},
        "s2": {"num_dates": 4, "patch_size": 1},
        "s1_asc": {"num_dates": 2, "patch_size": 5},
        "s1_des": {"num_dates": 2, "patch_size": 5},
    },
    "size": "tiny",
    "width": 64,
    "depth": 2,
    "inter_depth": 1,
    "grid_size": 20,
}


def dotted(raw: dict) -> list[str]:
    """One ``section={...}`` override per section, as a user would type it."""
    import yaml

    return [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}" for key, value in raw.items()]


class FinetunedRun(NamedTuple):
    out: Path
    config: Any
    """The FinetuneConfig the run was started with (``finetune.cli.run`` resolves it)."""
    scores: Any
    """The test scores ``run`` returned."""


@pytest.fixture(scope="session")
def finetune_raw(toy_shards: Path):
    """Factory: the plain sections of a tiny fine-tuning run on the toy shards (the val split
    doubles as the test split), CPU, no loader workers, 2 epochs x 4 batches of 2."""
    import copy

    def make(out: Path) -> dict:
        return copy.deepcopy(
            {
                "data": {
                    "train": str(toy_shards),
                    "val": str(toy_shards),
                    "test": str(toy_shards),
                    "test_split": "val",
                    "batch_size": 2,
                    "num_workers": 0,
                    "shuffle_buffer": 4,
                    "batches_per_epoch": 4,
                },
                "model": {
                    "init": "random",
                    "encoder": FINETUNE_ENCODER,
                    "decoder_channels": 32,
                    "date_pooling": "mean",
                },
                # Annealed to ~0 (fine-tuning's own recipe stops at lr / 2): the few-step learning
                # checks need the low final learning rate.
                "optim": {"base_lr": 4e-3, "warmup_fraction": 0.1, "end_fraction": 0.0},
                "trainer": {
                    "output_dir": str(out),
                    "max_epochs": 2,
                    "accelerator": "cpu",
                    "devices": 1,
                    "ema_decay": 0.9,
                    "log_every_n_steps": 1,
                    "checkpoint_every_n_steps": 2,
                },
                "eval": {"num_figures": 2},
            }
        )

    return make


@pytest.fixture(scope="session")
def finetune_config(finetune_raw):
    """Factory: ``finetune_config(out, *overrides)`` -> FinetuneConfig through ``load_config``
    (the tiny sections of ``finetune_raw``, then the dotted overrides)."""
    from finetune.config import FinetuneConfig
    from maestro.config import load_config

    def make(out: Path, *overrides: str):
        return load_config(FinetuneConfig, None, dotted(finetune_raw(out)) + list(overrides))

    return make


@pytest.fixture(scope="session")
def tiny_pretrain_run(toy_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-step ``pretrain`` run of the fine-tuning test encoder (EMA 0.9, checkpoints every 2
    steps and at each epoch end): an ``--init`` for fine-tuning and a source for the hub tests."""
    from maestro.config import load_config
    from pretrain.cli import run
    from pretrain.config import PretrainConfig

    out = tmp_path_factory.mktemp("pretrain") / "run"
    raw = {
        "data": {
            "train": str(toy_shards),
            "batch_size": 4,
            "num_workers": 0,
            "batches_per_epoch": 3,
            "shuffle_buffer": 8,
        },
        "model": {"encoder": FINETUNE_ENCODER, "decoder_width": 32, "decoder_heads": 2, "decoder_depth": 1},
        "optim": {"base_lr": 1e-3},
        "trainer": {
            "output_dir": str(out),
            "max_epochs": 2,
            "checkpoint_every_n_steps": 2,
            "log_every_n_steps": 1,
            "reconstruction_every_n_steps": 0,
            "ema_decay": 0.9,
            "accelerator": "cpu",
            "devices": 1,
        },
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(load_config(PretrainConfig, None, dotted(raw)))
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def finetuned_run(
    finetune_config, tiny_pretrain_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> FinetunedRun:
    """LC level 1 fine-tuned from ``tiny_pretrain_run`` on all five inputs (8 steps, best checkpoint
    by val mIoU, tested with prediction GeoTIFFs). Read-only: copy it before writing into it."""
    from finetune.cli import run

    out = tmp_path_factory.mktemp("finetuned") / "run"
    config = finetune_config(
        out, f"model.init={tiny_pretrain_run}", "model.encoder=null", "eval.save_predictions=true"
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scores = run(config)
    finally:
        torch.set_num_threads(threads)
    return FinetunedRun(out, config, scores)


@pytest.fixture(scope="session")
def label_histogram(toy_root: Path):
    """Factory: ``label_histogram(split, task, level)`` -> pixels per class (ignored values left
    out) of a toy split, read straight from the label GeoTIFFs, independently of the loaders."""
    import numpy as np
    import rasterio

    from maestro.data.layout import SPLIT_NAME, PatchId, raster_relpath, split_csv_path
    from maestro.modalities import MODALITIES
    from maestro.tasks import get_task

    def make(split: str, task: str, level: int):
        import csv

        target = get_task(task).target(level)
        counts = np.zeros(target.num_classes, dtype=np.int64)
        with split_csv_path(toy_root, SPLIT_NAME, split).open() as handle:
            patches = [row["patch_id"] for row in csv.DictReader(handle)]
        assert patches
        for patch in patches:
            path = toy_root / raster_relpath(MODALITIES[target.label_modality], PatchId.parse(patch))
            with rasterio.open(path) as src:
                values = target.lookup[src.read(target.band + 1)]
            counts += np.bincount(values[values != 255], minlength=target.num_classes)[: target.num_classes]
        return counts

    return make


@pytest.fixture(scope="session")
def example_tree(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as the repository root after `make example` (examples/run_toy.sh), at test
    scale: ``configs/`` (a link), ``example/flairhub`` (a link to ``toy_root``), ``example/shards``
    (train, val, test), ``example/runs/pretrain`` and ``example/runs/finetune/lc``, both from the
    example's configs made narrower and shorter (width 64, two blocks, two steps). Read-only: copy
    what a test writes into."""
    from finetune.cli import run as finetune
    from finetune.config import FinetuneConfig
    from maestro.config import load_config
    from pretrain.cli import run as pretrain
    from pretrain.config import PretrainConfig
    from shards.cli import main

    root = tmp_path_factory.mktemp("example_tree")
    configs = Path(__file__).resolve().parent.parent / "configs"
    (root / "configs").symlink_to(configs)
    example = root / "example"
    example.mkdir()
    (example / "flairhub").symlink_to(toy_root)
    shards, runs = example / "shards", example / "runs"
    args = ["build", "--root", str(toy_root), "--split", "train", "val", "test", "--out", str(shards)]
    assert main([*args, "--max-count", "4", "--no-progress"]) == 0
    small = ["data.batch_size=2", "data.num_workers=0", "data.batches_per_epoch=2", "data.shuffle_buffer=2"]
    small += ["trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.devices=1"]
    pretraining = [*small, f"data.train={shards}", "data.val=null", f"trainer.output_dir={runs / 'pretrain'}"]
    pretraining += [
        "model.encoder.width=64",
        "model.encoder.depth=2",
        "trainer.reconstruction_every_n_steps=0",
    ]
    finetuning = [*small, *(f"data.{split}={shards}" for split in ("train", "val", "test"))]
    finetuning += [f"model.init={runs / 'pretrain'}", f"trainer.output_dir={runs / 'finetune' / 'lc'}"]
    finetuning += ["data.val_batches=1", "model.decoder_channels=32", "eval.num_figures=1"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrain(load_config(PretrainConfig, configs / "pretrain" / "toy.yaml", pretraining))
        finetune(load_config(FinetuneConfig, configs / "finetune" / "toy.yaml", finetuning))
    finally:
        torch.set_num_threads(threads)
    return root
