"""FLAIR #2 (IGN challenge release): layout, nomenclature, reader and toy generator.

The registries hold its rasters (modalities ``elevation``, ``flair2``; task ``flair2``; dataset row
``flair2`` of :mod:`maestro.datasets`, to which the reader and the toy generator attach themselves).
The names below are imported lazily, so that ``layout`` and ``nomenclature`` load on their own
(the label registry reads ``nomenclature``).
"""

from __future__ import annotations

from maestro.lazy import lazy_exports

_EXPORTS = {
    "Flair2Reader": "maestro.data.flair2.reader",
    "write_flair2_toy": "maestro.data.flair2.toy",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
