"""Which checkpoints a run keeps, which one a resume continues from, and when there is nothing left.

A checkpoint holds the model, the optimizer state and the EMA copy (about 3x the weights: 110 MB for
the toy run, 5.3 GB for ``flairhub_medium``), so a run keeps only its newest few plus ``last.ckpt``
(a link to the newest) instead of every one it wrote. Checkpoints are ranked by optimizer step, read
from their name (``step0001234.ckpt``) or, for other names, from the file, never by modification
time (copies and restores change it). Reading checkpoints and finding a run's newest is
:mod:`maestro.hub.weights`, shared with everything that loads weights from a run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from maestro.errors import ConfigError
from maestro.hub.sources import BEST as BEST_FILE
from maestro.hub.sources import CHECKPOINT_DIR
from maestro.hub.weights import STEP, checkpoint_step, latest_checkpoint, read_checkpoint
from maestro.training.config import TrainerConfig

log = logging.getLogger(__name__)

LAST = f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
BEST = "best"


class RunCheckpoints(ModelCheckpoint):
    """Every ``every_n_steps`` optimizer steps and at every training epoch end (so that a finished
    epoch can always be resumed), keeping the ``keep`` newest by step; ``last.ckpt`` links to the
    newest.

    Lightning's ``ModelCheckpoint`` takes one trigger; the epoch-end save is added here rather than
    by a second callback, so that one top-k list (ranked by ``step``) covers both.
    """

    def __init__(self, dirpath: Path, every_n_steps: int, keep: int):
        super().__init__(
            dirpath=dirpath,
            filename="step{step:07d}",
            auto_insert_metric_name=False,
            every_n_train_steps=every_n_steps,
            monitor="step",
            mode="max",
            save_top_k=keep,
            save_last="link",
            save_on_train_epoch_end=True,
            # Names are unique by step: a resumed run replaces last.ckpt (and a step it trains
            # again) rather than starting last-v1.ckpt beside the interrupted run's link.
            enable_version_counter=False,
        )

    def _should_remove_checkpoint(self, trainer: L.Trainer, previous: str, current: str) -> bool:
        """Lightning never deletes the checkpoint a run resumed from; here it leaves like any other
        once ``keep`` newer ones are written (removal is only asked after a newer one is saved),
        so a resumed run still keeps ``keep`` checkpoints, as documented. Files outside the run's
        checkpoint folder (``--resume-from`` elsewhere) are never touched."""
        if previous == current:
            return False
        return Path(self.dirpath).absolute() in Path(previous).absolute().parents

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):  # skipped when the step trigger just saved
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)


def checkpoint_callbacks(output_dir: Path, config: TrainerConfig) -> list[ModelCheckpoint]:
    """The run's rolling checkpoints, plus ``best.ckpt`` when ``config.monitor`` names a metric."""
    dirpath = Path(output_dir) / CHECKPOINT_DIR
    callbacks: list[ModelCheckpoint] = [
        RunCheckpoints(dirpath, config.checkpoint_every_n_steps, config.keep_checkpoints)
    ]
    if config.monitor is not None:
        callbacks.append(
            ModelCheckpoint(
                dirpath=dirpath,
                filename=BEST,
                monitor=config.monitor,
                mode=config.monitor_mode,
                save_top_k=1,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            )
        )
    return callbacks


def check_unfinished(path: Path) -> None:
    """Refuse to resume a checkpoint written at the end of its learning-rate schedule: there is
    nothing left to train, and continuing would overrun the OneCycle schedule."""
    checkpoint = read_checkpoint(path)
    step = checkpoint.get(STEP)
    schedulers = checkpoint.get("lr_schedulers") or [{}]
    total = schedulers[0].get("total_steps")
    if step is not None and total is not None and step >= total:
        raise ConfigError(
            f"nothing to resume: {path} is the end of a finished run (step {step} of its {total}-step "
            "schedule). To train longer, start a new run with another trainer.output_dir"
        )


def resolve_resume(run_dir: Path, resume: str | None) -> Path | None:
    """The checkpoint to resume from (``"last"``: the run's newest), or None for a fresh run.

    A fresh run into a directory that already holds checkpoints is refused: it would mix two runs.
    So is resuming a run that already finished.
    """
    if resume is None:
        if latest_checkpoint(run_dir) is not None:
            raise FileExistsError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose another trainer.output_dir"
            )
        return None
    ckpt_path = latest_checkpoint(run_dir) if resume == "last" else Path(resume)
    if ckpt_path is None or not ckpt_path.is_file():
        raise FileNotFoundError(f"cannot resume: no checkpoint {ckpt_path or Path(run_dir) / CHECKPOINT_DIR}")
    check_unfinished(ckpt_path)
    log.info("resuming from %s (step %d)", ckpt_path, checkpoint_step(ckpt_path))
    return ckpt_path


def resume_advice(run_dir: Path) -> str:
    """What ``--resume`` would do for the run in ``run_dir`` now: continue from its newest
    checkpoint, or nothing at all when none was written yet (a run stopped in its first steps)."""
    newest = latest_checkpoint(run_dir)
    if newest is None:
        return (
            f"nothing was saved yet: there is no checkpoint to --resume from in {Path(run_dir) / CHECKPOINT_DIR} "
            "(the first is written after trainer.checkpoint_every_n_steps steps or at the end of the first "
            "epoch); start the run again"
        )
    return f"--resume continues the run from its newest checkpoint, {newest.name} (step {checkpoint_step(newest)})"


def best_checkpoint(output_dir: Path, monitor: str, mode: str) -> ModelCheckpoint:
    """The run's ``best.ckpt``: the one checkpoint with the best ``monitor`` (a stage's validation
    score), overwritten in place, never versioned."""
    return ModelCheckpoint(
        dirpath=output_dir,
        filename=Path(BEST_FILE).stem,
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )


def trained_checkpoint(output_dir: Path) -> Path:
    """What ``--eval-only`` tests: the run's ``best.ckpt``, else its newest checkpoint."""
    best = output_dir / BEST_FILE
    ckpt = best if best.is_file() else latest_checkpoint(output_dir)
    if ckpt is None:
        raise FileNotFoundError(
            f"--eval-only: {output_dir} holds no trained run (no {BEST_FILE}, no checkpoints/)"
        )
    return ckpt
