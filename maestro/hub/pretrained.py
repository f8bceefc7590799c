"""``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` for MAESTRO networks, the Hugging Face way.

Sources :func:`from_pretrained` accepts (``revision=`` works for the Hub forms)::

    "path/to/folder"          a local model folder (config.json + model.safetensors)
    "org/name"                the Hub (or the local Hugging Face cache: HF_HOME / HF_HUB_CACHE,
    "org/name@v1.0"           HF_HUB_OFFLINE=1), at a branch, tag or commit
    "hf:org/name[@rev]"       the same, as the fine-tuning CLI's --init writes it

Why not ``huggingface_hub.PyTorchModelHubMixin``: it writes the constructor's arguments as
``config.json`` (ours is the documented model_type/config/task/suite_version layout), loads
non-strictly by default, falls back to pickled ``pytorch_model.bin`` and renders its own card.
Overriding those parts leaves nothing of it to use, so the three methods are written here on the
same conventions (the same files, the same cache, the same upload API).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn

from maestro.errors import ConfigError
from maestro.hub.folder import CARD_NAME, ModelFolder, load_strict, read_model_folder, write_model_folder

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

    from maestro.hub.registry import ModelType

log = logging.getLogger(__name__)

HUB_PREFIX = "hf:"
M = TypeVar("M", bound=nn.Module)


def segmentation_task(name: str, level: int = 1) -> dict[str, Any]:
    """The ``task`` entry of a segmenter's ``config.json``: one class name per output channel and
    the channels that were never trained (ignored values of the nomenclature)."""
    from maestro.tasks import get_task

    target = get_task(name).target(level)
    count = target.num_classes
    return {
        "name": target.task,
        "level": target.level,
        "class_names": list(target.names[:count]),
        "ignored": sorted(v for v in target.nomenclature.ignored if v < count),
    }


def resolve_folder(
    source: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """The local folder that holds ``source``: itself, or its snapshot in the Hugging Face cache.

    As in huggingface_hub, an existing local folder named like a repo id wins; ``hf:`` forces the Hub.
    """
    text = str(source)
    hub_only = text.startswith(HUB_PREFIX)
    if hub_only:
        text = text[len(HUB_PREFIX) :]
    path = Path(text).expanduser()
    if not hub_only and path.is_dir():
        if revision is not None:
            raise ConfigError(f"revision={revision!r} applies to Hub repos; {path} is a local folder")
        return path
    if not hub_only and path.is_file():
        raise ConfigError(
            f"{path} is a file; from_pretrained takes a model folder or a Hub id. A training checkpoint "
            "becomes a model folder with `maestro publish CKPT --dry-run --out FOLDER`"
        )
    from maestro.hub.remote import download, parse_repo

    try:
        parse_repo(text)
    except ConfigError:
        raise FileNotFoundError(
            f"no model folder at {path}, and {text!r} is not a Hub id (org/name or org/name@revision)"
        ) from None
    return download(
        text, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only
    )


def _sub_state(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def build_from_folder(folder: ModelFolder, expect: ModelType | None = None) -> nn.Module:
    """The network a read folder describes, weights loaded strictly, in eval mode.

    ``expect`` asks for one type; an encoder may be taken out of any folder that holds one.
    """
    from maestro.hub.registry import get_model_type

    row = get_model_type(folder.model_type)
    target = expect or row
    where = str(folder.path)
    if target.name == row.name:
        config_data, state = folder.config, folder.state
    elif target.encoder_prefix == "" and row.encoder_prefix:
        config_data = folder.config.get("encoder")
        if not isinstance(config_data, Mapping):
            raise ConfigError(f"{where}/config.json: the {row.name} config has no encoder section")
        state = _sub_state(folder.state, row.encoder_prefix)
        where += f" (encoder of a {row.name})"
    else:
        raise ConfigError(
            f"{where} holds a {row.name}, not a {target.name}: load it with "
            f"{row.model_class.__name__}.from_pretrained or maestro.hub.from_pretrained"
        )
    try:
        config = target.config_from_dict(config_data)
    except ConfigError as error:
        raise ConfigError(
            f"{where}/config.json does not describe a valid {target.name} ({error}); it may come from a newer "
            f"suite version ({folder.extra.get('suite_version', 'unknown')}): upgrade maestro-eo or pick an "
            "older revision"
        ) from None
    model = target.build(config)
    load_strict(
        model,
        state,
        where,
        hint=". config.json and model.safetensors must come from the same export: download the repo again, "
        "pick the revision the config belongs to, or export it again with save_pretrained / maestro publish",
    )
    return model.eval()


def from_pretrained(
    source: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    model_type: str | None = None,
) -> nn.Module:
    """Whichever network ``source`` holds (module docstring), in eval mode on the CPU.

    ``model_type`` (``maestro-encoder``, ...) asks for one type; ``maestro-encoder`` also takes the
    encoder out of an MAE or segmenter folder. Only safetensors are read; nothing is executed.
    """
    from maestro.hub.registry import get_model_type

    expect = get_model_type(model_type) if model_type is not None else None
    folder = resolve_folder(
        source, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only
    )
    model = build_from_folder(read_model_folder(folder), expect)
    log.info("loaded %s from %s", type(model).__name__, folder)
    return model


def _check_task(row: ModelType, config: Any, task: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if task is None:
        if row.needs_task:
            log.warning(
                "saving a %s without its task: config.json will not name the classes (pass "
                "task=segmentation_task('lc', 1) or the run's task)",
                row.name,
            )
        return None
    if not row.needs_task:
        raise ConfigError(f"a {row.name} has no task; task= is for segmenters")
    names = list(task.get("class_names", ()))
    if names and len(names) != config.num_classes:
        raise ConfigError(
            f"task names {len(names)} classes but the segmenter predicts {config.num_classes}: "
            "pass the task it was trained on"
        )
    return dict(task)


def save_pretrained(
    model: nn.Module,
    folder: str | Path,
    *,
    task: Mapping[str, Any] | None = None,
    card: ModelCard | str | bool | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``folder`` (nothing else).

    ``card``: None generates one (:mod:`maestro.hub.card`; ``repo_id`` names the repo in its usage
    lines), a ``ModelCard`` or text is written as given, False writes none.
    """
    from maestro.hub.registry import model_type_of

    row = model_type_of(model)
    config = model.config
    task = _check_task(row, config, task)
    state = model.state_dict()
    written = write_model_folder(folder, row.name, config.to_dict(), state, task=task)
    if card is not False:
        if card is None or card is True:
            from maestro.hub.card import CardFacts, build_card

            facts = CardFacts(
                model_type=row.name,
                config=config.to_dict(),
                repo_id=repo_id,
                task=task,
                num_parameters=sum(t.numel() for t in state.values()),
            )
            card = build_card(facts)
        (written / CARD_NAME).write_text(str(card) if not isinstance(card, str) else card, encoding="utf-8")
    log.info("saved %s to %s", row.name, written)
    return written


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    task: Mapping[str, Any] | None = None,
    card: ModelCard | str | None = None,
) -> str:
    """Save into a temporary folder (removed afterwards) and upload it; returns the commit URL."""
    from maestro.hub.upload import upload_folder

    with tempfile.TemporaryDirectory(prefix="maestro-hub-") as tmp:
        folder = save_pretrained(model, tmp, task=task, card=card, repo_id=repo_id)
        return upload_folder(
            folder, repo_id, private=private, revision=revision, token=token, commit_message=commit_message
        )


