"""The image sizes and dates a reference checkpoint leaves out, assumed or given, and checked.

The reference keeps image sizes and dates per series in its dataset config, outside the
checkpoint, and its position tables are non-persistent buffers, so no stored tensor holds them.
The converter takes the registry's (the reference's FLAIR-HUB setup) unless they are given, and
says which ones it assumed. One kind of tensor does constrain them: a segmentation head's 1 x 1
conv has classes x f² outputs, f label pixels per side of a token of the finest input grid. For a
target the suite knows, f x grid must be the size of the task's label raster; when it is not on
assumed sizes, the checkpoint was trained on other ones (the label pixel size fixes the token
footprint), and the converter says so, or refuses a segmenter whose labels would not fit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from maestro.errors import ConfigError
from maestro.modalities import MODALITIES, ModalityOverride
from maestro.models.config import EncoderConfig
from maestro.models.heads.options import reference_grid
from maestro.reference.options import ask
from maestro.tasks import get_task

log = logging.getLogger(__name__)

KNOWN_TARGETS = {"cosia": ("lc", 1)}
"""Reference segmentation targets -> (suite task, level) with the same classes."""


def assumed_sizes(config: EncoderConfig, given: Mapping[str, ModalityOverride]) -> str | None:
    """A note naming the image sizes and dates per series taken from the registry (None: all given)."""
    sizes, dates = [], []
    for key, spec in config.specs.items():
        override = given.get(key, ModalityOverride())
        if override.image_size is None:
            sizes.append(f"{key} {spec.image_size} px")
        if MODALITIES[key].temporal and override.num_dates is None:
            dates.append(f"{key} {spec.num_dates}")
    parts = ([f"image size {', '.join(sizes)}"] if sizes else []) + (
        [f"dates {', '.join(dates)}"] if dates else []
    )
    if not parts:
        return None
    return (
        f"not stored in the checkpoint, assumed from the registry: {'; '.join(parts)}. If it was trained "
        f"on others, give them: {ask('overrides')}"
    )


def check_head_sizes(
    head_channels: Mapping[str, int],
    config: EncoderConfig,
    given: Mapping[str, ModalityOverride],
    notes: list[str],
    strict: bool,
) -> None:
    """Compare each known segmentation head (``target -> conv outputs``) with the token grid.

    Appends a note per head. On assumed sizes that give the head other labels than the task's,
    raises :class:`ConfigError` when ``strict`` (a segmenter is being converted), else warns.
    """
    specs = config.specs
    grid = reference_grid(specs)
    on_grid = [key for key, spec in specs.items() if spec.grid == grid]
    assumed = [key for key in on_grid if given.get(key, ModalityOverride()).image_size is None]
    for target, channels in head_channels.items():
        if target not in KNOWN_TARGETS:
            continue
        task_name, level = KNOWN_TARGETS[target]
        label = get_task(task_name).target(level)
        factor = math.isqrt(channels // label.num_classes)
        if factor * factor * label.num_classes != channels:
            continue  # not classes x a square: the segmenter conversion reports it
        expected = MODALITIES[label.label_modality].size_px
        labels = factor * grid
        head = f"segmentation head {target!r} ({factor}x{factor} label pixels per token of the {grid}x{grid} grid)"
        if labels == expected:
            which = "the registry's" if assumed else "the given"
            notes.append(f"{head} fits {which} sizes ({expected}-px {task_name} labels)")
            continue
        if not assumed:
            notes.append(
                f"{head} makes {labels}-px labels with the given sizes; {task_name} labels in the registry are "
                f"{expected} px"
            )
            continue
        fitting = ", ".join(
            f"--image-size {key}={expected // factor * specs[key].patch_size}" for key in assumed
        )
        problem = (
            f"segmentation head {target!r} predicts {factor}x{factor} label pixels per token: on the registry's "
            f"image sizes ({', '.join(f'{key} {specs[key].image_size} px' for key in on_grid)}, {grid}x{grid} "
            f"tokens) its labels would be {labels} px, but {task_name} labels are {expected} px, so the checkpoint "
            "was trained on other image sizes. Give them with --image-size MOD=PX (ConversionOptions.overrides "
            "in Python)" + (f"; {fitting} keeps {expected}-px labels" if expected % factor == 0 else "")
        )
        if strict:
            raise ConfigError(problem)
        log.warning("%s", problem)
        notes.append(problem)
