"""Uploading a model folder to the Hugging Face Hub with ``HfApi``, with errors that say what to do.

One commit per upload: ``create_repo(exist_ok=True)``, ``create_branch`` when a revision other than
``main`` is asked for, then ``upload_folder`` restricted to the three files of the layout, so a
stray file in the folder is never published.
"""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from maestro.errors import ConfigError
from maestro.hub.folder import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, suite_version
from maestro.hub.remote import LOGIN, is_offline, parse_repo

log = logging.getLogger(__name__)

UPLOADED = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME)
try:  # huggingface_hub >= 1.0 talks HTTP through httpx2; older versions raise OSError subclasses
    from httpx2 import TransportError

    NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError, TransportError)
except ImportError:  # pragma: no cover
    NETWORK_ERRORS = (OSError,)
DEFAULT_BRANCH = "main"


def _explain(error: HfHubHTTPError, repo_id: str) -> ConfigError:
    status = error.response.status_code if error.response is not None else None
    if status in (401, 403):
        return ConfigError(
            f"the Hub refused the upload to {repo_id} (HTTP {status}): log in with a token that can write to "
            f"it ({LOGIN}), and check that you may create repos under {repo_id.split('/')[0]!r}"
        )
    return ConfigError(f"uploading to {repo_id} failed: {error}")


def upload_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Create ``repo_id`` if needed (and branch ``revision``), commit the folder; return the commit URL."""
    folder = Path(folder)
    repo, at = parse_repo(repo_id)
    if at is not None:
        raise ConfigError(f"give the branch with revision=/--revision, not in the repo id ({repo_id!r})")
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"{folder} is not a model folder: it has no {missing}")
    if is_offline():
        raise ConfigError(f"cannot upload to {repo} while HF_HUB_OFFLINE is set: unset it and retry")
    api = HfApi(token=token, library_name="maestro-eo", library_version=suite_version())
    branch = revision if revision not in (None, DEFAULT_BRANCH) else None
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        if branch is not None:
            api.create_branch(repo, branch=branch, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo,
            folder_path=folder,
            repo_type="model",
            revision=branch,
            commit_message=commit_message or f"Upload MAESTRO model (maestro-eo {suite_version()})",
            allow_patterns=list(UPLOADED),
        )
    except OfflineModeIsEnabled:
        raise ConfigError(
            f"cannot upload to {repo} while HF_HUB_OFFLINE is set: unset it and retry"
        ) from None
    except HfHubHTTPError as error:
        raise _explain(error, repo) from None
    except NETWORK_ERRORS as error:
        raise ConfigError(f"cannot reach the Hub to upload to {repo} ({error}): check the network") from None
    log.info("uploaded %s to %s%s: %s", folder, repo, f"@{branch}" if branch else "", commit.commit_url)
    return str(commit.commit_url)
