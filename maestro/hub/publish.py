"""``maestro publish``: a training checkpoint -> a model folder with its card -> a Hub repo.

What is published from which run (weights are the EMA copy when the checkpoint has one):

- a ``pretrain`` run or checkpoint: the encoder (``what="encoder"``, default) or the whole masked
  autoencoder (``what="mae"``);
- a ``finetune`` run (its ``best.ckpt``) or checkpoint: the segmenter (default; ``task`` with the
  class names in ``config.json``, the run's ``test/metrics.json`` in the card) or its encoder. The
  card names the data the scores were measured on from the manifest of the run's ``data.test``
  shards (dataset, split, patches), read at publish time; only FLAIR-HUB's own splits are claimed.

Checkpoints are read with ``torch.load(weights_only=True)``; the weights are checked against the
config stored in the same checkpoint before anything is written. Files are written only into the
folder the user names (``out``) or into a temporary folder that is removed afterwards.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from maestro.data.layout import SPLIT_NAME
from maestro.errors import ConfigError, DataError
from maestro.hub.card import CardFacts, EvalData, build_card
from maestro.hub.folder import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, load_strict, write_model_folder
from maestro.hub.registry import get_model_type
from maestro.models.legacy import upgrade_pretrain_checkpoint
from maestro.training.trainer import latest_checkpoint
from shards.manifest import read_manifest
from shards.reading import local_manifest

log = logging.getLogger(__name__)

What = Literal["encoder", "mae", "segmenter"]
Weights = Literal["ema", "model"]
BEST = "best.ckpt"
METRICS = Path("test") / "metrics.json"
HUB_PREFIX = "hf:"


@dataclass(frozen=True)
class Export:
    """One network taken out of a checkpoint, ready to be written as a model folder."""

    model_type: str
    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    task: dict[str, Any] | None
    facts: CardFacts


@dataclass(frozen=True)
class Published:
    folder: Path | None
    """The model folder when it was kept (``out``), else None."""
    card: str
    url: str | None
    """Commit URL of the upload; None for a dry run."""


def find_checkpoint(source: str | Path) -> tuple[Path, Path | None]:
    """(checkpoint, run directory or None): a ``.ckpt`` file, a finetune run (its ``best.ckpt``) or
    any run (its newest checkpoint)."""
    path = Path(source)
    if path.is_file():
        if path.parent.name == "checkpoints":
            return path, path.parent.parent
        return path, path.parent if (path.parent / "config.yaml").is_file() else None
    if path.is_dir():
        if (path / BEST).is_file():
            return path / BEST, path
        newest = latest_checkpoint(path)
        if newest is not None:
            return newest, path
        raise FileNotFoundError(
            f"{path} holds no {BEST} and no checkpoints/*.ckpt: is it a pretrain or finetune run?"
        )
    raise FileNotFoundError(f"no run directory or checkpoint at {path}")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint of this suite, tensors only (``weights_only=True``: nothing is unpickled)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # noqa: BLE001 - any failure means "not a checkpoint we can read"
        raise ConfigError(f"{path} is not a readable checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or not isinstance(
        checkpoint.get("hyper_parameters", {}).get("config"), dict
    ):
        raise ConfigError(f"{path} is not a checkpoint of this suite (no hyper_parameters.config)")
    upgrade_pretrain_checkpoint(checkpoint)
    return checkpoint


def _sub_state(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def pick_weights(
    checkpoint: Mapping[str, Any], weights: Weights, name: str
) -> tuple[dict[str, torch.Tensor], str]:
    """The trained network's state (keys as in the network) and which weights they are, in words."""
    step = checkpoint.get("global_step")
    ema = checkpoint.get("ema_state_dict")
    if weights == "ema" and ema:
        return _sub_state(ema, "module."), f"EMA weights of {name} (step {step})"
    if weights == "ema":
        log.info("%s holds no EMA weights; publishing the trained weights", name)
    return _sub_state(
        checkpoint.get("state_dict", {}), "model."
    ), f"trained (non-EMA) weights of {name} (step {step})"


def _base_model(init: Any) -> str | None:
    """Hub id of a fine-tuning run's init when it came from the Hub (``hf:org/name[@rev]``)."""
    if isinstance(init, str) and init.startswith(HUB_PREFIX):
        return init[len(HUB_PREFIX) :].split("@", 1)[0]
    return None


def _read_metrics(run: Path | None) -> dict[str, Any] | None:
    if run is None or not (run / METRICS).is_file():
        return None
    try:
        return json.loads((run / METRICS).read_text())
    except ValueError as error:
        raise ConfigError(f"{run / METRICS} is not valid JSON ({error})") from None


def read_test_data(stored: Mapping[str, Any]) -> EvalData | None:
    """What a fine-tuning run (its stored config) was tested on, from its test shards' manifest.

    ``data.test`` is read as the run recorded it (a relative path is relative to where it ran).
    """
    data = stored.get("data") or {}
    shards = data.get("test")
    if not shards:
        return None
    unknown = EvalData(str(shards))
    file = local_manifest(str(shards))
    if file is None or not file.is_file():
        log.warning(
            "test shards %s: no manifest here, so the card cannot name the test data (publish from "
            "where the run was launched to let it)",
            shards,
        )
        return unknown
    try:
        entry = read_manifest(file).split(data.get("test_split", "test"))
    except DataError as error:
        log.warning("test shards %s: %s; the card does not name the test data", shards, error)
        return unknown
    source = entry.source
    official = not source.get("split_csv") and source.get("split_name", SPLIT_NAME) == SPLIT_NAME
    return EvalData(str(shards), entry.dataset, entry.split, entry.num_samples, official)


