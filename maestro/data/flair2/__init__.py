"""FLAIR #2 (IGN challenge release): layout, nomenclature, reader and toy generator.

Self-contained: nothing here is registered with the suite's modality or task registries yet.
"""

from maestro.data.flair2.reader import Flair2Reader
from maestro.data.flair2.toy import write_flair2_toy

__all__ = ["Flair2Reader", "write_flair2_toy"]
