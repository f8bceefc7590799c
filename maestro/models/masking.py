"""MAE masking: exactly round(ratio * L) masked tokens per sequence, structured priors first.

Masking runs per sequence of the fusion plan (see :mod:`maestro.models.fusion`): per sample and
group in ``mod``/``group`` mode, per frame in ``shared``/``monotemp`` mode. Which tokens are
masked is decided by one score per token, highest first:

1. padding (dates with ``valid=False``): never visible as long as there are enough mask slots;
2. tokens chosen by the structured priors (``mod``/``group`` only), OR-combined: a whole modality
   of a multi-modality group, a whole date, a whole token band group, a token position across
   dates; priors are redrawn for a sample while they (with padding) cover its whole group;
3. everything else, in random order (random fill, or random trim when priors chose too many).

The count per sequence is fixed, so visible tokens of a sequence batch have one length and are
gathered without padding. When a sample has fewer valid tokens than visible slots, padding tokens
end up visible; the encoder then receives a key padding mask.

Randomness comes from one generator for the batch (training: masks tied to step and rank), or
from :class:`SampleGenerators`, one per sample (validation: each sample's mask depends on that
sample alone, so a loss summed over ranks equals the single-process one, whatever the batching).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from maestro.models.fusion import SequenceSpec, TokenLayout, group_tokens, ungroup_tokens

PRIOR_OFFSET = 2.0
PADDING_OFFSET = 4.0
"""Score offsets above the uniform [0, 1) random part, so the three tiers never interleave."""


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
    sample's mask does not depend on which samples share its batch or rank.
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
    """One draw of the OR-combined structured priors, ``{modality: (B, T, G, N) bool}``.

    A prior only applies where it is structural: the modality prior in sequences holding several
    modalities (``group_sizes``), the date prior for time series, the band-group prior with
    several band groups. The location prior is drawn per modality on its own token grid.
    """

    def bernoulli(p: float, *shape: int) -> Tensor:
        return _uniform(shape, device, generator) < p

    chosen = {}
    for key, layout in layouts.items():
        dates, groups, patches = layout.num_dates, layout.num_groups, layout.num_patches
        prior = bernoulli(priors.location, batch_size, 1, 1, patches)
        if group_sizes[key] > 1:
            prior = prior | bernoulli(priors.modality, batch_size, 1, 1, 1)
        if dates > 1:
            prior = prior | bernoulli(priors.date, batch_size, dates, 1, 1)
        if groups > 1:
            prior = prior | bernoulli(priors.band_group, batch_size, 1, groups, 1)
        chosen[key] = prior.expand(batch_size, dates, groups, patches)
    return chosen


def sample_mask(
    plan: Sequence[SequenceSpec],
    layouts: Mapping[str, TokenLayout],
    padding: Mapping[str, Tensor],
    ratio: float,
    priors: MaskPriors | None,
    generator: Randomness = None,
    max_redraws: int = 100,
) -> dict[str, Tensor]:
    """Token masks ``{modality: (B, T, G, N) bool}`` (True = masked); see the module docstring.

    ``padding`` holds ``(B, T, G, N)`` bool (True = padded date). ``priors=None`` gives plain
    random masking (the frame-wise fusion modes).
    """
    first = next(iter(padding.values()))
    batch_size, device = first.shape[0], first.device
    padded = group_tokens(padding, plan)
    # The random order is drawn per modality in batch-first layout (so per-sample streams apply
    # in every fusion mode), and before the priors, whose redraws vary in number between batches.
    orders = group_tokens(
        {key: _uniform(tuple(p.shape), device, generator) for key, p in padding.items()}, plan
    )

    if priors is None:
        chosen = [torch.zeros_like(p) for p in padded]
    else:
        group_sizes = {m: len(spec.members) for spec in plan for m in spec.members}

        def draw() -> list[Tensor]:
            return group_tokens(
                draw_priors(layouts, group_sizes, batch_size, priors, device, generator), plan
            )

        chosen = _redraw_covered(draw(), padded, draw, max_redraws)

    masks = []
    for pad, prior, order in zip(padded, chosen, orders, strict=True):
        scores = order + PRIOR_OFFSET * prior + PADDING_OFFSET * pad
        masked = scores.topk(num_masked(pad.shape[1], ratio), dim=1).indices
        masks.append(torch.zeros_like(pad).scatter(1, masked, True))
    return ungroup_tokens(masks, plan, layouts)


@torch.compiler.disable
def _redraw_covered(
    chosen: list[Tensor], padded: list[Tensor], draw: Callable[[], list[Tensor]], max_redraws: int
) -> list[Tensor]:
    """Redraw the priors of samples whose group they cover (with padding) entirely.

    A data-dependent loop with one host sync per draw, so it stays out of compiled graphs
    (``torch.compile`` traces the rest of :func:`sample_mask`).
    """
    for _ in range(max_redraws):
        covered = [(c | p).all(dim=1, keepdim=True) for c, p in zip(chosen, padded, strict=True)]
        if not bool(torch.stack([c.any() for c in covered]).any()):
            return chosen
        chosen = [torch.where(cov, new, c) for cov, new, c in zip(covered, draw(), chosen, strict=True)]
    # padding alone covers the group: nothing left to structure, fall back to random
    covered = [(c | p).all(dim=1, keepdim=True) for c, p in zip(chosen, padded, strict=True)]
    return [c & ~cov for c, cov in zip(chosen, covered, strict=True)]


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
