"""Streaming loader: exactly-once evaluation over ranks x workers, equal training epochs, URL
forms (manifest, brace pattern, ``pipe:``), preprocessing + collation, and loud errors."""

from __future__ import annotations

import io
import logging
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from fixtures_flairhub import write_flairhub_tree
from processes import live_children, running

from maestro.errors import ConfigError, DataError
from maestro.modalities import DEFAULT_INPUTS, with_companions
from shards.loader import default_preprocess, make_loader
from shards.manifest import read_manifest
from shards.writer import BuildConfig, build

LIGHT = ("spot", "s2", "s1_asc", "lc")
NUM_PATCHES = 9
IDS = [f"D001-2021_RA-S1-{i // 4:02d}_{i % 4}-0" for i in range(NUM_PATCHES)]


@pytest.fixture(scope="module")
def tree_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    write_flairhub_tree(root, with_companions((*DEFAULT_INPUTS, "spot", "lc")), {"train": IDS})
    return root


def _build(tree_root: Path, out: Path, max_count: int, modalities: tuple[str, ...] = LIGHT) -> Path:
    build(BuildConfig(root=tree_root, out=out, modalities=modalities, max_count=max_count, progress=False))
    return out


@pytest.fixture(scope="module")
def five_shards(tree_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tree_root, tmp_path_factory.mktemp("five"), 2)  # 2+2+2+2+1 samples


@pytest.fixture(scope="module")
def three_shards(tree_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tree_root, tmp_path_factory.mktemp("three"), 4)  # fewer shards than 2x2 slots


def ids_of(loader: object) -> list[str]:
    return [s["meta"]["patch_id"] for batch in loader for s in batch]  # type: ignore[attr-defined]


@pytest.mark.parametrize("shards", ["five_shards", "three_shards"])
@pytest.mark.parametrize("workers", [0, 2])
def test_eval_ranks_times_workers_see_each_sample_once(
    shards: str, workers: int, request: pytest.FixtureRequest
) -> None:
    out = request.getfixturevalue(shards)
    seen: list[str] = []
    for rank in range(2):
        loader = make_loader(
            out, preprocess=None, mode="eval", batch_size=2, num_workers=workers, rank=rank, world_size=2
        )
        seen += ids_of(loader)
    assert Counter(seen) == Counter(IDS)  # every sample, none twice


def test_eval_single_process_is_shard_order(five_shards: Path) -> None:
    loader = make_loader(five_shards, preprocess=None, mode="eval", batch_size=4, num_workers=0)
    batches = list(loader)
    assert [len(b) for b in batches] == [4, 4, 1]  # the last batch is partial, nothing is dropped
    assert len(set(ids_of(batches))) == NUM_PATCHES


def test_train_gives_equal_batch_counts_per_rank(five_shards: Path) -> None:
    per_rank = []
    for rank in range(2):
        loader = make_loader(
            five_shards,
            preprocess=None,
            mode="train",
            batch_size=3,
            num_workers=2,
            rank=rank,
            world_size=2,
            batches_per_epoch=4,
            shuffle_buffer=4,
            shuffle_initial=2,
        )
        assert len(loader) == 4
        epochs = [[len(batch) for batch in loader] for _ in range(2)]
        assert epochs == [[3, 3, 3, 3]] * 2
        per_rank.append(epochs)
    assert per_rank[0] == per_rank[1]


