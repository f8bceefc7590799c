"""Import IGN's published MAESTRO checkpoints (reference code) as suite model folders.

IGN publishes MAESTRO weights pretrained on FLAIR-HUB (``IGNF/MAESTRO_FLAIR-HUB_base``, ...) as
Lightning checkpoints of its reference implementation (https://github.com/IGNF/MAESTRO).
:func:`import_reference` turns one into a model folder of this suite (``config.json`` +
``model.safetensors`` + ``README.md``):

1. the checkpoint is read by a restricted unpickler that never runs code from the file
   (:mod:`maestro.reference.unpickle`);
2. the architecture is read from its tensors and stored hyper-parameters, and every tensor is
   mapped to the suite's layout or reported (:mod:`maestro.reference.plan`);
3. the folder is written with a card naming the source, its revision and its licence.

The converted encoder reproduces the reference's features to float32 precision: it uses the
reference's date-code conventions (``day_of_year_origin=1``, ``date_offset="float32"``).

``hf:org/name[@revision]`` sources download the ``.ckpt`` through huggingface_hub into its normal
cache; this is the only place where a pickled file is fetched from the Hub, and it only ever goes
through the restricted loader. :func:`converted_hub_checkpoint` converts once and keeps the folder
in ``$MAESTRO_CACHE/reference`` (default ``~/.cache/maestro/reference``), which is what
``finetune --init hf:IGNF/MAESTRO_FLAIR-HUB_base`` uses.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from maestro.errors import ConfigError
from maestro.hub.folder import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, write_model_folder
from maestro.reference.plan import (
    DEFAULT_OPTIONS,
    Conversion,
    ConversionOptions,
    Weights,
    plan_conversion,
)
from maestro.reference.unpickle import ReferenceCheckpoint, read_reference_checkpoint

log = logging.getLogger(__name__)

HUB_PREFIX = "hf:"
REFERENCE_REPO = "https://github.com/IGNF/MAESTRO"
CHECKPOINT_SUFFIX = ".ckpt"
LICENCE_UNKNOWN = (
    "The licence is not stated in the checkpoint: check the licence on the source's model card (for a Hub "
    "repo, the `license` field of its README.md) before using or redistributing these weights."
)


@dataclass(frozen=True)
class SourceInfo:
    """Where a reference checkpoint came from, for the model card and config.json."""

    path: Path
    repo_id: str | None = None
    revision: str | None = None
    """Commit of the Hub repo the file was downloaded at."""
    filename: str | None = None
    card: str | None = None
    """The source repo's README.md, when there is one."""

    @property
    def shown(self) -> str:
        if self.repo_id is None:
            return self.path.name  # not the local path: config.json and the card travel
        return f"hf:{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


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
    info = resolve_source(source)
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
    digest = sha256(info.path)
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


def summary(conversion: Conversion) -> list[str]:
    """What a conversion did, one line per fact (for logs and the CLI)."""
    report = conversion.report
    lines = [
        f"{len(report.used)} tensors of {report.prefix or 'the state dict'}* converted into a {conversion.model_type}"
    ]
    lines += [f"left out {count} tensors: {reason}" for reason, count in report.skipped_summary().items()]
    lines += [f"modality {mod} not converted: {why}" for mod, why in report.unsupported_modalities.items()]
    lines += [f"note: {note}" for note in report.notes]
    return lines


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------


def card_licence(card: str | None) -> str | None:
    """The ``license`` (and ``license_name`` / ``license_link``) of a Hub card's YAML header."""
    if not card or not card.startswith("---"):
        return None
    header, _, _ = card[3:].partition("\n---")
    try:
        data = yaml.safe_load(header)
    except yaml.YAMLError:
        return None
    if not isinstance(data, Mapping) or not data.get("license"):
        return None
    parts = [str(data["license"])]
    if data.get("license_name"):
        parts.append(f"({data['license_name']})")
    if data.get("license_link"):
        parts.append(f"<{data['license_link']}>")
    return " ".join(parts) + ", as stated on the source's model card"


