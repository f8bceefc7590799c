"""`maestro import-reference`: its flags, its messages and the folder it writes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from reference_fixture import CHECKPOINT, DECODER_HEADS, OVERRIDES, model_batch, require_fixture

from maestro.errors import ConfigError
from maestro.hub.folder import read_model_folder
from maestro.models.config import MAEConfig
from maestro.models.mae import MaestroMAE
from maestro.models.registry import MODEL_TYPES
from maestro.reference.cli import add_import_reference_parser
from maestro.reference.convert import import_reference
from maestro.reference.options import TARGET_TYPES, ConversionOptions

pytestmark = pytest.mark.usefixtures("single_thread")


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


def test_the_model_types_offered_are_the_converter_targets_and_folder_types():
    """One list of what the converter writes: the flag's choices are it, and a folder takes each."""
    root = argparse.ArgumentParser(prog="maestro")
    parser = add_import_reference_parser(root.add_subparsers(dest="command"))
    flag = next(action for action in parser._actions if action.dest == "model_type")
    assert tuple(flag.choices) == TARGET_TYPES and flag.default == "maestro-mae"
    assert set(TARGET_TYPES) <= set(MODEL_TYPES)
