"""``maestro publish``: a training checkpoint -> a model folder with its card -> a Hub repo.

What is published from which run (weights are the EMA copy when the checkpoint has one):

- a ``pretrain`` run or checkpoint: the encoder (``what="encoder"``, default) or the whole masked
  autoencoder (``what="mae"``);
- a ``finetune`` run (its ``best.ckpt``) or checkpoint: the segmenter it trained (default: a
  ``maestro-segmenter``, or a ``swin-utae-segmenter`` for ``--model swin-utae``; ``task`` with the
  class names in ``config.json``, the run's ``test/metrics.json`` in the card) or its encoder. The
  card names the data the scores were measured on from the manifest of the run's ``data.test``
  shards (dataset, split, patches), read at publish time; only FLAIR-HUB's own splits are claimed.

Runs and checkpoints are read by :mod:`maestro.hub.weights` (``torch.load(weights_only=True)``:
nothing is unpickled); the weights are checked against the config stored in the same checkpoint
before anything is written. Files are written only into the folder the user names (``out``) or
into a temporary folder that is removed afterwards. The networks are built from the registry:
callers import :mod:`maestro.models.zoo` (the ``maestro`` command does).
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
from maestro.hub.remote import parse_repo
from maestro.hub.sources import HUB_PREFIX
from maestro.hub.upload import upload_folder
from maestro.hub.weights import Pick, checkpoint_name, load_weights, take
from maestro.models.registry import MAESTRO_ENCODER, MAESTRO_MAE, ModelType
from shards.manifest import read_manifest
from shards.reading import local_manifest

log = logging.getLogger(__name__)

What = Literal["encoder", "mae", "segmenter"]
METRICS = Path("test") / "metrics.json"


@dataclass(frozen=True)
class Export:
    """One network taken out of a checkpoint, ready to be written as a model folder."""

    model_type: ModelType
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


def wanted_type(what: What | None, trained: ModelType, where: Path) -> ModelType:
    """The type ``--what`` asks for out of a run that trained ``trained`` (None: the run's own
    segmenter, or a pretraining run's encoder)."""
    if trained.needs_task:  # a fine-tuning run
        kinds = ("segmenter", "encoder") if trained.encoder_prefix is not None else ("segmenter",)
        what = what or "segmenter"
        if what not in kinds:
            parts = (
                "the segmenter or its encoder"
                if len(kinds) > 1
                else f"its {trained.name} (no MAESTRO encoder)"
            )
            raise ConfigError(f"{where} is a fine-tuning checkpoint: publish {parts}, not {what!r}")
        return trained if what == "segmenter" else MAESTRO_ENCODER
    what = what or "encoder"
    if what not in ("encoder", "mae"):
        raise ConfigError(
            f"{where} is a pretraining checkpoint: publish the encoder or the mae, not {what!r}"
        )
    return MAESTRO_ENCODER if what == "encoder" else MAESTRO_MAE


def _base_model(stored: Mapping[str, Any]) -> str | None:
    """Hub id of a fine-tuning run's init when it came from the Hub (``hf:org/name[@rev]``)."""
    init = (stored.get("model") or {}).get("init")
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


def export_checkpoint(
    source: str | Path,
    what: What | None = None,
    weights: Pick = "ema",
    repo_id: str | None = None,
    revision: str | None = None,
) -> Export:
    """Take the network to publish out of a run or checkpoint (module docstring)."""
    loaded = load_weights(source, None, weights, kinds=("run", "checkpoint"), user="maestro publish")
    ckpt, run, stored = loaded.checkpoint, loaded.run, loaded.run_config or {}
    trained = loaded.model_type
    want = wanted_type(what, trained, ckpt)
    exported = take(loaded, want)
    task, metrics, tested = exported.task, None, None
    if want.needs_task:
        metrics = _read_metrics(run)
        tested = read_test_data(stored) if metrics else None
    hint = ". The checkpoint does not match the config stored in it: was it written by another suite version?"
    load_strict(want.build(exported.config), exported.state, f"{ckpt} ({loaded.note})", hint=hint)
    facts = CardFacts(
        model_type=want.name,
        config=exported.config.to_dict(),
        repo_id=repo_id,
        task=task,
        weights=loaded.note,
        source=checkpoint_name(ckpt, run),
        metrics=metrics,
        test_data=tested,
        revision=revision,
        base_model=_base_model(stored) if trained.needs_task else None,
        num_parameters=sum(t.numel() for t in exported.state.values()),
    )
    return Export(want, exported.config.to_dict(), exported.state, task, facts)


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
    write_model_folder(folder, export.model_type.name, export.config, export.state, task=export.task)
    card = str(build_card(export.facts))
    (folder / CARD_NAME).write_text(card, encoding="utf-8")
    return card


def publish(
    source: str | Path,
    repo_id: str,
    *,
    what: What | None = None,
    weights: Pick = "ema",
    private: bool = False,
    revision: str | None = None,
    out: str | Path | None = None,
    dry_run: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> Published:
    """Export ``source`` and upload it to ``repo_id`` (``dry_run``: write and describe, no network)."""
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
            export.model_type.name,
            export.facts.weights,
        )
        url = None
        if not dry_run:
            message = commit_message or f"Publish {export.model_type.name}: {export.facts.weights}"
            url = upload_folder(
                folder, repo, private=private, revision=revision, token=token, commit_message=message
            )
    return Published(out, card, url)
