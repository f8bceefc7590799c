"""The pretrain stage end to end on toy shards: fusion modes learn, resume is exact, DDP agrees."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from multiprocess_helpers import run_torchrun

from maestro.config import load_config, to_dict
from maestro.errors import ConfigError
from maestro.models import MaestroMAE
from maestro.training.data import ShardDataModule, preprocess_for
from pretrain.cli import main, run
from pretrain.config import PretrainConfig

TINY_ENCODER = {
    "modalities": ["aerial", "dem", "s2", "s1_asc", "s1_des"],
    "overrides": {
        "aerial": {"patch_size": 128},
        "dem": {"patch_size": 128},
        "s2": {"num_dates": 3, "patch_size": 5},
        "s1_asc": {"num_dates": 2, "patch_size": 5},
        "s1_des": {"num_dates": 2, "patch_size": 5},
    },
    "size": "tiny",
    "width": 64,
    "depth": 2,
    "inter_depth": 1,
    "grid_size": 20,
}
TINY_MODEL = {"encoder": TINY_ENCODER, "decoder_width": 32, "decoder_heads": 2, "decoder_depth": 1}


def _config(shards: Path, out: Path, **trainer) -> PretrainConfig:
    raw = {
        "data": {
            "train": str(shards),
            "val": str(shards),
            "batch_size": 4,
            "num_workers": 0,
            "batches_per_epoch": 4,
            "shuffle_buffer": 8,
        },
        "model": TINY_MODEL,
        "optim": {"base_lr": 1e-3},
        "trainer": {
            "output_dir": str(out),
            "max_epochs": 2,
            "checkpoint_every_n_steps": 3,
            "log_every_n_steps": 1,
            "reconstruction_every_n_steps": 2,
            "ema_decay": 0.9,
            "accelerator": "cpu",
            "devices": 1,
            **trainer,
        },
    }
    return load_config(
        PretrainConfig,
        None,
        [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in raw.items()],
    )


def _logged(out: Path, name: str = "train/loss") -> dict[int, float]:
    """Step -> value of a logged metric, over every launch (version) of the run."""
    values = {}
    for path in sorted((out / "csv").glob("version_*/metrics.csv")):
        with path.open() as handle:
            values.update(
                {int(row["step"]): float(row[name]) for row in csv.DictReader(handle) if row.get(name)}
            )
    return values


@pytest.mark.parametrize("fusion", ["shared", "monotemp", "mod", "group"])
def test_each_fusion_mode_learns_on_toy_data(toy_shards, fusion):
    torch.manual_seed(0)
    config = _config(toy_shards, Path("unused"))
    model_config = config.model.replace(encoder=config.model.encoder.replace(fusion=fusion))
    data = ShardDataModule(config.data, preprocess_for(model_config.encoder.specs))
    batch = next(iter(data.train_dataloader()))
    model = MaestroMAE(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        generator = torch.Generator().manual_seed(step % 3)
        loss = model(batch["inputs"], batch["times"], batch["valid"], generator=generator)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses


def test_fit_writes_checkpoints_logs_and_images(toy_shards, tmp_path):
    config = _config(toy_shards, tmp_path / "run")
    run(config)
    out = tmp_path / "run"
    # Saved at steps 3, 4 (epoch end), 6 and 8 (epoch end); the newest 3 are kept.
    assert sorted(p.name for p in (out / "checkpoints").glob("*.ckpt")) == [
        "last.ckpt",
        "step0000004.ckpt",
        "step0000006.ckpt",
        "step0000008.ckpt",
    ]
    assert list((out / "tensorboard").glob("version_0/events.out.tfevents.*"))
    images = sorted(p.name for p in (out / "reconstructions").glob("*.png"))
    assert "step0000000_aerial.png" in images and "step0000002_s1_des.png" in images
    written = (out / "config.yaml").read_text()
    assert yaml.safe_load(written) == to_dict(config)
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert "ema_state_dict" in checkpoint and checkpoint["global_step"] == 8
    with pytest.raises(FileExistsError, match="--resume"):
        run(config)
    with pytest.raises(
        ConfigError, match="nothing to resume: .*step0000008.ckpt is the end of a finished run"
    ):
        run(config, resume="last")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(to_dict(config)))
    assert main(["--config", str(config_file), "--resume", "trainer.max_epochs=2"]) == 2
    # Resuming must not silently change the run: another schedule or model is refused up front.
    mid_run = str(out / "checkpoints" / "step0000006.ckpt")
    with pytest.raises(ConfigError, match="schedule spans 8 optimizer steps but this run would span 12"):
        run(_config(toy_shards, out, max_epochs=3), resume=mid_run)
    wider = load_config(
        PretrainConfig,
        None,
        [
            f"data={yaml.safe_dump(to_dict(config.data), default_flow_style=True)}",
            f"trainer={yaml.safe_dump(to_dict(config.trainer), default_flow_style=True)}",
            f"model={yaml.safe_dump({**TINY_MODEL, 'encoder': {**TINY_ENCODER, 'width': 128}}, default_flow_style=True)}",
        ],
    )
    with pytest.raises(ConfigError, match="another model config"):
        run(wider, resume=mid_run)
    assert (out / "config.yaml").read_text() == written  # refused resumes leave the run's config alone


def test_a_truncated_shard_stops_the_run_before_training(toy_shards, tmp_path, caplog):
    shards = tmp_path / "shards"
    shutil.copytree(toy_shards, shards)
    bad = sorted(shards.glob("train-*.tar"))[-1]
    with bad.open("r+b") as handle:
        handle.truncate(bad.stat().st_size - 1024)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(to_dict(_config(shards, tmp_path / "run"))))
    assert main(["--config", str(config_file)]) == 2
    assert f"{bad}: size" in caplog.text
    assert not (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "run" / "checkpoints").exists()


class _Interrupt(L.Callback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            raise RuntimeError("simulated crash")


def test_kill_and_resume_reproduces_the_uninterrupted_losses(toy_shards, tmp_path):
    # 2 epochs x 4 batches; the crash comes mid-epoch 0 after the step-3 checkpoint.
    reference = _config(toy_shards, tmp_path / "reference", reconstruction_every_n_steps=0)
    run(reference)
    expected = _logged(tmp_path / "reference")

    crashed = _config(toy_shards, tmp_path / "crashed", reconstruction_every_n_steps=0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(crashed, callbacks=[_Interrupt(at_step=3)])
    run(crashed, resume="last")
    resumed = _logged(tmp_path / "crashed")
    assert sorted(resumed) == sorted(expected)
    for step in range(3, 8):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
    # Validation runs on the EMA weights: the checkpoint's EMA must be that of its step.
    expected_val, resumed_val = (
        _logged(tmp_path / "reference", "val/loss"),
        _logged(tmp_path / "crashed", "val/loss"),
    )
    assert sorted(resumed_val) == sorted(expected_val) == [3, 7]
    for step, value in expected_val.items():
        assert resumed_val[step] == pytest.approx(value, rel=1e-6, abs=1e-7), step


def _to_pre_split_layout(path: Path) -> None:
    """Rewrite a checkpoint as the suite wrote it before the encoder/MAE split."""
    from maestro.models.legacy import RENAMED_PREFIXES

    def old_name(key: str, prefix: str) -> str:
        for old, current in RENAMED_PREFIXES:
            if key.startswith(prefix + current):
                return prefix + old + key[len(prefix + current) :]
        return key

    checkpoint = torch.load(path, weights_only=True)
    model = checkpoint["hyper_parameters"]["config"]["model"]
    checkpoint["hyper_parameters"]["config"]["model"] = {**model.pop("encoder"), **model}
    checkpoint["state_dict"] = {old_name(k, "model."): v for k, v in checkpoint["state_dict"].items()}
    checkpoint["ema_state_dict"] = {
        old_name(k, "module."): v for k, v in checkpoint["ema_state_dict"].items()
    }
    torch.save(checkpoint, path)


def test_a_checkpoint_from_before_the_encoder_split_resumes_exactly(toy_shards, tmp_path):
    reference = _config(toy_shards, tmp_path / "reference", reconstruction_every_n_steps=0, max_epochs=1)
    run(reference)
    expected = _logged(tmp_path / "reference")
    crashed = _config(toy_shards, tmp_path / "crashed", reconstruction_every_n_steps=0, max_epochs=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(crashed, callbacks=[_Interrupt(at_step=3)])
    checkpoint = tmp_path / "crashed" / "checkpoints" / "step0000003.ckpt"
    _to_pre_split_layout(checkpoint)
    assert (
        "model.embed.aerial.groups.0.proj.weight" in torch.load(checkpoint, weights_only=True)["state_dict"]
    )
    run(crashed, resume=str(checkpoint))
    resumed = _logged(tmp_path / "crashed")
    assert resumed[3] == pytest.approx(expected[3], rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_two_process_ddp_on_cpu_ends_with_identical_weights(toy_shards, tmp_path):
    config = _config(
        toy_shards, tmp_path / "ddp", strategy="ddp", devices=2, max_epochs=1, reconstruction_every_n_steps=0
    )
    config_file = tmp_path / "ddp.yaml"
    config_file.write_text(yaml.safe_dump(to_dict(config)))
    run_torchrun(Path(__file__).parent / "pretrain_ddp_worker.py", str(config_file))
    rank0 = torch.load(tmp_path / "ddp" / "weights_rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "ddp" / "weights_rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    initial = MaestroMAE(config.model).state_dict()
    changed = 0
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=key)
        changed += int(not torch.equal(rank0[key], initial[key]))
    assert changed > 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.encoder.modalities=[aerial, sentinel3]", "unknown modality"),
        ("model.encoder.overrides.aerial.patch_size=100", "patch"),
        ("trainer.max_stesp=3", "unknown key(s) ['max_stesp']"),
        ("data.batch_size=0", "batch_size"),
    ],
)
def test_bad_configs_fail_at_start(toy_shards, tmp_path, override, message):
    config = _config(toy_shards, tmp_path / "bad")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(to_dict(config)))
    with pytest.raises(ConfigError, match=None) as info:
        load_config(PretrainConfig, config_file, [override])
    assert message.lower() in str(info.value).lower()
    assert main(["--config", str(config_file), override]) == 2
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).parent.parent / "configs" / "pretrain").glob("*.yaml")),
    ids=lambda path: path.name,
)
def test_shipped_configs_load(path):
    config = load_config(PretrainConfig, path)
    assert config.trainer.reconstruction_every_n_steps > 0 and config.data.train
