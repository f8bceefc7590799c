"""FLAIR #2's baselines as fine-tuning networks: ``finetune --model unet`` / ``--model utt``.

What a run chooses (:class:`Flair2BaselineOptions`, the ``model.flair2`` section) and what a run or
a model folder builds (:class:`UNetSegmenterConfig`, :class:`UTTSegmenterConfig`, the registry's
``unet-segmenter`` / ``utt-segmenter``). Like the Swin-UTAE's config, the networks' inputs are an
:class:`~maestro.models.config.EncoderConfig` (modalities, bands, sizes, dates), so that
``preprocess_for`` feeds them the samples it feeds MAESTRO; only those facts are read from it.

Inputs. The U-Net reads the single-date images concatenated in config order (FLAIR #2: aerial
R, G, B, NIR + elevation = the paper's 5 channels), each at the label's size; U-T&T adds one time
series (FLAIR #2: the Sentinel-2 super-patch). They are fed as the shared preprocessing scales
them (aerial and elevation / 255, the reference's ``img_as_float``), without the Swin-UTAE's
standardisation: the reference standardises nothing, and FLAIR #2's elevation has no statistics.

Loss. The paper weights classes per branch (``weights_aerial_satellite``): the networks' configs
carry the weights of their task's output channels (:func:`task_class_weights`), which the
fine-tuning loss reads through the registry (:meth:`loss_options`), so the library never needs the
app. Loads without torch: the fine-tuning config reads it at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from maestro import config as config_io
from maestro.config import ConfigMixin
from maestro.data.flair2 import nomenclature
from maestro.errors import ConfigError
from maestro.modalities import MODALITIES
from maestro.models.baseline.config import UTAEConfig
from maestro.models.config import EncoderConfig
from maestro.models.flair2.config import UNetConfig, UTTConfig, challenge_utae
from maestro.tasks import get_task

Flair2Architecture = Literal["unet", "utt"]
FLAIR2_ARCHITECTURES: tuple[Flair2Architecture, ...] = ("unet", "utt")

TASK_CLASS_WEIGHTS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "flair2": (nomenclature.CLASS_WEIGHTS, nomenclature.S2_CLASS_WEIGHTS),
}
"""Task -> the paper's per-class weights of the main (U-Net) and auxiliary (U-TAE) losses, one per
nomenclature value; tasks absent here train unweighted."""


def task_class_weights(
    task: str, num_classes: int
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """(main, auxiliary) weights of a head's ``num_classes`` channels. Values past the channels are
    ignored classes (FLAIR #2's ``other``), whose targets the loss ignores: their weight must be 0."""
    if task not in TASK_CLASS_WEIGHTS:
        return None, None
    weights = TASK_CLASS_WEIGHTS[task]
    for table in weights:
        if any(table[num_classes:]):
            raise ConfigError(
                f"{task}: classes past the {num_classes} output channels have a nonzero loss weight {table}"
            )
    return weights[0][:num_classes], weights[1][:num_classes]


def split_inputs(modalities: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(single-date images, time series) of ``modalities``, in order."""
    single = tuple(key for key in modalities if not MODALITIES[key].temporal)
    return single, tuple(key for key in modalities if MODALITIES[key].temporal)


def check_inputs(architecture: Flair2Architecture, modalities: Sequence[str]) -> None:
    """Refuse inputs the network cannot read: the U-Net takes single-date images only, U-T&T those
    and exactly one time series."""
    single, series = split_inputs(modalities)
    wants = {
        "unet": "the U-Net reads single-date images only (FLAIR #2: aerial,elevation)",
        "utt": "U-T&T reads single-date images and one time series (FLAIR #2: aerial,elevation,s2)",
    }[architecture]
    if not single or (architecture == "unet" and series) or (architecture == "utt" and len(series) != 1):
        raise ConfigError(
            f"modalities (--modalities): {list(modalities)} has single-date {list(single)} and time "
            f"series {list(series)}; {wants}"
        )


PAPER_BANDS: dict[str, tuple[str, ...]] = {"aerial": ("R", "G", "B", "NIR")}
"""The reference's band order (R, G, B, NIR, then elevation), where MAESTRO's default differs: smp
adapts ImageNet's first convolution by repeating its R, G, B filters over the channels in order."""


def paper_bands(modalities: Sequence[str]) -> dict[str, dict[str, tuple[str, ...]]]:
    """Encoder-config overrides giving ``modalities`` the paper's band order."""
    return {key: {"bands": PAPER_BANDS[key]} for key in modalities if key in PAPER_BANDS}


def default_inputs(architecture: Flair2Architecture, defaults: Sequence[str]) -> tuple[str, ...]:
    """The inputs of a run that names none, from its dataset's default inputs: their single-date
    images (U-Net), plus their first time series (U-T&T)."""
    single, series = split_inputs(defaults)
    return single if architecture == "unet" else single + series[:1]


@dataclass(frozen=True)
class Flair2BaselineOptions:
    """The U-Net / U-T&T settings a fine-tuning run chooses (``finetune``'s ``model.flair2``
    section); defaults are the challenge's, taken from :class:`UNetConfig` and :class:`UTTConfig`.
    Input channels and classes come from the run's inputs and task."""

    encoder: str = UNetConfig.encoder
    """An smp encoder name (``resnet34``: the paper's)."""
    decoder_channels: tuple[int, ...] = UNetConfig.decoder_channels
    utae: UTAEConfig = field(default_factory=challenge_utae)
    """U-T&T: the U-TAE on the time series."""
    footprint: int = UTTConfig.footprint
    fusions: tuple[str, ...] = UTTConfig.fusions
    collapsed_dropout: float = UTTConfig.collapsed_dropout
    utae_dropout: float = UTTConfig.utae_dropout
    aux_weight: float = UTTConfig.aux_weight
    """U-T&T: weight of the U-TAE branch's loss beside the U-Net's (the paper's 1)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder_channels", tuple(self.decoder_channels))
        object.__setattr__(self, "fusions", tuple(self.fusions))
        self.utt(in_channels=1, num_classes=2, s2_channels=1)  # UTTConfig's checks, in one place

    def unet(self, in_channels: int, num_classes: int) -> UNetConfig:
        """The U-Net for these inputs and classes (random encoder: a fresh run loads ImageNet's)."""
        return UNetConfig(
            in_channels=in_channels,
            num_classes=num_classes,
            encoder=self.encoder,
            decoder_channels=self.decoder_channels,
        )

    def utt(self, in_channels: int, num_classes: int, s2_channels: int) -> UTTConfig:
        return UTTConfig(
            unet=self.unet(in_channels, num_classes),
            utae=self.utae,
            s2_channels=s2_channels,
            footprint=self.footprint,
            fusions=self.fusions,
            collapsed_dropout=self.collapsed_dropout,
            utae_dropout=self.utae_dropout,
            aux_weight=self.aux_weight,
        )


def _weights(value: Any, num_classes: int, name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    value = tuple(float(w) for w in value)
    if len(value) != num_classes or min(value) < 0.0 or not any(value):
        raise ConfigError(
            f"{name}: {list(value)}; need {num_classes} weights >= 0 (one per class), not all 0"
        )
    return value


def _single_date_channels(encoder: EncoderConfig, label_size: int) -> int:
    """Channels of the U-Net's input: the single-date images' bands; each must be at the label size."""
    specs = encoder.specs
    single, _ = split_inputs(encoder.modalities)
    wrong = [f"{key} at {specs[key].image_size} px" for key in single if specs[key].image_size != label_size]
    if wrong:
        raise ConfigError(
            f"modalities (--modalities): the U-Net predicts at its input's size, the label's {label_size} px, "
            f"and gets {', '.join(wrong)}; leave those inputs out"
        )
    return sum(specs[key].num_bands for key in single)


@dataclass(frozen=True)
class UNetSegmenterConfig(ConfigMixin):
    """FLAIR #2's U-Net as a segmenter: its inputs, the smp U-Net, and the loss's class weights."""

    encoder: EncoderConfig
    """Only its inputs are read: modalities, bands and image sizes."""
    task: str
    """The task whose classes the outputs are (their weights: :data:`TASK_CLASS_WEIGHTS`)."""
    unet: UNetConfig
    label_size: int = 512
    class_weights: tuple[float, ...] | None = None
    """Cross-entropy weight per output channel; None: unweighted."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder", config_io.nested(EncoderConfig, self.encoder, "encoder"))
        object.__setattr__(self, "unet", config_io.nested(UNetConfig, self.unet, "unet"))
        get_task(self.task)
        check_inputs("unet", self.encoder.modalities)
        _check_channels(self.unet, _single_date_channels(self.encoder, self.label_size), self.single_date)
        object.__setattr__(
            self, "class_weights", _weights(self.class_weights, self.num_classes, "class_weights")
        )

    @property
    def single_date(self) -> tuple[str, ...]:
        return self.encoder.modalities

    @property
    def num_classes(self) -> int:
        return self.unet.num_classes

    def loss_options(self) -> dict[str, Any]:
        """What this network's loss adds to the shared one (``segmentation_loss`` options)."""
        return {"class_weights": self.class_weights}


@dataclass(frozen=True)
class UTTSegmenterConfig(ConfigMixin):
    """FLAIR #2's U-T&T as a segmenter: its inputs, the network, and both branches' class weights."""

    encoder: EncoderConfig
    """Only its inputs are read: modalities, bands, image sizes and dates of the time series."""
    task: str
    utt: UTTConfig
    label_size: int = 512
    class_weights: tuple[float, ...] | None = None
    """Cross-entropy weight per output channel of the U-Net; None: unweighted."""
    aux_class_weights: tuple[float, ...] | None = None
    """The same for the U-TAE branch's auxiliary loss (FLAIR #2: ``plowed land`` also 0)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoder", config_io.nested(EncoderConfig, self.encoder, "encoder"))
        object.__setattr__(self, "utt", config_io.nested(UTTConfig, self.utt, "utt"))
        get_task(self.task)
        check_inputs("utt", self.encoder.modalities)
        _check_channels(self.utt.unet, _single_date_channels(self.encoder, self.label_size), self.single_date)
        spec = self.encoder.specs[self.series]
        if spec.num_bands != self.utt.s2_channels:
            raise ConfigError(
                f"utt.s2_channels: {self.utt.s2_channels}, but {self.series} has {spec.num_bands} bands"
            )
        if spec.image_size < self.utt.footprint:
            raise ConfigError(
                f"{self.series} images of {spec.image_size} px cannot hold the {self.utt.footprint} px "
                "footprint U-T&T crops from them (FLAIR #2's super-patch is 40 px)"
            )
        for name in ("class_weights", "aux_class_weights"):
            object.__setattr__(self, name, _weights(getattr(self, name), self.num_classes, name))

    @property
    def single_date(self) -> tuple[str, ...]:
        return split_inputs(self.encoder.modalities)[0]

    @property
    def series(self) -> str:
        """The time series of the U-TAE branch (FLAIR #2: ``s2``), the key of its ``aux`` output."""
        return split_inputs(self.encoder.modalities)[1][0]

    @property
    def num_classes(self) -> int:
        return self.utt.num_classes

    def loss_options(self) -> dict[str, Any]:
        """What this network's loss adds to the shared one (``segmentation_loss`` options)."""
        return {
            "aux_weight": self.utt.aux_weight,
            "class_weights": self.class_weights,
            "aux_class_weights": self.aux_class_weights,
        }


def _check_channels(unet: UNetConfig, channels: int, single: tuple[str, ...]) -> None:
    if unet.in_channels != channels:
        raise ConfigError(f"in_channels: {unet.in_channels}, but the bands of {list(single)} are {channels}")


def network_config(
    architecture: Flair2Architecture,
    options: Flair2BaselineOptions,
    inputs: EncoderConfig,
    task: str,
    num_classes: int,
    label_size: int,
) -> UNetSegmenterConfig | UTTSegmenterConfig:
    """The network of a ``finetune --model unet|utt`` run: ``options`` on these inputs and classes,
    with the task's class weights."""
    check_inputs(architecture, inputs.modalities)
    channels = _single_date_channels(inputs, label_size)
    main, aux = task_class_weights(task, num_classes)
    if architecture == "unet":
        return UNetSegmenterConfig(inputs, task, options.unet(channels, num_classes), label_size, main)
    s2_channels = inputs.specs[split_inputs(inputs.modalities)[1][0]].num_bands
    utt = options.utt(channels, num_classes, s2_channels)
    return UTTSegmenterConfig(inputs, task, utt, label_size, main, aux)
