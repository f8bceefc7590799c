"""Acquisition dates: stored as int32 ``YYYYMMDD`` (the metadata's own form), 0 = padding."""

from __future__ import annotations

import functools

import numpy as np

PAD_DATE = 0


def parse_yyyymmdd(value: str | int) -> int:
    """Validate one ``YYYYMMDD`` date and return it as an int; raises ValueError otherwise."""
    text = str(value).strip()
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"date {value!r} is not YYYYMMDD")
    try:
        np.datetime64(f"{text[:4]}-{text[4:6]}-{text[6:]}", "D")
    except ValueError:
        raise ValueError(f"date {value!r} is not a valid calendar date") from None
    return int(text)


def to_datetime64(dates: np.ndarray) -> np.ndarray:
    """int ``YYYYMMDD`` array -> ``datetime64[D]`` (padding becomes NaT)."""
    dates = np.asarray(dates, dtype=np.int64)
    years, rest = np.divmod(dates, 10000)
    months, days = np.divmod(rest, 100)
    out = np.full(dates.shape, np.datetime64("NaT"), dtype="datetime64[D]")
    valid = dates != PAD_DATE
    if valid.any():
        starts = (years[valid] - 1970).astype("datetime64[Y]").astype("datetime64[M]")
        out[valid] = (starts + (months[valid] - 1)).astype("datetime64[D]") + (days[valid] - 1)
    return out


def year_and_doy(dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(year, day of year starting at 0) as float32 arrays; padding gives (0, 0).

    Looked up date by date in a cache: it runs for every series of every sample in the loader
    workers, on a few dozen dates from a few hundred distinct ones, where the vectorised datetime64
    conversion measured ~4x slower.
    """
    dates = np.asarray(dates)
    pairs = [_year_and_doy_of(date) for date in dates.ravel().tolist()]
    table = np.array(pairs, dtype=np.float32).reshape(*dates.shape, 2)
    return table[..., 0], table[..., 1]


@functools.lru_cache(maxsize=1 << 16)
def _year_and_doy_of(date: int) -> tuple[int, int]:
    return tuple(int(v[0]) for v in _year_and_doy_datetime(np.array([date])))  # type: ignore[return-value]


def _year_and_doy_datetime(dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`year_and_doy` through datetime64 (dates that are not calendar dates, Feb 30 or
    month 13, roll over)."""
    as_days = to_datetime64(dates)
    valid = ~np.isnat(as_days)
    years = np.zeros(as_days.shape, dtype=np.float32)
    doy = np.zeros(as_days.shape, dtype=np.float32)
    if valid.any():
        year_start = as_days[valid].astype("datetime64[Y]")
        years[valid] = year_start.astype(np.int64) + 1970
        doy[valid] = (as_days[valid] - year_start.astype("datetime64[D]")).astype(np.int64)
    return years, doy


def fractional_year(dates: np.ndarray) -> np.ndarray:
    """year + doy / 365.25 (the date encoding's year offset); padding gives 0."""
    years, doy = year_and_doy(dates)
    return np.where(np.asarray(dates) != PAD_DATE, years + doy / np.float32(365.25), 0).astype(np.float32)
