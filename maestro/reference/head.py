"""The segmentation head of a ``maestro-segmenter`` conversion: which head, its classes, its tensors.

The reference's ``PixelifyHead`` pools dates (attentively when it has ``reduce.*`` weights) and
maps each token of the finest grid to f x f label pixels with a 1 x 1 conv of classes x f^2
outputs: the suite's ``maestro`` head, with the same channel order.
"""

from __future__ import annotations

import math
from typing import Any

from maestro.errors import ConfigError
from maestro.models.config import EncoderConfig
from maestro.models.heads.options import reference_grid
from maestro.models.segmenter_config import SegmenterConfig
from maestro.reference.keys import POOL_PARTS, KeyMapper
from maestro.reference.layout import HeadLayout, ReferenceLayout
from maestro.reference.options import ask
from maestro.reference.sizes import KNOWN_TARGETS
from maestro.tasks import get_task

HEAD_POOLINGS = {"attentive": "attentive", "linear": "mean"}
"""The reference head's date pooling -> the suite's ``date_pooling``."""


def plan_head(
    layout: ReferenceLayout,
    encoder: EncoderConfig,
    mapper: KeyMapper,
    target: str | None,
    num_classes: int | None,
) -> tuple[SegmenterConfig, dict[str, Any] | None]:
    """The segmenter config of one reference head, with the head's tensors mapped, and its task."""
    head = choose_head(layout, target)
    num_classes, task = head_classes(head, num_classes)
    factor = math.isqrt(head.out_channels // num_classes)
    if factor * factor * num_classes != head.out_channels:
        raise ConfigError(
            f"heads.{head.name}.conv has {head.out_channels} outputs, not {num_classes} classes x a square number"
        )
    grid = reference_grid(encoder.specs)
    config = SegmenterConfig(
        encoder=encoder,
        num_classes=num_classes,
        head="maestro",
        label_size=factor * grid,
        date_pooling=HEAD_POOLINGS[head.pooling],
    )
    map_head(mapper, head.name)
    mapper.report.notes.append(
        f"segmentation head {head.name!r}: {num_classes} classes, {factor}x{factor} label pixels per token of the "
        f"{grid}x{grid} grid ({HEAD_POOLINGS[head.pooling]} pooling)"
    )
    mapper.skip_prefix("heads.", f"another head than {head.name!r}")
    return config, task


def choose_head(layout: ReferenceLayout, target: str | None) -> HeadLayout:
    """The head named ``target``, or the checkpoint's only one."""
    if not layout.heads:
        raise ConfigError(
            "the checkpoint holds no segmentation head (heads.<target>.conv): convert it as a maestro-mae or "
            "maestro-encoder and fine-tune a head"
        )
    if target is None:
        if len(layout.heads) > 1:
            raise ConfigError(
                f"the checkpoint has several segmentation heads {sorted(layout.heads)}: pick one with {ask('target')}"
            )
        target = next(iter(layout.heads))
    if target not in layout.heads:
        raise ConfigError(
            f"no segmentation head {target!r} in the checkpoint (chosen with {ask('target')}); its heads: "
            f"{sorted(layout.heads)}"
        )
    return layout.heads[target]


def head_classes(head: HeadLayout, num_classes: int | None) -> tuple[int, dict[str, Any] | None]:
    """The head's number of classes, and the task it predicts when the converter knows its target."""
    if num_classes is not None:
        return num_classes, None
    if head.name not in KNOWN_TARGETS:
        raise ConfigError(
            f"the number of classes of head {head.name!r} is not known to the converter: pass "
            f"{ask('num_classes')}; its conv has {head.out_channels} = classes x f^2 outputs"
        )
    task_name, level = KNOWN_TARGETS[head.name]
    label = get_task(task_name).target(level)
    task = {
        "name": label.task,
        "level": label.level,
        "class_names": list(label.names[: label.num_classes]),
        "ignored": sorted(v for v in label.nomenclature.ignored if v < label.num_classes),
    }
    return label.num_classes, task


def map_head(mapper: KeyMapper, name: str) -> None:
    """The head's date pooling (attentive heads only) and its 1 x 1 conv."""
    source = f"heads.{name}."
    for part, ours in POOL_PARTS.items():
        if f"{source}reduce.{part}" in mapper.state:
            mapper.put(f"{source}reduce.{part}", f"decoder.pool.{ours}")
    for kind in ("weight", "bias"):
        key = (
            f"{source}conv.{kind}" if f"{source}conv.{kind}" in mapper.state else f"{source}conv_skip.{kind}"
        )
        mapper.put(key, f"head.conv.{kind}")