def test_train_without_resampling_and_default_epoch_length(three_shards: Path) -> None:
    for rank in range(2):
        loader = make_loader(
            three_shards,
            preprocess=None,
            mode="train",
            batch_size=2,
            num_workers=2,
            rank=rank,
            world_size=2,
            resample=False,
            shuffle_buffer=2,
            shuffle_initial=1,
        )
        assert len(loader) == NUM_PATCHES // (2 * 2)
        assert [len(b) for b in loader] == [2] * (NUM_PATCHES // 4)
    with pytest.raises(ConfigError, match="cannot feed 4 ranks"):
        make_loader(three_shards, preprocess=None, mode="train", resample=False, rank=0, world_size=4)


def test_train_is_seeded_per_rank_and_epoch(five_shards: Path) -> None:
    def epoch_ids(rank: int, seed: int, epoch: int) -> list[str]:
        loader = make_loader(
            five_shards,
            preprocess=None,
            mode="train",
            batch_size=3,
            num_workers=0,
            rank=rank,
            world_size=2,
            batches_per_epoch=3,
            seed=seed,
            shuffle_buffer=4,
            shuffle_initial=2,
        )
        loader.set_epoch(epoch)
        return ids_of(loader)

    assert epoch_ids(0, 1, 0) == epoch_ids(0, 1, 0)
    assert epoch_ids(0, 1, 0) != epoch_ids(1, 1, 0)
    assert epoch_ids(0, 1, 0) != epoch_ids(0, 1, 1)
    assert epoch_ids(0, 1, 0) != epoch_ids(0, 2, 0)
    loader = make_loader(
        five_shards,
        preprocess=None,
        mode="train",
        batch_size=3,
        num_workers=0,
        rank=0,
        world_size=2,
        batches_per_epoch=3,
        seed=1,
        shuffle_buffer=4,
        shuffle_initial=2,
    )
    first, second = ids_of(loader), ids_of(loader)  # each iteration is a new epoch
    assert first == epoch_ids(0, 1, 0) and second == epoch_ids(0, 1, 1)


def test_url_forms_agree(five_shards: Path) -> None:
    names = [s.name for s in read_manifest(five_shards).split("train").shards]
    expected = ids_of(make_loader(five_shards, preprocess=None, mode="eval", batch_size=1, num_workers=0))
    forms = [
        five_shards / "manifest.json",
        str(five_shards / "train-{000000..000004}.tar"),
        [str(five_shards / n) for n in names],
        [f"pipe:cat {five_shards / n}" for n in names],
        [f"file://{five_shards / n}" for n in names],
    ]
    for urls in forms:
        loader = make_loader(urls, preprocess=None, mode="eval", batch_size=1, num_workers=0)
        assert ids_of(loader) == expected, urls


def test_pipe_url_with_workers(five_shards: Path) -> None:
    urls = [f"pipe:cat {p}" for p in sorted(five_shards.glob("train-*.tar"))]
    loader = make_loader(urls, preprocess=None, mode="eval", batch_size=2, num_workers=2)
    assert Counter(ids_of(loader)) == Counter(IDS)


def test_failing_pipe_is_an_error(tmp_path: Path) -> None:
    loader = make_loader(f"pipe:cat {tmp_path}/absent.tar", preprocess=None, mode="eval", num_workers=0)
    with pytest.raises(DataError, match="absent.tar"):
        list(loader)


def test_preprocessing_and_collation(tree_root: Path, tmp_path: Path) -> None:
    modalities = (*DEFAULT_INPUTS, "lc")
    out = _build(tree_root, tmp_path / "full", 4, modalities)
    loader = make_loader(out, preprocess=default_preprocess("eval"), mode="eval", batch_size=3, num_workers=0)
    batches = list(loader)
    assert [len(b["meta"]) for b in batches] == [3, 3, 3]  # batches span shards
    batch = batches[0]
    assert (
        batch["inputs"]["aerial"].shape == (3, 1, 4, 512, 512)
        and batch["inputs"]["aerial"].dtype == torch.float32
    )
    assert batch["inputs"]["s2"].shape[:3] == (3, 16, 10) and batch["valid"]["s2"].dtype == torch.bool
    assert batch["labels"]["lc"].shape == (3, 1, 512, 512)
    train = make_loader(
        out,
        preprocess=default_preprocess("train"),
        mode="train",
        batch_size=2,
        num_workers=2,
        batches_per_epoch=2,
        shuffle_buffer=2,
        shuffle_initial=1,
    )
    assert [b["inputs"]["s1_asc"].shape[:2] for b in train] == [(2, 4)] * 2


def test_decoding_a_subset_skips_other_members(five_shards: Path) -> None:
    loader = make_loader(
        five_shards, preprocess=None, mode="eval", batch_size=None, num_workers=0, modalities=("s2",)
    )
    sample = next(iter(loader))
    assert set(sample) == {"s2", "dates", "meta"}
    with pytest.raises(DataError, match="missing members \\['dem.npy'\\]"):
        list(make_loader(five_shards, preprocess=None, mode="eval", num_workers=0, modalities=("dem",)))


# ------------------------------------------------------------------------------- broken shards


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for file in src.iterdir():
        if file.is_file():
            (dst / file.name).write_bytes(file.read_bytes())
    return dst


def test_truncated_shard_is_named(five_shards: Path, tmp_path: Path) -> None:
    out = _copy(five_shards, tmp_path / "copy")
    _truncate(out / "train-000002.tar")
    loader = make_loader(out, preprocess=None, mode="eval", batch_size=1, num_workers=0)
    with pytest.raises(DataError, match=r"train-000002\.tar.*truncated or corrupt shard"):
        list(loader)


def test_truncated_shard_in_a_worker_is_named(five_shards: Path, tmp_path: Path) -> None:
    out = _copy(five_shards, tmp_path / "copy")
    _truncate(out / "train-000001.tar")
    loader = make_loader(out, preprocess=None, mode="eval", batch_size=1, num_workers=2)
    with pytest.raises(DataError, match=r"train-000001\.tar"):
        list(loader)


def test_shard_shorter_than_its_manifest_entry(five_shards: Path, tmp_path: Path) -> None:
    """Cut at a sample boundary: the tar is valid, only the manifest count reveals the loss."""
    out = _copy(five_shards, tmp_path / "copy")
    shard = out / "train-000000.tar"
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
        first_key = members[0].name.split(".", 1)[0]
        kept = [(m, tar.extractfile(m).read()) for m in members if m.name.startswith(first_key)]  # type: ignore[union-attr]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, payload in kept:
            tar.addfile(info, io.BytesIO(payload))
    shard.write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match=r"train-000000\.tar.*1 samples, its manifest entry says 2"):
        list(make_loader(out, preprocess=None, mode="eval", num_workers=0))


