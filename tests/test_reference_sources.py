"""Where a reference checkpoint comes from: a Hub repo (its revision, card and licence), or the
Hugging Face cache when offline."""

from __future__ import annotations

import pytest
from reference_fixture import CARD, CHECKPOINT, COMMIT, OVERRIDES, REPO, fake_hub, require_fixture

from maestro.errors import ConfigError
from maestro.hub.folder import read_model_folder
from maestro.reference import sources
from maestro.reference.convert import import_reference
from maestro.reference.options import ConversionOptions

pytestmark = pytest.mark.usefixtures("single_thread")


def test_a_hub_source_names_repo_revision_and_licence(tmp_path, monkeypatch):
    require_fixture()
    calls: list[str] = []
    fake_hub(monkeypatch, calls)
    folder = import_reference(
        f"hf:{REPO}@v1",
        tmp_path / "out",
        ConversionOptions(model_type="maestro-encoder", overrides=OVERRIDES),
    )
    assert calls == [f"{REPO}@v1"]
    card = (folder / "README.md").read_text()
    assert REPO in card and COMMIT in card and "maestro_base.ckpt" in card
    assert "etalab-2.0, as stated on the source's model card" in card
    provenance = read_model_folder(folder).extra["converted_from"]
    assert (provenance["repo"], provenance["revision"]) == (REPO, COMMIT)
    assert provenance["licence"].startswith("etalab-2.0")


def test_offline_a_checkpoint_in_the_hugging_face_cache_is_used(tmp_path, monkeypatch):
    """No network call: the checkpoint and its card are taken from the Hub cache's snapshot."""
    require_fixture()
    from huggingface_hub import constants

    storage = tmp_path / "hub" / "models--test-org--maestro-reference"
    snapshot = storage / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(COMMIT)
    (snapshot / "maestro.ckpt").symlink_to(CHECKPOINT)
    (snapshot / "README.md").write_text(CARD)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    info = sources.resolve_hub_checkpoint("test-org/maestro-reference", None)
    assert (info.revision, info.filename, info.card) == (COMMIT, "maestro.ckpt", CARD)
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        sources.resolve_hub_checkpoint("test-org/never-downloaded", None)