class HubModel:
    """Mixin for the registered networks (:mod:`maestro.hub.registry`): the Hugging Face methods.

    ``MaestroEncoder.from_pretrained("org/name")``, ``model.save_pretrained(folder)``,
    ``model.push_to_hub("org/name")``; see the module functions of the same names.
    """

    @classmethod
    def from_pretrained(
        cls: type[M],
        source: str | Path,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
    ) -> M:
        """This class's network from a folder or the Hub (the encoder class also takes the encoder
        out of an MAE or segmenter)."""
        from maestro.hub.registry import model_type_of

        return from_pretrained(
            source,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            model_type=model_type_of(cls).name,
        )

    def save_pretrained(
        self,
        folder: str | Path,
        *,
        task: Mapping[str, Any] | None = None,
        card: ModelCard | str | bool | None = None,
        repo_id: str | None = None,
    ) -> Path:
        """Write this network's model folder (:func:`save_pretrained`)."""
        return save_pretrained(self, folder, task=task, card=card, repo_id=repo_id)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool = False,
        revision: str | None = None,
        token: str | None = None,
        commit_message: str | None = None,
        task: Mapping[str, Any] | None = None,
        card: ModelCard | str | None = None,
    ) -> str:
        """Upload this network to ``repo_id`` (:func:`push_to_hub`); returns the commit URL."""
        return push_to_hub(
            self,
            repo_id,
            private=private,
            revision=revision,
            token=token,
            commit_message=commit_message,
            task=task,
            card=card,
        )
