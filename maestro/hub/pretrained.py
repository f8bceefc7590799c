"""``from_pretrained`` / ``save_pretrained`` / ``push_to_hub`` for MAESTRO networks, the Hugging Face way.

Sources ``from_pretrained`` accepts (``revision=`` works for the Hub forms)::

    "path/to/folder"          a local model folder (config.json + model.safetensors)
    "org/name"                the Hub (or the local Hugging Face cache: HF_HOME / HF_HUB_CACHE,
    "org/name@v1.0"           HF_HUB_OFFLINE=1), at a branch, tag or commit
    "hf:org/name[@rev]"       the same, as the fine-tuning CLI's --init writes it

They are read by :func:`maestro.hub.weights.load_weights`, like every other weights source of the
suite. :class:`HubModel` gives each registered network these methods; the loader of any type is
``maestro.models.from_pretrained`` (it imports every network, which the hub never does).

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

from torch import nn

from maestro.errors import ConfigError
from maestro.hub.card import CardFacts, build_card
from maestro.hub.folder import CARD_NAME, load_strict, write_model_folder
from maestro.hub.sources import SourceKind
from maestro.hub.upload import upload_folder
from maestro.hub.weights import Weights, load_weights
from maestro.models.finetuning import segmentation_task
from maestro.models.registry import ModelType, model_type_of

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

log = logging.getLogger(__name__)

__all__ = ["HubModel", "build", "load_pretrained", "push_to_hub", "save_pretrained", "segmentation_task"]

M = TypeVar("M", bound=nn.Module)
PRETRAINED_SOURCES: tuple[SourceKind, ...] = ("folder", "hub")
"""What ``from_pretrained`` loads: published forms only (a run is published first)."""
SAME_EXPORT = (
    ". config.json and model.safetensors must come from the same export: download the repo again, "
    "pick the revision the config belongs to, or export it again with save_pretrained / maestro publish"
)


def build(weights: Weights, where: str | None = None, hint: str = SAME_EXPORT) -> nn.Module:
    """The network ``weights`` describe, loaded strictly, in eval mode (on the CPU); errors name
    ``where`` the weights come from (default: the source) and what to do (``hint``)."""
    model = weights.model_type.build(weights.config)
    load_strict(model, weights.state, where or weights.source, hint=hint)
    return model.eval()


def load_pretrained(
    source: str | Path,
    want: ModelType | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> nn.Module:
    """The network a folder or Hub model holds (module docstring), as type ``want`` if given
    (``maestro-encoder`` also takes the encoder out of a type that holds one)."""
    weights = load_weights(
        source,
        want,
        kinds=PRETRAINED_SOURCES,
        user="from_pretrained",
        revision=revision,
        cache_dir=cache_dir,
        token=token,
        local_files_only=local_files_only,
    )
    model = build(weights)
    log.info("loaded %s (%s)", type(model).__name__, weights.note)
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
    row = model_type_of(model)
    config = model.config
    task = _check_task(row, config, task)
    state = model.state_dict()
    written = write_model_folder(folder, row.name, config.to_dict(), state, task=task)
    if card is not False:
        if card is None or card is True:
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
    with tempfile.TemporaryDirectory(prefix="maestro-hub-") as tmp:
        folder = save_pretrained(model, tmp, task=task, card=card, repo_id=repo_id)
        return upload_folder(
            folder, repo_id, private=private, revision=revision, token=token, commit_message=commit_message
        )


class HubModel:
    """Mixin for the registered networks (:mod:`maestro.models.registry`): the Hugging Face methods.

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
        return load_pretrained(
            source,
            model_type_of(cls),
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
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
