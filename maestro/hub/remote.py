"""Downloading model folders from the Hugging Face Hub, with errors that say what to do.

Files go through huggingface_hub's normal cache (``HF_HOME`` / ``HF_HUB_CACHE``), so a model
downloaded once is found again offline (``HF_HUB_OFFLINE=1``). Only ``config.json``,
``model.safetensors`` and ``README.md`` are fetched: nothing executable, nothing pickled.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from maestro.errors import ConfigError
from maestro.hub.folder import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, suite_version

log = logging.getLogger(__name__)

FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)


def parse_repo(spec: str) -> tuple[str, str | None]:
    """``org/name`` or ``org/name@revision`` (branch, tag or commit) -> (repo id, revision)."""
    repo_id, _, revision = spec.partition("@")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or (_ and not revision):
        raise ConfigError(f"{spec!r} is not a Hub model id: expected org/name or org/name@revision")
    return repo_id, revision or None


def download(spec: str, files: tuple[str, ...] = FILES) -> Path:
    """Snapshot folder of ``org/name[@revision]`` in the local Hugging Face cache."""
    repo_id, revision = parse_repo(spec)
    shown = f"{repo_id}@{revision}" if revision else repo_id
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=list(files),
            library_name="maestro-eo",
            library_version=suite_version(),
        )
    except RevisionNotFoundError:
        raise ConfigError(
            f"Hub repo {repo_id} has no revision {revision!r}: give an existing branch, tag or commit "
            f"(hf:{repo_id}@main)"
        ) from None
    except GatedRepoError:
        raise ConfigError(
            f"Hub repo {repo_id} is gated: accept its terms on the Hub, then log in (`huggingface-cli login` "
            "or HF_TOKEN)"
        ) from None
    except RepositoryNotFoundError:
        raise ConfigError(
            f"Hub repo {repo_id} does not exist or is private: check the name, or log in (`huggingface-cli "
            "login` or HF_TOKEN) if it is private"
        ) from None
    except LocalEntryNotFoundError:
        offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "TRUE")
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached (no network?)"
        raise ConfigError(
            f"{shown} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}: download it "
            "once with network access (unset HF_HUB_OFFLINE), or point HF_HOME / HF_HUB_CACHE at a cache "
            "that holds it"
        ) from None
    except HfHubHTTPError as error:
        raise ConfigError(f"downloading {shown} from the Hub failed: {error}") from None
    path = Path(folder)
    if not (path / WEIGHTS_NAME).is_file():
        raise ConfigError(
            f"Hub repo {shown} has no {WEIGHTS_NAME}: only safetensors weights are loaded, never pickles "
            "(.bin, .ckpt, .pt). Reference MAESTRO checkpoints convert with `maestro import-reference`"
        )
    log.info("%s: %s", shown, path)
    return path
