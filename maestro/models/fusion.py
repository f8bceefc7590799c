"""Fusion modes as pure token regrouping around one transformer implementation.

Token tensors live per modality as ``(B, T, G, N, ...)`` (batch, dates, band groups, patches,
anything else: channels, nothing for masks). A fusion mode only decides how they are cut into
sequences and which encoder ("stream") each sequence goes through:

* ``shared``: every frame (modality, date, band group) is a sequence; one encoder for all.
  Frames of equal length are folded into the batch dimension together.
* ``monotemp``: same frames, one encoder per modality.
* ``mod``: one sequence per modality over all dates, band groups and patches; one encoder each.
* ``group``: like ``mod``, but modalities sharing a registry ``fusion_group`` are concatenated
  into one sequence with one encoder (``s1_asc`` + ``s1_des`` -> ``s1``).

:func:`plan_sequences` builds the static plan; :func:`group_tokens` and :func:`ungroup_tokens` are
exact inverses of each other for any trailing shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from maestro.models.config import FUSION_MODES, ModalitySpec

SHARED_STREAM = "shared"


@dataclass(frozen=True)
class TokenLayout:
    """Static token shape of one modality: dates x band groups x patches."""

    num_dates: int
    num_groups: int
    num_patches: int

    @property
    def num_tokens(self) -> int:
        return self.num_dates * self.num_groups * self.num_patches

    @classmethod
    def of(cls, spec: ModalitySpec) -> TokenLayout:
        return cls(spec.num_dates, spec.num_token_groups, spec.num_patches)


@dataclass(frozen=True)
class SequenceSpec:
    """One batch of sequences: which modalities it holds, how, and which stream encodes it."""

    stream: str
    members: tuple[str, ...]
    framewise: bool
    """True: rows are frames ``(b t g)`` of ``N`` tokens; False: rows are samples, tokens ``(t g n)``."""

    def length(self, layouts: Mapping[str, TokenLayout]) -> int:
        """Tokens per row."""
        if self.framewise:
            return layouts[self.members[0]].num_patches
        return sum(layouts[m].num_tokens for m in self.members)


def streams(mode: str, fusion_groups: Mapping[str, str]) -> list[str]:
    """Encoder names of a fusion mode, in modality order (``fusion_groups``: modality -> group)."""
    if mode == "shared":
        return [SHARED_STREAM]
    if mode in ("monotemp", "mod"):
        return list(fusion_groups)
    if mode == "group":
        return list(dict.fromkeys(fusion_groups.values()))
    raise ValueError(f"unknown fusion mode {mode!r}; expected one of {list(FUSION_MODES)}")


def plan_sequences(
    layouts: Mapping[str, TokenLayout], mode: str, fusion_groups: Mapping[str, str]
) -> tuple[SequenceSpec, ...]:
    """The sequences a fusion mode cuts the tokens of ``layouts`` (modality -> layout) into."""
    if mode == "shared":
        by_length: dict[int, list[str]] = {}
        for key, layout in layouts.items():
            by_length.setdefault(layout.num_patches, []).append(key)
        return tuple(SequenceSpec(SHARED_STREAM, tuple(keys), True) for keys in by_length.values())
    if mode == "monotemp":
        return tuple(SequenceSpec(key, (key,), True) for key in layouts)
    if mode == "mod":
        return tuple(SequenceSpec(key, (key,), False) for key in layouts)
    if mode == "group":
        members: dict[str, list[str]] = {}
        for key in layouts:
            members.setdefault(fusion_groups[key], []).append(key)
        return tuple(SequenceSpec(group, tuple(keys), False) for group, keys in members.items())
    raise ValueError(f"unknown fusion mode {mode!r}; expected one of {list(FUSION_MODES)}")


def group_tokens(tokens: Mapping[str, Tensor], plan: Sequence[SequenceSpec]) -> list[Tensor]:
    """Per-modality ``(B, T, G, N, ...)`` tensors -> one ``(rows, length, ...)`` tensor per sequence."""
    sequences = []
    for spec in plan:
        if spec.framewise:
            parts = [rearrange(tokens[m], "b t g n ... -> (b t g) n ...") for m in spec.members]
            sequences.append(torch.cat(parts, dim=0) if len(parts) > 1 else parts[0])
        else:
            parts = [rearrange(tokens[m], "b t g n ... -> b (t g n) ...") for m in spec.members]
            sequences.append(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])
    return sequences


def ungroup_tokens(
    sequences: Sequence[Tensor],
    plan: Sequence[SequenceSpec],
    layouts: Mapping[str, TokenLayout],
) -> dict[str, Tensor]:
    """Inverse of :func:`group_tokens`: sequences -> per-modality ``(B, T, G, N, ...)``."""
    if len(sequences) != len(plan):
        raise ValueError(f"{len(sequences)} sequences for a plan of {len(plan)}")
    tokens: dict[str, Tensor] = {}
    for spec, sequence in zip(plan, sequences, strict=True):
        frames_per_sample = [layouts[m].num_dates * layouts[m].num_groups for m in spec.members]
        if spec.framewise:
            batch = sequence.shape[0] // sum(frames_per_sample)
            parts = sequence.split([batch * f for f in frames_per_sample], dim=0)
            for key, part in zip(spec.members, parts, strict=True):
                layout = layouts[key]
                tokens[key] = rearrange(
                    part, "(b t g) n ... -> b t g n ...", t=layout.num_dates, g=layout.num_groups
                )
        else:
            parts = sequence.split([layouts[m].num_tokens for m in spec.members], dim=1)
            for key, part in zip(spec.members, parts, strict=True):
                layout = layouts[key]
                tokens[key] = rearrange(
                    part,
                    "b (t g n) ... -> b t g n ...",
                    t=layout.num_dates,
                    g=layout.num_groups,
                    n=layout.num_patches,
                )
    return {key: tokens[key] for key in layouts if key in tokens}