def model_card(
    conversion: Conversion,
    checkpoint: ReferenceCheckpoint,
    info: SourceInfo,
    licence: str | None,
    digest: str,
    weights: Weights,
) -> str:
    """README.md of a converted folder: provenance, licence, architecture, what was left out."""
    report = conversion.report
    config = conversion.config
    encoder = getattr(config, "encoder", config)
    size = encoder.transformer
    which = (
        "exponential moving average (`ema_model.*`)"
        if report.prefix == "ema_model."
        else "trained (`model.*`)"
    )
    if weights == "ema" and report.prefix != "ema_model.":
        which += " (the checkpoint has no EMA copy)"
    repo_line = (
        f"[{info.repo_id}](https://huggingface.co/{info.repo_id}) at revision `{info.revision or 'main'}`"
        if info.repo_id
        else f"the local file `{info.path.name}`"
    )
    modalities = ", ".join(f"`{m}`" for m in encoder.modalities)
    lines = [
        "---",
        "library_name: maestro-eo",
        "tags:",
        "- earth-observation",
        "- maestro",
        "- converted",
        "---",
        "",
        "# MAESTRO weights converted from the reference implementation",
        "",
        f"MAESTRO weights from {repo_line}, written by the reference code ({REFERENCE_REPO}) and "
        f"converted to this suite's `{conversion.model_type}` layout by `maestro import-reference`. The "
        "values are the publisher's; tensors were only renamed, reshaped or had their rows reordered.",
        "",
        "## Source",
        "",
        f"- repository: {info.repo_id or 'none (local file)'}",
        f"- revision: {info.revision or 'n/a'}",
        f"- file: `{info.filename or info.path.name}` (sha256 `{digest}`)",
        f"- weights: {which}",
    ]
    for key, value in checkpoint.metadata.items():
        lines.append(f"- {key}: {value}")
    lines += [
        "",
        "## Licence",
        "",
        f"The weights keep their publisher's licence: {licence}." if licence else LICENCE_UNKNOWN,
        "",
        "## Model",
        "",
        f"- inputs: {modalities}; fusion `{encoder.fusion}`, {size.depth} blocks of width {size.width} "
        f"({size.num_heads} heads, MLP {size.mlp_hidden}), the last {encoder.effective_inter_depth} on all "
        "streams together",
        "- date code as in the reference: day of year counted from 1, year offset rounded as its float32 "
        "arithmetic does (`day_of_year_origin: 1`, `date_offset: float32` in config.json)",
        "- not stored in the checkpoint: band order, from the suite's modality registry (the reference's "
        "FLAIR-HUB configuration); image sizes and dates per series, given to the converter or assumed from "
        "the registry (the conversion report says which)",
    ]
    if report.unsupported_modalities:
        lines += ["", "## Not converted", ""]
        lines += [f"- modality `{mod}`: {why}" for mod, why in report.unsupported_modalities.items()]
    lines += ["", "## Conversion report", ""]
    lines += [f"- {line}" for line in summary(conversion)]
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        "finetune --task lc --init path/to/this/folder",
        "```",
        "",
        "```python",
        "from maestro.hub.sources import load_encoder_weights",
        'weights = load_encoder_weights("path/to/this/folder")',
        "```",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Sources: local files and the Hub
# --------------------------------------------------------------------------------------------


def resolve_source(source: str | Path) -> SourceInfo:
    """A local ``.ckpt`` or ``hf:org/name[@revision]`` (downloaded into the Hugging Face cache)."""
    text = str(source)
    if text.startswith(HUB_PREFIX):
        from maestro.hub.remote import parse_repo

        repo_id, revision = parse_repo(text[len(HUB_PREFIX) :])
        return resolve_hub_checkpoint(repo_id, revision)
    path = Path(text).expanduser()
    if path.is_dir():
        found = sorted(path.glob(f"*{CHECKPOINT_SUFFIX}"))
        if len(found) != 1:
            raise ConfigError(
                f"{path} holds {len(found)} {CHECKPOINT_SUFFIX} files; give the checkpoint file itself"
            )
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"no reference checkpoint at {path} (expected a .ckpt file or hf:org/name)")
    return SourceInfo(path=path)


def _pick_checkpoint(repo_id: str, files: Sequence[str]) -> str:
    found = sorted(f for f in files if f.endswith(CHECKPOINT_SUFFIX))
    if not found:
        raise ConfigError(
            f"Hub repo {repo_id} holds no {CHECKPOINT_SUFFIX} checkpoint (files: {sorted(files)[:20]})"
        )
    if len(found) > 1:
        raise ConfigError(
            f"Hub repo {repo_id} holds several checkpoints {found}; this converter takes one per repo"
        )
    return found[0]


def resolve_hub_checkpoint(repo_id: str, revision: str | None) -> SourceInfo:
    """Download the repo's ``.ckpt`` (and its README.md) through huggingface_hub's cache.

    Offline (or without network), a checkpoint already in the cache is used.
    """
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    from maestro.hub.folder import suite_version

    shown = f"{repo_id}@{revision}" if revision else repo_id
    agent = {"library_name": "maestro-eo", "library_version": suite_version()}
    try:
        info = HfApi(**agent).model_info(repo_id, revision=revision)
        commit = info.sha
        filename = _pick_checkpoint(repo_id, [s.rfilename for s in info.siblings or []])
        path = Path(hf_hub_download(repo_id, filename, revision=commit, **agent))
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as error:
        raise ConfigError(
            f"Hub repo {shown} is not available ({type(error).__name__}): check the name, revision and login"
        ) from None
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - offline mode, HTTP and transport errors: try the cache
        try:
            folder = Path(
                snapshot_download(
                    repo_id,
                    revision=revision,
                    allow_patterns=[f"*{CHECKPOINT_SUFFIX}", CARD_NAME],
                    local_files_only=True,
                    **agent,
                )
            )
        except Exception:  # noqa: BLE001 - not in the cache either
            raise ConfigError(
                f"{shown} cannot be reached ({type(error).__name__}) and its checkpoint is not in the local Hugging "
                "Face cache: download it once with network access, or give the .ckpt file"
            ) from None
        filename = _pick_checkpoint(repo_id, [p.name for p in folder.glob(f"*{CHECKPOINT_SUFFIX}")])
        commit, path = folder.name, folder / filename
    card = None
    try:
        card_path = Path(hf_hub_download(repo_id, CARD_NAME, revision=commit, **agent))
        card = card_path.read_text(encoding="utf-8", errors="replace")
    except Exception:  # noqa: BLE001 - no card, or no network: the licence stays unknown
        log.info("%s has no readable %s; its licence is not known here", shown, CARD_NAME)
    return SourceInfo(path=path, repo_id=repo_id, revision=commit, filename=filename, card=card)


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
    from maestro.hub.remote import parse_repo

    repo_id, revision = parse_repo(spec)
    try:
        info = resolve_hub_checkpoint(repo_id, revision)
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
