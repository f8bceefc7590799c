"""Configuration of a :class:`~maestro.models.segmenter.MaestroSegmenter`: encoder, head and its options.

Immutable and validated at construction: a head that does not exist, block indices outside the
encoder or a label size the head cannot produce raise :class:`~maestro.errors.ConfigError` before
any weight is built.
"""

from __future__ import annotations

from dataclasses import dataclass

from maestro import config as config_io
from maestro.config import ConfigMixin
from maestro.errors import ConfigError
from maestro.models.config import EncoderConfig
from maestro.models.heads.options import DATE_POOLINGS, POOL_HEADS, DatePooling
from maestro.models.heads.registry import HEADS, HeadSpec


def evenly_spaced_blocks(depth: int, count: int) -> tuple[int, ...]:
    """``count`` 0-based block indices evenly spread over ``depth`` blocks, ending at the last one:
    (2, 5, 8, 11) for 4 of 12. Shallow encoders repeat a block rather than invent one."""
    return tuple(max(depth * k // count - 1, 0) for k in range(1, count + 1))


@dataclass(frozen=True)
class SegmenterConfig(ConfigMixin):
    """A MAESTRO encoder with a segmentation head; see :mod:`maestro.models.heads.registry`."""

    encoder: EncoderConfig
    num_classes: int
    """Output channels of the logits (the largest trained label value + 1)."""
    head: str = "uperfuse"
    """A row of :data:`~maestro.models.heads.registry.HEADS`: ``uperfuse``, ``maestro`` or ``linear``."""
    label_size: int = 512
    """Height = width of the logits, i.e. of the label raster."""
    feature_indices: tuple[int, ...] | None = None
    """0-based encoder blocks the head reads (negative counts from the end); ``None``: evenly
    spaced ending at the last block, (2, 5, 8, 11) for depth 12. Only for heads that read depths."""
    date_pooling: DatePooling = "attentive"
    """How a location's (date x band group) tokens become one vector: learned query or mean (the
    ``linear`` head always takes the mean: it learns nothing but its linear layer)."""
    decoder_channels: int = 256
    """Width of the UPerNet pyramid (uperfuse)."""
    aux_heads: bool = False
    """One auxiliary classifier per modality on its own final tokens (``forward(...)["aux"]``)."""
    modality_dropout: float = 0.0
    """Training only: per sample and modality, the probability that all its dates become invalid."""
    freeze_encoder: bool = False
    """Frozen backbone: no encoder gradients, encoder always in eval mode. With head ``linear``
    this is the linear probe: the linear layer is then the only thing that trains."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder", config_io.nested(EncoderConfig, self.encoder, "encoder"))
        if self.feature_indices is not None:
            object.__setattr__(self, "feature_indices", tuple(self.feature_indices))
        self._validate()

    @property
    def head_spec(self) -> HeadSpec:
        return HEADS[self.head]

    @property
    def blocks(self) -> tuple[int, ...]:
        """0-based, non-negative encoder blocks the head reads (empty: only the final tokens)."""
        count = self.head_spec.num_depths
        if count == 0:
            return ()
        depth = self.encoder.transformer.depth
        if self.feature_indices is None:
            return evenly_spaced_blocks(depth, count)
        return tuple(index % depth for index in self.feature_indices)

    def _validate(self) -> None:
        if self.head not in HEADS:
            raise ConfigError(f"head: unknown head {self.head!r}; known heads: {sorted(HEADS)}")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes: {self.num_classes} must be >= 2")
        if self.label_size < 1:
            raise ConfigError(f"label_size: {self.label_size} must be positive")
        if self.date_pooling not in DATE_POOLINGS:
            raise ConfigError(f"date_pooling: {self.date_pooling!r} is not one of {list(DATE_POOLINGS)}")
        if self.decoder_channels < 1:
            raise ConfigError(f"decoder_channels: {self.decoder_channels} must be positive")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ConfigError(f"modality_dropout: {self.modality_dropout} must be in [0, 1)")
        width = self.encoder.transformer.width
        if self.date_pooling == "attentive" and width % POOL_HEADS:
            raise ConfigError(
                f"date_pooling: attentive pooling splits the encoder width {width} into {POOL_HEADS} heads; "
                f"use a width divisible by {POOL_HEADS} or date_pooling 'mean'"
            )
        self._validate_indices()
        spec = self.head_spec
        if spec.check is not None:
            spec.check(self)

    def _validate_indices(self) -> None:
        if self.feature_indices is None:
            return
        count, depth = self.head_spec.num_depths, self.encoder.transformer.depth
        if count == 0:
            raise ConfigError(
                f"feature_indices: head {self.head!r} reads only the final token maps; leave feature_indices unset"
            )
        if len(self.feature_indices) != count:
            raise ConfigError(
                f"feature_indices: head {self.head!r} reads {count} encoder depths, got {list(self.feature_indices)}"
            )
        for index in self.feature_indices:
            if isinstance(index, bool) or not isinstance(index, int) or not -depth <= index < depth:
                raise ConfigError(
                    f"feature_indices: block {index!r} out of range; the encoder has blocks 0..{depth - 1} "
                    f"(negative counts from the end)"
                )
