"""`maestro import-reference`, Hub sources, the model card and `finetune --init hf:...` conversion."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from einops import rearrange
from reference_fixture import CHECKPOINT, DECODER_HEADS, OVERRIDES, model_batch, require_fixture

import maestro.reference.convert as reference
from maestro.errors import ConfigError
from maestro.hub.folder import read_model_folder
from maestro.hub.sources import load_encoder_weights
from maestro.models.config import EncoderConfig, MAEConfig
from maestro.models.mae import MaestroMAE
from maestro.models.pixels import PixelHead
from maestro.reference.cli import add_import_reference_parser
from maestro.reference.convert import SourceInfo, import_reference
from maestro.reference.plan import ConversionOptions, _pixel_rows
from maestro.reference.unpickle import read_reference_checkpoint as read_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = "IGNF/MAESTRO_FLAIR-HUB_base"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CARD = "---\nlicense: etalab-2.0\ntags:\n- earth-observation\n---\n# MAESTRO base\n"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="maestro")
    add_import_reference_parser(root.add_subparsers(dest="command", required=True))
    return root


def run(*argv: str) -> int:
    args = parser().parse_args(list(argv))
    return args.func(args)


def test_cli_writes_a_model_folder_with_a_card(tmp_path, capsys):
    require_fixture()
    out = tmp_path / "converted"
    code = run(
        "import-reference",
        str(CHECKPOINT),
        "--out",
        str(out),
        "--image-size",
        "aerial=128",
        "--image-size",
        "dem=128",
        "--decoder-heads",
        str(DECODER_HEADS),
    )
    assert code == 0 and f"wrote {out}" in capsys.readouterr().out
    folder = read_model_folder(out)
    assert folder.model_type == "maestro-mae"
    config = MAEConfig.from_dict(folder.config)
    assert config.encoder.specs["aerial"].image_size == 128 and config.decoder.num_heads == DECODER_HEADS
    provenance = folder.extra["converted_from"]
    assert provenance["file"] == "ref_tiny.ckpt" and provenance["weights"].startswith("EMA")
    assert len(provenance["sha256"]) == 64
    card = (out / "README.md").read_text()
    assert "ref_tiny.ckpt" in card and "github.com/IGNF/MAESTRO" in card
    assert "The licence is not stated in the checkpoint" in card  # a local file does not say it
    # the pretraining decoder loads and runs on the fixture batch
    mae = MaestroMAE(config)
    mae.load_state_dict(folder.state, strict=True)
    result = mae(*model_batch(), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(result["loss"])

    assert run("import-reference", str(CHECKPOINT), "--out", str(out)) == 2  # exists: needs --force
    assert (
        run("import-reference", str(CHECKPOINT), "--out", str(out), "--force", "--image-size", "aerial") == 2
    )
    assert run("import-reference", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x")) == 2


def test_cli_converts_the_head_into_a_segmenter(tmp_path):
    require_fixture()
    out = tmp_path / "segmenter"
    code = run(
        "import-reference",
        str(CHECKPOINT),
        "--out",
        str(out),
        "--model-type",
        "maestro-segmenter",
        "--weights",
        "model",
        "--image-size",
        "aerial=128",
        "--image-size",
        "dem=128",
    )
    assert code == 0
    document = json.loads((out / "config.json").read_text())
    assert document["model_type"] == "maestro-segmenter" and document["task"]["name"] == "lc"
    assert document["converted_from"]["weights"].startswith("trained")


def test_a_reduced_checkpoint_asks_for_the_decoder_heads_by_its_flag(tmp_path, caplog):
    """The fixture's 16-wide decoder is no multiple of the reference's 32-wide heads: the error
    names the command-line flag, and the keyword for Python callers."""
    require_fixture()
    sizes = ("--image-size", "aerial=128", "--image-size", "dem=128")
    with caplog.at_level("ERROR"):
        assert run("import-reference", str(CHECKPOINT), "--out", str(tmp_path / "mae"), *sizes) == 2
    assert "--decoder-heads" in caplog.text and "decoder_heads" in caplog.text
    with pytest.raises(ConfigError, match=r"--decoder-heads N \(ConversionOptions\.decoder_heads"):
        import_reference(CHECKPOINT, tmp_path / "python", ConversionOptions(overrides=OVERRIDES))
    segmenter = ("--model-type", "maestro-segmenter", "--target", "other")
    caplog.clear()
    with caplog.at_level("ERROR"):
        assert (
            run("import-reference", str(CHECKPOINT), "--out", str(tmp_path / "seg"), *sizes, *segmenter) == 2
        )
    assert "no segmentation head 'other'" in caplog.text and "--target" in caplog.text


def test_the_cli_says_which_sizes_it_assumed_and_refuses_a_contradicted_segmenter(tmp_path, caplog):
    require_fixture()
    with caplog.at_level("INFO"):
        code = run(
            "import-reference", str(CHECKPOINT), "--out", str(tmp_path / "mae"), "--decoder-heads", "2"
        )
    assert code == 0
    assert "assumed from the registry: image size aerial 512 px" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("'cosia'" in w and "--image-size aerial=256" in w for w in warnings)
    assert "assumed from the registry" in (tmp_path / "mae" / "README.md").read_text()
    caplog.clear()
    with caplog.at_level("ERROR"):
        code = run(
            "import-reference",
            str(CHECKPOINT),
            "--out",
            str(tmp_path / "seg"),
            "--model-type",
            "maestro-segmenter",
        )
    assert code == 2 and "--image-size aerial=256" in caplog.text
    assert not (tmp_path / "seg" / "model.safetensors").exists()


def test_the_readme_documents_the_head_count_flags():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    paragraph = readme[readme.index("maestro import-reference hf:") :]
    paragraph = paragraph[: paragraph.index("**Licence.**")]
    for flag in ("--num-heads", "--decoder-heads", "--image-size", "--num-dates"):
        assert flag in paragraph, flag
        assert flag in _import_help(), flag  # and the parser has it


def _import_help() -> str:
    root = argparse.ArgumentParser(prog="maestro")
    return add_import_reference_parser(root.add_subparsers(dest="command")).format_help()


def fake_hub(monkeypatch, calls: list[str]) -> None:
    def resolve(repo_id, revision):
        calls.append(f"{repo_id}@{revision}")
        return SourceInfo(
            path=CHECKPOINT, repo_id=repo_id, revision=COMMIT, filename="maestro_base.ckpt", card=CARD
        )

    monkeypatch.setattr(reference, "resolve_hub_checkpoint", resolve)


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


def test_finetune_init_converts_a_reference_hub_repo_once(tmp_path, monkeypatch):
    require_fixture()
    calls: list[str] = []
    fake_hub(monkeypatch, calls)
    monkeypatch.setenv("MAESTRO_CACHE", str(tmp_path / "cache"))

    def no_safetensors(spec, *args, **kwargs):
        raise ConfigError(f"Hub repo {spec} has no model.safetensors")

    monkeypatch.setattr("maestro.hub.remote.download", no_safetensors)
    first = load_encoder_weights(f"hf:{REPO}")
    assert first.config.date_offset == "float32" and first.config.day_of_year_origin == 1
    cached = tmp_path / "cache" / "reference" / f"IGNF--MAESTRO_FLAIR-HUB_base@{COMMIT}" / "ema"
    assert (cached / "model.safetensors").is_file()

    def must_not_convert(*args, **kwargs):
        raise AssertionError("converted again instead of using the cache")

    monkeypatch.setattr(reference, "read_reference_checkpoint", must_not_convert)
    second = load_encoder_weights(f"hf:{REPO}")
    assert second.state.keys() == first.state.keys()
    assert all(torch.equal(second.state[k], first.state[k]) for k in first.state)
    direct = reference.convert_checkpoint(
        read_checkpoint(CHECKPOINT), ConversionOptions(model_type="maestro-encoder")
    )
    assert all(torch.equal(direct.state[k], first.state[k]) for k in direct.state)


def test_a_hub_repo_without_a_reference_checkpoint_keeps_the_original_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MAESTRO_CACHE", str(tmp_path / "cache"))

    def no_safetensors(spec, *args, **kwargs):
        raise ConfigError("original: no model.safetensors")

    def no_checkpoint(repo_id, revision):
        raise ConfigError("Hub repo holds no .ckpt checkpoint")

    monkeypatch.setattr("maestro.hub.remote.download", no_safetensors)
    monkeypatch.setattr(reference, "resolve_hub_checkpoint", no_checkpoint)
    with pytest.raises(ConfigError, match="original: no model.safetensors"):
        load_encoder_weights("hf:org/plain")


def test_pixel_head_rows_follow_the_reference_channel_order():
    """The reference's reconstruction conv emits (p1, p2, band) per token; the suite's head
    (band, p1, p2): converted weights give the same pixels."""
    torch.manual_seed(0)
    bands, patch, width, grid = 3, 4, 16, 2
    weight, bias = torch.randn(bands * patch * patch, width, 1, 1), torch.randn(bands * patch * patch)
    tokens = torch.randn(1, 1, 1, grid * grid, width)  # (B, T, G, N, D)
    reference_out = torch.nn.functional.conv2d(
        rearrange(tokens[:, :, 0], "b t (h w) d -> (b t) d h w", h=grid), weight, bias
    )
    reference_pixels = rearrange(reference_out, "n (p1 p2 c) h w -> n c (h p1) (w p2)", p1=patch, p2=patch)

    spec = EncoderConfig(
        modalities=("spot",),
        overrides={"spot": {"bands": ("R", "G", "B"), "image_size": grid * patch}},
        size="tiny",
        depth=2,
        inter_depth=0,
    ).specs["spot"]
    head = PixelHead(spec, width)
    head.groups[0].weight.data = _pixel_rows(weight, bands, patch, "w")
    head.groups[0].bias.data = _pixel_rows(bias, bands, patch, "b")
    torch.testing.assert_close(head(tokens)[:, 0], reference_pixels)


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
    info = reference.resolve_hub_checkpoint("test-org/maestro-reference", None)
    assert (info.revision, info.filename, info.card) == (COMMIT, "maestro.ckpt", CARD)
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        reference.resolve_hub_checkpoint("test-org/never-downloaded", None)
