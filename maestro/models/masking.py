"""MAE masking: exactly round(ratio * L) masked tokens per sequence, structured priors first.

Masking runs per sequence of the fusion plan (see :mod:`maestro.models.fusion`): per sample and
group in ``mod``/``group`` mode, per frame in ``shared``/``monotemp`` mode. Which tokens are
masked is decided by one score per token, highest first:

1. padding (dates with ``valid=False``): never visible as long as there are enough mask slots;
2. tokens chosen by the structured priors (``mod``/``group`` only), OR-combined: a whole modality
   of a multi-modality group, a whole date, a whole token band group, a token position across
   dates. Priors that (with padding) would cover a sample's whole group are rejected: of
   :data:`PRIOR_DRAWS` candidate sets drawn at once, each sample takes the first that leaves part
   of its group uncovered (none at all, i.e. random masking, in the rare case that every candidate
   covers it);
3. everything else, in random order (random fill, or random trim when priors chose too many).

The count per sequence is fixed, so visible tokens of a sequence batch have one length and are
gathered without padding. When a sample has fewer valid tokens than visible slots, padding tokens
end up visible; the encoder then receives a key padding mask.

Randomness comes from one generator for the batch (training: masks tied to step and rank), or
from :class:`SampleGenerators`, one per sample (validation: each sample's mask depends on that
sample alone, so a loss summed over ranks equals the single-process one, whatever the batching).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from maestro.models.fusion import SequenceSpec, TokenLayout, group_tokens, ungroup_tokens

PRIOR_OFFSET = 2.0
PADDING_OFFSET = 4.0
"""Score offsets above the uniform [0, 1) random part, so the three tiers never interleave."""

PRIOR_DRAWS = 16
"""Candidate prior sets drawn at once per sample; the first that does not cover the sample's group
(with padding) is used. Taking the first acceptable of R i.i.d. draws is the rejection loop
"redraw while covered", truncated at R, computed without a host sync. The truncation is rare: with
the default priors (p = 0.25) an unpadded default group is covered by one draw with probability at
most ~0.064 (both S1 orbits dropped), so all 16 cover it with ~1e-19; and since a token is hit by
at most four priors, any group with a valid token left (even one) is covered by a draw with
probability at most 1 - 0.75**4 ~ 0.68, and by all 16 with at most ~2e-3. Then that sample's group
is masked at random for the step (counts unchanged), as the old loop did after its last redraw
(and still does when padding alone covers the group)."""


@dataclass(frozen=True)
class MaskPriors:
    """Probabilities of the structured priors (each drawn independently per sample and unit)."""

    modality: float = 0.25
    date: float = 0.25
    location: float = 0.25
    band_group: float = 0.25


class SampleGenerators:
    """One random stream per sample, seeded from the sample's own key.

    A draw of batch-first shape ``(B, ...)`` takes row ``i`` from sample ``i``'s stream, so a
    sample's mask does not depend on which samples share its batch or rank. The candidate priors
    come from the same per-sample rows (one fixed-size draw per batch), so validation selects
    them as training does, without a redraw loop: a sample's candidates, and which of them it
    takes, depend on its own stream alone.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str):
        if not seeds:
            raise ValueError("SampleGenerators needs at least one seed")
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]

    @classmethod
    def from_keys(cls, keys: Sequence[str], seed: int, device: torch.device | str) -> SampleGenerators:
        """Streams seeded from text keys (patch ids) and a run seed, stable across processes."""
        return cls([zlib.crc32(f"{seed}:{key}".encode()) for key in keys], device)

    @torch.compiler.disable
    def rand(self, shape: tuple[int, ...]) -> Tensor:
        if shape[0] != len(self.generators):
            raise ValueError(f"a draw of shape {shape} for {len(self.generators)} samples")
        return torch.stack([torch.rand(shape[1:], device=self.device, generator=g) for g in self.generators])


Randomness = torch.Generator | SampleGenerators | None
"""Where masks draw from: one generator for the batch, one per sample, or the global RNG."""


def _uniform(shape: tuple[int, ...], device: torch.device, generator: Randomness) -> Tensor:
    """``torch.rand``; the generator is passed only when there is one, because under
    ``torch.compile`` (2.11) ``torch.rand(..., generator=None)`` with a symbolic size fails to trace."""
    if generator is None:
        return torch.rand(shape, device=device)
    if isinstance(generator, SampleGenerators):
        return generator.rand(shape).to(device)
    return torch.rand(shape, device=device, generator=generator)


