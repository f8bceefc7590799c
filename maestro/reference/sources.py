"""Where a reference checkpoint comes from: a local ``.ckpt`` or a Hub repo, and its card.

``hf:org/name[@revision]`` sources download the ``.ckpt`` through huggingface_hub into its normal
cache; this is the only place where a pickled file is fetched from the Hub, and it only ever goes
through the restricted loader (:mod:`maestro.reference.unpickle`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from maestro.errors import ConfigError
from maestro.hub.folder import CARD_NAME, suite_version
from maestro.hub.sources import HUB_PREFIX, parse_repo

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIX = ".ckpt"


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
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def resolve_source(source: str | Path) -> SourceInfo:
    """A local ``.ckpt`` or ``hf:org/name[@revision]`` (downloaded into the Hugging Face cache)."""
    text = str(source)
    if text.startswith(HUB_PREFIX):
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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
