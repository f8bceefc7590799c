"""What ``shards fill`` does (:mod:`shards.fill`), validated at construction: a light module, so
that the command line takes its defaults from here and refuses bad options before torch loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maestro.errors import ConfigError

METHODS: tuple[str, ...] = ("drop", "interpolate", "model")
BASELINE_TARGET = "s2"
"""The series the two baselines process (the model's is its own ``target``)."""


@dataclass(frozen=True)
class FillConfig:
    """What ``shards fill`` does; validated at construction."""

    source: Path
    out: Path
    method: str
    model: str | None = None
    """``model``: a gapfill run, checkpoint, model folder or Hub model."""
    splits: tuple[str, ...] | None = None
    """None: every split of the source manifest."""
    cloud_threshold: float | None = None
    """A mask band above it flags a pixel; None: 0 for the baselines, the model's own for ``model``."""
    cloudy_date_fraction: float = 0.05
    """``drop``: dates flagged on more than this share of their pixels are dropped."""
    device: str = "cpu"
    batch_size: int = 8
    """``model``: samples restored in one pass of the network."""
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Path(self.source))
        object.__setattr__(self, "out", Path(self.out))
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {list(METHODS)}, got {self.method!r}")
        if self.method == "model" and not self.model:
            raise ConfigError("--method model needs --model (a gapfill run or its published folder)")
        if self.method != "model" and self.model:
            raise ConfigError(f"--model is for --method model; --method {self.method} uses no network")
        source, out = self.source.resolve(), self.out.resolve()
        if out == source or source in out.parents:
            raise ConfigError(
                f"--out {self.out} is inside --from {self.source}: write the filled set elsewhere"
            )
        if self.cloud_threshold is not None and not (
            np.isfinite(self.cloud_threshold) and self.cloud_threshold >= 0
        ):
            raise ConfigError(f"--cloud-threshold must be a finite value >= 0, got {self.cloud_threshold}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not 0 <= self.cloudy_date_fraction <= 1:
            raise ConfigError(f"--cloudy-date-fraction must be in [0, 1], got {self.cloudy_date_fraction}")
