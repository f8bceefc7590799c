"""Every network of the suite, registered, and the loaders that may meet any of them.

Importing this module imports each network module, whose class registers itself for its model
type (:mod:`maestro.models.registry`). The hub code never imports a network, so whatever may build
a type it did not import itself goes through here: the apps, the ``maestro`` command and the
public loaders below::

    from maestro.models import from_pretrained
    model = from_pretrained("org/name@v1.0")        # encoder, MAE or segmenter, as the folder says

- :func:`from_pretrained`: the network of a model folder or Hub model, whatever its type;
- :func:`load_weights`: :func:`maestro.hub.weights.load_weights` with the reference converter, so
  that a Hub repo holding a checkpoint of IGN's reference code (``hf:IGNF/MAESTRO_FLAIR-HUB_base``)
  loads like a model folder; :func:`load_encoder_weights`, the encoder of any source with it
  (``finetune --init``, ``maestro.api.load_encoder``);
- :func:`publish`: ``maestro publish`` (:mod:`maestro.hub.publish`).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from torch import nn

from maestro.hub.pretrained import load_pretrained
from maestro.hub.publish import export_checkpoint, publish
from maestro.hub.sources import KINDS, SourceKind
from maestro.hub.weights import Pick, Weights
from maestro.hub.weights import load_weights as load_any_weights
from maestro.models.baseline.model import SwinUTAE
from maestro.models.encoder import MaestroEncoder
from maestro.models.flair2.segmenter import UNetSegmenter, UTTSegmenter
from maestro.models.gapfill import MaestroGapFill
from maestro.models.mae import MaestroMAE
from maestro.models.registry import MAESTRO_ENCODER, ModelType, get_model_type
from maestro.models.segmenter import MaestroSegmenter
from maestro.reference.convert import converted_hub_checkpoint

__all__ = [
    "NETWORKS",
    "export_checkpoint",
    "from_pretrained",
    "load_encoder_weights",
    "load_weights",
    "publish",
]

NETWORKS: tuple[type[nn.Module], ...] = (
    MaestroEncoder,
    MaestroMAE,
    MaestroSegmenter,
    SwinUTAE,
    UNetSegmenter,
    UTTSegmenter,
    MaestroGapFill,
)
"""The registered networks, one per model type."""


def from_pretrained(
    source: str | Path,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    model_type: str | None = None,
) -> nn.Module:
    """Whichever network ``source`` (a model folder, ``org/name[@revision]`` or ``hf:org/name``)
    holds, in eval mode on the CPU. ``model_type`` (``maestro-encoder``, ...) asks for one type;
    ``maestro-encoder`` also takes the encoder out of a type that holds one. Only safetensors are
    read; nothing is executed."""
    want = get_model_type(model_type) if model_type is not None else None
    return load_pretrained(
        source, want, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only
    )


def load_weights(
    source: str | Path,
    want: ModelType | None = None,
    pick: Pick = "ema",
    *,
    kinds: Collection[SourceKind] = KINDS,
    user: str = "this",
) -> Weights:
    """The weights of any source (:mod:`maestro.hub.sources`), a Hub repo of reference checkpoints
    included (converted once, cached: :func:`maestro.reference.convert.converted_hub_checkpoint`)."""
    return load_any_weights(source, want, pick, kinds=kinds, user=user, convert=converted_hub_checkpoint)


def load_encoder_weights(source: str | Path, pick: Pick = "ema", user: str = "this") -> Weights:
    """The MAESTRO encoder of any source, taken out of whatever type holds it: what ``finetune
    --init`` and :func:`maestro.api.load_encoder` read."""
    return load_weights(source, MAESTRO_ENCODER, pick, user=user)
