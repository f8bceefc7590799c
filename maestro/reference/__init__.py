"""Checkpoints of IGN's reference MAESTRO code, converted into this suite's model folders.

A converter, apart from publishing (:mod:`maestro.hub`): it reads the reference's Lightning
checkpoints without running their code, maps every tensor to the suite's layout (or says why
not) and writes the folder that :mod:`maestro.hub` then loads like any other. ``maestro
import-reference`` is its command (:mod:`maestro.reference.cli`).

Public API (imported lazily, so that ``maestro --help`` does not load torch)::

    from maestro.reference import import_reference, ConversionOptions
    import_reference("hf:IGNF/MAESTRO_FLAIR-HUB_base", "hub/base", ConversionOptions(model_type="maestro-encoder"))
"""

from __future__ import annotations

from maestro.lazy import lazy_exports

_EXPORTS = {
    "ConversionOptions": "maestro.reference.options",
    "convert_checkpoint": "maestro.reference.convert",
    "converted_hub_checkpoint": "maestro.reference.convert",
    "import_reference": "maestro.reference.convert",
    "plan_conversion": "maestro.reference.plan",
    "read_reference_checkpoint": "maestro.reference.unpickle",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
