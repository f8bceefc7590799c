"""One resolver names every weights source: run, checkpoint, model folder, ``hf:org/name[@rev]`` and
bare ``org/name`` (where an existing local folder of that name wins), from names alone (no torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from maestro.errors import ConfigError
from maestro.hub.sources import parse_repo, resolve_source


def _run(root: Path) -> Path:
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "step0000002.ckpt").write_bytes(b"")
    (root / "config.yaml").write_text("model: {}\n")
    return root


def _folder(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text("{}")
    (root / "model.safetensors").write_bytes(b"")
    return root


def test_a_run_directory(tmp_path):
    run = _run(tmp_path / "run")
    source = resolve_source(run)
    assert (source.kind, source.path, source.run) == ("run", run, run)


def test_a_checkpoint_inside_a_run_or_alone(tmp_path):
    run = _run(tmp_path / "run")
    ckpt = run / "checkpoints" / "step0000002.ckpt"
    source = resolve_source(ckpt)
    assert (source.kind, source.path, source.run) == ("checkpoint", ckpt, run)
    (run / "best.ckpt").write_bytes(b"")
    assert resolve_source(run / "best.ckpt").run == run
    alone = tmp_path / "alone.ckpt"
    alone.write_bytes(b"")
    assert resolve_source(alone).run is None


def test_a_model_folder(tmp_path):
    folder = _folder(tmp_path / "folder")
    source = resolve_source(folder)
    assert (source.kind, source.path, source.run) == ("folder", folder, None)


def test_hf_ids_with_and_without_a_revision(tmp_path):
    source = resolve_source("hf:org/name@v1.0")
    assert (source.kind, source.repo_id, source.revision, source.explicit_hub) == (
        "hub",
        "org/name",
        "v1.0",
        True,
    )
    assert source.spec == "org/name@v1.0"
    assert resolve_source("hf:org/name", revision="main").spec == "org/name@main"
    with pytest.raises(ConfigError, match="keep one"):
        resolve_source("hf:org/name@v1", revision="v2")
    with pytest.raises(ConfigError, match="not a Hub model id"):
        resolve_source("hf:just-a-name")


def test_a_bare_org_name_is_the_hub_unless_a_local_path_has_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = resolve_source("org/name@v2")
    assert (source.kind, source.spec, source.explicit_hub) == ("hub", "org/name@v2", False)
    _folder(tmp_path / "org" / "name")
    local = resolve_source("org/name")
    assert (local.kind, local.path) == ("folder", Path("org/name"))
    assert resolve_source("hf:org/name").kind == "hub"  # hf: always means the Hub


def test_what_a_user_does_not_take_is_refused_with_what_it_takes(tmp_path):
    run = _run(tmp_path / "run")
    with pytest.raises(
        ConfigError,
        match=r"is a run directory; from_pretrained takes a model folder or Hub model.*maestro publish",
    ):
        resolve_source(run, kinds=("folder", "hub"), user="from_pretrained")
    with pytest.raises(FileNotFoundError, match="no such run directory or training checkpoint$"):
        resolve_source("org/name", kinds=("run", "checkpoint"), user="maestro publish")
    with pytest.raises(FileNotFoundError, match="no such run directory or model folder, and not a Hub id"):
        resolve_source(tmp_path / "a" / "b" / "c", kinds=("run", "folder", "hub"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a run directory"):
        resolve_source(tmp_path / "empty")
    with pytest.raises(ConfigError, match="applies to Hub repos"):
        resolve_source(run, revision="main")


def test_parse_repo():
    assert parse_repo("org/name") == ("org/name", None)
    assert parse_repo("org/name@abc") == ("org/name", "abc")
    for bad in ("name", "org/name@", "a/b/c", "/name"):
        with pytest.raises(ConfigError):
            parse_repo(bad)


def test_the_resolver_loads_without_torch():
    code = "import sys, maestro.hub.sources; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
