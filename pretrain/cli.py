"""``pretrain``: MAESTRO masked-autoencoder pretraining from shards, one CPU to many GPU nodes."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from maestro.config import load_config, to_dict
from maestro.errors import ConfigError, DataError
from pretrain.callbacks import ReconstructionImages
from pretrain.config import PretrainConfig, TrainerConfig
from pretrain.data import ShardDataModule
from pretrain.module import MaestroPretrainModule

log = logging.getLogger("pretrain")


def build_strategy(config: TrainerConfig, model: MaestroPretrainModule):
    if config.strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        # Every parameter takes part in every step (all modalities are always present). Buffers are
        # fixed encodings: broadcasting them would add a collective to every forward, which hangs
        # validation when ranks see different numbers of batches (each sample exactly once).
        return DDPStrategy(find_unused_parameters=False, broadcast_buffers=False)
    if config.strategy == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        from maestro.models.transformer import Block

        return FSDPStrategy(auto_wrap_policy={Block}, sharding_strategy="FULL_SHARD", state_dict_type="full")
    return "auto"


def default_precision(config: TrainerConfig) -> str:
    if config.precision is not None:
        return config.precision
    on_gpu = torch.cuda.is_available() and config.accelerator in ("auto", "gpu", "cuda")
    return "bf16-mixed" if on_gpu else "32-true"


def build_trainer(config: PretrainConfig, model: MaestroPretrainModule) -> L.Trainer:
    trainer_config = config.trainer
    out = Path(trainer_config.output_dir)
    checkpoints = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="step{step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=trainer_config.checkpoint_every_n_steps,
        save_top_k=-1,
    )
    # Also at every epoch end, so the end of training always leaves a checkpoint to resume from.
    epoch_checkpoints = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="epoch{epoch:03d}",
        auto_insert_metric_name=False,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
        save_top_k=-1,
    )
    callbacks = [checkpoints, epoch_checkpoints, LearningRateMonitor(logging_interval="step"), TQDMProgressBar(refresh_rate=1)]
    if trainer_config.reconstruction_every_n_steps > 0:
        callbacks.append(ReconstructionImages(out))
    # A new version_N per launch: a resumed run never overwrites the logs of the interrupted one.
    loggers = [TensorBoardLogger(save_dir=out, name="tensorboard"), CSVLogger(save_dir=out, name="csv")]
    return L.Trainer(
        default_root_dir=out,
        accelerator=trainer_config.accelerator,
        devices=trainer_config.devices,
        num_nodes=trainer_config.num_nodes,
        strategy=build_strategy(trainer_config, model),
        precision=default_precision(trainer_config),
        max_epochs=trainer_config.max_epochs,
        max_steps=trainer_config.max_steps,
        gradient_clip_val=trainer_config.gradient_clip,
        accumulate_grad_batches=trainer_config.accumulate_grad_batches,
        log_every_n_steps=trainer_config.log_every_n_steps,
        check_val_every_n_epoch=trainer_config.val_every_n_epochs,
        limit_val_batches=config.data.val_batches if config.data.val_batches is not None else 1.0,
        deterministic=trainer_config.deterministic,
        callbacks=callbacks,
        logger=loggers,
        use_distributed_sampler=False,  # the shard loader splits by rank itself
        num_sanity_val_steps=0,
    )


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written checkpoint of a run (step and epoch checkpoints alike)."""
    candidates = sorted((run_dir / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    return candidates[-1] if candidates else None


def run(config: PretrainConfig, resume: str | None = None) -> L.Trainer:
    """Train; ``resume`` is a checkpoint path, or ``"last"`` for the run's newest checkpoint."""
    L.seed_everything(config.trainer.seed, workers=True)
    if torch.cuda.is_available():  # TF32 for the few fp32 matrix products left outside bf16 autocast
        torch.set_float32_matmul_precision("high")
    out = Path(config.trainer.output_dir)
    ckpt_path = None
    if resume is not None:
        ckpt_path = latest_checkpoint(out) if resume == "last" else Path(resume)
        if ckpt_path is None or not ckpt_path.is_file():
            raise FileNotFoundError(f"cannot resume: no checkpoint {ckpt_path or out / 'checkpoints'}")
        log.info("resuming from %s", ckpt_path)
    elif latest_checkpoint(out) is not None:
        raise FileExistsError(
            f"{out} already holds a run; pass --resume to continue it or choose another trainer.output_dir"
        )
    module = MaestroPretrainModule(to_dict(config))
    data = ShardDataModule(config.data, module.config.model_config, seed=config.trainer.seed)
    trainer = build_trainer(config, module)
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    return trainer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pretrain",
        description=__doc__,
        epilog="Overrides are dotted keys, e.g. trainer.max_steps=200 model.size=small data.batch_size=16",
    )
    parser.add_argument("--config", required=True, help="YAML config (see configs/pretrain/)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides of the config")
    parser.add_argument("--devices", help="devices per node (int, 'auto', or a list like 0,1)")
    parser.add_argument("--num-nodes", type=int, help="number of nodes")
    parser.add_argument("--strategy", choices=["auto", "ddp", "fsdp"])
    parser.add_argument("--accelerator", help="cpu, gpu or auto")
    parser.add_argument("--output-dir", help="where checkpoints, logs and images go")
    parser.add_argument("--resume", nargs="?", const="last", help="resume from CKPT (default: the run's last)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    overrides = list(args.overrides)
    for flag, key in (("devices", "devices"), ("num_nodes", "num_nodes"), ("strategy", "strategy"),
                      ("accelerator", "accelerator"), ("output_dir", "output_dir")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"trainer.{key}={value}")
    try:
        config = load_config(PretrainConfig, args.config, overrides)
    except ConfigError as error:
        log.error("invalid configuration: %s", error)
        return 2
    try:
        run(config, resume=args.resume)
    except (ConfigError, DataError, FileExistsError, FileNotFoundError) as error:
        log.error("%s", error)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
