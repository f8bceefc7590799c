"""The networks the suite trains and publishes: one frozen :class:`ModelType` row per ``model_type``.

Like :mod:`maestro.modalities`, code reads these rows instead of branching on names: the hub code
(model folders, cards, checkpoints, publishing) and the apps look a type up and use its fields, so a
new publishable network is one row here plus ``@register_model_type`` on its class.

The registry sits below the networks and never imports them (timm's pattern): a row holds what can
be said from configs alone (config class, where its encoder sits, how a training run describes
it), and each network module attaches its class when it is imported::

    @register_model_type("maestro-encoder")
    class MaestroEncoder(nn.Module, HubModel): ...

so that ``get_model_type(name).build(config)`` builds it. :mod:`maestro.models.zoo` imports every
network module: what may build any type (``maestro.models.from_pretrained``, the CLIs) goes
through it. Loaded without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from maestro.errors import ConfigError
from maestro.models.baseline.config import SwinUTAEConfig
from maestro.models.config import EncoderConfig, MAEConfig
from maestro.models.finetuning import TrainedNetwork, segmenter_of_run
from maestro.models.flair2.segmenter_config import UNetSegmenterConfig, UTTSegmenterConfig
from maestro.models.gapfill_config import GapFillConfig
from maestro.models.segmenter_config import SegmenterConfig

if TYPE_CHECKING:
    from torch import nn

C = TypeVar("C", bound=type)
RunReader = Callable[[Mapping[str, Any], str], TrainedNetwork | None]
"""(stored run config, where) -> the network the run trained if it is of this type, else None."""

_CLASSES: dict[str, type] = {}
"""model_type -> the network class that registered itself for it."""


@dataclass(frozen=True)
class ModelType:
    """One kind of network: how to rebuild it from ``config.json`` or from a training run."""

    name: str
    """``model_type`` in ``config.json``."""
    config_class: type
    """Dataclass with ``from_dict`` / ``to_dict``; ``config.json["config"]`` is its plain form."""
    encoder_prefix: str | None
    """Where a MAESTRO encoder's tensors sit in the state dict (``""``: the network is the encoder;
    None: the network holds none)."""
    pipeline_tag: str
    """Hugging Face pipeline tag of the model card."""
    description: str
    """One line for cards and logs."""
    needs_task: bool = False
    """Whether ``config.json`` carries the ``task`` (name, level, class names) of the outputs."""
    from_run: RunReader | None = None
    """The network of a training run's stored config, when the run trained this type."""
    maestro_card: bool = True
    """Whether the card copies MODEL_CARD.md's sections (written for MAESTRO networks)."""
    zone_refusal: str | None = None
    """Why ``predict`` cannot map a zone with this segmenter; None: it can."""

    @property
    def model_class(self) -> type[nn.Module]:
        """The registered network class (its module must have been imported)."""
        try:
            return _CLASSES[self.name]
        except KeyError:
            raise ConfigError(
                f"no network class is registered for {self.name}: import maestro.models.zoo (or use "
                "maestro.models.from_pretrained), which imports every network"
            ) from None

    def config_from_dict(self, data: Mapping[str, Any]) -> Any:
        return self.config_class.from_dict(data)

    def build(self, config: Any) -> nn.Module:
        return self.model_class(config)

    def inputs(self, config: Any) -> EncoderConfig:
        """What the network reads (modalities, bands, sizes, dates), as an encoder config."""
        return config if isinstance(config, EncoderConfig) else config.encoder

    def encoder_config(self, config: Any) -> EncoderConfig:
        """The MAESTRO encoder inside a config of this type."""
        if self.encoder_prefix is None:
            raise ConfigError(f"a {self.name} holds no MAESTRO encoder")
        return self.inputs(config)

    def preprocess_options(self, config: Any) -> dict[str, Any]:
        """What this network's preprocessing adds to the shared one (``preprocess_for`` options)."""
        options = getattr(config, "preprocess_options", None)
        return options() if options is not None else {}

    def loss_options(self, config: Any) -> dict[str, Any]:
        """What this network's loss adds to the shared one (``segmentation_loss`` options: per-class
        weights, the auxiliary weight)."""
        options = getattr(config, "loss_options", None)
        return options() if options is not None else {}


def _mae_of_run(stored: Mapping[str, Any], where: str) -> TrainedNetwork | None:
    """The masked autoencoder of a ``pretrain`` run (its stored ``model`` section)."""
    if "task" in stored or _is_gapfill_run(stored):
        return None
    try:
        return TrainedNetwork(MAEConfig.from_dict(stored.get("model")))
    except ConfigError as error:
        raise ConfigError(f"{where}: the stored model config does not load ({error})") from None


