"""FLAIR #2 (IGN challenge release): layout, nomenclature, reader and toy generator.

Self-contained: nothing here is registered with the suite's modality or task registries yet. The
names below are imported lazily, so that ``layout`` and ``nomenclature`` load on their own.
"""

from __future__ import annotations

from maestro.lazy import lazy_exports

_EXPORTS = {
    "Flair2Reader": "maestro.data.flair2.reader",
    "write_flair2_toy": "maestro.data.flair2.toy",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
