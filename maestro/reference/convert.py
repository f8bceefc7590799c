"""Import IGN's published MAESTRO checkpoints (reference code) as suite model folders.

IGN publishes MAESTRO weights pretrained on FLAIR-HUB (``IGNF/MAESTRO_FLAIR-HUB_base``, ...) as
Lightning checkpoints of its reference implementation (https://github.com/IGNF/MAESTRO).
:func:`import_reference` turns one into a model folder of this suite (``config.json`` +
``model.safetensors`` + ``README.md``):

1. the source is found, locally or on the Hub (:mod:`maestro.reference.sources`);
2. the checkpoint is read by a restricted unpickler that never runs code from the file
   (:mod:`maestro.reference.unpickle`);
3. the architecture is read from its tensors and stored hyper-parameters, and every tensor is
   mapped to the suite's layout or reported (:mod:`maestro.reference.plan`);
4. the folder is written with a card naming the source, its revision and its licence
   (:mod:`maestro.reference.card`).

The converted encoder reproduces the reference's features to float32 precision: it uses the
reference's date-code conventions (``day_of_year_origin=1``, ``date_offset="float32"``).

:func:`converted_hub_checkpoint` converts a Hub repo once and keeps the folder in
``$MAESTRO_CACHE/reference`` (default ``~/.cache/maestro/reference``), which is what
``finetune --init hf:IGNF/MAESTRO_FLAIR-HUB_base`` uses.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from maestro.errors import ConfigError
from maestro.hub.folder import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, write_model_folder
from maestro.hub.sources import parse_repo
from maestro.reference import sources
from maestro.reference.card import REFERENCE_REPO, card_licence, model_card, summary
from maestro.reference.options import DEFAULT_OPTIONS, ConversionOptions, Weights
from maestro.reference.plan import Conversion, plan_conversion
from maestro.reference.sources import SourceInfo
from maestro.reference.unpickle import ReferenceCheckpoint, read_reference_checkpoint

log = logging.getLogger(__name__)


def convert_checkpoint(
    checkpoint: ReferenceCheckpoint, options: ConversionOptions = DEFAULT_OPTIONS
) -> Conversion:
    """Suite config and weights of a read reference checkpoint (see :func:`import_reference`)."""
    conversion = plan_conversion(checkpoint.state, checkpoint.hyper_parameters, options)
    if checkpoint.neutralised:
        conversion.report.notes.append(
            f"the pickle named globals outside the reference code, replaced by inert stand-ins: "
            f"{checkpoint.neutralised}"
        )
    return conversion


def import_reference(
    source: str | Path,
    out_folder: str | Path,
    options: ConversionOptions = DEFAULT_OPTIONS,
    *,
    licence: str | None = None,
) -> Path:
    """Convert a reference MAESTRO checkpoint into a suite model folder; returns the folder.

    ``source`` is a ``.ckpt`` path or ``hf:org/name[@revision]``. ``options`` (:class:`ConversionOptions`):
    EMA (default, the averaged weights the reference evaluates with) or trained weights; what the
    folder holds: ``maestro-mae`` (encoder + pretraining decoder, the default),
    ``maestro-encoder``, or ``maestro-segmenter`` (encoder + the checkpoint's MAESTRO head
    ``target``; ``num_classes`` when the converter does not know the target); and what the
    checkpoint does not store (image sizes and dates: the modality registry's unless overridden;
    the position grid, 160 as in the reference's FLAIR-HUB config; head counts, from the
    reference's size table). ``licence`` replaces the licence written on the card (by default
    the source card's).
    """
    info = sources.resolve_source(source)
    checkpoint = read_reference_checkpoint(info.path)
    conversion = convert_checkpoint(checkpoint, options)
    return write_conversion(conversion, checkpoint, info, out_folder, options.weights, licence)


def write_conversion(
    conversion: Conversion,
    checkpoint: ReferenceCheckpoint,
    info: SourceInfo,
    out_folder: str | Path,
    weights: Weights,
    licence: str | None = None,
) -> Path:
    """Write the model folder of a conversion, with its card."""
    licence = licence or card_licence(info.card)
    digest = sources.sha256(info.path)
    provenance = {
        "source": info.shown,
        "file": info.filename or info.path.name,
        "sha256": digest,
        "repo": info.repo_id,
        "revision": info.revision,
        "licence": licence or "unknown: check the source's model card",
        "reference_code": REFERENCE_REPO,
        "weights": "EMA (ema_model.*)" if conversion.report.prefix == "ema_model." else "trained (model.*)",
        **checkpoint.metadata,
        "conversion": conversion.report.to_dict(),
    }
    folder = write_model_folder(
        out_folder,
        conversion.model_type,
        conversion.config.to_dict(),
        conversion.state,
        task=conversion.task,
        extra={"converted_from": provenance},
    )
    (folder / CARD_NAME).write_text(
        model_card(conversion, checkpoint, info, licence, digest, weights), encoding="utf-8"
    )
    for line in summary(conversion):
        log.info("%s", line)
    return folder


def cache_dir() -> Path:
    """Where Hub conversions are kept: ``$MAESTRO_CACHE/reference`` (default ``~/.cache/maestro``)."""
    root = os.environ.get("MAESTRO_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "maestro"
    return Path(root).expanduser() / "reference"


def converted_hub_checkpoint(spec: str, weights: Weights = "ema", reason: Exception | None = None) -> Path:
    """The encoder folder of a Hub repo that holds a reference checkpoint, converted once and cached.

    Used when ``spec`` (``org/name[@revision]``) has no ``model.safetensors``. The cache key is the
    repo, the commit the checkpoint was downloaded at and ``weights``. If the repo holds no
    reference checkpoint either, ``reason`` (the original download error) is raised again.
    """
    repo_id, revision = parse_repo(spec)
    try:
        info = sources.resolve_hub_checkpoint(repo_id, revision)
    except ConfigError as error:
        if reason is not None:
            raise reason from None
        raise error from None
    folder = cache_dir() / f"{repo_id.replace('/', '--')}@{info.revision or 'local'}" / weights
    if (folder / WEIGHTS_NAME).is_file() and (folder / CONFIG_NAME).is_file():
        log.info("using the conversion of %s cached in %s", info.shown, folder)
        return folder
    log.info("converting the reference checkpoint %s (%s weights) into %s", info.shown, weights, folder)
    checkpoint = read_reference_checkpoint(info.path)
    conversion = convert_checkpoint(
        checkpoint, ConversionOptions(weights=weights, model_type="maestro-encoder")
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=folder.parent))
    try:
        write_conversion(conversion, checkpoint, info, staging, weights)
        try:
            staging.rename(folder)
        except OSError:  # another process converted it meanwhile
            if not (folder / WEIGHTS_NAME).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder
