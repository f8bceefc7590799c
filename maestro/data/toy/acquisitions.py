"""When each sensor acquires a toy patch: revisit grids, date counts and seasons per dates table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maestro.modalities import MODALITIES


@dataclass(frozen=True)
class Acquisitions:
    """How a sensor's dates are drawn within the year: revisit grid and count (or a season)."""

    revisit_days: int
    count: tuple[int, int]
    season: tuple[int, int] = (0, 364)


ACQUISITIONS: dict[str, Acquisitions] = {
    # keyed by the registry's dates_table names
    "SENTINEL2": Acquisitions(5, (8, 40)),
    "SENTINEL1-ASC": Acquisitions(6, (3, 12)),
    "SENTINEL1-DESC": Acquisitions(6, (3, 12)),
    "AERIAL": Acquisitions(1, (1, 1), season=(100, 260)),
    "SPOT": Acquisitions(1, (1, 1), season=(90, 280)),
}
assert {m.dates_table for m in MODALITIES.values() if m.dates_table} <= set(ACQUISITIONS)


def draw_dates(rng: np.random.Generator, year: int, plan: Acquisitions) -> np.ndarray:
    """Sorted distinct acquisition days (day of year) on the sensor's revisit grid."""
    first, last = plan.season
    slots = np.arange(first + int(rng.integers(plan.revisit_days)), last + 1, plan.revisit_days)
    count = min(int(rng.integers(plan.count[0], plan.count[1] + 1)), len(slots))
    return np.sort(rng.choice(slots, size=count, replace=False))


def to_yyyymmdd(year: int, doy: np.ndarray) -> np.ndarray:
    days = np.datetime64(f"{year}-01-01") + np.asarray(doy).astype("timedelta64[D]")
    text = np.datetime_as_string(days, unit="D")
    return np.char.replace(text, "-", "").astype(np.int32)