MAESTRO_ENCODER = ModelType(
    "maestro-encoder",
    EncoderConfig,
    "",
    "feature-extraction",
    "MAESTRO encoder: multimodal, multitemporal inputs to per-modality token maps",
)
MAESTRO_MAE = ModelType(
    "maestro-mae",
    MAEConfig,
    "encoder.",
    "feature-extraction",
    "MAESTRO masked autoencoder: encoder, decoders and pixel heads (pretraining state)",
    from_run=_mae_of_run,
)
MAESTRO_SEGMENTER = ModelType(
    "maestro-segmenter",
    SegmenterConfig,
    "encoder.",
    "image-segmentation",
    "MAESTRO encoder fine-tuned with a segmentation head",
    needs_task=True,
    from_run=lambda stored, where: segmenter_of_run(stored, where, "maestro"),
)
SWIN_UTAE_SEGMENTER = ModelType(
    "swin-utae-segmenter",
    SwinUTAEConfig,
    None,
    "image-segmentation",
    "Swin-UTAE, the supervised FLAIR-HUB baseline: a Swin per single-date input, a U-TAE per time "
    "series, fused per stage into a UPerNet decoder",
    needs_task=True,
    from_run=lambda stored, where: segmenter_of_run(stored, where, "swin-utae"),
    maestro_card=False,
)
UNET_SEGMENTER = ModelType(
    "unet-segmenter",
    UNetSegmenterConfig,
    None,
    "image-segmentation",
    "U-Net, the supervised aerial baseline of FLAIR #2: an smp U-Net (ResNet-34) on the single-date "
    "images' bands (aerial R, G, B, NIR and elevation)",
    needs_task=True,
    from_run=lambda stored, where: segmenter_of_run(stored, where, "unet"),
    maestro_card=False,
)
UTT_SEGMENTER = ModelType(
    "utt-segmenter",
    UTTSegmenterConfig,
    None,
    "image-segmentation",
    "U-T&T, the supervised two-branch baseline of FLAIR #2: a U-Net on the aerial images and a U-TAE "
    "on the Sentinel-2 super-patch, whose maps are added to the U-Net's encoder levels",
    needs_task=True,
    from_run=lambda stored, where: segmenter_of_run(stored, where, "utt"),
    maestro_card=False,
    zone_refusal="U-T&T reads, around each 102.4 m patch, a Sentinel-2 super-patch four times its "
    "side (40 px at 10 m, FLAIR #2's layout), which predict's zone tiles do not provide; map with a "
    "U-Net, Swin-UTAE or MAESTRO segmenter, or test U-T&T on FLAIR #2 shards (finetune --eval-only)",
)


def _is_gapfill_run(stored: Mapping[str, Any]) -> bool:
    """A ``gapfill`` run: its ``model`` section says how many clear dates a step holds out."""
    model = stored.get("model")
    return "task" not in stored and isinstance(model, Mapping) and "held_out_fraction" in model


def _gapfill_of_run(stored: Mapping[str, Any], where: str) -> TrainedNetwork | None:
    """The cloud-removal network of a ``gapfill`` run (its resolved ``model`` section)."""
    if not _is_gapfill_run(stored):
        return None
    model = stored["model"]
    try:
        mae = MAEConfig.from_dict(model.get("mae"))
        config = GapFillConfig(mae, model.get("target", "s2"), model.get("cloud_threshold", 0.0))
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{where}: the stored cloud-removal config does not load ({error})") from None
    return TrainedNetwork(config)


MAESTRO_GAPFILL = ModelType(
    "maestro-gapfill",
    GapFillConfig,
    "mae.encoder.",
    "image-to-image",
    "MAESTRO masked autoencoder taught to restore cloudy Sentinel-2 dates from the other dates and "
    "sensors (cloud removal)",
    from_run=_gapfill_of_run,
)

MODEL_TYPES: dict[str, ModelType] = {
    row.name: row
    for row in (
        MAESTRO_ENCODER,
        MAESTRO_MAE,
        MAESTRO_SEGMENTER,
        SWIN_UTAE_SEGMENTER,
        UNET_SEGMENTER,
        UTT_SEGMENTER,
        MAESTRO_GAPFILL,
    )
}
"""Every model type by ``model_type``."""


def get_model_type(name: str) -> ModelType:
    """Registry lookup with an error that lists the known types."""
    try:
        return MODEL_TYPES[name]
    except KeyError:
        raise ConfigError(f"unknown model_type {name!r}; known types: {list(MODEL_TYPES)}") from None


def register_model_type(name: str) -> Callable[[C], C]:
    """Class decorator: ``cls`` is the network of model type ``name`` (built as ``cls(config)``)."""
    row = get_model_type(name)

    def register(cls: C) -> C:
        known = _CLASSES.get(row.name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ConfigError(
                f"{row.name} is already the type of {known.__qualname__}, not {cls.__qualname__}"
            )
        _CLASSES[row.name] = cls
        return cls

    return register


def model_type_of(model: nn.Module | type) -> ModelType:
    """The row of a network (or network class); a class outside the registry is an error."""
    cls = model if isinstance(model, type) else type(model)
    for name, registered in _CLASSES.items():
        if issubclass(cls, registered):
            return MODEL_TYPES[name]
    known = [registered.__name__ for registered in _CLASSES.values()]
    raise ConfigError(f"{cls.__name__} is not a publishable model; publishable classes: {known}")


def model_type_of_config(config: Any) -> ModelType:
    """The row whose config class ``config`` is."""
    for row in MODEL_TYPES.values():
        if type(config) is row.config_class:
            return row
    raise ConfigError(
        f"{type(config).__name__} is not the config of a model type; known: {list(MODEL_TYPES)}"
    )


def trained_network(stored: Mapping[str, Any], where: str) -> tuple[ModelType, TrainedNetwork]:
    """The type and network a training run (its stored config) trained."""
    for row in MODEL_TYPES.values():
        if row.from_run is not None and (network := row.from_run(stored, where)) is not None:
            return row, network
    raise ConfigError(f"{where}: the stored run config describes none of {list(MODEL_TYPES)}")