def _uniforms(
    shapes: Sequence[tuple[int, ...]], batch_size: int, device: torch.device, generator: Randomness
) -> list[Tensor]:
    """Uniform ``(B, *shape)`` tensors, one per shape, from a single batch-first draw: one RNG
    kernel instead of one per tensor, and under ``torch.compile`` with a ``torch.Generator``
    (which Dynamo cannot trace) one graph break instead of one per tensor. Row ``b`` of every
    tensor is sample ``b``'s, so :class:`SampleGenerators` apply."""
    sizes = [math.prod(shape) for shape in shapes]
    flat = _uniform((batch_size, sum(sizes)), device, generator)
    return [part.unflatten(1, shape) for part, shape in zip(flat.split(sizes, dim=1), shapes, strict=True)]


def num_masked(length: int, ratio: float) -> int:
    """``round(ratio * length)`` with Python's ties-to-even, as the reference counts (150 tokens at
    0.75 -> 112), capped so that at least one token stays visible."""
    return max(0, min(round(ratio * length), length - 1))


def draw_priors(
    layouts: Mapping[str, TokenLayout],
    group_sizes: Mapping[str, int],
    batch_size: int,
    priors: MaskPriors,
    device: torch.device,
    generator: Randomness = None,
) -> dict[str, Tensor]:
    """One draw of the OR-combined structured priors, ``{modality: (B, T, G, N) bool}``
    (:func:`sample_mask` draws its candidates the same way, several at once).

    A prior only applies where it is structural: the modality prior in sequences holding several
    modalities (``group_sizes``), the date prior for time series, the band-group prior with
    several band groups. The location prior is drawn per modality on its own token grid.
    """
    units = _prior_units(layouts, group_sizes)
    uniform = _uniforms([(1, *shape) for _, _, shape in units], batch_size, device, generator)
    return _combine_priors(layouts, units, uniform, priors)


PriorUnits = list[tuple[str, str, tuple[int, int, int]]]
"""(modality, prior, (T, G, N) shape of the prior's independent units in one draw)."""


def _prior_units(layouts: Mapping[str, TokenLayout], group_sizes: Mapping[str, int]) -> PriorUnits:
    """The priors that apply to each modality (see :func:`draw_priors`) and their unit shapes."""
    units: PriorUnits = []
    for key, layout in layouts.items():
        units.append((key, "location", (1, 1, layout.num_patches)))
        if group_sizes[key] > 1:
            units.append((key, "modality", (1, 1, 1)))
        if layout.num_dates > 1:
            units.append((key, "date", (layout.num_dates, 1, 1)))
        if layout.num_groups > 1:
            units.append((key, "band_group", (1, layout.num_groups, 1)))
    return units


def _combine_priors(
    layouts: Mapping[str, TokenLayout], units: PriorUnits, uniform: Sequence[Tensor], priors: MaskPriors
) -> dict[str, Tensor]:
    """Uniforms ``(B, draws, T, G, N)`` per unit -> ``draws`` draws of the OR-combined priors,
    ``{modality: (draws * B, T, G, N) bool}``, draw-major: row ``r * B + b`` is sample ``b``'s
    draw ``r``."""
    chosen: dict[str, Tensor] = {}
    for (key, prior, _), u in zip(units, uniform, strict=True):
        hit = rearrange(u < getattr(priors, prior), "b r t g n -> r b t g n")
        chosen[key] = chosen[key] | hit if key in chosen else hit
    for key, layout in layouts.items():
        draws, batch_size = chosen[key].shape[:2]
        shape = (draws, batch_size, layout.num_dates, layout.num_groups, layout.num_patches)
        chosen[key] = rearrange(chosen[key].expand(shape), "r b t g n -> (r b) t g n")
    return chosen