def _segmenter(stored: Mapping[str, Any], where: str) -> tuple[Any, dict[str, Any], str | None]:
    """SegmenterConfig, task entry and base model of a finetune run's stored config."""
    from finetune.config import FinetuneConfig, ModelConfig, TaskConfig
    from finetune.module import segmenter_config
    from maestro.config import from_dict
    from maestro.hub.pretrained import segmentation_task

    try:
        task = from_dict(TaskConfig, stored["task"], where="task")
        model = from_dict(ModelConfig, stored["model"], where="model")
        config = segmenter_config(FinetuneConfig(task=task, model=model))
    except (ConfigError, ValueError, KeyError) as error:
        raise ConfigError(f"{where}: the stored fine-tuning config does not load ({error})") from None
    return config, segmentation_task(task.name, task.level), _base_model(model.init)


def export_checkpoint(
    source: str | Path,
    what: What | None = None,
    weights: Weights = "ema",
    repo_id: str | None = None,
    revision: str | None = None,
) -> Export:
    """Take the network to publish out of a run or checkpoint (module docstring)."""
    from maestro.models.config import MAEConfig

    ckpt, run = find_checkpoint(source)
    checkpoint = read_checkpoint(ckpt)
    stored = checkpoint["hyper_parameters"]["config"]
    name = f"{run.name}/{ckpt.relative_to(run)}" if run is not None else ckpt.name
    state, note = pick_weights(checkpoint, weights, name)
    task, base_model, metrics, tested = None, None, None, None
    if "task" in stored:  # a finetune run
        what = what or "segmenter"
        if what not in ("segmenter", "encoder"):
            raise ConfigError(
                f"{ckpt} is a fine-tuning checkpoint: publish the segmenter or its encoder, not {what!r}"
            )
        segmenter, task_entry, base_model = _segmenter(stored, str(ckpt))
        if what == "segmenter":
            config, task, metrics = segmenter, task_entry, _read_metrics(run)
            tested = read_test_data(stored) if metrics else None
        else:
            config, state = segmenter.encoder, _sub_state(state, "encoder.")
    else:  # a pretrain run
        what = what or "encoder"
        if what not in ("encoder", "mae"):
            raise ConfigError(
                f"{ckpt} is a pretraining checkpoint: publish the encoder or the mae, not {what!r}"
            )
        try:
            mae = MAEConfig.from_dict(stored.get("model"))
        except ConfigError as error:
            raise ConfigError(f"{ckpt}: the stored model config does not load ({error})") from None
        config, state = (mae, state) if what == "mae" else (mae.encoder, _sub_state(state, "encoder."))
    model_type = f"maestro-{what}"
    row = get_model_type(model_type)
    hint = ". The checkpoint does not match the config stored in it: was it written by another suite version?"
    load_strict(row.build(config), state, f"{ckpt} ({note})", hint=hint)
    facts = CardFacts(
        model_type=model_type,
        config=config.to_dict(),
        repo_id=repo_id,
        task=task,
        weights=note,
        source=name,
        metrics=metrics,
        test_data=tested,
        revision=revision,
        base_model=base_model,
        num_parameters=sum(t.numel() for t in state.values()),
    )
    return Export(model_type, config.to_dict(), state, task, facts)


def check_out_folder(out: Path) -> None:
    """Refuse an output folder that holds anything but a previous model folder (never clobber)."""
    if out.is_file():
        raise ConfigError(f"--out {out} is a file; give a folder")
    if out.is_dir():
        other = sorted(p.name for p in out.iterdir() if p.name not in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME))
        if other:
            raise ConfigError(f"--out {out} holds other files {other[:5]}: give an empty or new folder")


def write_export(export: Export, folder: Path) -> str:
    """Write the model folder and its card; returns the card text."""
    write_model_folder(folder, export.model_type, export.config, export.state, task=export.task)
    card = str(build_card(export.facts))
    (folder / CARD_NAME).write_text(card, encoding="utf-8")
    return card


def publish(
    source: str | Path,
    repo_id: str,
    *,
    what: What | None = None,
    weights: Weights = "ema",
    private: bool = False,
    revision: str | None = None,
    out: str | Path | None = None,
    dry_run: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> Published:
    """Export ``source`` and upload it to ``repo_id`` (``dry_run``: write and describe, no network)."""
    from maestro.hub.remote import parse_repo

    repo, at = parse_repo(repo_id)
    if at is not None:
        raise ConfigError(f"--repo takes org/name; give the branch with --revision (got {repo_id!r})")
    if out is not None:
        out = Path(out)
        check_out_folder(out)
    export = export_checkpoint(source, what, weights, repo_id=repo, revision=revision)
    with tempfile.TemporaryDirectory(prefix="maestro-publish-") as tmp:
        folder = out if out is not None else Path(tmp)
        card = write_export(export, folder)
        log.info(
            "%s: %s from %s",
            folder if out is not None else "model folder",
            export.model_type,
            export.facts.weights,
        )
        url = None
        if not dry_run:
            from maestro.hub.upload import upload_folder

            message = commit_message or f"Publish {export.model_type}: {export.facts.weights}"
            url = upload_folder(
                folder, repo, private=private, revision=revision, token=token, commit_message=message
            )
    return Published(out, card, url)
