"""The reference MAESTRO fixture (a reduced checkpoint written by IGN's reference code, one input
batch and the reference's outputs), shared by the ``test_reference_*`` modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from maestro.reference import sources

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "maestro_ref"
"""Kept in the repository (7 MB; gzip saves ~10 %, not worth a decompression step), so every
clone runs the equivalence tests instead of skipping them."""
CHECKPOINT = FIXTURE / "ref_tiny.ckpt"
MODALITIES = ("aerial", "dem", "s2", "s1_asc", "s1_des")
STREAMS = ("aerial", "dem", "s2", "s1")
OVERRIDES = {"aerial": {"image_size": 128}, "dem": {"image_size": 128}}
"""The fixture's aerial and elevation rasters are 128 px (the registry's are 512)."""
DECODER_HEADS = 2
"""The fixture's decoder has 2 heads of 8 (the reference sizes use heads of 32)."""
ATOL, RTOL = 2e-5, 1e-5
"""Tolerance of the fixture's README for a port with the reference's float32 date arithmetic."""
REPO = "IGNF/MAESTRO_FLAIR-HUB_base"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CARD = "---\nlicense: etalab-2.0\ntags:\n- earth-observation\n---\n# MAESTRO base\n"
"""A Hub repo of reference weights as :func:`fake_hub` serves it: name, commit and model card."""


def require_fixture() -> Path:
    """The fixture folder; its absence is a broken clone, not a reason to skip."""
    if not CHECKPOINT.is_file():
        pytest.fail(f"reference fixture not found at {FIXTURE}: the clone is incomplete")
    return FIXTURE


def reference_outputs() -> dict[str, torch.Tensor]:
    return load_file(str(require_fixture() / "outputs.safetensors"))


def model_batch() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The fixture batch in the suite's model-sample form: inputs scaled as the data pipeline
    scales them (elevation channel 2 = 30 x (DSM - DTM)), ``times`` rows of [years since the
    reference date, day of year from 0, hour]."""
    raw = load_file(str(require_fixture() / "inputs.safetensors"))
    inputs = {key: raw[key].clone() for key in MODALITIES}
    dem = inputs["dem"]
    dem[:, :, 1] = 30.0 * (dem[:, :, 0] - dem[:, :, 1])
    reference = raw["ref_date"].double()
    times = {}
    for key in MODALITIES:
        dates = raw[f"{key}_dates"].double()
        years = (dates[..., 0] - reference[..., 0]) + (dates[..., 1] - reference[..., 1]) / 365.25
        times[key] = torch.stack([years, dates[..., 1] - 1, dates[..., 2]], dim=-1).float()
    return inputs, times


def max_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return (ours.double() - theirs.double()).abs().max().item()


def fake_hub(monkeypatch: pytest.MonkeyPatch, calls: list[str]) -> None:
    """Hub sources resolve to the fixture checkpoint at :data:`COMMIT` with :data:`CARD`, without a
    network; each resolution is recorded in ``calls`` as ``repo@revision``."""

    def resolve(repo_id: str, revision: str | None) -> sources.SourceInfo:
        calls.append(f"{repo_id}@{revision}")
        return sources.SourceInfo(
            path=CHECKPOINT, repo_id=repo_id, revision=COMMIT, filename="maestro_base.ckpt", card=CARD
        )

    monkeypatch.setattr(sources, "resolve_hub_checkpoint", resolve)
