"""shards fill: the toy shards with their cloudy S2 dates dropped, interpolated or restored by a tiny
gap-filling network; every other member as it was, a shard set that verifies and loads, and the
refusals (exit 2, one line naming the path, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gapfill_fixtures import save_tiny_gapfill

from maestro.data.preprocess import MaestroTransform, build_preprocess_config, flagged_pixels
from maestro.sample import DATES
from shards.cli import main
from shards.fill import FillConfig, fill
from shards.format import decode_sample
from shards.loader import make_loader
from shards.manifest import read_manifest
from shards.reading import iter_shard

pytestmark = pytest.mark.usefixtures("single_thread")
FRACTION = 0.05


def members_of(folder: Path) -> dict[str, dict[str, bytes]]:
    """patch id -> its raw members (bytes), over every split of a shard set."""
    out = {}
    for entry in read_manifest(folder).splits.values():
        for record in entry.shards:
            for sample in iter_shard(str(folder / record.name)):
                out[sample["__key__"]] = {k: bytes(v) for k, v in sample.items() if not k.startswith("__")}
    return out


def decoded(members: dict[str, bytes]) -> dict:
    return decode_sample(members)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_gapfill(tmp_path_factory.mktemp("gapfill_model") / "model")


@pytest.fixture(scope="module")
def filled(toy_shards: Path, model_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """method -> the filled shard set of the toy shards (train and val)."""
    work = tmp_path_factory.mktemp("filled")
    outs = {}
    for method in ("drop", "interpolate", "model"):
        args = ["fill", "--from", str(toy_shards), "--out", str(work / method), "--method", method]
        args += ["--model", str(model_folder)] if method == "model" else []
        assert main([*args, "--no-progress"]) == 0
        outs[method] = work / method
    return outs


@pytest.fixture(scope="module")
def source(toy_shards: Path) -> dict[str, dict[str, bytes]]:
    return members_of(toy_shards)


def test_drop_leaves_no_cloudy_date_and_keeps_the_others_with_their_dates(filled, source):
    out = members_of(filled["drop"])
    assert set(out) == set(source)
    dropped = 0
    for patch, members in out.items():
        before, after = decoded(source[patch]), decoded(members)
        flags = flagged_pixels(after["s2_mask"], 0.0)
        assert (flags.reshape(len(flags), -1).mean(axis=1) <= FRACTION).all() or len(flags) == 1
        share = flagged_pixels(before["s2_mask"], 0.0).reshape(len(before["s2"]), -1).mean(axis=1)
        keep = share <= FRACTION
        assert np.array_equal(after["s2"], before["s2"][keep]) and after["s2"].dtype == before["s2"].dtype
        assert np.array_equal(after["s2_mask"], before["s2_mask"][keep])
        assert np.array_equal(after[DATES]["s2"], before[DATES]["s2"][keep])
        dropped += int((~keep).sum())
        for member in set(members) - {"s2.npy", "s2_mask.npy", "meta.json"}:
            assert members[member] == source[patch][member], (patch, member)
    assert dropped > 0
    fill_info = read_manifest(filled["drop"]).split("train").source["fill"]
    assert fill_info["method"] == "drop" and fill_info["cloudy_date_fraction"] == FRACTION
    counted = sum(
        read_manifest(filled["drop"]).split(s).source["fill"]["dates_dropped"] for s in ("train", "val")
    )
    assert counted == dropped


@pytest.mark.parametrize("method", ["interpolate", "model"])
def test_fills_change_only_flagged_pixels_and_clear_their_mask(filled, source, method):
    out = members_of(filled[method])
    assert set(out) == set(source)
    replaced_total = changed_total = 0
    for patch, members in out.items():
        before, after = decoded(source[patch]), decoded(members)
        flags = flagged_pixels(before["s2_mask"], 0.0)
        replaced = flags & ~flags.all(axis=0) if method == "interpolate" else flags
        assert after["s2"].dtype == before["s2"].dtype and after["s2"].shape == before["s2"].shape
        kept = ~np.broadcast_to(replaced[:, None], before["s2"].shape)
        assert np.array_equal(after["s2"][kept], before["s2"][kept])  # bit for bit
        changed_total += int((after["s2"] != before["s2"]).any(axis=1).sum())
        replaced_total += int(replaced.sum())
        assert not flagged_pixels(after["s2_mask"], 0.0)[replaced].any()  # clear to what reads it next
        mask_kept = ~np.broadcast_to(replaced[:, None], before["s2_mask"].shape)
        assert np.array_equal(after["s2_mask"][mask_kept], before["s2_mask"][mask_kept])
        assert members["meta.json"] == source[patch]["meta.json"]
        for member in set(members) - {"s2.npy", "s2_mask.npy"}:
            assert members[member] == source[patch][member], (patch, member)
    assert replaced_total > 0 and changed_total > 0.5 * replaced_total
    entry = read_manifest(filled[method]).split("train")
    assert entry.source["fill"]["method"] == method and entry.source["fill"]["pixels_replaced"] > 0


def test_the_filled_sets_verify_and_load_as_their_source(filled, toy_shards: Path, caplog):
    source = read_manifest(toy_shards)
    preprocess = MaestroTransform(build_preprocess_config(("s2", "s1_asc")), train=False)
    for method, folder in filled.items():
        assert main(["verify", str(folder)]) == 0, caplog.text
        manifest = read_manifest(folder)
        for split, entry in source.splits.items():
            out = manifest.split(split)
            assert (out.dataset, out.dataset_key, out.modalities) == (
                entry.dataset,
                entry.dataset_key,
                entry.modalities,
            )
            assert [(s.name, s.count) for s in out.shards] == [(s.name, s.count) for s in entry.shards]
            assert (
                out.source["fill"]["from"] == str(toy_shards) and out.source["root"] == entry.source["root"]
            )
        loader = make_loader(
            folder, preprocess=preprocess, mode="eval", split="train", batch_size=4, num_workers=0
        )
        batches = list(loader)
        assert sum(len(b["meta"]) for b in batches) == source.split("train").num_samples, method


def test_a_rerun_keeps_its_shards_and_another_fill_rewrites_them(toy_shards: Path, tmp_path: Path):
    out = tmp_path / "filled"
    config = FillConfig(toy_shards, out, "interpolate", splits=("val",), progress=False)
    first = fill(config)
    written = (out / "val-000000.tar").stat().st_mtime_ns
    again = fill(config)
    assert again.entries["val"].shards == first.entries["val"].shards
    assert (out / "val-000000.tar").stat().st_mtime_ns == written  # kept, not rewritten
    other = fill(
        FillConfig(toy_shards, out, "interpolate", splits=("val",), cloud_threshold=50.0, progress=False)
    )
    assert other.entries["val"].shards[0].sha256 != first.entries["val"].shards[0].sha256
    assert other.counts["val"].pixels_replaced < first.counts["val"].pixels_replaced
    assert read_manifest(out).split("val").source["fill"]["cloud_threshold"] == 50.0


@pytest.fixture(scope="module")
def without_s2(toy_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("no_s2") / "shards"
    args = ["build", "--root", str(toy_root), "--split", "val", "--out", str(out), "--modalities", "s1_asc"]
    assert main([*args, "lpis", "--no-progress"]) == 0
    return out


def refusal(args: list[str], caplog: pytest.LogCaptureFixture) -> str:
    caplog.clear()
    assert main(["fill", *args, "--no-progress"]) == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and not errors[0].exc_info, caplog.text  # one line, no traceback
    return errors[0].getMessage()


def test_refusals_name_the_path_and_write_nothing(
    toy_shards: Path, without_s2: Path, model_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    before = sorted(p.name for p in toy_shards.iterdir())
    out = tmp_path / "out"
    assert "no manifest" in (
        m := refusal(["--from", str(tmp_path), "--out", str(out), "--method", "drop"], caplog)
    )
    assert str(tmp_path) in m
    message = refusal(["--from", str(toy_shards), "--out", str(out), "--method", "model"], caplog)
    assert "--method model needs --model" in message
    message = refusal(["--from", str(toy_shards), "--out", str(toy_shards), "--method", "drop"], caplog)
    assert "inside --from" in message and str(toy_shards) in message
    inside = toy_shards / "filled"
    message = refusal(["--from", str(toy_shards), "--out", str(inside), "--method", "interpolate"], caplog)
    assert "inside --from" in message
    message = refusal(
        ["--from", str(without_s2), "--out", str(out), "--method", "model", "--model", str(model_folder)],
        caplog,
    )
    assert "['s2', 's2_mask'" in message and str(without_s2) in message
    message = refusal(["--from", str(without_s2), "--out", str(out), "--method", "interpolate"], caplog)
    assert "s2" in message and str(without_s2) in message
    assert sorted(p.name for p in toy_shards.iterdir()) == before and not out.exists()
    assert (
        json.loads((toy_shards / "manifest.json").read_text())["splits"]["train"]["source"].get("fill")
        is None
    )


def test_the_model_fill_restores_the_same_one_sample_at_a_time(
    filled, toy_shards: Path, model_folder: Path, tmp_path: Path
):
    out = tmp_path / "one_by_one"
    args = ["fill", "--from", str(toy_shards), "--out", str(out), "--method", "model", "--split", "val"]
    assert main([*args, "--model", str(model_folder), "--batch-size", "1", "--no-progress"]) == 0
    batched, single = members_of(filled["model"]), members_of(out)
    assert single and set(single) <= set(batched)
    for patch_id, members in single.items():
        assert set(members) == set(batched[patch_id])
        one, eight = decoded(members), decoded(batched[patch_id])
        assert np.array_equal(one["s2_mask"], eight["s2_mask"])
        assert np.abs(one["s2"].astype(np.int64) - eight["s2"].astype(np.int64)).max() <= 1
        assert all(members[k] == batched[patch_id][k] for k in members if "s2" not in k)
