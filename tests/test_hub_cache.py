"""Loading from the Hugging Face cache offline: ``org/name``, ``@tag``, ``@commit``, ``hf:``, and the
errors for what is not there; pickles in a repo are refused without being unpickled."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from maestro.errors import ConfigError
from maestro.hub.folder import read_model_folder
from maestro.hub.remote import download
from maestro.models import MaestroEncoder, from_pretrained
from maestro.models.synthetic import tiny_config

MAIN = "a" * 40
TAGGED = "b" * 40
PICKLED = "c" * 40


class Armed:
    """Pickles to a call that creates ``marker``: loading it is running code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def armed_pickle(marker: Path) -> bytes:
    return pickle.dumps(Armed(marker))


def _snapshot(cache: Path, repo: str, commit: str, refs: tuple[str, ...] = ()) -> Path:
    """``models--org--name/snapshots/<commit>/`` with ``refs/<ref>`` files, as huggingface_hub lays them out."""
    storage = cache / ("models--" + repo.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for ref in refs:
        (storage / "refs").mkdir(exist_ok=True)
        (storage / "refs" / ref).write_text(commit)  # no newline: huggingface_hub reads it verbatim
    return snapshot


def _encoder(seed: int) -> MaestroEncoder:
    torch.manual_seed(seed)
    return MaestroEncoder(tiny_config().encoder).eval()


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline Hugging Face cache under tmp holding org/name at main (seed 0) and v1.0 (seed 1)."""
    home = tmp_path / "hf"
    cache = home / "hub"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _encoder(0).save_pretrained(_snapshot(cache, "org/name", MAIN, ("main",)), repo_id="org/name")
    _encoder(1).save_pretrained(_snapshot(cache, "org/name", TAGGED, ("v1.0",)), repo_id="org/name")
    return cache


def _same(model: torch.nn.Module, reference: torch.nn.Module) -> bool:
    ours, theirs = model.state_dict(), reference.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_org_name_resolves_main_in_the_cache(hub_cache):
    assert _same(from_pretrained("org/name"), _encoder(0))
    assert _same(MaestroEncoder.from_pretrained("hf:org/name"), _encoder(0))


def test_a_tag_and_a_commit_resolve_their_snapshot(hub_cache):
    assert _same(MaestroEncoder.from_pretrained("org/name@v1.0"), _encoder(1))
    assert _same(MaestroEncoder.from_pretrained(f"org/name@{TAGGED}"), _encoder(1))
    assert _same(MaestroEncoder.from_pretrained("org/name", revision="v1.0"), _encoder(1))
    assert _same(MaestroEncoder.from_pretrained(f"hf:org/name@{MAIN}"), _encoder(0))


def test_an_explicit_cache_dir_is_used(hub_cache, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(hub_cache, elsewhere)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    assert _same(from_pretrained("org/name@v1.0", cache_dir=elsewhere), _encoder(1))


def test_offline_and_not_cached_says_what_to_do(hub_cache):
    with pytest.raises(ConfigError) as error:
        from_pretrained("org/other")
    message = str(error.value)
    assert "org/other is not in the local Hugging Face cache" in message
    assert "HF_HUB_OFFLINE is set" in message and "HF_HOME" in message


def test_an_unknown_revision_lists_the_cached_ones(hub_cache):
    with pytest.raises(ConfigError) as error:
        from_pretrained("org/name@v9")
    message = str(error.value)
    assert "revision 'v9' of org/name is not in the local Hugging Face cache" in message
    assert "main" in message and "v1.0" in message and TAGGED in message


def test_a_pickle_only_snapshot_is_refused_without_unpickling(hub_cache, tmp_path):
    proof = tmp_path / "proof"
    pickle.loads(armed_pickle(proof))  # the payload is live: loading it does create its marker
    assert proof.exists()

    marker = tmp_path / "marker"
    snapshot = _snapshot(hub_cache, "org/pickled", PICKLED, ("main",))
    (snapshot / "config.json").write_text('{"model_type": "maestro-encoder", "config": {}}')
    (snapshot / "pytorch_model.bin").write_bytes(armed_pickle(marker))
    (snapshot / "modeling_maestro.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(
        ConfigError, match=r"has no model.safetensors \(it holds pickled weights \['pytorch_model.bin'\]\)"
    ):
        from_pretrained("org/pickled")
    assert not marker.exists()


def test_a_pickle_only_folder_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "marker"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "maestro-encoder", "config": {}}')
    (folder / "model.ckpt").write_bytes(armed_pickle(marker))
    with pytest.raises(ConfigError, match="only pickled weights"):
        read_model_folder(folder)
    with pytest.raises(ConfigError, match="never loaded"):
        from_pretrained(folder)
    assert not marker.exists()


def test_code_in_a_repo_is_never_run(hub_cache, tmp_path):
    marker = tmp_path / "marker"
    snapshot = hub_cache / "models--org--name" / "snapshots" / MAIN
    (snapshot / "modeling_maestro.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (snapshot / "pytorch_model.bin").write_bytes(armed_pickle(marker))
    assert _same(from_pretrained("org/name"), _encoder(0))
    assert not marker.exists()


def test_download_cli_finds_the_cache_through_hf_home(hub_cache, tmp_path):
    """A fresh process with only HF_HOME set (no patched constants) finds the same snapshot."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")}
    env.update(HF_HOME=str(hub_cache.parent), HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "maestro.cli", "download", "org/name@v1.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == hub_cache / "models--org--name" / "snapshots" / TAGGED
    assert download("org/name@v1.0") == hub_cache / "models--org--name" / "snapshots" / TAGGED


def test_finetune_starts_from_an_hf_id_in_the_offline_cache(
    hub_cache, tiny_pretrain_run, finetune_config, tmp_path
):
    """`finetune --init hf:org/run` with HF_HUB_OFFLINE=1: the published encoder, read from the cache."""
    from finetune.cli import run
    from finetune.stage import resolve
    from maestro.models.zoo import load_encoder_weights

    published = load_encoder_weights(tiny_pretrain_run)  # EMA weights of the run's newest checkpoint
    encoder = MaestroEncoder(published.config).eval()
    encoder.load_state_dict(published.state)
    encoder.save_pretrained(_snapshot(hub_cache, "org/run", "c" * 40, ("main",)), repo_id="org/run")

    config = finetune_config(
        tmp_path / "ft", "model.init=hf:org/run", "model.encoder=null", "trainer.max_epochs=1"
    )
    resolved, state = resolve(config)
    assert resolved.model.encoder == published.config
    assert state.keys() == published.state.keys() and all(
        torch.equal(state[k], published.state[k]) for k in state
    )
    scores = run(config)
    assert (tmp_path / "ft" / "test" / "metrics.json").is_file() and 0.0 <= scores.miou <= 1.0