def sample_mask(
    plan: Sequence[SequenceSpec],
    layouts: Mapping[str, TokenLayout],
    padding: Mapping[str, Tensor],
    ratio: float,
    priors: MaskPriors | None,
    generator: Randomness = None,
    prior_draws: int = PRIOR_DRAWS,
) -> dict[str, Tensor]:
    """Token masks ``{modality: (B, T, G, N) bool}`` (True = masked); see the module docstring.

    ``padding`` holds ``(B, T, G, N)`` bool (True = padded date). ``priors=None`` gives plain
    random masking (the frame-wise fusion modes). ``prior_draws``: candidate prior sets per sample
    (:data:`PRIOR_DRAWS`). Fixed shapes and no data-dependent control flow: nothing here waits
    for the device, and ``torch.compile`` traces it whole with the global RNG (``generator=None``);
    a ``torch.Generator`` or :class:`SampleGenerators` breaks the graph at the one random draw
    only, which Dynamo (2.11) cannot trace.
    """
    if prior_draws < 1:
        raise ValueError(f"prior_draws must be at least 1, got {prior_draws}")
    if priors is not None and any(spec.framewise for spec in plan):
        raise ValueError("structured priors apply to whole-sequence fusion (mod/group) only")
    first = next(iter(padding.values()))
    batch_size, device = first.shape[0], first.device
    padded = group_tokens(padding, plan)
    group_sizes = {m: len(spec.members) for spec in plan for m in spec.members}
    units = _prior_units(layouts, group_sizes) if priors is not None else []
    # One draw for all: the random order per modality, then the candidate priors; batch-first, so
    # per-sample streams apply in every fusion mode.
    uniform = _uniforms(
        [tuple(p.shape[1:]) for p in padding.values()] + [(prior_draws, *shape) for _, _, shape in units],
        batch_size,
        device,
        generator,
    )
    orders = group_tokens(dict(zip(padding, uniform[: len(padding)], strict=True)), plan)

    if priors is None:
        chosen = [torch.zeros_like(p) for p in padded]
    else:
        drawn = _combine_priors(layouts, units, uniform[len(padding) :], priors)
        chosen = [
            _first_uncovering(rearrange(c, "(r b) length -> r b length", r=prior_draws), p)
            for c, p in zip(group_tokens(drawn, plan), padded, strict=True)
        ]

    masks = []
    for pad, prior, order in zip(padded, chosen, orders, strict=True):
        scores = order + PRIOR_OFFSET * prior + PADDING_OFFSET * pad
        masked = scores.topk(num_masked(pad.shape[1], ratio), dim=1).indices
        masks.append(torch.zeros_like(pad).scatter(1, masked, True))
    return ungroup_tokens(masks, plan, layouts)


def _first_uncovering(candidates: Tensor, padded: Tensor) -> Tensor:
    """Per sample, the first of the candidate prior sets ``candidates (R, B, L)`` that, with
    ``padded (B, L)``, leaves a token of the sequence uncovered; all False (random masking) if
    none does.

    The first acceptable of R i.i.d. draws has the distribution of "redraw while covered" (up to
    the truncation at R, see :data:`PRIOR_DRAWS`); a one-hot of it by cumulative sum keeps the
    choice elementwise, with no host sync.
    """
    uncovered = ~(candidates | padded).all(dim=-1)  # (R, B)
    first = uncovered & (uncovered.cumsum(dim=0) == 1)
    return (candidates & rearrange(first, "r b -> r b 1")).any(dim=0)


def visible_indices(mask: Tensor, num_visible: int) -> Tensor:
    """``(rows, L)`` mask with ``num_visible`` False per row -> their indices, in token order."""
    return torch.argsort(mask.to(torch.uint8), dim=1, stable=True)[:, :num_visible]


def gather_tokens(sequence: Tensor, indices: Tensor) -> Tensor:
    """``(rows, L, ...)`` -> ``(rows, K, ...)`` rows' tokens at ``indices (rows, K)``."""
    index = indices.view(*indices.shape, *([1] * (sequence.ndim - 2))).expand(
        *indices.shape, *sequence.shape[2:]
    )
    return sequence.gather(1, index)


def scatter_tokens(visible: Tensor, indices: Tensor, length: int) -> Tensor:
    """Inverse of :func:`gather_tokens`: place ``visible (rows, K, D)`` in zeros ``(rows, length, D)``."""
    rows, _, width = visible.shape
    full = visible.new_zeros((rows, length, width))
    return full.scatter(1, indices[..., None].expand(-1, -1, width), visible)
