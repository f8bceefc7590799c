"""Downloading model folders from the Hugging Face Hub, with errors that say what to do.

Files go through huggingface_hub's normal cache (``HF_HOME`` / ``HF_HUB_CACHE``), so a model
downloaded once is found again offline (``HF_HUB_OFFLINE=1``). Only ``config.json``,
``model.safetensors`` and ``README.md`` are fetched: nothing executable, nothing pickled.
"""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import repo_folder_name

from maestro.errors import ConfigError
from maestro.hub.folder import suite_version
from maestro.hub.sources import CARD_NAME, CONFIG_NAME, HUB_PREFIX, PICKLE_SUFFIXES, WEIGHTS_NAME, parse_repo

log = logging.getLogger(__name__)

FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
LOGIN = "`hf auth login` (`huggingface-cli login` with huggingface_hub < 1.0) or HF_TOKEN"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The Hub cache in use: ``cache_dir``, else ``HF_HUB_CACHE`` (default ``$HF_HOME/hub``)."""
    return Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser()


def cached_revisions(repo_id: str, cache_dir: str | Path | None = None) -> list[str]:
    """Branches/tags (``refs/``) and commits (``snapshots/``) of ``repo_id`` in the local cache."""
    storage = cache_root(cache_dir) / repo_folder_name(repo_id=repo_id, repo_type="model")
    refs = storage / "refs"
    names = sorted(str(p.relative_to(refs)) for p in refs.rglob("*") if p.is_file()) if refs.is_dir() else []
    snapshots = storage / "snapshots"
    commits = sorted(p.name for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else []
    return names + commits


def is_offline() -> bool:
    return bool(constants.is_offline_mode())


def _not_cached(repo_id: str, revision: str | None, cache_dir: str | Path | None) -> ConfigError:
    """Why ``repo_id@revision`` could not be found offline, and what to do about it."""
    shown = f"{repo_id}@{revision}" if revision else repo_id
    why = "HF_HUB_OFFLINE is set" if is_offline() else "the Hub cannot be reached (no network?)"
    known = cached_revisions(repo_id, cache_dir)
    if known:
        return ConfigError(
            f"revision {revision or 'main'!r} of {repo_id} is not in the local Hugging Face cache "
            f"({cache_root(cache_dir)}), which holds {known}, and {why}: use one of those "
            f"({repo_id}@{known[0]}) or download the revision once with network access (unset HF_HUB_OFFLINE)"
        )
    return ConfigError(
        f"{shown} is not in the local Hugging Face cache ({cache_root(cache_dir)}) and {why}: download it "
        "once with network access (unset HF_HUB_OFFLINE; `maestro download "
        f"{shown}`), or point HF_HOME / HF_HUB_CACHE at a cache that holds it"
    )


def download(
    spec: str,
    files: tuple[str, ...] = FILES,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """Snapshot folder of ``org/name[@revision]`` in the local Hugging Face cache.

    ``revision`` may be given instead of ``@revision``; giving both is an error.
    """
    repo_id, at = parse_repo(spec)
    if at is not None and revision is not None and at != revision:
        raise ConfigError(
            f"{spec!r} names revision {at!r} but revision={revision!r} was also given: keep one"
        )
    revision = revision or at
    shown = f"{repo_id}@{revision}" if revision else repo_id
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=list(files),
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            library_name="maestro-eo",
            library_version=suite_version(),
        )
    except RevisionNotFoundError:
        raise ConfigError(
            f"Hub repo {repo_id} has no revision {revision!r}: give an existing branch, tag or commit "
            f"({repo_id}@main; the repo's branches and tags are listed on https://huggingface.co/{repo_id})"
        ) from None
    except GatedRepoError:
        raise ConfigError(
            f"Hub repo {repo_id} is gated: accept its terms on https://huggingface.co/{repo_id}, then log in "
            f"({LOGIN})"
        ) from None
    except RepositoryNotFoundError:
        raise ConfigError(
            f"Hub repo {repo_id} does not exist or is private: check the name, or log in ({LOGIN}) if it is "
            "private"
        ) from None
    except LocalEntryNotFoundError as error:
        if type(error).__name__ == "IncompleteSnapshotError":  # huggingface_hub >= 2
            raise ConfigError(
                f"the cached snapshot of {shown} is incomplete (an interrupted download?): download it again "
                f"with network access (unset HF_HUB_OFFLINE; `maestro download {shown}`)"
            ) from None
        raise _not_cached(repo_id, revision, cache_dir) from None
    except HfHubHTTPError as error:
        raise ConfigError(f"downloading {shown} from the Hub failed: {error}") from None
    path = Path(folder)
    if not (path / WEIGHTS_NAME).is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        held = f" (it holds pickled weights {pickles})" if pickles else ""
        raise ConfigError(
            f"Hub repo {shown} has no {WEIGHTS_NAME}{held}: only safetensors weights are loaded, never pickles "
            "(.bin, .ckpt, .pt), because unpickling runs arbitrary code. Ask the publisher for safetensors "
            "weights; a checkpoint of IGN's reference MAESTRO code converts without running it with "
            f"`maestro import-reference {HUB_PREFIX}{shown} --out FOLDER`"
        )
    log.info("%s: %s", shown, path)
    return path
