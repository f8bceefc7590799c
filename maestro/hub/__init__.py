"""Publishing and loading weights: model folders, training checkpoints, weight sources, the Hugging Face Hub.

The hub code reads the model-type registry (:mod:`maestro.models.registry`) and never imports a
network; the networks import it (:class:`HubModel`). The loader of any type is
``maestro.models.from_pretrained``. Public names (imported on first use, so that the commands that
import :mod:`maestro.hub.sources` at start-up do not load torch with this package)::

    from maestro.hub import load_weights, publish, save_pretrained, push_to_hub
    weights = load_weights("runs/pretrain")          # a run, .ckpt, model folder, hf:org/name or org/name
"""

from __future__ import annotations

from maestro.lazy import lazy_exports

_EXPORTS = {
    "HubModel": "maestro.hub.pretrained",
    "load_pretrained": "maestro.hub.pretrained",
    "save_pretrained": "maestro.hub.pretrained",
    "push_to_hub": "maestro.hub.pretrained",
    "segmentation_task": "maestro.hub.pretrained",
    "CardFacts": "maestro.hub.card",
    "build_card": "maestro.hub.card",
    "publish": "maestro.hub.publish",
    "export_checkpoint": "maestro.hub.publish",
    "upload_folder": "maestro.hub.upload",
    "download": "maestro.hub.remote",
    "parse_repo": "maestro.hub.sources",
    "resolve_source": "maestro.hub.sources",
    "Source": "maestro.hub.sources",
    "write_model_folder": "maestro.hub.folder",
    "read_model_folder": "maestro.hub.folder",
    "load_strict": "maestro.hub.folder",
    "load_weights": "maestro.hub.weights",
    "Weights": "maestro.hub.weights",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