def test_skip_mode_logs_and_counts(
    five_shards: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = _copy(five_shards, tmp_path / "copy")
    _truncate(out / "train-000002.tar", keep=0.05)
    loader = make_loader(out, preprocess=None, mode="eval", batch_size=1, num_workers=0, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="shards.loader"):
        seen = ids_of(loader)
    assert len(seen) == NUM_PATCHES - 2
    warnings = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(warnings) == 1 and "1 skipped so far" in warnings[0] and "train-000002.tar" in warnings[0]


def test_missing_member_names_shard_and_sample(five_shards: Path, tmp_path: Path) -> None:
    out = _copy(five_shards, tmp_path / "copy")
    shard = out / "train-000003.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    dropped = next(m.name for m, _ in members if m.name.endswith(".s1_asc.npy"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, payload in members:
            if info.name != dropped:
                tar.addfile(info, io.BytesIO(payload))
    shard.write_bytes(buffer.getvalue())
    key = dropped.split(".", 1)[0]
    with pytest.raises(
        DataError, match=rf"train-000003\.tar, sample {key}: missing members \['s1_asc.npy'\]"
    ):
        list(make_loader(out, preprocess=None, mode="eval", num_workers=0))
    skipped = make_loader(out, preprocess=None, mode="eval", batch_size=1, num_workers=0, on_error="skip")
    assert Counter(ids_of(skipped)) == Counter(i for i in IDS if i != key)


def test_bad_options() -> None:
    with pytest.raises(ConfigError):
        make_loader("x.tar", preprocess=None, mode="test")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="both rank and world_size"):
        make_loader("x.tar", preprocess=None, rank=1)
    with pytest.raises(ConfigError, match="batches_per_epoch is required"):
        make_loader("pipe:cat x.tar", preprocess=None, mode="train")
    with pytest.raises(ConfigError, match="unknown modality"):
        make_loader("x.tar", preprocess=None, mode="eval", modalities=("nope",))


def test_missing_local_shards_are_named(tmp_path):
    from shards.reading import resolve_source

    with pytest.raises(DataError, match=r"no shard file at .*nowhere/train-000000\.tar.* and 1 more"):
        resolve_source(str(tmp_path / "nowhere" / "train-{000000..000003}.tar"))
    with pytest.raises(DataError, match="nothing.tar"):
        resolve_source(tmp_path / "nothing.tar")


def test_data_error_in_a_worker_arrives_as_the_same_one_line_error(five_shards: Path, tmp_path: Path) -> None:
    """torch re-raises worker exceptions as "Caught DataError in DataLoader worker process N" plus
    the whole traceback; the loader must hand the caller the worker's own message instead."""
    out = _copy(five_shards, tmp_path / "copy")
    _truncate(out / "train-000001.tar")
    with pytest.raises(DataError) as in_process:
        list(make_loader(out, preprocess=None, mode="eval", batch_size=1, num_workers=0))
    with pytest.raises(DataError) as in_worker:
        list(make_loader(out, preprocess=None, mode="eval", batch_size=1, num_workers=2))
    message = str(in_worker.value)
    assert message == str(in_process.value)
    assert "\n" not in message and "Caught" not in message and "train-000001.tar" in message
    assert in_worker.value.path == in_process.value.path
    assert any("data-loader worker" in note for note in getattr(in_worker.value, "__notes__", []))


# ------------------------------------------------------------------------------ worker lifetime


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_loader_workers_die_with_a_killed_trainer(finetune_raw, tmp_path):
    """A real ``finetune`` with 2 loader workers on the toy shards, SIGKILLed mid-training (as the
    kernel's OOM killer does): its workers die at once instead of living on with parent 1."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    raw = finetune_raw(tmp_path / "run")
    raw["data"].update(num_workers=2, batches_per_epoch=10_000, val=None)
    raw["trainer"].update(max_epochs=1, checkpoint_every_n_steps=10_000)
    config = tmp_path / "finetune.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "finetune.cli", "--config", str(config)]
    trainer = subprocess.Popen(
        command, cwd=Path(__file__).parents[1], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while len(workers := live_children(trainer.pid)) < 2:
            assert trainer.poll() is None, trainer.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the trainer started no loader workers in 120 s"
            time.sleep(0.2)
        time.sleep(1.0)  # the workers are producing batches
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
        time.sleep(1.0)
        survivors = [pid for pid in workers if running(pid)]
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)  # leave nothing behind, then fail
        assert not survivors, f"loader workers {survivors} outlived their killed trainer"
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
        trainer.stderr.close()
